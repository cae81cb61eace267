"""Output specs of the value types built-in nodes return (ComfyUI's type names, unnamed)."""

from __future__ import annotations

from executor.schema import Output

IMAGE = Output("IMAGE")
MASK = Output("MASK")
LATENT = Output("LATENT")
CONDITIONING = Output("CONDITIONING")
MODEL = Output("MODEL")
CLIP = Output("CLIP")
VAE = Output("VAE")
SIGMAS = Output("SIGMAS")
NOISE = Output("NOISE")
GUIDER = Output("GUIDER")
SAMPLER = Output("SAMPLER")
INT = Output("INT")
FLOAT = Output("FLOAT")
STRING = Output("STRING")
BOOLEAN = Output("BOOLEAN")
