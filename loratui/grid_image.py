"""The checkpoint x weight grid as one labelled PNG (torch-free: Pillow only).

Layout (``GridLayout``): a title band on top (the prompt, wrapped, then seed, steps, CFG and
sampler), a header band with each column's LoRA weight, a label band on the left with each
row's checkpoint (and its validation loss, the best one marked), then the cells edge to edge.
So the image is ``left + columns x cell width`` wide and ``top + rows x cell height`` high.

The font is Pillow's built-in one (``ImageFont.load_default``): nothing is downloaded or looked
up on the system. The facts of the grid go into the PNG's text chunks too, so a tool (or a test)
reads the rows and columns back without looking at pixels.
"""

from __future__ import annotations

import io
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from loratui.atomic import write_bytes_atomic

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
BEST_INK = (0, 110, 40)
MIN_FONT_PX = 12
PAD_PX = 6
PROMPT_SHOWN_CHARS = 600  # a longer prompt is cut in the title (the PNG's text keeps all of it)


@dataclass(frozen=True)
class GridLabels:
    """What the axes say."""

    rows: list[str]  # "epoch 1", ...
    columns: list[float]  # the LoRA weights
    title: str  # the prompt
    subtitle: str  # "seed 42, 20 steps, CFG 7.5, euler_a"
    notes: list[str] | None = None  # per row, beside its label: "val 0.1234", or ""
    best_row: int | None = None  # the row marked best (lowest validation loss)


@dataclass(frozen=True)
class GridLayout:
    left: int  # the label band's width
    top: int  # the title and header bands' height
    cell_width: int
    cell_height: int
    rows: int
    columns: int

    @property
    def size(self) -> tuple[int, int]:
        return self.left + self.columns * self.cell_width, self.top + self.rows * self.cell_height


def font_for(cell_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own font at a size that reads beside a cell (a 1024 px cell gets about 42 px text)."""
    size = max(MIN_FONT_PX, cell_height // 24)
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType: its fixed bitmap font
        return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text or " ")
    return right - left, bottom - top


def _line_height(font) -> int:
    return _text_size(font, "Ag|")[1] + PAD_PX // 2


def _row_texts(labels: GridLabels) -> list[str]:
    notes = labels.notes or [""] * len(labels.rows)
    texts = []
    for index, (row, note) in enumerate(zip(labels.rows, notes, strict=True)):
        best = "  * best" if labels.best_row == index else ""
        texts.append(f"{row}\n{note}{best}" if note or best else row)
    return texts


def weight_label(weight: float) -> str:
    return f"{weight:g}"


def _title_lines(labels: GridLabels, font, width: int) -> list[str]:
    char_width = max(1, _text_size(font, "abcdefghijklmnopqrstuvwxyz")[0] // 26)
    per_line = max(20, (width - 2 * PAD_PX) // char_width)
    prompt = labels.title if len(labels.title) <= PROMPT_SHOWN_CHARS else labels.title[:PROMPT_SHOWN_CHARS] + "..."
    return textwrap.wrap(prompt, per_line) or [""]


def layout_for(labels: GridLabels, cell_width: int, cell_height: int) -> GridLayout:
    font = font_for(cell_height)
    line = _line_height(font)
    widest_row = max(max(_text_size(font, part)[0] for part in text.split("\n")) for text in _row_texts(labels))
    left = max(widest_row, _text_size(font, "checkpoint")[0]) + 2 * PAD_PX
    width = left + len(labels.columns) * cell_width
    title_lines = len(_title_lines(labels, font, width)) + 1  # the prompt, then the settings
    top = (title_lines + 2) * line + 3 * PAD_PX  # the title, then "LoRA weight" and the weights
    return GridLayout(left, top, cell_width, cell_height, len(labels.rows), len(labels.columns))


def compose_grid(cells: list[list[Image.Image]], labels: GridLabels) -> tuple[Image.Image, GridLayout]:
    """One image of ``cells[row][column]`` (all one size) with labelled axes."""
    cell_width, cell_height = cells[0][0].size
    layout = layout_for(labels, cell_width, cell_height)
    font = font_for(cell_height)
    line = _line_height(font)
    grid = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(grid)
    y = PAD_PX
    for text in [*_title_lines(labels, font, layout.size[0]), labels.subtitle]:
        draw.text((PAD_PX, y), text, fill=INK, font=font)
        y += line
    y += PAD_PX
    draw.text((layout.left, y), "LoRA weight ->", fill=INK, font=font)
    draw.text((PAD_PX, y + line), "checkpoint", fill=INK, font=font)
    y += line
    for column, weight in enumerate(labels.columns):
        text = weight_label(weight)
        x = layout.left + column * cell_width + (cell_width - _text_size(font, text)[0]) // 2
        draw.text((x, y), text, fill=INK, font=font)
    for row, text in enumerate(_row_texts(labels)):
        top = layout.top + row * cell_height
        ink = BEST_INK if labels.best_row == row else INK
        draw.multiline_text((PAD_PX, top + PAD_PX), text, fill=ink, font=font, spacing=PAD_PX // 2)
        for column, cell in enumerate(cells[row]):
            grid.paste(cell.convert("RGB"), (layout.left + column * cell_width, top))
    return grid, layout


def grid_metadata(labels: GridLabels, facts: dict) -> dict[str, str]:
    """The PNG's text chunks: the rows and columns, and the prompt's settings."""
    return {
        "loratui.grid.rows": json.dumps(labels.rows),
        "loratui.grid.columns": json.dumps(labels.columns),
        "loratui.grid": json.dumps(facts, sort_keys=True),
        "prompt": labels.title,
    }


def save_grid_png(image: Image.Image, path: Path, text: dict[str, str]) -> int:
    """Write the PNG atomically (a reader never sees half a grid); its size in bytes."""
    info = PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value)  # iTXt: UTF-8, any prompt's characters
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    data = buffer.getvalue()
    write_bytes_atomic(path, data)
    return len(data)
