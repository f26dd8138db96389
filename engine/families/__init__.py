"""The model families the engine trains, by ``model.family``: each supplies its parts (base.py).

SD 1.x and 2.x share one implementation (sd.py); SDXL has its own (sdxl.py), and Flux will.
"""

from __future__ import annotations

from engine.families.base import Family
from engine.families.sd import StableDiffusion
from engine.families.sdxl import StableDiffusionXL

FAMILIES: dict[str, Family] = {
    "sd1": StableDiffusion("sd1"),
    "sd2": StableDiffusion("sd2"),
    "sdxl": StableDiffusionXL(),
}


def family_for(name: str) -> Family:
    """The family of ``model.family`` (the config's validation has refused any other name)."""
    return FAMILIES[name]
