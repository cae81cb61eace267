"""Sampling-library overhead around the model: sampler math, noise, schedules and previews.

Every sampler runs `--steps` steps on a FLUX 1024x1024 latent [1, 16, 128, 128] (float32, CPU) with
a denoiser that costs one multiply, so the time is what the library adds per step on top of the
transformer. Also: Brownian-tree noise per call (the dpmpp_*sde default), scheduler calls and the
Latent2RGB preview. Prints a table and, with --record, appends it to benchmarks/RESULTS.md.

    python benchmarks/sampler_overhead.py [--steps 20] [--repeats 3] [--record]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.sampling import (  # noqa: E402
    SAMPLERS,
    SCHEDULER_NAMES,
    FlowModelSampling,
    calculate_sigmas,
    make_noise_sampler,
)
from models.sampling.brownian import brownian_noise_sampler  # noqa: E402
from models.sampling.preview import latent_to_rgb  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")
SHAPE = (1, 16, 128, 128)


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    ms = FlowModelSampling.flux_default()
    sigmas = calculate_sigmas(ms, "simple", args.steps)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    calls = 0

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return x * 0.5

    unique: dict[int, tuple[str, Callable]] = {}
    for name, fn in SAMPLERS.items():
        unique.setdefault(id(fn), (name, fn))
    best = {name: float("inf") for name, _ in unique.values()}
    model_calls = {}
    # rounds outside, samplers inside: a burst of load from other jobs hits every sampler alike
    for _ in range(args.repeats):
        for name, fn in unique.values():
            calls = 0
            start = time.perf_counter()
            fn(denoiser, x, sigmas, noise_sampler=make_noise_sampler(x, 0))
            best[name] = min(best[name], time.perf_counter() - start)
            model_calls[name] = calls / args.steps
    rows = [(name, 1000 * best[name] / args.steps, model_calls[name]) for name in best]

    brownian = brownian_noise_sampler(x, sigmas, 0)
    pairs = list(zip(sigmas[:-2], sigmas[1:-1]))
    start = time.perf_counter()
    for a, b in pairs:
        brownian(a, b)
    brownian_ms = 1000 * (time.perf_counter() - start) / len(pairs)
    gaussian = make_noise_sampler(x, 0)
    gaussian_ms = 1000 * best_of(args.repeats, lambda: gaussian(sigmas[0], sigmas[1]))
    schedule_us = {
        n: 1e6 * best_of(args.repeats, lambda n=n: calculate_sigmas(ms, n, args.steps))
        for n in SCHEDULER_NAMES
    }
    preview_ms = 1000 * best_of(args.repeats, lambda: latent_to_rgb(x))

    lines = [
        f"## Sampling library overhead — 2026-11-22 — 2-core CPU sandbox ({platform.machine()}, "
        f"CPython {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} threads)",
        "",
        f"`python benchmarks/sampler_overhead.py --steps {args.steps}`: latent {list(SHAPE)} float32 "
        "(FLUX 1024x1024), a one-multiply denoiser, best of "
        f"{args.repeats} interleaved rounds; the machine was shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f}), so treat times as upper bounds.",
        "",
        "| sampler | ms/step outside the model | model calls/step |",
        "|---|---|---|",
        *(f"| {name} | {ms_step:.2f} | {per:.2f} |" for name, ms_step, per in rows),
        "",
        f"Noise per call: N(0,1) stream {gaussian_ms:.2f} ms; Brownian tree (torchsde, dpmpp_*sde "
        f"default) {brownian_ms:.0f} ms. Latent2RGB preview of the 128x128 latent: {preview_ms:.2f} ms.",
        "",
        "Scheduler call (µs, "
        + str(args.steps)
        + " steps): "
        + ", ".join(f"{n} {us:.0f}" for n, us in schedule_us.items()),
        "",
    ]
    print("\n".join(lines))
    if args.record:
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
