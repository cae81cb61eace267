"""Memory manager under budgets: time per image and bytes moved, as ratios to an unlimited budget.

    python benchmarks/memory.py [--repeats 3] [--record]         # CPU: tiny demo workflow, simulated device
    python benchmarks/memory.py --gpu [--repeats 2] [--record]   # CUDA: full-size FLUX.1-dev (see gpu_main)

CPU: the demo checkpoints (`main.py demo-models`) run flux_dev_txt2img at 128x128, 4 steps, through
the executor. The device is simulated (`CpuDevice(total_bytes=budget, simulate_copies=True)`):
moving a tensor "in" makes a real copy, so streaming costs memcpy time as it would cost PCIe time.
The budget is p x (bytes of all four models), for p = unlimited, 100%, 50%, 25%, 10%, and holds
weights alone (`count_working=False`: on the CPU the activations do not live on the simulated
device; counted, the VAE decode's estimate would dwarf these tiny weights). Each budget gets a fresh app; the first run loads the files,
the timed runs change only the seed (models come from the executor's cache).

GPU (not run in the CPU sandbox): random full-size FLUX.1-dev, CLIP-L and T5-XXL, FLUX VAE in
bf16 on the host; 1024x1024, 20 steps; budgets unlimited, 24, 16, 12, 8 GB with the text
encoders on the same device; beside diffusers' enable_model_cpu_offload and group offload
(block level, CUDA streams) on the same weights; and a rank-16 LoRA on every Linear of the
transformer, patched vs unpatched step time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = Path(__file__).with_name("RESULTS.md")
SIZE, STEPS = 128, 4
FRACTIONS: tuple[float | None, ...] = (None, 1.0, 0.5, 0.25, 0.10)
GB = 1 << 30


def workflow(seed: int) -> dict[str, Any]:
    prompt = json.loads((ROOT / "workflows" / "flux_dev_txt2img.json").read_text())
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptySD3LatentImage":
            inputs["width"] = inputs["height"] = SIZE
        elif node["class_type"] == "KSampler":
            inputs["steps"], inputs["seed"] = STEPS, seed
        elif node["class_type"] == "SaveImage":
            node["class_type"], node["inputs"] = "PreviewImage", {"images": inputs["images"]}
    return prompt


def cpu_app(models: Path, out: Path, budget: int | None) -> Any:
    import main
    from models.memory import CpuDevice, MemoryManager
    from settings import Settings

    original = main.build_memory_manager
    main.build_memory_manager = lambda settings: MemoryManager(
        CpuDevice(budget, simulate_copies=True), count_working=False
    )
    try:
        return main.build_app(Settings(models_dir=models, output_dir=out, temp_dir=out), load_packs=False)
    finally:
        main.build_memory_manager = original


def cpu_run(models: Path, out: Path, budget: int | None, repeats: int) -> dict[str, float]:
    app = cpu_app(models, out, budget)
    memory = app.services.memory
    app.executor.run_prompt(workflow(0), prompt_id="warm")  # loads the files and places the models
    times, cpu, moved, peaks = [], [], [], []
    for seed in range(1, repeats + 1):
        memory.reset_stats()
        start, start_cpu = time.perf_counter(), time.process_time()
        app.executor.run_prompt(workflow(seed), prompt_id=f"run{seed}")
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        moved.append(memory.stats.bytes_moved)
        peaks.append(memory.stats.peak_bytes)
    sizes = sum(e.size for e in memory._entries.values())
    return {
        "seconds": statistics.median(times),
        "cpu": statistics.median(cpu),
        "moved": statistics.median(moved),
        "peak": max(peaks),
        "models": sizes,
        "working": memory.stats.max_working_bytes,
    }


def cpu_main(repeats: int) -> str:
    from models.tiny import write_demo_models

    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        write_demo_models(models)
        base = cpu_run(models, Path(tmp) / "out", None, repeats)
        rows = []
        for fraction in FRACTIONS:
            budget = None if fraction is None else int(fraction * base["models"])
            result = base if fraction is None else cpu_run(models, Path(tmp) / "out", budget, repeats)
            rows.append((fraction, budget, result))
    lines = [
        f"CPU, simulated device with real copies, budget for weights alone; demo models "
        f"{base['models'] / 1e6:.2f} MB in all; flux_dev_txt2img {SIZE}x{SIZE}, {STEPS} steps, "
        f"median of {repeats} runs after a warm-up run. CPU s = process CPU time (all threads; steadier than "
        f"wall time on a shared machine); ratios are to the unlimited row.",
        "",
        "| budget | weights share | wall s / image | CPU s / image | CPU time ratio | MB moved / image | "
        "moved / model bytes | peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for fraction, budget, r in rows:
        label = "unlimited" if budget is None else f"{budget / 1e6:.2f} MB"
        share = "-" if fraction is None else f"{fraction:.0%}"
        lines.append(
            f"| {label} | {share} | {r['seconds']:.2f} | {r['cpu']:.2f} | {r['cpu'] / base['cpu']:.2f}x | "
            f"{r['moved'] / 1e6:.2f} | {r['moved'] / base['models']:.2f} | {r['peak'] / 1e6:.2f} |"
        )
    return "\n".join(lines)


# --- GPU -------------------------------------------------------------------------------------------------
def random_lora(transformer: torch.nn.Module, rank: int = 16) -> tuple[Any, ...]:
    """A rank-`rank` LoRA on every Linear weight of the transformer (random, small)."""
    from models.patches import WeightPatch

    patches = []
    g = torch.Generator().manual_seed(0)
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear):
            out_f, in_f = module.weight.shape
            up = (torch.randn(out_f, rank, generator=g) * 0.01).to(torch.bfloat16)
            down = (torch.randn(rank, in_f, generator=g) * 0.01).to(torch.bfloat16)
            patches.append(WeightPatch(f"{name}.weight", "lora", (up, down), alpha=float(rank)))
    return tuple(patches)


def gpu_main(repeats: int) -> str:  # pragma: no cover - needs a CUDA device
    """Full-size FLUX.1-dev at several budgets, beside diffusers' offload modes, and LoRA step time."""
    from benchmarks.sampling import Models, diffusers_runner, ours_runner
    from models.flux.autoencoder import FLUX_AE, AutoEncoder
    from models.flux.model import Flux
    from models.flux.params import FLUX_DEV
    from models.memory import CudaDevice, MemoryManager
    from models.text.clip import CLIP_L, build_clip
    from models.text.t5 import T5_XXL, build_t5
    from models.text.tiny_tokenizers import write_tiny_tokenizers
    from models.text.tokenizers import load_flux_tokenizers

    size, steps = 1024, 20
    tok = Path(tempfile.mkdtemp()) / "tokenizers"
    write_tiny_tokenizers(tok)
    clip_tok, t5_tok = load_flux_tokenizers(tok)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:  # built on the host: the memory manager places them
        transformer = Flux(FLUX_DEV).eval().requires_grad_(False)
        vae = AutoEncoder(FLUX_AE).eval().requires_grad_(False)
        clip, t5 = build_clip(CLIP_L), build_t5(T5_XXL)
    finally:
        torch.set_default_dtype(previous)
    models = Models(
        transformer,
        FLUX_DEV,
        vae,
        FLUX_AE,
        clip,
        t5,
        clip_tok,
        t5_tok,
        torch.bfloat16,
        torch.device("cuda"),
        tok,
    )
    rows: list[tuple[str, float]] = []

    def timed(run: Any) -> float:
        run(0)  # warm-up: placement, kernels
        times = []
        for seed in range(1, repeats + 1):
            torch.cuda.synchronize()
            start = time.perf_counter()
            run(seed)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    for label, budget_gb in (("unlimited", None), ("24 GB", 24), ("16 GB", 16), ("12 GB", 12), ("8 GB", 8)):
        memory = MemoryManager(
            CudaDevice(),
            budget_bytes=None if budget_gb is None else budget_gb * GB,
            reserve_bytes=int(0.4 * GB),
        )
        rows.append((f"ours, {label}", timed(ours_runner(models, size, steps, memory=memory))))
        memory.free_all()
    for mode in ("model_cpu_offload", "group_offload_streams"):
        rows.append((f"diffusers {mode}", timed(diffusers_runner(models, size, steps, offload=mode))))
    base = rows[0][1]
    lines = [
        f"CUDA {torch.cuda.get_device_name()}, random FLUX.1-dev bf16, {size}x{size}, {steps} steps, "
        f"T5-XXL and CLIP-L on the same device, median of {repeats}.",
        "",
        "| setup | s / image | ratio to unlimited |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {sec:.2f} | {sec / base:.2f}x |" for name, sec in rows]
    lines += ["", step_time_with_lora(transformer, FLUX_DEV)]
    return "\n".join(lines)


def step_time_with_lora(
    transformer: torch.nn.Module, params: Any
) -> str:  # pragma: no cover - needs a CUDA device
    """One transformer forward at 1024x1024: plain vs LoRA-patched (weights edited once on placement)."""
    from models.memory import CudaDevice, MemoryManager
    from models.patches import ModelHandle

    memory = MemoryManager(CudaDevice())
    plain = ModelHandle(transformer, params)
    patched = plain.with_patches(*random_lora(transformer))
    img = torch.randn(1, 4096, 64, device="cuda", dtype=torch.bfloat16)
    txt = torch.randn(1, 512, 4096, device="cuda", dtype=torch.bfloat16)
    ids = torch.zeros(1, 4096, 3, device="cuda")
    txt_ids = torch.zeros(1, 512, 3, device="cuda")
    t = torch.full((1,), 0.5, device="cuda")
    vec = torch.randn(1, 768, device="cuda", dtype=torch.bfloat16)
    guidance = torch.full((1,), 3.5, device="cuda")
    result = []
    for name, handle in (("unpatched", plain), ("LoRA rank 16, all Linears", patched)):
        with memory.use(handle):
            for _ in range(2):
                transformer(img, ids, txt, txt_ids, t, vec, guidance)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(5):
                transformer(img, ids, txt, txt_ids, t, vec, guidance)
            torch.cuda.synchronize()
            result.append((name, (time.perf_counter() - start) / 5))
    return "\n".join(f"step time {name}: {sec * 1000:.1f} ms" for name, sec in result)


def record(title: str, body: str) -> None:
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    RESULTS.write_text(text.rstrip("\n") + f"\n\n## {title}\n\n{body}\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu", action="store_true", help="full-size FLUX.1-dev on CUDA")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.gpu:
        if not torch.cuda.is_available():
            print("no CUDA device: the GPU part cannot run here", file=sys.stderr)
            return 2
        body = gpu_main(args.repeats)
        title = f"Memory manager budgets (GPU) — {time.strftime('%Y-%m-%d')} — {torch.cuda.get_device_name()}"
    else:
        body = cpu_main(args.repeats)
        title = (
            f"Memory manager budgets (CPU, simulated device) — {time.strftime('%Y-%m-%d')} — "
            f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
        )
    print(f"## {title}\n\n{body}")
    if args.record:
        record(title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
