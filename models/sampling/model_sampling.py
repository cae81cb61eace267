"""Flow-matching model sampling for FLUX (ComfyUI's CONST parameterisation).

A flow model sees x_sigma = (1 - sigma) * x0 + sigma * noise, sigma in [0, 1], and predicts the
velocity v = noise - x0, so x0 = x - sigma * v. `FlowModelSampling` holds the time shift that maps
a uniform time t in (0, 1] to sigma, the table of discrete sigmas that table-based schedulers pick
from, and the noise scaling at the start and end of sampling. Two shift forms exist in ComfyUI:

- "exponential" (ModelSamplingFlux, FLUX dev-type models): sigma = e^mu / (e^mu + 1/t - 1) with
  `shift` = mu; 10000-entry table; the model is given sigma itself as its timestep.
- "linear" (ModelSamplingDiscreteFlow: schnell, the SD3 node): sigma = a t / (1 + (a - 1) t) with
  `shift` = a and t = timestep / multiplier; 1000-entry table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from torch import Tensor

ShiftForm = Literal["exponential", "linear"]
T = TypeVar("T", Tensor, float)

# ModelSamplingFlux node: mu is linear in the image token count between these two points.
_BASE_TOKENS = 256
_MAX_TOKENS = 4096


@dataclass(frozen=True)
class FlowModelSampling:
    """Time shift + discrete sigma table of a flow model; the defaults are ComfyUI's FLUX dev ones."""

    shift: float = 1.15
    multiplier: float = 1.0
    form: ShiftForm = "exponential"
    num_timesteps: int = 10000

    def __post_init__(self) -> None:
        if self.form not in ("exponential", "linear"):
            raise ValueError(f"shift form must be 'exponential' or 'linear', got {self.form!r}")
        if not math.isfinite(self.shift) or (self.form == "linear" and self.shift <= 0):
            raise ValueError(f"shift must be finite (and > 0 for the linear form), got {self.shift}")
        if not self.multiplier > 0:
            raise ValueError(f"multiplier must be > 0, got {self.multiplier}")
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {self.num_timesteps}")

    # --- constructors (ComfyUI's model configs and ModelSampling* nodes) -------------------------

    @classmethod
    def flux_default(cls, shift: float = 1.15) -> FlowModelSampling:
        """Guidance-distilled FLUX (dev, Kontext, Fill, ...): ModelSamplingFlux with mu = 1.15."""
        return cls(shift=shift)

    @classmethod
    def schnell(cls) -> FlowModelSampling:
        """FLUX schnell-type models: discrete flow, shift 1.0, multiplier 1.0 (sigma = t)."""
        return cls(shift=1.0, multiplier=1.0, form="linear", num_timesteps=1000)

    @classmethod
    def flux_for_resolution(
        cls, width: int, height: int, *, max_shift: float = 1.15, base_shift: float = 0.5
    ) -> FlowModelSampling:
        """The ModelSamplingFlux node: mu linear in tokens = width*height/256 (256 -> base, 4096 -> max)."""
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        slope = (max_shift - base_shift) / (_MAX_TOKENS - _BASE_TOKENS)
        intercept = base_shift - slope * _BASE_TOKENS
        tokens = width * height / (8 * 8 * 2 * 2)
        return cls(shift=tokens * slope + intercept)

    @classmethod
    def sd3(cls, shift: float = 3.0, multiplier: float = 1000.0) -> FlowModelSampling:
        """The ModelSamplingSD3 node (multiplier 1.0 is ModelSamplingAuraFlow)."""
        return cls(shift=shift, multiplier=multiplier, form="linear", num_timesteps=1000)

    # --- time <-> sigma ----------------------------------------------------------------------------

    def _shift_time(self, t: T) -> T:
        """Uniform time t in [0, 1] -> sigma."""
        if self.form == "exponential":
            e = math.exp(self.shift)
            if isinstance(t, Tensor):
                return e / (e + (1 / t - 1))
            return 0.0 if t <= 0 else e / (e + (1 / t - 1))
        if self.shift == 1.0:
            return t
        return self.shift * t / (1 + (self.shift - 1) * t)

    def sigma(self, timestep: T) -> T:
        """Model timestep -> sigma (tensor or float in, same out)."""
        return self._shift_time(timestep / self.multiplier)

    def timestep(self, sigma: T) -> T:
        """Sigma -> the timestep the model is given (sigma * multiplier; FLUX dev: sigma itself)."""
        return sigma * self.multiplier

    def sigma_table(self) -> Tensor:
        """float32 [num_timesteps]: sigma at t = (i + 1) / num_timesteps, ascending; last is 1.0."""
        t = torch.arange(1, self.num_timesteps + 1) / self.num_timesteps
        return self.sigma(t * self.multiplier).to(torch.float32)

    @property
    def sigma_min(self) -> float:
        return float(self.sigma_table()[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigma_table()[-1])

    def percent_to_sigma(self, percent: float) -> float:
        """Sampling progress (0 = start, 1 = end) -> sigma; <= 0 gives 1.0 and >= 1 gives 0.0."""
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(self._shift_time(1.0 - percent))

    # --- CONST parameterisation --------------------------------------------------------------------

    def noise_scaling(self, sigma: Tensor | float, noise: Tensor, latent: Tensor) -> Tensor:
        """Start of sampling: sigma * noise + (1 - sigma) * latent (img2img when sigma < 1)."""
        s = _broadcast(sigma, noise)
        return s * noise + (1.0 - s) * latent

    def inverse_noise_scaling(self, sigma: Tensor | float, latent: Tensor) -> Tensor:
        """End of sampling: latent / (1 - sigma_last) (a no-op when the schedule ends at 0)."""
        return latent / (1.0 - _broadcast(sigma, latent))

    def calculate_input(self, sigma: Tensor | float, x: Tensor) -> Tensor:
        """What the network sees: the noisy latent unscaled."""
        return x

    def calculate_denoised(self, sigma: Tensor | float, model_output: Tensor, model_input: Tensor) -> Tensor:
        """x0 = x - sigma * v for a velocity prediction v [B, C, h, w] and sigma scalar or [B]."""
        return model_input - model_output * _broadcast(sigma, model_output)


def _broadcast(sigma: Tensor | float, like: Tensor) -> Tensor | float:
    """A scalar stays a scalar; a per-sample sigma [B] becomes [B, 1, ..., 1] to match `like`."""
    if not isinstance(sigma, Tensor):
        return sigma
    if sigma.numel() == 1:
        return sigma.reshape(())
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))
