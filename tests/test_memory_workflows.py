"""Every example workflow under a tight simulated device budget gives the unlimited run's images.

The CPU computes; `--vram-limit` sets the simulated budget: the largest working memory any step
declares (the VAE decode at the test size) plus a room for weights smaller than every model the
workflows load except the tiny T5 (the tiny transformer's largest layer, 231 KB, is larger than
the tiny T5, 118-232 KB; at full size the largest layer, 132 MB, is far below the smallest model,
CLIP-L at 246 MB). Every model streams; peak resident bytes must stay within the budget and the
saved PNGs must be byte-identical to the unlimited run's. (Half-size budgets run in
benchmarks/memory.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.memory.working import attention_on_cpu, vae_working_bytes
from models.tiny import TINY_AE
from settings import Settings
from tests.test_workflows import EXPECTED, HEIGHT, WIDTH, input_dir, load, merge, shrink  # noqa: F401

GB = float(1 << 30)
ROOM = 240_000  # >= the largest layer (231 KB bf16); < CLIP-L 750 KB, transformer 3.7 MB, VAE 7 MB
# The decode at the test size (outpaint is the widest), counted with the CPU's attention matrix.
WORKING = vae_working_bytes(
    TINY_AE,
    batch=1,
    height=HEIGHT,
    width=WIDTH + 16,
    decode=True,
    attention_matrix=attention_on_cpu(torch.device("cpu")),
)


def run_all(
    models: Path, inputs: Path, outputs: Path, budget: int | None
) -> tuple[dict[str, bytes], int, int]:
    import main

    limit = None if budget is None else budget / GB
    app = main.build_app(
        Settings(
            models_dir=models,
            input_dir=inputs,
            output_dir=outputs,
            temp_dir=outputs / "t",
            vram_limit_gb=limit,
        ),
        load_packs=False,
    )
    prompt = merge({name.removesuffix(".json"): shrink(load(name)) for name in EXPECTED})
    app.executor.run_prompt(json.loads(json.dumps(prompt)), prompt_id="m")
    images = {prefix: (outputs / f"{prefix}_00001_.png").read_bytes() for prefix, _w, _h in EXPECTED.values()}
    memory = app.services.memory
    return images, memory.stats.peak_bytes, memory.stats.bytes_moved


@pytest.fixture(scope="module")
def unlimited(demo_models_dir, input_dir, tmp_path_factory):  # noqa: F811
    return run_all(demo_models_dir, input_dir, tmp_path_factory.mktemp("unlimited"), None)


def test_workflows_under_a_tight_budget_match_the_unlimited_images(
    demo_models_dir,
    input_dir,  # noqa: F811
    unlimited,
    tmp_path,
    caplog,
):
    budget = WORKING + ROOM
    caplog.set_level("INFO", logger="models.memory.manager")
    images, peak, moved = run_all(demo_models_dir, input_dir, tmp_path, budget)
    assert peak <= budget
    assert moved > unlimited[2]  # streaming moved blocks in more than once
    assert any("streams" in r.getMessage() for r in caplog.records)
    for prefix, data in unlimited[0].items():
        assert images[prefix] == data, f"{prefix}: different image under a {budget / 1e6:.2f} MB budget"


def test_main_py_run_under_the_tight_budget_saves_the_same_images(
    demo_models_dir,
    input_dir,  # noqa: F811
    unlimited,
    tmp_path,
):
    """The same through the command line a user runs: `main.py run --vram-limit GB`."""
    from tests.test_workflows import run_cli

    workflow = tmp_path / "all.json"
    workflow.write_text(json.dumps(merge({n.removesuffix(".json"): shrink(load(n)) for n in EXPECTED})))
    limit = f"{(WORKING + ROOM) / GB:.9f}"
    saved = run_cli(workflow, demo_models_dir, input_dir, tmp_path / "out", "--vram-limit", limit)
    by_name = {p.name: p.read_bytes() for p in saved}
    for prefix, data in unlimited[0].items():
        assert by_name[f"{prefix}_00001_.png"] == data, f"{prefix}: different image from main.py run"
