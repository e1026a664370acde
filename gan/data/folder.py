"""One sub-folder of images per domain (StarGAN's RaFD layout), split by ratio or by train/ and test/ folders."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import torch

from gan.data.base import DataBundle, ImageFileDataset, find_images, unreadable
from gan.data.links import LinkRule
from gan.data.transforms import image_transform
from gan.errors import ConfigError, DataError


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


def _domain_images(folder: Path, links: LinkRule, skip_bad: bool, check: bool) -> tuple[list[Path], list[str]]:
    """The images of one domain folder and, only when ``skip_bad``, why each dropped file was dropped: links that
    ``links`` refuses (one each, also for a folder) and files that do not load. With ``check`` (or ``skip_bad``)
    every image is decoded now, so a bad one stops the build (``skip_bad``: is dropped) before any run begins."""
    paths, refused = find_images(folder, recursive=True, links=links)
    if refused and not skip_bad:
        raise DataError(refused[0])
    if not (check or skip_bad):
        return paths, []  # a bad file raises DataError when it is read
    problems = {path: unreadable(path) for path in paths}
    bad = [problem for problem in problems.values() if problem is not None]
    if bad and not skip_bad:
        raise DataError(f"{bad[0]} ({len(bad)} bad file(s) in {folder}; data.skip_bad_images: true skips them)")
    good = [path for path, problem in problems.items() if problem is None]
    if not good:
        raise DataError(f"{folder}: none of its {len(paths) + len(refused)} images could be read")
    return good, refused + bad


def _link_rule(follow_links: str, folders: list[Path]) -> LinkRule:
    """The rule for links under ``folders`` (every domain folder, train and test): two of them that are one folder
    (a linked domain folder) would give its images two labels, or put test images into training."""
    real = [folder.resolve() for folder in folders]
    for (a, real_a), (b, real_b) in itertools.combinations(zip(folders, real), 2):
        if real_a.is_relative_to(real_b) or real_b.is_relative_to(real_a):
            raise DataError(f"{a}: the same folder as {b} ({real_a}, {real_b}); each domain needs its own folder")
    return LinkRule(follow_links, tuple(real))


def _collect(
    root: Path,
    wanted: list[str],
    split: str,
    test_ratio: float,
    split_seed: int,
    skip_bad: bool,
    follow_links: str,
    check: bool,
) -> tuple[list[str], dict[str, list[Path]], dict[str, list[Path]], list[str]]:
    """Domains and the train / test files of each, after the split and the optional bad-image check (and why each
    skipped file was skipped)."""
    train: dict[str, list[Path]] = {}
    test: dict[str, list[Path]] = {}
    skipped: list[str] = []
    if split == "folders":
        domains = find_domains(_existing(root / "train"), wanted)
        _existing(root / "test")
        links = _link_rule(follow_links, [root / part / name for part in ("train", "test") for name in domains])
        for name in domains:
            train[name], bad_train = _domain_images(root / "train" / name, links, skip_bad, check)
            test[name], bad_test = _domain_images(root / "test" / name, links, skip_bad, check)
            skipped += bad_train + bad_test
    elif split == "ratio":
        domains = find_domains(root, wanted)
        links = _link_rule(follow_links, [root / name for name in domains])
        for name in domains:
            paths, bad = _domain_images(root / name, links, skip_bad, check)
            # Seeded per domain by name, so adding a domain does not reshuffle the others.
            train[name], test[name] = split_ratio(paths, test_ratio, f"{split_seed}/{name}")
            skipped += bad
    else:
        raise ConfigError(f"data.folder.split: unknown split {split!r}; choose one of: ratio, folders")
    return domains, train, test, skipped


def _existing(folder: Path) -> Path:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    return folder


def build_folder(
    root: str,
    domains: list[str],
    split: str,
    test_ratio: float,
    split_seed: int,
    image_size: int,
    crop_size: int = 0,
    skip_bad_images: bool = False,
    train_flip: bool = True,
    follow_links: str = "inside",
    check_images: bool = True,
) -> DataBundle:
    """Lazily read datasets over ``root`` (one sub-folder of images per domain, or train/ and test/ folders of
    them); the label is the domain's index in the domain list. ``follow_links`` (see gan.data.links): ``inside``
    or ``anywhere``. ``check_images``: decode every image now (a bad one is an error before any run begins)."""
    if not root:
        raise DataError("data.folder.root is empty: set it to a folder with one sub-folder of images per domain")
    if not Path(root).is_dir():
        raise DataError(f"{root}: dataset folder not found")
    names, train, test, skipped = _collect(
        Path(root), domains, split, test_ratio, split_seed, skip_bad_images, follow_links, check_images
    )
    transform = image_transform(image_size, crop_size)

    def dataset(files: dict[str, list[Path]], flip: bool) -> ImageFileDataset:
        paths = [path for name in names for path in files[name]]
        labels = torch.tensor([index for index, name in enumerate(names) for _ in files[name]], dtype=torch.int64)
        return ImageFileDataset(paths, labels, transform, flip=flip)

    train_set, test_set = dataset(train, train_flip), dataset(test, False)
    return DataBundle(
        train_set, test_set, names, multi_label=False, paired=None, skipped=len(skipped), notes=tuple(skipped)
    )
