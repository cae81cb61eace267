"""Per-step cost of ControlNets, ours vs diffusers, and the model calls the adaptive guider saves.

Per step = what one sampler step evaluates: the transformer alone (plain), or the ControlNet(s) and
then the transformer with their residuals. Ours: `models.control.apply.control_extensions` +
`models.flux.apply.flux_forward_latent`; diffusers: `FluxControlNetModel` (two: `FluxMultiControlNetModel`)
+ `FluxTransformer2DModel(controlnet_block_samples=...)`, exactly the per-step work of
`FluxControlNetPipeline`. Both sides run the same weights (ours converted from diffusers' with
models/formats), the same inputs, float32, one torch thread; the median of --repeats timed steps
after 2 warm-up steps is reported.

The adaptive guider part samples `--steps` Euler steps of the same transformer with CFG 3.5 and a
negative prompt, once with plain CFG and once with AdaptiveGuidance at its default threshold (0.99),
and counts the conditionings the transformer evaluated.

    python benchmarks/control.py [--repeats 5] [--record]

CPU config: transformer hidden 256 (2 heads x 128), 2 double + 4 single blocks; each ControlNet
2 double + 2 single blocks (InstantX-style, interval injection); 512x512 (64x64 latent, 1024 image
tokens), 64 text tokens. A GPU run (full size, 1024x1024, bf16) is not part of this script's CPU
config; RESULTS.md marks it as not run where no GPU was available.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).with_name("RESULTS.md")
HIDDEN, HEADS, DEPTH, SINGLE = 256, 2, 2, 4
CN_DEPTH, CN_SINGLE = 2, 2
LATENT, TOKENS, CONTEXT, POOLED = 64, 64, 256, 128


def _config(depth: int, single: int) -> dict:
    return dict(
        patch_size=1,
        in_channels=64,
        num_layers=depth,
        num_single_layers=single,
        attention_head_dim=HIDDEN // HEADS,
        num_attention_heads=HEADS,
        joint_attention_dim=CONTEXT,
        pooled_projection_dim=POOLED,
        guidance_embeds=True,
        axes_dims_rope=[16, 56, 56],
    )


def _random(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(
                torch.randn(p.shape, generator=gen)
                * (0.5 / max(1, p.shape[-1]) ** 0.5 if p.ndim > 1 else 0.02)
            )
    return module.eval()


def build():
    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    from models.control.model import FluxControlNet
    from models.control.params import DIFFUSERS, detect_controlnet_params
    from models.flux.model import Flux
    from models.flux.params import detect_flux_params
    from models.formats.control_flux import diffusers_to_bfl_controlnet
    from models.formats.diffusers_flux import diffusers_to_bfl_transformer

    main_d = _random(FluxTransformer2DModel(**_config(DEPTH, SINGLE)), 0)
    nets_d = [_random(FluxControlNetModel(**_config(CN_DEPTH, CN_SINGLE)), 1 + i) for i in range(2)]
    sd = diffusers_to_bfl_transformer(main_d.state_dict())
    main = Flux(detect_flux_params({k: v.shape for k, v in sd.items()}, axes_dim=(16, 56, 56)))
    main.load_state_dict(sd)
    nets = []
    for net_d in nets_d:
        sd = diffusers_to_bfl_controlnet(net_d.state_dict())
        net = FluxControlNet(
            detect_controlnet_params({k: v.shape for k, v in sd.items()}, DIFFUSERS, axes_dim=(16, 56, 56))
        )
        net.load_state_dict(sd)
        nets.append(net.eval())
    return main.eval(), nets, main_d, nets_d


def inputs():
    gen = torch.Generator().manual_seed(7)
    return dict(
        x=torch.randn(1, 16, LATENT, LATENT, generator=gen),
        hint=torch.randn(1, 16, LATENT, LATENT, generator=gen),
        context=torch.randn(1, TOKENS, CONTEXT, generator=gen),
        pooled=torch.randn(1, POOLED, generator=gen),
        t=torch.tensor([0.6]),
        g=torch.tensor([3.5]),
    )


def timed(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median seconds per call of each function; calls alternate so load changes hit all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    with torch.no_grad():
        for fn in fns:
            for _ in range(2):
                fn()
        for _ in range(repeats):
            for fn, out in zip(fns, times):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def ours_step(main, nets, inp, count: int) -> Callable[[], object]:
    from models.control.apply import (
        ControlApplication,
        ControlInputs,
        ControlNetHandle,
        PreparedControl,
        control_extensions,
    )
    from models.flux.apply import flux_forward_latent
    from models.flux.packing import pack_latents

    prepared = [
        PreparedControl(
            ControlApplication(ControlNetHandle(n), torch.zeros(1, 3, 8, 8), 0.7, vae=object()),
            pack_latents(inp["hint"]),
            1.0,
            0.0,
        )
        for n in nets[:count]
    ]
    ci = ControlInputs(inp["x"], inp["t"], inp["context"], inp["pooled"], inp["g"])

    def step() -> object:
        ext = control_extensions(prepared, ci, 0.6, depth=DEPTH, depth_single=SINGLE) if prepared else None
        return flux_forward_latent(
            main, inp["x"], inp["t"], inp["context"], inp["pooled"], inp["g"], extensions=ext
        )

    return step


def diffusers_step(main_d, nets_d, inp, count: int) -> Callable[[], object]:
    from diffusers.models import FluxMultiControlNetModel

    from models.flux.packing import make_image_ids, make_text_ids, pack_latents

    img = pack_latents(inp["x"])
    hint = pack_latents(inp["hint"])
    img_ids = make_image_ids(1, LATENT // 2, LATENT // 2)[0]
    txt_ids = make_text_ids(1, TOKENS)[0]
    multi = FluxMultiControlNetModel(nets_d[:count]) if count > 1 else None
    common = dict(
        encoder_hidden_states=inp["context"],
        pooled_projections=inp["pooled"],
        timestep=inp["t"],
        img_ids=img_ids,
        txt_ids=txt_ids,
        guidance=inp["g"],
    )

    def step() -> object:
        samples: dict = {}
        if count == 1:
            double, single = nets_d[0](
                hidden_states=img, controlnet_cond=hint, conditioning_scale=0.7, return_dict=False, **common
            )
            samples = dict(controlnet_block_samples=double, controlnet_single_block_samples=single)
        elif count > 1:
            double, single = multi(
                hidden_states=img,
                controlnet_cond=[hint] * count,
                controlnet_mode=[torch.tensor([0])] * count,  # ignored by non-union nets
                conditioning_scale=[0.7] * count,
                return_dict=False,
                **common,
            )
            samples = dict(controlnet_block_samples=double, controlnet_single_block_samples=single)
        return main_d(hidden_states=img, return_dict=False, **common, **samples)[0]

    return step


def adaptive_calls(main, steps: int) -> tuple[int, int, float]:
    """(evaluations with CFG, with AdaptiveGuidance at 0.99, the sigma where it converged or 0)."""
    from models.flux.apply import flux_forward_latent
    from models.sampling import AdaptiveState, FlowModelSampling, adaptive_denoiser, cfg_denoiser, sample

    gen = torch.Generator().manual_seed(3)
    pos, neg = (torch.randn(1, TOKENS, CONTEXT, generator=gen) for _ in range(2))
    pooled = torch.randn(1, POOLED, generator=gen)
    rows: list[int] = []

    def model_fn(x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        rows.append(x.shape[0])
        v = flux_forward_latent(main, x, sigma, cond.expand(x.shape[0], -1, -1), pooled, 3.5)
        return x - sigma.reshape(-1, 1, 1, 1) * v

    noise = torch.randn(1, 16, 32, 32, generator=gen)
    ms = FlowModelSampling.flux_default()
    sigmas = torch.tensor([ms.percent_to_sigma(i / steps) for i in range(steps)] + [0.0])
    counts = []
    state = AdaptiveState()
    for denoiser in (
        cfg_denoiser(model_fn, pos, neg, 3.5),
        adaptive_denoiser(model_fn, pos, neg, 3.5, threshold=0.99, cfg_start_sigma=1.0, state=state),
    ):
        rows.clear()
        sample(
            denoiser,
            noise=noise,
            latent_image=torch.zeros_like(noise),
            sigmas=sigmas,
            sampler="euler",
            model_sampling=ms,
            noise_seed=0,
        )
        counts.append(sum(rows))
    return counts[0], counts[1], state.threshold_sigma


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    main_model, nets, main_d, nets_d = build()
    inp = inputs()
    rows = []
    base = {}
    for count in (0, 1, 2):
        ours, theirs = timed(
            [ours_step(main_model, nets, inp, count), diffusers_step(main_d, nets_d, inp, count)],
            args.repeats,
        )
        base.setdefault("ours", ours)
        base.setdefault("theirs", theirs)
        rows.append((count, ours, theirs))
    cfg_evals, adaptive_evals, converged = adaptive_calls(main_model, args.steps)
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    lines = [
        f"## ControlNet per-step cost and adaptive guidance — {time.strftime('%Y-%m-%d')} — CPU only "
        f"({platform.machine()}, CPython {platform.python_version()})",
        "",
        f"`python benchmarks/control.py --record` (median of {args.repeats} steps after 2 warm-up, ours and diffusers "
        f"alternating, 1 torch "
        f"thread, float32; transformer hidden {HIDDEN}, {DEPTH}+{SINGLE} blocks; ControlNets {CN_DEPTH}+{CN_SINGLE} "
        f"blocks; {LATENT}x{LATENT} latent = {LATENT * LATENT // 4} image tokens, {TOKENS} text tokens; "
        f"load average {load} on this shared machine)",
        "",
        "| ControlNets | ours s/step | diffusers s/step | ours / diffusers | ours over plain | diffusers over plain |",
        "|---|---|---|---|---|---|",
    ]
    for count, ours, theirs in rows:
        lines.append(
            f"| {count} | {ours:.4f} | {theirs:.4f} | {ours / theirs:.2f} | "
            f"{ours / base['ours']:.2f}x | {theirs / base['theirs']:.2f}x |"
        )
    lines += [
        "",
        f"Adaptive guidance (CFG 3.5, {args.steps} Euler steps, same transformer, 32x32 latent): plain CFG "
        f"evaluated {cfg_evals} conditionings, AdaptiveGuidance at threshold 0.99 evaluated {adaptive_evals} "
        f"({cfg_evals - adaptive_evals} saved, {100 * (cfg_evals - adaptive_evals) / cfg_evals:.0f}%; "
        f"converged at sigma {converged:.3f}; random weights, so where it converges says nothing about real models).",
        "",
        "GPU (full-size FLUX.1-dev + ControlNets, 1024x1024, bf16): not run (no GPU was available to this session).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
