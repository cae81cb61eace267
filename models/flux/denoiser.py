"""The bridge from graph values to the sampling contract: MODEL handle + CONDITIONING -> x0 predictions.

`prepare_conditioning` turns a CONDITIONING list into `FluxCond`s once per sampling run;
`FluxPredictor(handle, ...)(x, sigma, conds)` evaluates the FLUX transformer for every cond active at
`sigma` and returns the denoised estimate x0 = x - sigma * v (ComfyUI's CONST parameterisation).
Latents inside sampling are in model space: LATENT samples after `process_in`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from models.imaging.resize import resize

from .latent_format import FLUX1_LATENT

LATENT_CHANNELS = FLUX1_LATENT.channels
DEFAULT_GUIDANCE = 3.5  # what ComfyUI feeds a guidance-distilled model when the conditioning has none


process_in = FLUX1_LATENT.process_in
process_out = FLUX1_LATENT.process_out


@dataclass(frozen=True, eq=False)
class FluxCond:
    """One CONDITIONING entry as the transformer needs it.

    context [1|B, T, D] (T5 tokens), pooled [1|B, vec] (CLIP-L); guidance None = no guidance
    embedding; concat_* are LATENT-space tensors for Canny/Depth/Fill models; reference latents
    (Kontext) are LATENT-space [1, 16, h, w]. The entry is active while
    percent_to_sigma(end_percent) <= sigma <= percent_to_sigma(start_percent); `strength` weights it
    against other active entries.
    """

    context: torch.Tensor
    pooled: torch.Tensor | None
    guidance: float | None = DEFAULT_GUIDANCE
    concat_image: torch.Tensor | None = None
    concat_mask: torch.Tensor | None = None
    reference_latents: tuple[torch.Tensor, ...] = ()
    reference_method: str = "offset"
    start_percent: float = 0.0
    end_percent: float = 1.0
    strength: float = 1.0
    control: Any = None  # models.control.apply.ControlApplication (the chain's newest), or None
    attention_mask: torch.Tensor | None = None  # additive [B, T + h*w, T + h*w] (StyleModelApply attn_bias)
    attention_mask_img_shape: tuple[int, int] = (1, 1)  # the h x w grid the mask's image part is stored at


def prepare_conditioning(conditioning: Sequence[Sequence[Any]]) -> tuple[FluxCond, ...]:
    """CONDITIONING list -> FluxConds (keys FLUX does not use are ignored)."""
    out = []
    for index, entry in enumerate(conditioning):
        if len(entry) != 2 or not isinstance(entry[1], Mapping):
            raise TypeError(f"conditioning entry {index} is not [tensor, dict]")
        context, options = entry
        guidance = options.get("guidance", DEFAULT_GUIDANCE)
        out.append(
            FluxCond(
                context=context,
                pooled=options.get("pooled_output"),
                guidance=None if guidance is None else float(guidance),
                concat_image=options.get("concat_latent_image"),
                concat_mask=options.get("concat_mask"),
                reference_latents=tuple(options.get("reference_latents") or ()),
                reference_method=options.get("reference_latents_method", "offset"),
                start_percent=float(options.get("start_percent", 0.0)),
                end_percent=float(options.get("end_percent", 1.0)),
                strength=float(options.get("strength", 1.0)),
                control=options.get("control"),
                attention_mask=options.get("attention_mask"),
                attention_mask_img_shape=tuple(options.get("attention_mask_img_shape") or (1, 1)),
            )
        )
    return tuple(out)


def _to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat (or cut) the batch axis to `batch` like ComfyUI's resize_to_batch_size for whole multiples."""
    if t.shape[0] == batch:
        return t
    reps = math.ceil(batch / t.shape[0])
    return t.repeat(reps, *([1] * (t.ndim - 1)))[:batch]


def mask_channels(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel mask [B, (C,) H, W] -> 64 channels at latent size [B, 64, height, width] (FLUX Fill).

    The mask is averaged over channels, resized (bilinear, center) to 8x the latent size, and each
    8x8 pixel cell becomes the channel axis (channel = 8 * row_in_cell + col_in_cell).
    """
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    mask = mask.float().mean(dim=1, keepdim=True)
    mask = resize(mask, width * 8, height * 8, "bilinear", "center")
    b = mask.shape[0]
    cells = mask.reshape(b, height, 8, width, 8).permute(0, 2, 4, 1, 3)  # [B, 8, 8, h, w]
    return cells.reshape(b, 64, height, width)


def concat_channels(cond: FluxCond, x: torch.Tensor, extra: int) -> torch.Tensor:
    """The `extra` conditioning channels appended to the noisy latent x [B, 16, h, w] (model space)."""
    b, _, h, w = x.shape
    image = cond.concat_image if cond.concat_image is not None else torch.zeros_like(x)
    image = resize(image.to(device=x.device, dtype=torch.float32), w, h, "bilinear", "center")
    # ComfyUI processes the concat image even when it is the zero default.
    parts = [process_in(_to_batch(image, b))]
    if extra > LATENT_CHANNELS:  # Fill: mask channels follow the masked-image latent
        mask = cond.concat_mask if cond.concat_mask is not None else torch.ones_like(x[:, :1])
        parts.append(_to_batch(mask_channels(mask.to(x.device), h, w), b))
    out = torch.cat(parts, dim=1)
    if out.shape[1] != extra:
        raise ValueError(
            f"the model expects {extra} conditioning channels but the conditioning gives {out.shape[1]}"
        )
    return out


ForwardFn = Callable[..., torch.Tensor]


class FluxPredictor:
    """`(x [B,16,h,w], sigma [B], conds) -> x0` for one FLUX transformer (already on its device).

    `forward` is `models.flux.apply.flux_forward_latent` (injectable for tests); it broadcasts a
    batch-1 context/pooled to the latent batch and casts to the compute dtype. `percent_to_sigma`
    maps a conditioning's start/end percent to sigma (the model sampling's).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        params: Any,
        *,
        percent_to_sigma: Callable[[float], float],
        device: torch.device,
        forward: ForwardFn | None = None,
        controls: Mapping[int, Sequence[Any]] | None = None,
        attention: Sequence[Any] = (),
    ) -> None:
        if forward is None:
            from models.flux.apply import flux_forward_latent

            forward = flux_forward_latent
        self.forward: ForwardFn = forward
        self.module = module
        self.guidance_embed = bool(params.guidance_embed)
        self.vec_in_dim = int(params.vec_in_dim)
        self.extra_channels = params.in_channels // 4 - LATENT_CHANNELS  # params count packed (2x2) features
        self.percent_to_sigma = percent_to_sigma
        self.device = device
        self.calls = 0
        # prepared ControlNet chains (models.control.apply.PreparedControl) by id of a cond's `control`
        self.controls = dict(controls or {})
        self.depths = (int(getattr(params, "depth", 0)), int(getattr(params, "depth_single_blocks", 0)))
        # IP-Adapter attention for every double block (models.flux.extensions.ExtraAttention), from the MODEL
        self.attention = tuple(attention)

    def active(self, cond: FluxCond, sigma: float) -> bool:
        start = self.percent_to_sigma(cond.start_percent)
        end = self.percent_to_sigma(cond.end_percent)
        return end <= sigma <= start

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, parts: Sequence[FluxCond]) -> torch.Tensor:
        """Transformer output, float32 [B, 16, h, w]; x holds len(parts) equal slices, one per cond."""
        first, b = parts[0], x.shape[0] // len(parts)
        slices = x.split(b)
        inputs = x
        if self.extra_channels > 0:
            extra = [concat_channels(c, part, self.extra_channels) for c, part in zip(parts, slices)]
            inputs = torch.cat([x, torch.cat(extra)], dim=1)
        kw: dict[str, Any] = {}
        if first.reference_latents:  # batch_conds only pairs conds with the same references
            kw["ref_latents"] = tuple(
                process_in(r.to(self.device, torch.float32)) for r in first.reference_latents
            )
            kw["ref_method"] = first.reference_method
        guidance = None
        if self.guidance_embed and first.guidance is not None:
            # batch_conds pairs guided entries only with guided ones
            values = [c.guidance if c.guidance is not None else first.guidance for c in parts]
            guidance = torch.cat([torch.full((b,), g, dtype=torch.float32) for g in values])
        # no CLIP: ComfyUI feeds zeros for the vector input
        pooled = [c.pooled if c.pooled is not None else torch.zeros(1, self.vec_in_dim) for c in parts]
        context = [c.context for c in parts]
        if len(parts) > 1:
            pooled, context = [_to_batch(t, b) for t in pooled], [_to_batch(t, b) for t in context]
        self.calls += 1
        context_in = torch.cat(context).to(self.device, torch.float32)
        pooled_in = torch.cat(pooled).to(self.device, torch.float32)
        guidance_in = None if guidance is None else guidance.to(self.device)
        if first.control is not None:  # batch_conds pairs only entries with the same control chain
            ext = self._control_extensions(first.control, x, sigma, context_in, pooled_in, guidance_in)
            if ext is not None:
                kw["extensions"] = ext
        if first.attention_mask is not None:  # batch_conds never pairs masked entries
            kw["extensions"] = self._with_mask(kw.get("extensions"), first, x, kw.get("ref_latents", ()))
        if self.attention:
            import dataclasses

            from models.flux.extensions import FluxExtensions

            kw["extensions"] = dataclasses.replace(
                kw.get("extensions") or FluxExtensions(), double_attention=self.attention
            )
        # float32 in; the forward broadcasts batch-1 context/pooled and casts to the compute dtype
        v = self.forward(
            self.module,
            inputs.to(self.device),
            sigma.to(self.device, torch.float32),
            context_in,
            pooled_in,
            guidance=guidance_in,
            **kw,
        )
        return v.float()

    def _with_mask(self, ext: Any, cond: FluxCond, x: torch.Tensor, refs: Sequence[torch.Tensor]) -> Any:
        """`ext` (or no extensions) plus the conditioning's attention mask as a joint-attention bias."""
        import dataclasses

        from models.flux.attention_mask import joint_attention_bias
        from models.flux.extensions import FluxExtensions
        from models.formats.fp8 import module_compute_dtype

        assert cond.attention_mask is not None
        grid = ((x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2)
        extra = sum(((r.shape[-2] + 1) // 2) * ((r.shape[-1] + 1) // 2) for r in refs)
        bias = joint_attention_bias(
            cond.attention_mask,
            cond.attention_mask_img_shape,
            grid,
            extra,
            dtype=module_compute_dtype(self.module),
        ).to(self.device)
        return dataclasses.replace(ext or FluxExtensions(), attention_mask=bias)

    def _control_extensions(
        self,
        control: Any,
        x: torch.Tensor,
        sigma: torch.Tensor,
        context: torch.Tensor,
        pooled: torch.Tensor,
        guidance: torch.Tensor | None,
    ) -> Any:
        """ControlNet residuals for this call (the noisy latent without concat channels), or None."""
        from models.control.apply import ControlInputs, control_extensions

        prepared = self.controls.get(id(control))
        if prepared is None:
            raise ValueError(
                "a conditioning carries a ControlNet that was not prepared for this sampling run"
            )
        b = x.shape[0]
        inputs = ControlInputs(
            x.to(self.device),
            sigma.to(self.device, torch.float32),
            _to_batch(context, b),
            _to_batch(pooled, b),
            guidance,
        )
        return control_extensions(
            prepared, inputs, float(sigma.reshape(-1)[0]), depth=self.depths[0], depth_single=self.depths[1]
        )

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, conds: Sequence[FluxCond] | BatchedConds
    ) -> torch.Tensor:
        s = float(sigma.reshape(-1)[0])
        if isinstance(conds, BatchedConds):
            if all(self.active(c, s) for c in conds.parts):
                return self._x0(x, sigma, self.velocity(x, sigma, conds.parts))
            halves = zip(x.chunk(len(conds.parts)), sigma.chunk(len(conds.parts)), conds.parts)
            return torch.cat([self(part, sig, (c,)) for part, sig, c in halves])
        total = torch.zeros_like(x)
        weight = 0.0
        for cond in conds:
            if not self.active(cond, s):
                continue
            total += cond.strength * self._x0(x, sigma, self.velocity(x, sigma, (cond,)))
            weight += cond.strength
        # ComfyUI divides by a tiny count when no entry is active, which yields zeros
        return total / weight if weight > 0 else total

    @staticmethod
    def _x0(x: torch.Tensor, sigma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x - sigma.reshape(-1, 1, 1, 1).to(x) * v.to(x)


@dataclass(frozen=True, eq=False)
class BatchedConds:
    """Several single-entry conditionings evaluated as one batch (CFG's positive and negative)."""

    parts: tuple[FluxCond, ...]


def batch_conds(positive: Sequence[FluxCond], negative: Sequence[FluxCond]) -> BatchedConds | None:
    """The sampling library's `BatchConds` hook: pair one positive and one negative entry for a single
    doubled-batch forward when their tensors line up; None (two forwards) otherwise."""
    if len(positive) != 1 or len(negative) != 1:
        return None
    p, n = positive[0], negative[0]
    if p.context.shape != n.context.shape or p.context.shape[0] != 1:
        return None
    pooled_shapes = [None if c.pooled is None else c.pooled.shape for c in (p, n)]
    if pooled_shapes[0] != pooled_shapes[1]:
        return None
    if (p.guidance is None) != (n.guidance is None):
        return None
    same_refs = len(p.reference_latents) == len(n.reference_latents) and all(
        a is b for a, b in zip(p.reference_latents, n.reference_latents)
    )
    if not same_refs or (p.reference_latents and p.reference_method != n.reference_method):
        return None
    if p.control is not n.control:  # ControlNet applies give positive and negative the same chain
        return None
    if p.attention_mask is not None or n.attention_mask is not None:
        return None
    return BatchedConds((p, n))
