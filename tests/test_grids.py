"""gan/grids.py: labelled translation grids (enlarged tiles, names drawn in) and atomic PNG files."""

import numpy as np
import pytest
import torch
from PIL import Image

from gan.grids import MIN_TILE, labelled_grid, save_png, tile_scale


@pytest.mark.parametrize(("size", "scale"), [(32, 3), (16, 6), (30, 4), (96, 1), (128, 1), (1, 96)])
def test_tile_scale_shows_tiles_at_least_96_px(size, scale):
    assert tile_scale(size) == scale
    assert size * tile_scale(size) >= MIN_TILE


def _columns(rows: int, cols: int, size: int) -> list[torch.Tensor]:
    """Tiles of one distinct flat colour each (values exactly representable after the [-1, 1] -> uint8 step)."""
    out = []
    for c in range(cols):
        levels = torch.tensor([[(37 * (r * cols + c) + 11) % 250 + 3, 17 * c + 5, 9 * r + 40] for r in range(rows)])
        out.append((levels.float() / 127.5 - 1).view(rows, 3, 1, 1).expand(rows, 3, size, size).clone())
    return out


def test_every_tile_is_enlarged_with_nearest_neighbour():
    columns = _columns(rows=2, cols=4, size=16)
    grid = labelled_grid(columns, ["input", "palette", "outline", "texture"], ["palette", "outline"])
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    pixels = grid.permute(1, 2, 0).reshape(-1, 3)
    for tiles in columns:
        for tile in tiles:
            colour = ((tile[:, 0, 0] + 1) * 127.5).round().to(torch.uint8)
            count = int((pixels == colour).all(dim=1).sum())
            assert count == 96 * 96  # a 16 px tile shown at 6x: exactly one 96 x 96 block of its colour


def test_a_pixel_pattern_survives_enlargement_exactly():
    tile = torch.rand(1, 3, 8, 8) * 2 - 1
    grid = labelled_grid([tile], ["input"], ["a"]).permute(1, 2, 0).numpy()
    expected = ((tile[0] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    big = expected.repeat(12, axis=0).repeat(12, axis=1)  # 8 px x 12 = 96 px
    hits = [
        (y, x)
        for y in range(grid.shape[0] - 95)
        for x in range(grid.shape[1] - 95)
        if (grid[y, x] == big[0, 0]).all() and np.array_equal(grid[y : y + 96, x : x + 96], big)
    ]
    assert len(hits) == 1


def test_names_are_drawn_above_the_columns_and_left_of_the_rows():
    columns = _columns(rows=2, cols=3, size=32)
    named = labelled_grid(columns, ["input", "palette", "night"], ["palette", "outline"])
    blank = labelled_grid(columns, ["", "", ""], ["", ""])
    assert named.shape[1] == blank.shape[1]  # the same header height either way
    top = 2 * 18  # the header band: two lines of text above the first row of tiles
    assert not torch.equal(named[:, :top], blank[:, :top])  # column names
    left = 40  # inside the row-label margin
    assert not torch.equal(named[:, top:, :left], blank[:, top:, :left])  # row names


def test_long_names_are_shortened_not_overlapping():
    columns = _columns(rows=1, cols=2, size=32)
    grid = labelled_grid(columns, ["input", "a_very_long_attribute_name_" * 4], ["Black_Hair, Male, Young, Smiling"])
    assert grid.shape[2] < 600  # the margin for row names is capped; names wrap or end in "..."


def test_save_png_is_atomic_and_exact(tmp_path):
    image = (torch.rand(3, 20, 30) * 255).to(torch.uint8)
    path = tmp_path / "images" / "translations_last.png"
    save_png(image, path)
    save_png(image, path)  # replaced in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["translations_last.png"]  # no temporary file left
    back = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    assert torch.equal(back, image)
