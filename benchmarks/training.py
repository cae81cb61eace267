"""LoRA training step time and peak memory: models.training vs a plain diffusers + PEFT loop.

Both sides train the same weights (ours in the BFL layout, diffusers' FluxTransformer2DModel with
the converted state dict) on the same latents, text embeddings, timesteps and noise: flow-matching
velocity MSE, guidance 1.0, AdamW (lr 1e-4), rank 16 / alpha 16 on every Linear of the blocks
(ours: fused qkv and linear1 as in the BFL layout; PEFT: diffusers' split q/k/v and MLP layers, the
same weights), batch 1, fp32 on CPU, no gradient checkpointing. Each side runs in its own process
(so peak memory is its own): warm-up steps, then the median of timed steps.

    python benchmarks/training.py [--steps 6] [--record]        # CPU, tiny-but-not-trivial weights
    python benchmarks/training.py --full                        # CUDA: full-size FLUX.1-dev, 1024^2

CPU config: hidden 256 (2 heads x 128), 2 double + 4 single blocks, 256x256 image (32x32 latent,
256 image tokens), 64 text tokens. Full config (GPU only): random FLUX.1-dev in bf16 (and fp8
storage), rank 16, 1024x1024, batch 1, gradient checkpointing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).with_name("RESULTS.md")
RANK, LR = 16, 1e-4


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(full: bool) -> tuple[Any, dict[str, torch.Tensor], torch.device]:
    from models.flux.model import Flux
    from models.flux.params import FLUX_DEV, FluxParams, default_axes_dim
    from models.tiny.weights import init_random

    if full:
        params, hw, n_txt, device = FLUX_DEV, (128, 128), 512, torch.device("cuda")
    else:
        params = FluxParams(in_channels=64, out_channels=64, vec_in_dim=768, context_in_dim=512, hidden_size=256,
                            num_heads=2, depth=2, depth_single_blocks=4, axes_dim=default_axes_dim(128))  # fmt: skip
        hw, n_txt, device = (32, 32), 64, torch.device("cpu")
    with torch.device("meta"):
        model = Flux(params)
    model = init_random(model, 0).eval().requires_grad_(False)
    if full:
        model = model.to(device=device, dtype=torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    data = {
        "latent": torch.randn(16, *hw, generator=g),
        "context": torch.randn(n_txt, params.context_in_dim, generator=g),
        "pooled": torch.randn(params.vec_in_dim, generator=g),
    }
    return model, data, device


def run_ours(steps: int, warmup: int, full: bool) -> dict[str, float]:
    from models.training import Sample, TrainConfig, TrainingData, train

    model, d, device = _setup(full)
    data = TrainingData((Sample(d["latent"], d["context"], d["pooled"]),))
    cfg = TrainConfig(steps=warmup + steps, learning_rate=LR, rank=RANK, alpha=float(RANK), weight_decay=0.01,
                      timestep_sampling="uniform", gradient_checkpointing=full,
                      training_dtype="bf16" if full else "fp32")  # fmt: skip
    times: list[float] = []
    last = [time.perf_counter()]
    base = _rss_mb()
    if full:
        torch.cuda.reset_peak_memory_stats()

    def on_step(_report: Any) -> None:
        if full:
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    train(model, data, cfg, on_step=on_step)
    peak = torch.cuda.max_memory_allocated() / 2**20 if full else _peak_mb() - base
    return {"step_s": statistics.median(times[warmup:]), "peak_mb": peak}


def run_diffusers(steps: int, warmup: int, full: bool) -> dict[str, float]:
    from peft import LoraConfig, inject_adapter_in_model

    from benchmarks.models import diffusers_twin
    from models.flux.packing import make_image_ids, make_text_ids, pack_latents

    model, d, device = _setup(full)
    twin = diffusers_twin(model).to(device)
    del model
    twin.requires_grad_(False)
    names = r".*(transformer_blocks|single_transformer_blocks)\.\d+\.(attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|" \
            r"add_v_proj|to_out\.0|to_add_out)|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)|norm1\.linear|" \
            r"norm1_context\.linear|proj_mlp|proj_out|norm\.linear)"  # fmt: skip
    twin = inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=names), twin)
    params = [p for p in twin.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.01)
    x0 = ((d["latent"][None] - 0.1159) * 0.3611).to(device)
    h, w = x0.shape[-2:]
    img_ids, txt_ids = (
        make_image_ids(1, h // 2, w // 2, device=device)[0],
        make_text_ids(1, len(d["context"]), device=device)[0],
    )
    ctx, pooled = d["context"][None].to(device), d["pooled"][None].to(device)
    dtype = torch.bfloat16 if full else torch.float32
    times = []
    base = _rss_mb()
    if full:
        torch.cuda.reset_peak_memory_stats()
    for step in range(warmup + steps):
        start = time.perf_counter()
        g = torch.Generator().manual_seed(step)
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.rand(1, generator=g).to(device)
        xt = (1 - t) * x0 + t * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=full):
            v = twin(hidden_states=pack_latents(xt).to(dtype), encoder_hidden_states=ctx.to(dtype),
                     pooled_projections=pooled.to(dtype), timestep=t, img_ids=img_ids, txt_ids=txt_ids,
                     guidance=torch.ones(1, device=device), return_dict=False)[0]  # fmt: skip
        loss = torch.nn.functional.mse_loss(v.float(), pack_latents(noise - x0).float())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if full:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if full else _peak_mb() - base
    return {"step_s": statistics.median(times[warmup:]), "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per side (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per side (default 1)")
    parser.add_argument("--side", choices=("ours", "diffusers"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.full and not torch.cuda.is_available():
        raise SystemExit("--full needs a CUDA GPU")
    if args.side:
        fn = run_ours if args.side == "ours" else run_diffusers
        print(json.dumps(fn(args.steps, args.warmup, args.full)))
        return
    rows: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):  # alternate the sides so background load hits both alike; keep the best
        for side in ("ours", "diffusers"):
            cmd = [sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--warmup",
                   str(args.warmup), "--threads", str(args.threads)]  # fmt: skip
            out = subprocess.run(
                cmd + (["--full"] if args.full else []), capture_output=True, text=True, check=True
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            if side not in rows or row["step_s"] < rows[side]["step_s"]:
                rows[side] = row
    ratio = rows["ours"]["step_s"] / rows["diffusers"]["step_s"]
    load = os.getloadavg()[0]
    table = [
        "| trainer | s / step | peak memory MB | ratio |",
        "|---|---|---|---|",
        f"| models.training | {rows['ours']['step_s']:.3f} | {rows['ours']['peak_mb']:.0f} | {ratio:.2f} |",
        f"| diffusers + PEFT | {rows['diffusers']['step_s']:.3f} | {rows['diffusers']['peak_mb']:.0f} | 1.00 |",
    ]
    print("\n".join(table))
    print(f"load average {load:.1f}")
    if args.record:
        head = (
            f"\n## LoRA training step — {time.strftime('%Y-%m-%d')} — {'CUDA ' + torch.cuda.get_device_name() if args.full else 'CPU only'} "
            f"({platform.machine()}, CPython {platform.python_version()})\n\n"
            f"`python benchmarks/training.py{' --full' if args.full else ''} --record` (best of {args.rounds} alternating runs of the median of {args.steps} steps after "
            f"{args.warmup} warm-up; each trainer in its own process, {args.threads} torch thread(s); peak memory = {'max CUDA allocation' if args.full else 'peak RSS growth during training'}; "
            f"load average {load:.1f} on this shared machine)\n\n"
        )
        with RESULTS.open("a") as f:
            f.write(head + "\n".join(table) + "\n")


if __name__ == "__main__":
    main()
