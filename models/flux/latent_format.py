"""The FLUX.1 latent space: how LATENT values relate to what the transformer and the VAE decoder take.

LATENT values hold the VAE's un-scaled means (ComfyUI's convention). The transformer and the VAE
decoder work in "model space": (mean - shift) * scale. `process_in` goes LATENT -> model space,
`process_out` the other way, as ComfyUI's `latent_formats` name them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatentFormat:
    """Normalisation of one VAE's latents: model space = (mean - shift) * scale; `channels` per pixel."""

    scale: float
    shift: float
    channels: int

    def __post_init__(self) -> None:
        if self.scale == 0:
            raise ValueError("latent scale must be non-zero")
        if self.channels < 1:
            raise ValueError(f"latent channels must be >= 1, got {self.channels}")

    def process_in(self, samples: torch.Tensor) -> torch.Tensor:
        """LATENT samples (un-scaled VAE means) -> model space."""
        return (samples - self.shift) * self.scale

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        """Model space -> LATENT samples."""
        return latent / self.scale + self.shift


# FLUX.1's VAE (ComfyUI latent_formats.Flux).
FLUX1_LATENT = LatentFormat(scale=0.3611, shift=0.1159, channels=16)
