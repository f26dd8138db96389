"""Any image Pillow opens, as the 8-bit RGB a diffusion model trains on.

``Image.convert("RGB")`` is right for the usual modes (palette, grayscale, CMYK, RGBA...), but
not for high bit depths: it clips, so a 16-bit grayscale PNG (mode ``I;16``, values up to 65535)
becomes almost all white. Those modes are scaled to 0..255 first.
"""

from __future__ import annotations

from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_EIGHT_BIT_FROM_SIXTEEN = 255 / 65535


def to_rgb8(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, high bit depths scaled rather than clipped."""
    if image.mode in SIXTEEN_BIT_MODES:
        image = image.convert("I")  # exact: 32-bit integers hold every 16-bit value
        return _scaled_to_gray(image, _EIGHT_BIT_FROM_SIXTEEN).convert("RGB")
    if image.mode == "I":  # 32-bit integers: 16-bit data when above 255 (PNG, TIFF), else 8-bit
        _, high = image.getextrema()
        return _scaled_to_gray(image, _EIGHT_BIT_FROM_SIXTEEN if high > 255 else 1.0).convert("RGB")
    if image.mode == "F":  # floats: 0..1 (most writers) or 0..255
        _, high = image.getextrema()
        return _scaled_to_gray(image, 255.0 if high <= 1.0 else 1.0).convert("RGB")
    if image.mode in ("La", "RGBa"):  # premultiplied alpha: Pillow converts only from the plain form
        image = image.convert(image.mode[:-1] + "A")
    return image.convert("RGB")


def _scaled_to_gray(image: Image.Image, scale: float) -> Image.Image:
    # For I and F images Pillow applies a linear point() as scale * v + offset, in one pass.
    return image.point(lambda value: value * scale + 0.5).convert("L")
