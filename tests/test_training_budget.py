"""Training fits a device budget by itself: `python main.py run workflows/lora_training.json
--vram-limit <small>` streams the transformer's blocks (with gradient checkpointing, turned on by the
memory plan) and saves the same LoRA, bit for bit, as the run without a limit.

Bit for bit because on the CPU streaming moves no data (the device copy is the host tensor) and
the checkpointed recompute runs the same kernels on the same inputs in the same order.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from models.formats.load import load_flux_transformer
from models.memory import MemoryManager
from models.memory.device import CpuDevice
from models.memory.units import module_bytes
from models.text.prompt import T5_MIN_LENGTH
from models.tiny import tiny_flux
from models.training import Sample, TrainConfig, TrainingData, attach
from models.training.loop import _checkpointed
from models.training.memory_plan import plan_training_memory, training_working_bytes
from models.training.step import FLUX_LATENT_SCALE, FLUX_LATENT_SHIFT, Objective, make_batches
from settings import Settings
from tests.test_training_workflows import make_lora_dataset, shrink

ROOT = Path(__file__).resolve().parent.parent
GB = float(1 << 30)


def _samples(model: torch.nn.Module, side: int = 4, tokens: int = T5_MIN_LENGTH) -> list[Sample]:
    """Stand-ins with the dataset's shapes: 32 px images (4 x 4 latents), T5 padded to 256 tokens."""
    p = model.params  # type: ignore[union-attr]
    return [
        Sample(torch.zeros(16, side, side), torch.zeros(tokens, p.context_in_dim), torch.zeros(p.vec_in_dim))
    ]


def test_plan_keeps_the_configuration_when_it_fits_and_checkpoints_when_it_does_not():
    model = tiny_flux()
    samples, cfg = _samples(model), TrainConfig(rank=4, gradient_checkpointing=False)
    plain = training_working_bytes(model, samples, cfg, gradient_checkpointing=False, attention_matrix=True)
    checkpointed = training_working_bytes(
        model, samples, cfg, gradient_checkpointing=True, attention_matrix=True
    )
    assert 0 < checkpointed < plain
    bigger = training_working_bytes(
        model,
        _samples(model, side=8),
        cfg.replace(batch_size=2),
        gradient_checkpointing=False,
        attention_matrix=True,
    )
    assert bigger > 2 * plain  # more samples and more tokens per sample
    weights = module_bytes(model)
    assert (
        plan_training_memory([model], samples, cfg, budget=None, attention_matrix=True).working_bytes == plain
    )
    fits = plan_training_memory([model], samples, cfg, budget=weights + plain, attention_matrix=True)
    assert (fits.gradient_checkpointing, fits.reason) == (False, "")
    tight = plan_training_memory([model], samples, cfg, budget=weights, attention_matrix=True)
    assert tight.gradient_checkpointing and "exceed the device budget" in tight.reason
    assert checkpointed < tight.working_bytes < plain  # plus one block the recompute holds


class _CopyingDevice(CpuDevice):
    """A CPU device whose copies in are real copies, remembered with the storage they came from."""

    def __init__(self) -> None:
        super().__init__(simulate_copies=True)
        self.copies: list[tuple[torch.Tensor, int]] = []  # held: a storage address is never reused

    def copy_in(self, host: torch.Tensor) -> torch.Tensor:
        copy = super().copy_in(host)
        self.copies.append((copy, host.untyped_storage().data_ptr()))
        return copy


def test_streamed_blocks_leave_no_dropped_weight_to_autograd_once_checkpointed():
    """Why streaming turns checkpointing on: without it the backward pass holds on to the weight
    copies the manager dropped (on a GPU: memory it does not count); with it, none of a block's."""
    model = tiny_flux()
    name_of = {t.untyped_storage().data_ptr(): k for k, t in model.state_dict(keep_vars=True).items()}
    device = _CopyingDevice()
    memory = MemoryManager(device, budget_bytes=module_bytes(model) // 2, count_working=False)
    cfg = TrainConfig(rank=2)
    samples = [Sample(torch.randn(16, 4, 4), torch.randn(8, model.params.context_in_dim), torch.randn(128))]
    batches = make_batches(samples, [0], TrainingData(tuple(samples)), cfg, micro_step=0, device=torch.device("cpu"),
                           guidance_embed=True, latent_scale=FLUX_LATENT_SCALE, latent_shift=FLUX_LATENT_SHIFT)  # fmt: skip
    adapters = attach(model, rank=2)
    objective = Objective(adapters.modules, model, cfg)
    blocks = [*model.double_blocks, *model.single_blocks]
    held: dict[bool, set[str]] = {}
    for checkpointing in (False, True):
        undo = _checkpointed(blocks) if checkpointing else (lambda: None)
        saved: set[int] = set()

        def keep(t: torch.Tensor, saved: set[int] = saved) -> torch.Tensor:
            saved.add(t.untyped_storage().data_ptr())
            return t

        with (
            memory.use(model),
            torch.enable_grad(),
            torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t),
        ):
            assert memory.is_streamed(model)
            loss = objective(batches)
            current = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
            dropped = {c.untyped_storage().data_ptr(): name_of[h] for c, h in device.copies}
            held[checkpointing] = {dropped[p] for p in saved & dropped.keys() - current}
            loss.backward()
        undo()
    assert any(k.startswith(("double_blocks.", "single_blocks.")) for k in held[False]), held[False]
    assert all(k.startswith("final_layer.linear.") for k in held[True]), held[True]
    adapters.detach()


def _workflow(app) -> dict:
    import main

    prompt = shrink(
        main.read_workflow(ROOT / "workflows" / "lora_training.json", app.registry, app.services)[0]
    )
    for node in prompt.values():
        if node["class_type"] == "FluxLoraTrainingOptions":
            node["inputs"].update(eval_every=0, save_every=0)
    return prompt


def test_lora_training_under_a_small_vram_limit_streams_and_saves_the_unlimited_lora(
    demo_models_dir, tmp_path
):
    import main

    make_lora_dataset(tmp_path / "input")
    settings = Settings(models_dir=demo_models_dir, input_dir=tmp_path / "input", output_dir=tmp_path / "unlimited",
                        temp_dir=tmp_path / "temp")  # fmt: skip
    app = main.build_app(settings, load_packs=False)
    prompt = _workflow(app)
    app.executor.run_prompt(prompt, prompt_id="unlimited")
    assert app.services.memory.stats.max_working_bytes > 0  # the trainer declared its working memory

    model = load_flux_transformer(demo_models_dir / "diffusion_models" / "flux1-dev.safetensors")
    train = next(n["inputs"] for n in prompt.values() if n["class_type"] == "TrainLoraNode")
    cfg = TrainConfig(rank=train["rank"], lora_dtype=train["lora_dtype"], batch_size=train["batch_size"])
    # the trainer's checkpointed, streamed working memory, plus room for about half the transformer
    streamed = plan_training_memory([model], _samples(model), cfg, budget=1, attention_matrix=True)
    budget = streamed.working_bytes + module_bytes(model) // 2
    (tmp_path / "train.json").write_text(json.dumps(prompt))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "run", str(tmp_path / "train.json"), "--vram-limit", str(budget / GB),
         "--models-dir", str(demo_models_dir), "--input-dir", str(tmp_path / "input"),
         "--output-dir", str(tmp_path / "limited"), "--temp-dir", str(tmp_path / "temp2"),
         "--custom-nodes-dir", str(tmp_path / "none")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "gradient checkpointing on" in proc.stderr
    streams = re.search(r"Flux streams (\d+) of (\d+) units", proc.stderr)
    assert streams and int(streams.group(1)) > 0, proc.stderr[-4000:]
    peak = re.search(
        r"device memory: peak (\d+) bytes of models resident \(budget (\d+) bytes\)", proc.stderr
    )
    assert peak, proc.stderr[-4000:]
    assert int(peak.group(2)) == int(budget / GB * (1 << 30))
    assert int(peak.group(1)) <= int(peak.group(2))

    (unlimited,) = (tmp_path / "unlimited" / "loras").glob("flux_lora_training_*_.safetensors")
    (limited,) = (tmp_path / "limited" / "loras").glob("flux_lora_training_*_.safetensors")
    assert unlimited.name == limited.name
    a, b = load_file(str(unlimited)), load_file(str(limited))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
