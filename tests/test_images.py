"""Every image mode Pillow opens becomes the 8-bit RGB the model should see (issue: 16-bit
grayscale PNGs were trained as white images)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from loratui.images import to_rgb8

# (mode, pixel values written, file format that keeps the mode, the RGB expected for each pixel)
CASES = [
    ("I;16", [0, 257, 32896, 65535], "PNG", [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255, 255, 255)]),
    ("I;16B", [0, 257, 32896, 65535], "TIFF", [(0, 0, 0), (1, 1, 1), (128, 128, 128), (255, 255, 255)]),
    ("I", [0, 1000, 40000, 65535], "TIFF", [(0, 0, 0), (4, 4, 4), (156, 156, 156), (255, 255, 255)]),
    ("I", [0, 10, 128, 255], "TIFF", [(0, 0, 0), (10, 10, 10), (128, 128, 128), (255, 255, 255)]),
    ("F", [0.0, 0.25, 0.5, 1.0], "TIFF", [(0, 0, 0), (64, 64, 64), (128, 128, 128), (255, 255, 255)]),
    ("L", [0, 10, 128, 255], "PNG", [(0, 0, 0), (10, 10, 10), (128, 128, 128), (255, 255, 255)]),
    ("1", [0, 255, 0, 255], "PNG", [(0, 0, 0), (255, 255, 255), (0, 0, 0), (255, 255, 255)]),
    (
        "LA",
        [(10, 255), (128, 0), (200, 255), (255, 255)],
        "PNG",
        [(10, 10, 10), (128, 128, 128), (200, 200, 200), (255, 255, 255)],
    ),
    (
        "RGB",
        [(255, 0, 0), (0, 255, 0), (0, 0, 255), (1, 2, 3)],
        "PNG",
        [(255, 0, 0), (0, 255, 0), (0, 0, 255), (1, 2, 3)],
    ),
    (
        "RGBA",
        [(255, 0, 0, 255), (0, 255, 0, 0), (0, 0, 255, 9), (1, 2, 3, 255)],
        "PNG",
        [(255, 0, 0), (0, 255, 0), (0, 0, 255), (1, 2, 3)],
    ),
    (
        "CMYK",
        [(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255), (0, 255, 255, 0)],
        "TIFF",
        [(255, 255, 255), (0, 255, 255), (0, 0, 0), (255, 0, 0)],
    ),
]


def pixels_of(image: Image.Image) -> list:
    return [image.getpixel((x, 0)) for x in range(image.width)]


@pytest.mark.parametrize(("mode", "values", "file_format", "expected"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_each_mode_becomes_the_right_8_bit_rgb(tmp_path: Path, mode, values, file_format, expected):
    image = Image.new(mode, (len(values), 1))
    image.putdata(values)
    path = tmp_path / f"image.{file_format.lower()}"
    image.save(path, format=file_format)
    with Image.open(path) as opened:
        assert opened.mode == mode, "the file keeps the mode under test"
        converted = to_rgb8(opened)
    assert converted.mode == "RGB"
    assert pixels_of(converted) == expected


def test_a_palette_image_keeps_its_colours(tmp_path: Path):
    image = Image.new("RGB", (2, 1))
    image.putdata([(200, 30, 40), (5, 6, 250)])
    path = tmp_path / "palette.png"
    image.convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(path)
    with Image.open(path) as opened:
        assert opened.mode == "P"
        assert pixels_of(to_rgb8(opened)) == [(200, 30, 40), (5, 6, 250)]


def test_the_engine_trains_a_16_bit_png_as_its_gray_not_white(tmp_path: Path):
    from engine.data import load_pixels
    from loratui.dataset import ImageEntry

    image = Image.new("I;16", (64, 64), 32896)  # mid-gray in 16 bits
    path = tmp_path / "gray16.png"
    image.save(path)
    entry = ImageEntry(path, 64, 64, "gray", "file", (64, 64), "1_gray", False)
    pixels = load_pixels(entry)  # [-1, 1]
    assert abs(float(pixels.mean())) < 0.01  # 128/255 -> 0.0039; the old white was 1.0
