"""One sub-folder of images per domain (StarGAN's RaFD layout), split by ratio or by train/ and test/ folders."""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

from gan.config import DataConfig
from gan.data.base import DataBundle, ImageFileDataset, is_readable
from gan.data.transforms import image_transform
from gan.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def find_domains(base: Path, wanted: list[str]) -> list[str]:
    """``wanted`` after checking each has a folder, or else the sorted visible sub-folder names of ``base``."""
    found = sorted(entry.name for entry in base.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    for name in wanted:
        if not (base / name).is_dir():
            raise DataError(f"{base / name}: domain folder not found (found: {', '.join(found) or 'none'})")
    if wanted:
        return list(wanted)
    if not found:
        raise DataError(f"{base}: no domain sub-folders (expected one folder of images per domain)")
    return found


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, like ImageFolder), sorted; error if there are none."""
    if not folder.is_dir():
        raise DataError(f"{folder}: domain folder not found")
    paths = []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        paths += [Path(parent, name) for name in files if name.lower().endswith(IMAGE_EXTENSIONS)]
    if not paths:
        raise DataError(f"{folder}: no images (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
    return sorted(paths)


def split_ratio(paths: list[Path], test_ratio: float, seed: str) -> tuple[list[Path], list[Path]]:
    """A reproducible random (train, test) split; both parts are non-empty when the ratio and count allow it."""
    order = list(range(len(paths)))
    random.Random(seed).shuffle(order)
    n_test = int(len(paths) * test_ratio + 0.5)
    if test_ratio > 0 and len(paths) > 1:
        n_test = min(max(n_test, 1), len(paths) - 1)
    test = sorted(order[:n_test])
    train = sorted(order[n_test:])
    return [paths[i] for i in train], [paths[i] for i in test]


def _domain_images(folder: Path, skip_bad: bool) -> tuple[list[Path], int]:
    """The images of one domain folder and how many unreadable ones were dropped (only when ``skip_bad``)."""
    paths = list_images(folder)
    if not skip_bad:
        return paths, 0  # no pre-scan: a bad file raises DataError when it is read
    good = [path for path in paths if is_readable(path)]
    if not good:
        raise DataError(f"{folder}: none of its {len(paths)} images could be read")
    return good, len(paths) - len(good)


def _collect(cfg: DataConfig) -> tuple[list[str], dict[str, list[Path]], dict[str, list[Path]], int]:
    """Domains and the train / test files of each, after the split and the optional bad-image check."""
    fc, root = cfg.folder, Path(cfg.folder.root)
    train, test, skipped = {}, {}, 0
    if fc.split == "folders":
        domains = find_domains(_existing(root / "train"), fc.domains)
        _existing(root / "test")
        for name in domains:
            train[name], n_train = _domain_images(root / "train" / name, cfg.skip_bad_images)
            test[name], n_test = _domain_images(root / "test" / name, cfg.skip_bad_images)
            skipped += n_train + n_test
    elif fc.split == "ratio":
        domains = find_domains(root, fc.domains)
        for name in domains:
            paths, n_bad = _domain_images(root / name, cfg.skip_bad_images)
            # Seeded per domain by name, so adding a domain does not reshuffle the others.
            train[name], test[name] = split_ratio(paths, fc.test_ratio, f"{fc.split_seed}/{name}")
            skipped += n_bad
    else:
        raise ConfigError(f"data.folder.split: unknown split {fc.split!r}; choose one of: ratio, folders")
    return domains, train, test, skipped


def _existing(folder: Path) -> Path:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    return folder


def build_folder(cfg: DataConfig, train_flip: bool = True) -> DataBundle:
    """Lazily read datasets over ``data.folder.root``; the label is the domain's index in ``domains``."""
    if not cfg.folder.root:
        raise DataError("data.folder.root is empty: set it to a folder with one sub-folder of images per domain")
    if not Path(cfg.folder.root).is_dir():
        raise DataError(f"{cfg.folder.root}: dataset folder not found")
    domains, train, test, skipped = _collect(cfg)

    def dataset(files: dict[str, list[Path]], flip: bool) -> ImageFileDataset:
        paths = [path for name in domains for path in files[name]]
        labels = torch.tensor([index for index, name in enumerate(domains) for _ in files[name]], dtype=torch.int64)
        return ImageFileDataset(paths, labels, image_transform(cfg.image_size, cfg.crop_size, flip=flip))

    train_set, test_set = dataset(train, train_flip), dataset(test, False)
    return DataBundle(train_set, test_set, domains, multi_label=False, paired=None, skipped=skipped)
