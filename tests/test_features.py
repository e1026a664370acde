"""Feature computation plumbing: which files are read, in which order and batches, and what bad files do."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.errors import DataError
from gan.metrics.features import ClassifierExtractor, features_of, file_batches, list_images, read_uint8


def _png(path: Path, size: tuple[int, int], value: int) -> Path:
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)
    return path


def test_list_images_is_flat_sorted_and_filters_suffixes(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.txt", "d.webp"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.png").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "d.webp"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no images"):
        list_images(tmp_path / "empty")


@pytest.mark.parametrize("workers", [1, 3])
def test_file_batches_keep_order_and_cut_at_size_changes(tmp_path, workers):
    sizes = [(8, 8)] * 5 + [(8, 6)] * 2 + [(8, 8)]
    files = [_png(tmp_path / f"{i:02d}.png", size, 10 * i) for i, size in enumerate(sizes)]
    batches = list(file_batches(files, 3, workers=workers))
    assert [tuple(b.shape) for b in batches] == [(3, 3, 8, 8), (2, 3, 8, 8), (2, 3, 6, 8), (1, 3, 8, 8)]
    assert torch.cat([b[:, 0, 0, 0] for b in batches]).tolist() == [10 * i for i in range(8)]
    assert all(b.dtype == torch.uint8 for b in batches)


@pytest.mark.parametrize("workers", [1, 4])
def test_unreadable_file_is_named(tmp_path, workers):
    files = [_png(tmp_path / f"{i}.png", (4, 4), i) for i in range(20)]
    files[13].write_bytes(b"not a png")
    with pytest.raises(DataError, match="13.png: cannot read image"):
        list(file_batches(files, 4, workers=workers))


def test_read_uint8_converts_to_rgb(tmp_path):
    Image.new("L", (5, 3), 7).save(tmp_path / "g.png")
    image = read_uint8(tmp_path / "g.png")
    assert image.shape == (3, 3, 5) and image.dtype == torch.uint8 and int(image.max()) == 7


def test_features_of_stacks_float64_in_order():
    class Twice:
        info = {"extractor": "test"}

        def __call__(self, images):
            return images.float().flatten(1)[:, :2] * 2

    batches = [torch.full((2, 3, 1, 1), 1, dtype=torch.uint8), torch.full((1, 3, 1, 1), 5, dtype=torch.uint8)]
    out = features_of(Twice(), batches)
    assert out.dtype == np.float64 and out.tolist() == [[2, 2], [2, 2], [10, 10]]
    with pytest.raises(ValueError, match="no images"):
        features_of(Twice(), [])


def test_classifier_extractor_maps_to_unit_range_and_restores_mode():
    class Probe(torch.nn.Module):
        feature_dim = 3

        def features(self, x):
            self.seen = (x.min().item(), x.max().item(), self.training)
            return x.mean(dim=(2, 3))

    probe = Probe().train()
    extractor = ClassifierExtractor(probe)
    out = extractor(torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2))
    assert probe.seen == (-1.0, 1.0, False) and probe.training
    assert out.shape == (1, 3) and extractor.info["extractor"] == "classifier"


def test_sixteen_bit_images_are_scaled_not_whitened_and_float_is_refused(tmp_path):
    """FID folders follow gan.data's one rule: 16-bit grey is scaled to 8 bits (40000 * 255 / 65535 = 155.6 -> 156;
    a plain RGB conversion clips it to 255), a float image has no defined range and is refused by name."""
    Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert torch.equal(read_uint8(tmp_path / "deep.png"), torch.full((3, 4, 4), 156, dtype=torch.uint8))
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(DataError, match="float.tif: 32-bit float image"):
        read_uint8(tmp_path / "float.tif")
