"""The model families the engine trains, by ``model.family``: each supplies its parts (base.py).

SD 1.x and 2.x share one implementation (sd.py); SDXL and Flux get a module each beside it.
"""

from __future__ import annotations

from engine.families.base import Family
from engine.families.sd import StableDiffusion

FAMILIES: dict[str, Family] = {
    "sd1": StableDiffusion("sd1"),
    "sd2": StableDiffusion("sd2"),
}


def family_for(name: str) -> Family:
    """The family of ``model.family`` (the config's validation has refused any other name)."""
    return FAMILIES[name]
