"""Two-process data-parallel training (torchrun, gloo, CPU) follows single-process training with the
same global batch: same loss curve (1e-5) and LoRA; only rank 0 writes files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models.tiny import tiny_flux
from models.tiny.weights import module_state
from models.training import TrainConfig, TrainingData, save_shards, train
from models.training.distributed import samples_from_records

ROOT = Path(__file__).resolve().parent.parent


def test_two_process_ddp_matches_one_process(tmp_path):
    model = tiny_flux()
    save_file(module_state(model), str(tmp_path / "flux.safetensors"))
    gen = torch.Generator().manual_seed(0)
    records = [
        {"latent": {"samples": torch.randn(1, 16, 4, 4, generator=gen)},
         "conditioning": [[torch.randn(1, 6, model.params.context_in_dim, generator=gen),
                           {"pooled_output": torch.randn(1, model.params.vec_in_dim, generator=gen)}]]}
        for _ in range(6)
    ]  # fmt: skip
    save_shards(tmp_path / "ds", records, shard_size=4)
    # SGD: the update is linear in the all-reduced gradient, so the weights can be compared tightly
    # (Adam divides by sqrt(v), which turns rounding noise in near-zero gradients into +-lr steps).
    per_rank = TrainConfig(
        steps=3,
        batch_size=2,
        learning_rate=0.5,
        optimizer="SGD",
        rank=2,
        max_grad_norm=1.0,
        caption_dropout=0.0,
    )
    (tmp_path / "cfg.json").write_text(per_rank.to_json())
    out = tmp_path / "out" / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "models.training.distributed", "--model", str(tmp_path / "flux.safetensors"),
         "--dataset", str(tmp_path / "ds"), "--config", str(tmp_path / "cfg.json"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    curve = json.loads(Path(f"{out}_loss.json").read_text())
    assert curve["world_size"] == 2
    single = train(model, TrainingData(tuple(samples_from_records(records))), per_rank.replace(batch_size=4))
    assert len(curve["loss"]) == 3
    assert max(abs(a - b) for a, b in zip(curve["loss"], single.state.losses)) < 1e-5, (
        curve["loss"],
        single.state.losses,
    )
    ddp_lora = load_file(str(out.parent / "ddp_3_steps.safetensors"))
    assert ddp_lora.keys() == single.lora.keys()
    trained = [k for k in ddp_lora if k.endswith("lora_up.weight")]  # zero at the start: all change
    change = max(single.lora[k].abs().max().item() for k in trained)
    diffs = {k: (ddp_lora[k] - single.lora[k]).abs().max().item() for k in ddp_lora}
    assert change > 1e-3 and max(diffs.values()) < 1e-5 * change, (change, max(diffs.values()))
    assert sorted(p.name for p in out.parent.iterdir()) == ["ddp_3_steps.safetensors", "ddp_3_steps.state.safetensors",
                                                            "ddp_loss.json"]  # fmt: skip


def test_main_run_nproc_2_trains_data_parallel_and_saves_once(demo_models_dir, tmp_path):
    """`main.py run workflows/lora_training.json --nproc 2` with half the batch per process: the loss
    curve of one process with the whole batch (1e-5), the same output files, each once."""
    import main
    from models.training.checkpoint import load_state
    from settings import Settings
    from tests.test_training_workflows import make_lora_dataset, shrink

    models = tmp_path / "models"
    shutil.copytree(demo_models_dir, models)
    # fp32 weights: in bf16 a batch of 4 and two of 2 round differently (~1e-3 in the loss)
    save_file(module_state(tiny_flux()), str(models / "diffusion_models" / "flux1-dev.safetensors"))
    make_lora_dataset(tmp_path / "input")

    def run_single() -> None:
        settings = Settings(models_dir=models, input_dir=tmp_path / "input", output_dir=tmp_path / "single",
                            temp_dir=tmp_path / "single_temp")  # fmt: skip
        app = main.build_app(settings, load_packs=False)
        app.executor.run_prompt(workflow(app, batch_size=4), prompt_id="single")
        (tmp_path / "ddp.json").write_text(json.dumps(workflow(app, batch_size=2)))

    def workflow(app: object, batch_size: int) -> dict:
        prompt = shrink(main.read_workflow(ROOT / "workflows" / "lora_training.json", app.registry,  # type: ignore[attr-defined]
                                           app.services)[0])  # type: ignore[attr-defined]  # fmt: skip
        for node in prompt.values():
            if node["class_type"] == "TrainLoraNode":
                node["inputs"].update(batch_size=batch_size, lora_dtype="fp32", steps=3)
            elif node["class_type"] == "FluxLoraTrainingOptions":
                node["inputs"].update(validate_every=0, eval_every=0, save_every=3)
        return prompt

    run_single()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "run", str(tmp_path / "ddp.json"), "--nproc", "2",
         "--models-dir", str(models), "--input-dir", str(tmp_path / "input"), "--output-dir", str(tmp_path / "ddp"),
         "--temp-dir", str(tmp_path / "ddp_temp"), "--custom-nodes-dir", str(tmp_path / "none")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]

    def files(folder: Path) -> list[str]:
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    assert files(tmp_path / "ddp") == files(tmp_path / "single")
    assert files(tmp_path / "ddp_temp") == files(tmp_path / "single_temp")
    # rank 0 alone reports: the other rank logs errors only
    assert proc.stderr.count("saved LoRA") == proc.stderr.count("device memory: peak") == 1, proc.stderr[
        -4000:
    ]
    state = "loras/flux_lora_training_3_steps.state.safetensors"
    ddp, single = load_state(tmp_path / "ddp" / state), load_state(tmp_path / "single" / state)
    assert len(ddp.losses) == 3
    assert max(abs(a - b) for a, b in zip(ddp.losses, single.losses)) < 1e-5, (ddp.losses, single.losses)


def test_nproc_is_not_passed_on_to_the_processes_torchrun_starts():
    from cli_distributed import without_nproc

    assert without_nproc(["run", "t.json", "--nproc", "2", "-v"]) == ["run", "t.json", "-v"]
    assert without_nproc(["run", "--nproc=4", "t.json"]) == ["run", "t.json"]
