"""The model families the engine trains, by ``model.family``: each supplies its parts (base.py).

SD 1.x and 2.x share one implementation (sd.py); SDXL (sdxl.py) and FLUX.1 (flux.py) have their own.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.families.base import Family
from engine.families.sd import StableDiffusion
from engine.families.sdxl import StableDiffusionXL


def _flux() -> Family:
    from engine.families.flux import Flux  # imported by a Flux run only

    return Flux()


# A new family object per run: Flux keeps what loading told it (dev or schnell, the T5 token count).
FAMILIES: dict[str, Callable[[], Family]] = {
    "sd1": lambda: StableDiffusion("sd1"),
    "sd2": lambda: StableDiffusion("sd2"),
    "sdxl": StableDiffusionXL,
    "flux": _flux,
}


def family_for(name: str) -> Family:
    """The family of ``model.family`` (the config's validation has refused any other name)."""
    return FAMILIES[name]()
