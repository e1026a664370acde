"""Tests for gan.data: synthetic style domains, folder and CelebA sources, transforms and data errors."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from gan.build import build_data
from gan.config import CelebAConfig, DataConfig, FolderConfig, SyntheticConfig, load_config
from gan.data import DataBundle, image_transform, render
from gan.data.base import image_dimensions, is_readable, list_images, load_rgb
from gan.data.synthetic import STYLES, random_content, stream_generator
from gan.errors import ConfigError, DataError

SMALL_SYNTHETIC = DataConfig(
    source="synthetic", image_size=32, synthetic=SyntheticConfig(images_per_domain=16, test_images_per_domain=4)
)


def synthetic(**changes: object) -> DataBundle:
    syn = dataclasses.replace(SMALL_SYNTHETIC.synthetic, **{k: v for k, v in changes.items() if k != "image_size"})
    size = changes.get("image_size", SMALL_SYNTHETIC.image_size)
    return build_data(dataclasses.replace(SMALL_SYNTHETIC, synthetic=syn, image_size=size))


def all_items(dataset: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.stack(labels)


def write_image(path: Path, rgb: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def write_noise(path: Path, size: int = 32, mode: str = "RGB") -> Path:
    """An image of seeded noise: it does not compress, so cutting its file's tail cuts into the pixel data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def write_domains(base: Path, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        for i in range(count):
            write_image(base / name / f"{i:03d}.png", (10 * i, 0, 0))


# ------------------------------------------------------------------------------------------------------ synthetic
def test_synthetic_is_deterministic_by_seed_and_differs_across_seeds() -> None:
    first, again, other = synthetic(seed=3), synthetic(seed=3), synthetic(seed=4)
    torch.testing.assert_close(first.train.images, again.train.images, rtol=0, atol=0)
    torch.testing.assert_close(first.paired.targets, again.paired.targets, rtol=0, atol=0)
    assert not torch.equal(first.train.images, other.train.images)
    assert not torch.equal(first.test.images, other.test.images)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_synthetic_shapes_ranges_and_dtypes(size: int) -> None:
    domains = ["palette", "outline", "texture", "night"]
    bundle = synthetic(image_size=size, images_per_domain=3, test_images_per_domain=2, domains=domains)
    assert bundle.domains == domains and not bundle.multi_label and bundle.skipped == 0
    assert (len(bundle.train), len(bundle.test)) == (12, 8)
    for dataset in (bundle.train, bundle.test):
        images, labels = all_items(dataset)
        assert images.shape[1:] == (3, size, size) and images.dtype == torch.float32
        assert images.min() >= -1 and images.max() <= 1
        assert labels.dtype == torch.int64 and labels.shape == (len(dataset),)
    assert all_items(bundle.train)[1].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    paired = bundle.paired
    assert paired.images.shape == (8, 3, size, size) and paired.labels.dtype == torch.int64
    assert paired.targets.shape == (8, 4, 3, size, size) and paired.targets.dtype == torch.float32


def test_default_style_domains_are_registered() -> None:
    assert {"palette", "outline", "texture", "night"} <= set(STYLES.names())
    assert set(SyntheticConfig().domains) <= set(STYLES.names())


@pytest.mark.parametrize("size", [32, 64])
def test_every_style_differs_clearly_from_every_other(size: int) -> None:
    content = random_content(32, stream_generator(0, "styles"))
    rendered = {name: render(content, name, size) for name in STYLES.names()}
    for a, b in itertools.combinations(rendered, 2):
        # Half the [0, 1] pixel scale: the smallest per-image mean difference over all layouts.
        per_image = (rendered[a] - rendered[b]).abs().mean(dim=(1, 2, 3)) / 2
        assert per_image.min() > 0.1, (a, b, per_image.min())


def test_styles_show_the_shapes() -> None:
    content = random_content(8, stream_generator(1, "shapes"))
    for name in STYLES.names():
        images = render(content, name, 32)
        # Every image has structure beyond its background: shapes are drawn, and nothing saturates to one colour.
        assert (images.flatten(1).std(dim=1) > 0.05).all(), name


def test_paired_targets_hold_the_test_images() -> None:
    bundle = synthetic()
    paired = bundle.paired
    n = torch.arange(len(paired.labels))
    torch.testing.assert_close(paired.targets[n, paired.labels], paired.images, rtol=0, atol=0)
    images, labels = all_items(bundle.test)
    torch.testing.assert_close(images, paired.images, rtol=0, atol=0)
    assert torch.equal(labels, paired.labels)


def test_render_reproduces_dataset_items() -> None:
    bundle = synthetic()
    test = bundle.test
    for index in (0, 5, len(test) - 1):
        style = bundle.domains[int(test.labels[index])]
        torch.testing.assert_close(render(test.content[index], style, 32)[0], test[index][0], rtol=0, atol=0)


def test_train_and_test_content_are_disjoint() -> None:
    bundle = synthetic(images_per_domain=64, test_images_per_domain=16)
    train, test = bundle.train.content, bundle.test.content
    # Continuous layout parameters from separate RNG streams: no test layout repeats a training one.
    same = (test.centers.flatten(1)[:, None] == train.centers.flatten(1)[None]).all(dim=-1)
    assert not same.any()
    flat_train = bundle.train.images.flatten(1)
    assert not (bundle.test.images.flatten(1)[:, None] == flat_train[None]).all(dim=-1).any()


def test_training_content_differs_between_domains() -> None:
    bundle = synthetic()
    centers = bundle.train.content.centers.view(len(bundle.domains), -1)
    for a, b in itertools.combinations(range(len(bundle.domains)), 2):
        assert not torch.equal(centers[a], centers[b])


def test_synthetic_flip_only_in_training() -> None:
    torch.manual_seed(0)
    bundle = synthetic()
    stored = bundle.train.images[0].float() / 127.5 - 1
    draws = [bundle.train[0][0] for _ in range(40)]
    assert any(torch.equal(d, stored) for d in draws) and any(torch.equal(d, stored.flip(-1)) for d in draws)
    assert not torch.equal(stored, stored.flip(-1))
    assert all(torch.equal(bundle.test[0][0], bundle.paired.images[0]) for _ in range(20))
    unflipped = build_data(SMALL_SYNTHETIC, train_flip=False)
    assert all(torch.equal(unflipped.train[0][0], stored) for _ in range(20))


def test_default_synthetic_size_builds() -> None:
    bundle = build_data(DataConfig(image_size=32))
    assert (len(bundle.train), len(bundle.test)) == (4 * 512, 4 * 64)
    assert bundle.paired.targets.shape == (256, 4, 3, 32, 32)


def test_unknown_style_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown synthetic style 'watercolour'"):
        synthetic(domains=["palette", "watercolour"])


# --------------------------------------------------------------------------------------------------------- folder
def folder_config(root: Path, **changes: object) -> DataConfig:
    return DataConfig(source="folder", image_size=8, folder=FolderConfig(root=str(root), **changes))


def test_folder_ratio_split_is_per_domain_deterministic_and_complete(tmp_path: Path) -> None:
    write_domains(tmp_path, {"neutral": 10, "happy": 10, "angry": 5})
    bundle = build_data(folder_config(tmp_path, test_ratio=0.2))
    assert bundle.domains == ["angry", "happy", "neutral"]
    assert not bundle.multi_label and bundle.paired is None and bundle.skipped == 0
    counts = {
        name: (int((bundle.train.labels == i).sum()), int((bundle.test.labels == i).sum()))
        for i, name in enumerate(bundle.domains)
    }
    assert counts == {"angry": (4, 1), "happy": (8, 2), "neutral": (8, 2)}
    train, test = set(bundle.train.paths), set(bundle.test.paths)
    assert not train & test and len(train | test) == 25
    labels = torch.cat([bundle.train.labels, bundle.test.labels])
    for path, label in zip(bundle.train.paths + bundle.test.paths, labels):
        assert path.parent.name == bundle.domains[int(label)]
    again = build_data(folder_config(tmp_path, test_ratio=0.2))
    assert again.test.paths == bundle.test.paths
    other_seed = build_data(folder_config(tmp_path, test_ratio=0.2, split_seed=7))
    assert other_seed.test.paths != bundle.test.paths


def test_folder_items_are_tensors_in_range(tmp_path: Path) -> None:
    write_domains(tmp_path, {"a": 3, "b": 3})
    bundle = build_data(folder_config(tmp_path, test_ratio=0.4))
    image, label = bundle.train[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    assert label.dtype == torch.int64 and label.dim() == 0


def test_folder_domains_from_config_set_the_label_order(tmp_path: Path) -> None:
    write_domains(tmp_path, {"a": 2, "b": 2, "c": 2})
    bundle = build_data(folder_config(tmp_path, domains=["c", "a"], test_ratio=0.0))
    assert bundle.domains == ["c", "a"] and len(bundle.test) == 0
    pairs = [(p.parent.name, int(label)) for p, label in zip(bundle.train.paths, bundle.train.labels)]
    assert pairs == [("c", 0), ("c", 0), ("a", 1), ("a", 1)]


def test_folder_split_folders(tmp_path: Path) -> None:
    write_domains(tmp_path / "train", {"x": 3, "y": 2})
    write_domains(tmp_path / "test", {"x": 1, "y": 2})
    bundle = build_data(folder_config(tmp_path, split="folders"))
    assert bundle.domains == ["x", "y"]
    assert bundle.train.labels.tolist() == [0, 0, 0, 1, 1] and bundle.test.labels.tolist() == [0, 1, 1]
    assert all(p.is_relative_to(tmp_path / "train") for p in bundle.train.paths)
    assert all(p.is_relative_to(tmp_path / "test") for p in bundle.test.paths)


def test_folder_finds_extensions_case_insensitively(tmp_path: Path) -> None:
    for name in ("a.JPG", "b.jpeg", "c.Png", "d.bmp", "e.webp", "nested/f.png"):
        suffix = Path(name).suffix.lower()
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}[suffix]
        (tmp_path / "dom" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 6), (1, 2, 3)).save(tmp_path / "dom" / name, format=fmt)
    (tmp_path / "dom" / "notes.txt").write_text("not an image")
    write_domains(tmp_path, {"other": 1})
    bundle = build_data(folder_config(tmp_path, test_ratio=0.0))
    found = sorted(p.name for p in bundle.train.paths if p.parent.name != "other")
    assert found == ["a.JPG", "b.jpeg", "c.Png", "d.bmp", "e.webp", "f.png"]
    assert all(bundle.train[i][0].shape == (3, 8, 8) for i in range(len(bundle.train)))


@pytest.mark.parametrize(
    ("layout", "changes", "message"),
    [
        ({}, {}, "no domain sub-folders"),
        ({"a": 2, "empty": 0}, {}, "empty: no images"),
        ({"a": 2}, {"domains": ["a", "missing"]}, "missing: domain folder not found"),
        ({"a": 2}, {"split": "folders"}, "train: folder not found"),
    ],
)
def test_folder_errors_name_the_path(tmp_path: Path, layout: dict, changes: dict, message: str) -> None:
    write_domains(tmp_path, layout)
    for name in layout:
        (tmp_path / name).mkdir(exist_ok=True)  # also the empty ones
    with pytest.raises(DataError, match=message) as info:
        build_data(folder_config(tmp_path, **changes))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def test_missing_root_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere: dataset folder not found"):
        build_data(folder_config(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="data.folder.root is empty"):
        build_data(DataConfig(source="folder"))


def test_os_errors_while_building_become_data_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_domains(tmp_path, {"a": 1})

    def refuse(self: Path) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(DataError, match=f"{tmp_path}: Permission denied"):
        build_data(folder_config(tmp_path))


def test_corrupt_image_raises_when_read_naming_the_file(tmp_path: Path) -> None:
    write_domains(tmp_path, {"a": 2, "b": 2})
    bad = tmp_path / "a" / "zz_bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    config = folder_config(tmp_path, test_ratio=0.0)
    with pytest.raises(DataError, match=r"zz_bad.png: cannot read image .*\(1 bad file\(s\) in .*skip_bad_images"):
        build_data(config)  # data.check_images (default): every image decoded before any run begins
    bundle = build_data(dataclasses.replace(config, check_images=False))  # lazy: building does not read pixels
    index = bundle.train.paths.index(bad)
    with pytest.raises(DataError, match="zz_bad.png: cannot read image") as info:
        bundle.train[index]
    assert "\n" not in str(info.value)


def test_skip_bad_images_drops_and_counts_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_domains(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "bad1.png").write_bytes(b"garbage")
    truncated = write_noise(tmp_path / "b" / "truncated.png")
    truncated.write_bytes(truncated.read_bytes()[:-200])  # cut into the pixel data
    config = dataclasses.replace(folder_config(tmp_path, test_ratio=0.0), skip_bad_images=True)
    with caplog.at_level(logging.WARNING):
        bundle = build_data(config)
    assert bundle.skipped == 2 and len(bundle.train) == 6
    assert {p.name for p in bundle.train.paths}.isdisjoint({"bad1.png", "truncated.png"})
    # One warning in all, naming the first; every file with its reason in the notes (for the run's train.log).
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "skipped 2 file(s): " in warnings[0] and "1 more in train.log" in warnings[0]
    assert [Path(note.split(": ")[0]).name for note in bundle.notes] == ["bad1.png", "truncated.png"]


def test_skip_bad_images_with_only_bad_files_is_an_error(tmp_path: Path) -> None:
    write_domains(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.jpg").write_bytes(b"nope")
    config = dataclasses.replace(folder_config(tmp_path), skip_bad_images=True)
    with pytest.raises(DataError, match="b: none of its 1 images could be read"):
        build_data(config)


# --------------------------------------------------------------------------------------------------------- celeba
ATTRS = ["5_o_Clock_Shadow", "Black_Hair", "Blond_Hair", "Male", "Young"]


def write_celeba(tmp_path: Path, n: int = 12, lines: list[str] | None = None) -> DataConfig:
    """An attribute file with ``n`` rows (attribute j of image i is 1 when (i >> j) & 1) and the images."""
    image_dir = tmp_path / "images"
    rows = []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        write_image(image_dir / name, (i * 20 % 256, 0, 0), size=(10, 12))
        rows.append(name + "  " + " ".join("1" if (i >> j) & 1 else "-1" for j in range(len(ATTRS))))
    attr_file = tmp_path / "list_attr_celeba.txt"
    attr_file.write_text("\n".join([str(n), " ".join(ATTRS), *(lines if lines is not None else rows)]) + "\n")
    celeba = CelebAConfig(
        image_dir=str(image_dir), attr_file=str(attr_file), attributes=["Blond_Hair", "Male"], test_count=4
    )
    return DataConfig(source="celeba", image_size=8, celeba=celeba)


def test_celeba_labels_are_float_multi_label(tmp_path: Path) -> None:
    bundle = build_data(write_celeba(tmp_path))
    assert bundle.multi_label and bundle.domains == ["Blond_Hair", "Male"] and bundle.paired is None
    assert (len(bundle.train), len(bundle.test)) == (8, 4)
    for dataset in (bundle.train, bundle.test):
        for path, label in zip(dataset.paths, dataset.labels):
            i = int(path.stem) - 1
            assert label.tolist() == [float((i >> 2) & 1), float((i >> 3) & 1)]
    image, label = bundle.train[0]
    assert image.shape == (3, 8, 8) and label.dtype == torch.float32 and label.shape == (2,)


@pytest.mark.parametrize(("seed", "test_count"), [(1234, 4), (1234, 1), (5, 3)])
def test_celeba_split_follows_stargan(tmp_path: Path, seed: int, test_count: int) -> None:
    config = write_celeba(tmp_path, n=12)
    config = dataclasses.replace(
        config, celeba=dataclasses.replace(config.celeba, split_seed=seed, test_count=test_count)
    )
    bundle = build_data(config)
    # StarGAN's data_loader: read the data lines, random.seed(1234); random.shuffle(lines); first ones -> test.
    lines = Path(config.celeba.attr_file).read_text().splitlines()[2:]
    state = random.getstate()
    random.seed(seed)
    random.shuffle(lines)
    random.setstate(state)
    expected = [line.split()[0] for line in lines]
    assert [p.name for p in bundle.test.paths] == expected[:test_count]
    assert [p.name for p in bundle.train.paths] == expected[test_count:]


def test_celeba_missing_attribute_suggests_a_close_match(tmp_path: Path) -> None:
    config = write_celeba(tmp_path)
    config = dataclasses.replace(config, celeba=dataclasses.replace(config.celeba, attributes=["Blonde_Hair"]))
    with pytest.raises(DataError, match=r"list_attr_celeba.txt: attribute 'Blonde_Hair' .*'Blond_Hair'"):
        build_data(config)
    config = dataclasses.replace(config, celeba=dataclasses.replace(config.celeba, attributes=["Zzz"]))
    with pytest.raises(DataError, match="available: 5_o_Clock_Shadow, Black_Hair"):
        build_data(config)


@pytest.mark.parametrize(
    "bad_line",
    ["000003.jpg 1 -1 1", "000003.jpg 1 -1 1 -1 yes", "000003.jpg 1 -1 1 -1 1 1"],
)
def test_celeba_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str) -> None:
    good = ["000001.jpg 1 1 1 1 1", "000002.jpg -1 -1 -1 -1 -1"]
    config = write_celeba(tmp_path, n=3, lines=[*good, bad_line])
    if "yes" in bad_line:  # a bad value counts only in a selected column
        config = dataclasses.replace(config, celeba=dataclasses.replace(config.celeba, attributes=["Young"]))
    with pytest.raises(DataError, match=r"list_attr_celeba.txt:5: expected a file name and 5 values"):
        build_data(config)


@pytest.mark.parametrize(
    ("field", "message"), [("attr_file", "attribute file not found"), ("image_dir", "image folder not found")]
)
def test_celeba_missing_paths_are_data_errors(tmp_path: Path, field: str, message: str) -> None:
    config = write_celeba(tmp_path)
    missing = str(tmp_path / "missing")
    config = dataclasses.replace(config, celeba=dataclasses.replace(config.celeba, **{field: missing}))
    with pytest.raises(DataError, match=f"missing: {message}"):
        build_data(config)


def test_celeba_missing_image_fails_when_read_or_is_skipped(tmp_path: Path) -> None:
    config = write_celeba(tmp_path)
    (tmp_path / "images" / "000002.jpg").unlink()
    with pytest.raises(DataError, match="000002.jpg: cannot read image"):
        build_data(config)  # data.check_images (default)
    bundle = build_data(dataclasses.replace(config, check_images=False))
    paths = bundle.train.paths + bundle.test.paths
    dataset, index = (bundle.train, paths.index(tmp_path / "images" / "000002.jpg"))
    if index >= len(bundle.train):
        dataset, index = bundle.test, index - len(bundle.train)
    with pytest.raises(DataError, match="000002.jpg: cannot read image"):
        dataset[index]
    skipping = build_data(dataclasses.replace(config, skip_bad_images=True))
    assert skipping.skipped == 1 and len(skipping.train) + len(skipping.test) == 11


# ----------------------------------------------------------------------------------------------------- transforms
def halves(width: int = 40, height: int = 24) -> Image.Image:
    """Left half white, right half black."""
    image = Image.new("RGB", (width, height), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, width // 2, height))
    return image


@pytest.mark.parametrize("size", [8, 16])
def test_transform_gives_range_and_size(size: int) -> None:
    out = image_transform(size)(halves())
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    assert out.min() == -1 and out.max() == 1
    assert (out[:, :, 0] == 1).all() and (out[:, :, -1] == -1).all()


def test_transform_center_crop() -> None:
    image = Image.new("RGB", (30, 30), (255, 255, 255))
    image.paste((0, 0, 0), (10, 10, 20, 20))  # a black 10x10 centre
    assert (image_transform(5, crop_size=10)(image) == -1).all()
    assert image_transform(5, crop_size=0)(image).max() == 1


def test_transform_flips_only_when_asked() -> None:
    torch.manual_seed(0)
    image = halves(16, 16)
    train = [image_transform(8, flip=True)(image) for _ in range(30)]
    assert {float(t[0, 0, 0]) for t in train} == {-1.0, 1.0}
    assert all(float(image_transform(8)(image)[0, 0, 0]) == 1.0 for _ in range(30))


def test_folder_flips_only_the_training_set(tmp_path: Path) -> None:
    torch.manual_seed(0)
    for split in ("train", "test"):
        halves(16, 16).save(write_image(tmp_path / split / "d" / "h.png"))
        write_image(tmp_path / split / "e" / "x.png")
    bundle = build_data(folder_config(tmp_path, split="folders"))
    assert {float(bundle.train[0][0][0, 0, 0]) for _ in range(30)} == {-1.0, 1.0}
    assert {float(bundle.test[0][0][0, 0, 0]) for _ in range(30)} == {1.0}
    no_flip = build_data(folder_config(tmp_path, split="folders"), train_flip=False)
    assert {float(no_flip.train[0][0][0, 0, 0]) for _ in range(30)} == {1.0}


def test_celeba_exclusive_groups_reach_the_labels_and_typos_are_reported(tmp_path: Path, caplog) -> None:
    config = write_celeba(tmp_path)
    celeba = dataclasses.replace(config.celeba, exclusive_groups=[["Blond_Hair", "Black_Hair", "Blond_hair"]])
    with caplog.at_level("WARNING", logger="gan"):
        bundle = build_data(dataclasses.replace(config, celeba=celeba))
    assert "'Blond_hair'" in caplog.text and "typo" in caplog.text
    assert bundle.exclusive_groups == (("Blond_Hair", "Black_Hair", "Blond_hair"),)
    assert bundle.space.groups == ()  # of the selected attributes (Blond_Hair, Male) only one is in the group


# ------------------------------------------------------------------------------------ hostile image folders
def _png(path: Path, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (10, 20, 30)).save(path)
    return path


def test_only_regular_files_are_listed(tmp_path):
    """A FIFO named like an image would block the loader forever: it is not an image file."""
    _png(tmp_path / "a" / "x.png")
    os.mkfifo(tmp_path / "a" / "fifo.png")
    (tmp_path / "a" / "sub").mkdir()
    os.mkfifo(tmp_path / "a" / "sub" / "deep.png")
    assert [p.name for p in list_images(tmp_path / "a")] == ["x.png"]
    assert [p.name for p in list_images(tmp_path / "a", recursive=True)] == ["x.png"]


@pytest.mark.parametrize("limit", [300, 150])  # 400 px: PIL warns above the limit and refuses above twice it
def test_decompression_bombs_are_refused(tmp_path, monkeypatch, limit):
    path = _png(tmp_path / "bomb.png", size=20)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DataError, match="bomb.png: cannot read image"):
        load_rgb(path)
    with pytest.raises(DataError, match="bomb.png: cannot read image"):
        image_dimensions(path)
    assert not is_readable(path)  # skip_bad_images skips it


# ------------------------------------------------------------------------------------- bit depths and image modes
RAMP = np.arange(65536, dtype=np.int64).reshape(256, 256)  # every 16-bit value once
RAMP_8 = np.rint(RAMP * 255 / 65535).astype(np.uint8)  # value * 255 / 65535, rounded (no ties occur)


def write_pgm(path: Path, values: np.ndarray) -> Path:
    """A binary 16-bit PGM (maxval 65535): PIL reads it as mode "I"."""
    header = f"P5\n{values.shape[1]} {values.shape[0]}\n65535\n".encode()
    path.write_bytes(header + values.astype(">u2").tobytes())
    return path


def write_raw_png(path: Path, samples: np.ndarray, colour_type: int) -> Path:
    """A 16-bit-per-sample PNG written byte by byte (PIL cannot write 48/64-bit PNGs): ``samples`` is (H, W, C)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = samples.shape[:2]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )
    return path


def sixteen_bit(tmp_path: Path, kind: str) -> Path:
    """The 16-bit ramp in one of the files that PIL opens in a 16-bit integer mode."""
    if kind == "pgm":
        return write_pgm(tmp_path / "ramp.pgm", RAMP)
    path = tmp_path / f"ramp.{kind.split('-')[0]}"
    image = {
        "png": lambda: Image.fromarray(RAMP.astype(np.uint16)),  # I;16
        "tif": lambda: Image.fromarray(RAMP.astype(np.uint16)),  # I;16
        "tif-big-endian": lambda: Image.frombytes("I;16B", (256, 256), RAMP.astype(">u2").tobytes()),
        "tif-32-bit": lambda: Image.fromarray(RAMP.astype(np.int32)),  # I, values within 16 bits
    }[kind]()
    image.save(path)
    return path


@pytest.mark.parametrize(
    ("kind", "mode"),
    [("png", "I;16"), ("tif", "I;16"), ("tif-big-endian", "I;16B"), ("tif-32-bit", "I"), ("pgm", "I")],
)
def test_16_bit_grayscale_is_scaled_to_8_bits(tmp_path: Path, kind: str, mode: str) -> None:
    path = sixteen_bit(tmp_path, kind)
    with Image.open(path) as image:
        assert image.mode == mode  # the PIL mode this test is about
    rgb = np.asarray(load_rgb(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (256, 256, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], RAMP_8)
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and rgb[0, 128, 0] == 0 and rgb[0, 129, 0] == 1
    assert is_readable(path)


@pytest.mark.parametrize(("colour_type", "channels", "mode"), [(2, 3, "RGB"), (6, 4, "RGBA"), (4, 2, "RGBA")])
def test_16_bit_colour_png_is_reduced_by_pil_to_its_high_bytes(tmp_path: Path, colour_type, channels, mode) -> None:
    """48-bit RGB, 64-bit RGBA and 32-bit gray+alpha PNGs: PIL itself keeps the high byte of each sample (value >> 8,
    at most one level below the rounding of 16-bit grayscale), never a clipped white image."""
    values = np.array([[0, 200, 257, 383, 32767, 32768, 65279, 65535]], dtype=np.int64)
    samples = np.repeat(values[..., None], channels, axis=-1)
    path = write_raw_png(tmp_path / "deep.png", samples, colour_type)
    with Image.open(path) as image:
        assert image.mode == mode
    rgb = np.asarray(load_rgb(path))
    np.testing.assert_array_equal(rgb, np.repeat((values >> 8)[..., None], 3, axis=-1).astype(np.uint8))


def test_16_bit_ppm_is_scaled_like_16_bit_grayscale(tmp_path: Path) -> None:
    """PIL scales a PPM by its maxval, rounded: the same rule as load_rgb's for 16-bit grayscale."""
    path = tmp_path / "deep.ppm"
    path.write_bytes(b"P6\n256 256\n65535\n" + np.repeat(RAMP[..., None], 3, axis=-1).astype(">u2").tobytes())
    np.testing.assert_array_equal(np.asarray(load_rgb(path)), np.repeat(RAMP_8[..., None], 3, axis=-1))


def test_8_bit_modes_convert_as_pil_does(tmp_path: Path) -> None:
    for mode in ("1", "L", "LA", "P", "RGBA", "CMYK", "YCbCr"):
        path = write_noise(tmp_path / f"{mode}.tif", mode=mode)
        with Image.open(path) as image:
            assert image.mode == mode
            expected = np.asarray(image.convert("RGB"))
        np.testing.assert_array_equal(np.asarray(load_rgb(path)), expected)


def refused_image(tmp_path: Path, kind: str) -> Path:
    """Files that load_rgb refuses by name."""
    path = tmp_path / f"{kind}.tif"
    if kind == "float":
        Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)).save(path)
    elif kind == "int32-large":
        Image.fromarray(np.array([[0, 70_000]], dtype=np.int32)).save(path)
    elif kind == "int-negative":
        Image.fromarray(np.array([[-5, 7]], dtype=np.int32)).save(path)
    elif kind == "lab":
        Image.new("LAB", (4, 4), (100, 128, 128)).save(path)
    elif kind == "truncated-jpeg":
        path = write_noise(tmp_path / "cut.jpg")
        path.write_bytes(path.read_bytes()[:-200])
    elif kind == "truncated-png":
        path = write_noise(tmp_path / "cut.png")
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif kind == "garbage":
        path = tmp_path / "garbage.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return path


REFUSALS = {
    "float": "32-bit float image; convert it to 8-bit or 16-bit first",
    "int32-large": "32-bit integer image with values 0..70000, outside 0..65535; convert it to 8-bit or 16-bit first",
    "int-negative": "32-bit integer image with values -5..7, outside 0..65535",
    "lab": r"LAB image \(no RGB conversion here\); convert it to 8-bit RGB first",
    "truncated-jpeg": r"cannot read image \(image file is truncated",
    "truncated-png": r"cannot read image \(image file is truncated",
    "garbage": r"cannot read image \(cannot identify image file",
}


@pytest.mark.parametrize("kind", list(REFUSALS))
def test_refused_images_are_one_line_errors_and_skipped_alike(tmp_path: Path, kind: str) -> None:
    """One rule: what load_rgb refuses is what the skip_bad_images check skips (a full decode: a truncated JPEG
    or PNG passes PIL's verify() but not the loading)."""
    path = refused_image(tmp_path, kind)
    with pytest.raises(DataError, match=REFUSALS[kind]) as info:
        load_rgb(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert not is_readable(path)


def test_truncated_pngs_tail_without_pixels_is_read(tmp_path: Path) -> None:
    """A PNG cut after its last pixel row (IEND and the checksums gone) still decodes every pixel, in training as in
    the skip check."""
    path = write_noise(tmp_path / "tail.png")
    pixels = np.asarray(load_rgb(path))
    path.write_bytes(path.read_bytes()[:-16])
    np.testing.assert_array_equal(np.asarray(load_rgb(path)), pixels)
    assert is_readable(path)


@pytest.mark.parametrize("kind", ["truncated-jpeg", "truncated-png", "float", "int32-large"])
def test_bad_images_stop_training_or_are_skipped_and_counted(tmp_path: Path, caplog, kind: str) -> None:
    write_domains(tmp_path, {"a": 3, "b": 3})
    bad = refused_image(tmp_path / "b", kind)
    config = folder_config(tmp_path, test_ratio=0.0)
    with pytest.raises(DataError, match=f"{bad.name}: "):
        build_data(config)  # data.check_images (default): before any run begins
    bundle = build_data(dataclasses.replace(config, check_images=False))  # lazy: it fails when read, naming it
    with pytest.raises(DataError, match=f"{bad.name}: ") as info:
        bundle.train[bundle.train.paths.index(bad)]
    assert "\n" not in str(info.value)
    with caplog.at_level(logging.WARNING):
        skipping = build_data(dataclasses.replace(config, skip_bad_images=True))
    assert skipping.skipped == 1 and bad not in skipping.train.paths and len(skipping.train) == 6
    assert f"skipped 1 file(s): {bad}: " in caplog.text and skipping.notes[0].startswith(f"{bad}: ")


def test_celeba_skips_16_bit_float_images_and_reads_16_bit_ones(tmp_path: Path) -> None:
    config = write_celeba(tmp_path)
    images = Path(config.celeba.image_dir)
    Image.fromarray(np.full((12, 10), 65535, dtype=np.uint16)).save(images / "000003.jpg", format="PNG")
    refused_image(tmp_path, "float").replace(images / "000004.jpg")
    bundle = build_data(dataclasses.replace(config, skip_bad_images=True))
    paths = bundle.train.paths + bundle.test.paths
    assert bundle.skipped == 1 and images / "000004.jpg" not in paths and images / "000003.jpg" in paths
    assert (np.asarray(load_rgb(images / "000003.jpg")) == 255).all()


def test_nothing_loads_truncated_images() -> None:
    """PIL decodes truncated files silently (the missing part grey) once ImageFile.LOAD_TRUNCATED_IMAGES is set:
    no module of ours may set it."""
    import gan.build  # noqa: F401
    import gan.evaluate  # noqa: F401
    import gan.metrics.features  # noqa: F401
    import gan.run  # noqa: F401

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for source in Path(gan.build.__file__).parent.rglob("*.py"):
        assert not re.search(r"LOAD_TRUNCATED_IMAGES\s*=[^=]", source.read_text(encoding="utf-8")), source


# ------------------------------------------------------------------------------------------------ data.follow_links
def link(path: Path, target: Path | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path


def linked_config(root: Path, follow_links: str = "inside", skip: bool = False, **changes: object) -> DataConfig:
    config = folder_config(root, test_ratio=0.0, **changes)
    return dataclasses.replace(config, follow_links=follow_links, skip_bad_images=skip)


def labelled(bundle: DataBundle, root: Path) -> dict[str, str]:
    """Each training file, relative to ``root`` -> its domain."""
    return {
        path.relative_to(root).as_posix(): bundle.domains[int(label)]
        for path, label in zip(bundle.train.paths, bundle.train.labels)
    }


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A shared image store outside the dataset (``data/``), with a red and a blue image."""
    write_image(tmp_path / "store" / "red.png", (255, 0, 0))
    write_image(tmp_path / "store" / "sub" / "blue.png", (0, 0, 255))
    write_domains(tmp_path / "data", {"a": 2, "b": 2})
    return tmp_path / "store"


@pytest.mark.parametrize("target", ["red.png", "sub"])
def test_links_out_of_the_domain_folder_are_refused_by_default(store: Path, target: str) -> None:
    root = store.parent / "data"
    made = link(root / "a" / ("x.png" if target == "red.png" else "x"), store / target)
    with pytest.raises(DataError) as info:
        build_data(linked_config(root))
    assert str(info.value) == (
        f"{made}: a link to {store / target}, outside the domain folder {root / 'a'}; "
        "set data.follow_links: anywhere to allow links out of the domain folder"
    )


@pytest.mark.parametrize("target", ["red.png", "sub"])
def test_refused_links_are_skipped_and_counted_with_skip_bad_images(store: Path, caplog, target: str) -> None:
    root = store.parent / "data"
    made = link(root / "a" / ("x.png" if target == "red.png" else "x"), store / target)
    with caplog.at_level(logging.WARNING):
        bundle = build_data(linked_config(root, skip=True))
    assert bundle.skipped == 1 and len(bundle.train) == 4  # a refused folder link counts once
    assert f"skipped 1 file(s): {made}: a link to {store / target}, outside the domain folder" in caplog.text


def test_anywhere_follows_links_out_of_the_domain_folder(store: Path) -> None:
    root = store.parent / "data"
    link(root / "a" / "red.png", store / "red.png")
    link(root / "b" / "shared", store)
    bundle = build_data(linked_config(root, "anywhere"))
    assert labelled(bundle, root) == {
        "a/000.png": "a", "a/001.png": "a", "a/red.png": "a",
        "b/000.png": "b", "b/001.png": "b", "b/shared/red.png": "b", "b/shared/sub/blue.png": "b",
    }  # fmt: skip
    index = bundle.train.paths.index(root / "a" / "red.png")
    assert (bundle.train[(index, False)][0][0] == 1).all()  # the target's pixels: pure red


@pytest.mark.parametrize("follow_links", ["inside", "anywhere"])
@pytest.mark.parametrize(("name", "target"), [("x.png", "b/000.png"), ("other", "b"), ("deep", "b/..")])
def test_links_into_another_domain_folder_are_always_refused(
    tmp_path: Path, follow_links: str, name: str, target: str
) -> None:
    """a/x.png -> b/000.png would give b's image a's label too; a/deep -> b/.. (the dataset root) reaches b inside."""
    write_domains(tmp_path, {"a": 2, "b": 2})
    made = link(tmp_path / "a" / name, tmp_path / target)
    if target == "b/.." and follow_links == "inside":
        message = f"{made}: a link to {tmp_path}, outside the domain folder"
    elif target == "b/..":
        message = f"{made / 'b'}: leads to {tmp_path / 'b'}, inside {tmp_path / 'b'}, another domain folder"
    else:
        message = f"{made}: a link to {(tmp_path / target).resolve()}, inside {tmp_path / 'b'}, another domain folder"
    with pytest.raises(DataError, match=re.escape(message)) as info:
        build_data(linked_config(tmp_path, follow_links))
    assert "\n" not in str(info.value)
    skipping = build_data(linked_config(tmp_path, follow_links, skip=True))
    assert skipping.skipped == 1 and len(skipping.train) == 4
    assert all(path.parent.name == skipping.domains[int(label)] for path, label in
               zip(skipping.train.paths, skipping.train.labels))  # fmt: skip


@pytest.mark.parametrize("follow_links", ["inside", "anywhere"])
def test_a_training_link_to_a_test_image_is_refused(tmp_path: Path, follow_links: str) -> None:
    write_domains(tmp_path / "train", {"a": 2, "b": 2})
    write_domains(tmp_path / "test", {"a": 1, "b": 1})
    made = link(tmp_path / "train" / "a" / "leak.png", tmp_path / "test" / "a" / "000.png")
    with pytest.raises(DataError, match=re.escape(f"{made}: a link to {tmp_path / 'test' / 'a' / '000.png'}, inside")):
        build_data(linked_config(tmp_path, follow_links, split="folders"))


@pytest.mark.parametrize("follow_links", ["inside", "anywhere"])
def test_cycles_and_second_links_to_a_folder_are_listed_once(tmp_path: Path, caplog, follow_links: str) -> None:
    write_image(tmp_path / "a" / "1.png")
    write_image(tmp_path / "a" / "inner" / "2.png")
    write_image(tmp_path / "b" / "3.png")
    link(tmp_path / "a" / "self", ".")  # a cycle
    link(tmp_path / "a" / "again", "inner")  # inside, but listed already
    link(tmp_path / "a" / "inner" / "up", "..")  # a cycle through the parent
    with caplog.at_level(logging.WARNING):
        bundle = build_data(linked_config(tmp_path, follow_links))
    assert bundle.skipped == 0 and labelled(bundle, tmp_path) == {"a/1.png": "a", "a/inner/2.png": "a", "b/3.png": "b"}
    assert caplog.text.count("a folder already listed") == 3


def test_a_domain_folder_may_be_a_link_but_not_to_another_domain(tmp_path: Path) -> None:
    write_domains(tmp_path / "store", {"a": 2, "b": 1})
    link(tmp_path / "data" / "a", tmp_path / "store" / "a")  # the whole domain folder elsewhere: fine by default
    write_domains(tmp_path / "data", {"b": 2})
    assert len(build_data(linked_config(tmp_path / "data")).train) == 4
    link(tmp_path / "data" / "c", tmp_path / "store" / "a")
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'data' / 'a'}: the same folder as")):
        build_data(linked_config(tmp_path / "data", "anywhere"))


def test_broken_links_named_like_images_are_bad_images(tmp_path: Path) -> None:
    write_domains(tmp_path, {"a": 2, "b": 2})
    made = link(tmp_path / "a" / "gone.png", tmp_path / "nowhere.png")
    link(tmp_path / "a" / "notes", tmp_path / "nowhere")  # not an image name: ignored
    with pytest.raises(DataError, match=re.escape(f"{made}: a broken link")):
        build_data(linked_config(tmp_path, "anywhere"))
    assert build_data(linked_config(tmp_path, skip=True)).skipped == 1


def test_list_images_applies_the_rule_when_recursive(store: Path) -> None:
    folder = store.parent / "data" / "a"
    link(folder / "red.png", store / "red.png")
    with pytest.raises(DataError, match="outside the domain folder"):
        list_images(folder, recursive=True)
    assert [p.name for p in list_images(folder)] == ["000.png", "001.png", "red.png"]  # flat folders: no labels


def test_follow_links_is_checked_by_the_config(tmp_path: Path) -> None:
    assert load_config(overrides=["data.follow_links=anywhere"]).data.follow_links == "anywhere"
    with pytest.raises(ConfigError, match="data.follow_links: unknown name 'outside'.*choose one of: inside, anywhere"):
        load_config(overrides=["data.follow_links=outside"])
    write_domains(tmp_path, {"a": 1})
    with pytest.raises(ConfigError, match="data.follow_links: unknown value 'sideways'"):
        build_data(linked_config(tmp_path, "sideways"))


@pytest.mark.parametrize(("follow_links", "skip"), [("inside", False), ("inside", True), ("anywhere", False)])
def test_celeba_image_folder_is_the_domain_folder(store: Path, follow_links: str, skip: bool) -> None:
    config = write_celeba(store.parent / "celeba")
    images = Path(config.celeba.image_dir)
    (images / "000005.jpg").unlink()
    made = link(images / "000005.jpg", store / "red.png")
    config = dataclasses.replace(config, follow_links=follow_links, skip_bad_images=skip)
    if follow_links == "inside" and not skip:
        with pytest.raises(DataError, match=re.escape(f"{made}: a link to {store / 'red.png'}, outside the domain")):
            build_data(config)
        return
    bundle = build_data(config)
    paths = bundle.train.paths + bundle.test.paths
    assert (made in paths) is (follow_links == "anywhere") and bundle.skipped == (1 if skip else 0)


def test_celeba_names_leading_out_of_the_image_folder_are_refused(store: Path) -> None:
    config = write_celeba(store.parent / "celeba", n=5)
    attr_file, images = Path(config.celeba.attr_file), Path(config.celeba.image_dir)
    attr_file.write_text(attr_file.read_text().replace("000002.jpg", "../../store/red.png"))
    message = f"{images / '../../store/red.png'}: leads to {store / 'red.png'}, outside the domain folder {images}"
    with pytest.raises(DataError, match=re.escape(message)):
        build_data(config)
    assert len(build_data(dataclasses.replace(config, follow_links="anywhere")).test) == 4
