"""How counts and sizes are written for people, the same way in every place that prints one.

- :func:`count`: "1 epoch", "2 epochs", "0 images", never "1 epochs" or "epoch(s)";
  :func:`noun_for` gives the noun alone.
- :func:`size`: bytes in binary units (B, KiB, MiB, GiB, TiB), the units VRAM and RAM are
  measured in, so a file size, a GPU's memory and the engine's RAM read alike everywhere.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``number`` and the noun in the form it takes: count(1, "epoch") -> "1 epoch".

    ``plural`` for nouns that do not just take an "s" (count(2, "batch", "batches"))."""
    return f"{number:,} {noun_for(number, noun, plural)}"


def noun_for(number: int, noun: str, plural: str | None = None) -> str:
    """The noun alone in the form ``number`` takes (for columns: "1 image  x 10 repeats")."""
    return noun if number == 1 else (plural or f"{noun}s")


def size(value: float | None, missing: str = "–") -> str:
    """Bytes in binary units: whole KiB and MiB from 10 on (one decimal below), GiB and TiB with
    one decimal (VRAM is sold in GiB); ``missing`` when the value is not known."""
    if value is None:
        return missing
    value = max(0, value)
    if value < KIB:
        return f"{int(value)} B"
    for unit, scale in (("KiB", KIB), ("MiB", MIB)):
        if value < scale * 1024:
            scaled = value / scale
            return f"{scaled:.1f} {unit}" if scaled < 10 else f"{scaled:.0f} {unit}"
    if value < TIB:
        return f"{value / GIB:.1f} GiB"
    return f"{value / TIB:.1f} TiB"
