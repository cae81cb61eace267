"""Guiders: wrap a conditional model into the denoiser contract (CFG), and inpainting masks.

`cfg_denoiser` is ComfyUI's CFGGuider on x0 predictions; `masked_denoiser` is KSamplerX0Inpaint
(the unmasked region is pinned to the noised input latent at every model call); and
`differential_diffusion` is the per-step threshold mask of ComfyUI's DifferentialDiffusion node.
`dual_cfg_denoiser` is DualCFGGuider, `adaptive_denoiser` the AdaptiveGuidance / AdaptiveGuidanceV2
guiders (flux-formats §10.2-10.3), and `cfg_zero_star` the post-CFG function of CFGZeroStar.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .contract import Denoiser
from .errors import SamplingError
from .model_sampling import FlowModelSampling

ModelFn = Callable[[Tensor, Tensor, Any], Tensor]
"""A conditional model: `(x [B, C, h, w], sigma [B], cond) -> x0 [B, C, h, w]`."""

BatchConds = Callable[[Any, Any], Any]
"""`(positive, negative) -> one cond for the doubled batch [pos; neg]`, or None when they can't be batched."""

MaskFn = Callable[[Tensor, Tensor], Tensor]
"""`(sigma [B], denoise_mask [B, C, h, w]) -> the mask to use at this model call`."""


@dataclass(frozen=True, eq=False)
class PostCfgArgs:
    """What a post-CFG function sees (ComfyUI's `sampler_post_cfg_function` args), all [B, C, h, w]:
    the guided result `denoised`, the two predictions, the model input `x`, and the cfg scale."""

    denoised: Tensor
    cond_denoised: Tensor
    uncond_denoised: Tensor
    x: Tensor
    sigma: Tensor
    cfg: float


PostCfg = Callable[[PostCfgArgs], Tensor]
"""A function run after every CFG combination; returns the replacement x0."""


def _post_cfg(
    post_cfg: Sequence[PostCfg],
    denoised: Tensor,
    cond: Tensor,
    uncond: Tensor,
    x: Tensor,
    sigma: Tensor,
    cfg: float,
) -> Tensor:
    for fn in post_cfg:
        denoised = fn(PostCfgArgs(denoised, cond, uncond, x, sigma, cfg))
    return denoised


def _cfg_step(
    model_fn: ModelFn, x: Tensor, sigma: Tensor, positive: Any, negative: Any, both: Any
) -> tuple[Tensor, Tensor]:
    """(cond x0, uncond x0): one doubled batch when `both` is a batched cond, else two calls."""
    if both is not None:
        cond_x0, uncond_x0 = model_fn(torch.cat([x, x]), torch.cat([sigma, sigma]), both).chunk(2)
        return cond_x0, uncond_x0
    return model_fn(x, sigma, positive), model_fn(x, sigma, negative)


def cfg_combine(cond_x0: Tensor, uncond_x0: Tensor, cfg: float) -> Tensor:
    """Classifier-free guidance on x0 predictions: uncond + cfg * (cond - uncond)."""
    return uncond_x0 + (cond_x0 - uncond_x0) * cfg


def cfg_denoiser(
    model_fn: ModelFn,
    positive: Any,
    negative: Any = None,
    cfg: float = 1.0,
    *,
    batch_conds: BatchConds | None = None,
    post_cfg: Sequence[PostCfg] = (),
) -> Denoiser:
    """A denoiser doing CFG with `model_fn`; cfg == 1 (or no negative) evaluates the positive only.

    With `batch_conds`, positive and negative run as one doubled batch when it returns a cond.
    `post_cfg` functions (CFGZeroStar, ...) run on every CFG result (they are identities without
    an unconditional prediction, so the cfg 1 shortcut skips them).
    """
    if negative is None or math.isclose(cfg, 1.0):

        def conditional(x: Tensor, sigma: Tensor) -> Tensor:
            return model_fn(x, sigma, positive)

        return conditional

    both = batch_conds(positive, negative) if batch_conds is not None else None  # once, not per call

    def guided(x: Tensor, sigma: Tensor) -> Tensor:
        cond_x0, uncond_x0 = _cfg_step(model_fn, x, sigma, positive, negative, both)
        return _post_cfg(post_cfg, cfg_combine(cond_x0, uncond_x0, cfg), cond_x0, uncond_x0, x, sigma, cfg)

    return guided


def dual_cfg_denoiser(
    model_fn: ModelFn,
    cond1: Any,
    cond2: Any,
    negative: Any,
    cfg_conds: float = 8.0,
    cfg_cond2_negative: float = 8.0,
    *,
    nested: bool = False,
    post_cfg: Sequence[PostCfg] = (),
) -> Denoiser:
    """ComfyUI's DualCFGGuider on x0 predictions (c1, c2, n = cond1, cond2, negative).

    regular: CFG(c2 over n, cfg_cond2_negative) + (c1 - c2) * cfg_conds, where cfg_cond2_negative 1
    skips n and, with cfg_conds 1 too, c2 (a skipped prediction counts as zeros, as in ComfyUI).
    nested: n + cfg_cond2_negative * (CFG(c1 over c2, cfg_conds) - n), all three evaluated.
    """

    def regular(x: Tensor, sigma: Tensor) -> Tensor:
        skip_negative = math.isclose(cfg_cond2_negative, 1.0)
        skip_middle = skip_negative and math.isclose(cfg_conds, 1.0)
        positive = model_fn(x, sigma, cond1)
        middle = torch.zeros_like(positive) if skip_middle else model_fn(x, sigma, cond2)
        uncond = torch.zeros_like(positive) if skip_negative else model_fn(x, sigma, negative)
        guided = _post_cfg(
            post_cfg,
            cfg_combine(middle, uncond, cfg_cond2_negative),
            middle,
            uncond,
            x,
            sigma,
            cfg_cond2_negative,
        )
        return guided + (positive - middle) * cfg_conds

    def nested_cfg(x: Tensor, sigma: Tensor) -> Tensor:
        uncond, middle, positive = (model_fn(x, sigma, c) for c in (negative, cond2, cond1))
        text = _post_cfg(
            post_cfg, cfg_combine(positive, middle, cfg_conds), positive, middle, x, sigma, cfg_conds
        )
        return uncond + cfg_cond2_negative * (text - uncond)

    return nested_cfg if nested else regular


@dataclass
class AdaptiveState:
    """Per-run state of an adaptive guider: `converged` (at `threshold_sigma`) once the predictions
    aligned, `calls` model calls so far, `cond_only` / `guided` how many calls skipped / ran the uncond."""

    converged: bool = False
    threshold_sigma: float = 0.0
    calls: int = 0
    cond_only: int = 0
    guided: int = 0


def _cosine(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of two tensors flattened over the whole batch into one vector each."""
    return float(F.cosine_similarity(a.reshape(1, -1).double(), b.reshape(1, -1).double()).item())


def adaptive_denoiser(
    model_fn: ModelFn,
    positive: Any,
    negative: Any,
    cfg: float = 8.0,
    *,
    threshold: float = 0.99,
    cfg_start_sigma: float | None = None,
    initial_disabled_calls: int | None = None,
    batch_conds: BatchConds | None = None,
    post_cfg: Sequence[PostCfg] = (),
    state: AdaptiveState | None = None,
) -> Denoiser:
    """Adaptive guidance (asagi4's AdaptiveGuidance; with `initial_disabled_calls`, the V2 fork).

    At each call with sigma s: cfg 1, or convergence at an earlier call, evaluates the positive only.
    Otherwise both run: with `cfg_start_sigma`, calls at s >= cfg_start_sigma return plain CFG; later
    ones compare the cond / uncond x0 predictions, and a cosine similarity >= threshold (threshold
    < 1) marks convergence and returns the positive prediction (ComfyUI re-evaluates the positive for
    that; the result is the same), else the CFG result. V2: while the count of calls (this one
    included) is <= initial_disabled_calls the positive alone is evaluated, and there is no cfg
    start. Threshold 1.0 never converges, giving exactly `cfg_denoiser`'s results. State is per run
    (`state`), not per guider node as in the packs, so re-running a prompt gives the same image.
    """
    run = state if state is not None else AdaptiveState()
    both = batch_conds(positive, negative) if batch_conds is not None else None

    def cond_only(x: Tensor, sigma: Tensor) -> Tensor:
        run.cond_only += 1
        return model_fn(x, sigma, positive)

    def adaptive(x: Tensor, sigma: Tensor) -> Tensor:
        run.calls += 1
        s = float(sigma.reshape(-1)[0])
        if math.isclose(cfg, 1.0) or run.converged:
            return cond_only(x, sigma)
        if initial_disabled_calls is not None and run.calls <= initial_disabled_calls:
            return cond_only(x, sigma)
        check = initial_disabled_calls is not None or cfg_start_sigma is None or s < cfg_start_sigma
        run.guided += 1
        cond_x0, uncond_x0 = _cfg_step(model_fn, x, sigma, positive, negative, both)
        if check and threshold < 1.0 and _cosine(cond_x0, uncond_x0) >= threshold:
            run.converged, run.threshold_sigma = True, s
            return cond_x0
        return _post_cfg(post_cfg, cfg_combine(cond_x0, uncond_x0, cfg), cond_x0, uncond_x0, x, sigma, cfg)

    return adaptive


def cfg_zero_star(args: PostCfgArgs) -> Tensor:
    """CFG-Zero* (ComfyUI's CFGZeroStar post-CFG function): with alpha the per-sample projection
    coefficient of (x - cond) on (x - uncond), x0 + uncond * (alpha - 1) + cfg * uncond * (1 - alpha)."""
    pos = (args.x - args.cond_denoised).reshape(args.x.shape[0], -1)
    neg = (args.x - args.uncond_denoised).reshape(args.x.shape[0], -1)
    alpha = (pos * neg).sum(dim=1, keepdim=True) / ((neg**2).sum(dim=1, keepdim=True) + 1e-8)
    alpha = alpha.reshape(-1, *([1] * (args.x.ndim - 1)))
    uncond = args.uncond_denoised
    return args.denoised + uncond * (alpha - 1.0) + args.cfg * uncond * (1.0 - alpha)


def batch_tensor_conds(
    positive: Mapping[str, Tensor], negative: Mapping[str, Tensor]
) -> dict[str, Tensor] | None:
    """A `BatchConds` for conds that are dicts of per-sample tensors: concatenated along the batch
    axis when both have the same keys and the same non-batch shapes, else None."""
    if positive.keys() != negative.keys():
        return None
    if any(positive[k].shape[1:] != negative[k].shape[1:] for k in positive):
        return None
    return {k: torch.cat([positive[k], negative[k]]) for k in positive}


def prepare_denoise_mask(mask: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """A noise mask ([h, w], [B, h, w] or [B, 1, h, w], any resolution) -> float32 `shape` [B, C, h, w].

    Bilinear resize to the latent size, channels repeated, batch repeated or cut (ComfyUI's reshape_mask).
    """
    if len(shape) != 4:
        raise SamplingError(f"denoise masks are supported for 4-D latents, got latent shape {tuple(shape)}")
    if mask.ndim < 2:
        raise SamplingError(f"a denoise mask needs at least 2 dims (h, w), got shape {tuple(mask.shape)}")
    batch, channels, height, width = shape
    m = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    m = F.interpolate(m, size=(height, width), mode="bilinear")
    if m.shape[1] < channels:
        m = m.repeat(1, channels, 1, 1)[:, :channels]
    if m.shape[0] < batch:
        m = m.repeat(math.ceil(batch / m.shape[0]), 1, 1, 1)
    return m[:batch]


def masked_denoiser(
    denoiser: Denoiser,
    *,
    latent_image: Tensor,
    noise: Tensor,
    denoise_mask: Tensor,
    model_sampling: FlowModelSampling,
    mask_fn: MaskFn | None = None,
) -> Denoiser:
    """Inpainting: where the mask is 0 the input is replaced by the input latent noised to the current
    sigma, and the x0 estimate by the input latent itself (ComfyUI's KSamplerX0Inpaint).

    latent_image, noise [B, C, h, w] in model space; denoise_mask [B, C, h, w] in 0..1 (1 = regenerate).
    """
    if denoise_mask.shape != latent_image.shape:
        raise SamplingError(
            f"denoise mask shape {tuple(denoise_mask.shape)} does not match the latent "
            f"{tuple(latent_image.shape)}; use prepare_denoise_mask"
        )

    def inpaint(x: Tensor, sigma: Tensor) -> Tensor:
        mask = denoise_mask if mask_fn is None else mask_fn(sigma, denoise_mask)
        keep = 1.0 - mask
        sigma_b = sigma.reshape(sigma.shape[0], *([1] * (noise.ndim - 1)))
        x = x * mask + model_sampling.noise_scaling(sigma_b, noise, latent_image) * keep
        return denoiser(x, sigma) * mask + latent_image * keep

    return inpaint


def differential_diffusion(
    sigmas: Tensor, model_sampling: FlowModelSampling, strength: float = 1.0
) -> MaskFn:
    """ComfyUI's DifferentialDiffusion: at each call the mask becomes (mask >= threshold), where the
    threshold falls linearly in model time from 1 at sigmas[0] to 0 at max(sigmas[-1], sigma_min);
    strength < 1 blends that binary mask with the original one."""
    sigma_to = max(model_sampling.sigma_min, float(sigmas[-1]))
    ts_from = model_sampling.timestep(float(sigmas[0]))
    ts_to = model_sampling.timestep(sigma_to)

    def threshold_mask(sigma: Tensor, denoise_mask: Tensor) -> Tensor:
        threshold = (model_sampling.timestep(float(sigma.reshape(-1)[0])) - ts_to) / (ts_from - ts_to)
        binary = (denoise_mask >= threshold).to(denoise_mask.dtype)
        if strength and strength < 1:
            return strength * binary + (1 - strength) * denoise_mask
        return binary

    return threshold_mask
