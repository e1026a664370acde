"""Translation grids a person can read: tiles enlarged with nearest-neighbour, the column names ("input", then each
target domain) drawn above the columns and each row's source label at its left; written as PNG atomically."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

MIN_TILE = 96  # a tile is shown at least this many pixels wide (32 px tiles x3)
_PAD = 4  # pixels between tiles
_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)


def tile_scale(size: int, min_tile: int = MIN_TILE) -> int:
    """The integer nearest-neighbour factor that shows a ``size`` px tile at no less than ``min_tile`` px."""
    return max(1, math.ceil(min_tile / max(size, 1)))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable bundled font
    except (TypeError, OSError, ImportError):  # older Pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int, lines: int) -> list[str]:
    """``text`` broken at commas or spaces into at most ``lines`` lines of ``width`` pixels (the last shortened)."""
    words = text.replace(",", ", ").split()
    out: list[str] = []
    for word in words:
        if out and draw.textlength(f"{out[-1]} {word}", font=font) <= width:
            out[-1] = f"{out[-1]} {word}"
        else:
            out.append(word)
    if len(out) > lines:
        out = [*out[: lines - 1], " ".join(out[lines - 1 :])]
    return [_fit(draw, line, font, width) for line in out]


def labelled_grid(
    columns: Sequence[torch.Tensor], column_names: Sequence[str], row_names: Sequence[str], min_tile: int = MIN_TILE
) -> torch.Tensor:
    """A (3, H, W) uint8 image of ``columns`` (each (N, 3, h, w) in [-1, 1]: the inputs, then one translation per
    target) as N rows, tiles enlarged to at least ``min_tile`` px, ``column_names`` above and ``row_names`` (each
    row's source) at the left."""
    rows, _, h, w = columns[0].shape
    scale = tile_scale(max(h, w), min_tile)
    th, tw = h * scale, w * scale
    font_size = max(11, min(18, tw // 7))
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = font_size + 4
    left = min(max(int(max((probe.textlength(n, font=font) for n in row_names), default=0)) + 2 * _PAD, 48), 2 * tw)
    top = 2 * line_height + _PAD
    width = left + len(columns) * (tw + _PAD) + _PAD
    height = top + rows * (th + _PAD) + _PAD
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for c, (tiles, name) in enumerate(zip(columns, column_names)):
        x0 = left + c * (tw + _PAD)
        for y, line in enumerate(_wrap(draw, name, font, tw, 2)):
            draw.text((x0 + tw / 2, _PAD + y * line_height), line, fill=_INK, font=font, anchor="ma")
        pixels = ((tiles.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        pixels = pixels.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
        for r in range(rows):
            tile = Image.fromarray(pixels[r].permute(1, 2, 0).numpy())
            canvas.paste(tile, (x0, top + r * (th + _PAD)))
    if row_names:
        draw.text((_PAD, _PAD), _fit(draw, "source", font, left - 2 * _PAD), fill=_INK, font=font)
    for r, name in enumerate(row_names):
        lines = _wrap(draw, name, font, left - 2 * _PAD, max(1, th // line_height))
        y0 = top + r * (th + _PAD) + (th - len(lines) * line_height) / 2
        for i, line in enumerate(lines):
            draw.text((_PAD, y0 + i * line_height), line, fill=_INK, font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def save_png(image: torch.Tensor, path: Path) -> None:
    """Write a (3, H, W) uint8 image as PNG atomically: a reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
