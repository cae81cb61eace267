"""ComfyUI's `comfy.samplers` name lists: the samplers and schedulers Fluxloom's KSampler runs.

Packs put `KSampler.SAMPLERS` / `.SCHEDULERS` in their schemas (and rgthree uses them as output
types); the names offered are exactly those our sampling nodes accept.
"""

from __future__ import annotations

from models.sampling import SAMPLER_NAMES as _SAMPLERS
from models.sampling import SCHEDULER_NAMES as _SCHEDULERS

from ..missing import module_getattr

__getattr__ = module_getattr(__name__)

SAMPLER_NAMES: list[str] = list(_SAMPLERS)
KSAMPLER_NAMES: list[str] = [n for n in SAMPLER_NAMES if n not in ("ddim", "uni_pc", "uni_pc_bh2")]
SCHEDULER_NAMES: list[str] = list(_SCHEDULERS)
SCHEDULER_HANDLERS: dict[str, object] = {name: name for name in SCHEDULER_NAMES}


class KSampler:
    """Only the name lists; sample through the KSampler node (`nodes.KSampler`)."""

    SCHEDULERS = SCHEDULER_NAMES
    SAMPLERS = SAMPLER_NAMES
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}
