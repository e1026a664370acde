"""Shared data types and the two dataset classes (in-memory tensors, lazily read image files)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from gan.errors import DataError, reason
from gan.labels import LabelSpace

logger = logging.getLogger(__name__)

# What PIL raises for a broken file: OSError covers UnidentifiedImageError and truncated data; some plugins raise
# ValueError or SyntaxError on malformed headers; DecompressionBombError derives from plain Exception.
HIGH_BIT_DEPTH = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# The one list of image-file suffixes (compared case-insensitively), for datasets, FID folders and translate.
IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
# Decompression bombs: PIL only warns above Image.MAX_IMAGE_PIXELS (89 Mpixel) and decodes anyway; we refuse them
# (the warning is raised as an error while a file is opened, see _opened).
BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, *BOMB_ERRORS)


@dataclass
class PairedSet:
    """Paired ground truth (synthetic data only): every held-out image rendered in every domain."""

    images: Tensor  # (N, 3, S, S) float32 in [-1, 1], the held-out test images
    labels: Tensor  # (N,) int64 source-domain index of each image
    targets: Tensor  # (N, D, 3, S, S): image n's content rendered in domain d; targets[n, labels[n]] == images[n]


@dataclass
class DataBundle:
    """Everything a run needs from a data source."""

    train: Dataset  # items: (image float32 (3, S, S) in [-1, 1], label)
    test: Dataset  # same, never flipped
    domains: list[str]  # domain names; the label index (or label column) follows this order
    multi_label: bool  # True: label is float32 (D,) of 0/1; False: label is an int64 scalar index
    paired: PairedSet | None  # synthetic only
    skipped: int = 0  # unreadable images dropped at build time (data.skip_bad_images)
    exclusive_groups: tuple[tuple[str, ...], ...] = ()  # multi-label: attributes of which an image has one at most

    @property
    def space(self) -> LabelSpace:
        """The label convention of this data (targets, G's vectors, domain membership): see gan.labels."""
        return LabelSpace.create(self.domains, self.multi_label, self.exclusive_groups)


def uint8_to_unit(images: Tensor) -> Tensor:
    """uint8 pixels -> float32 in [-1, 1], the same mapping as ToTensor + Normalize(0.5, 0.5)."""
    return images.float().div_(127.5).sub_(1.0)


class TensorImageDataset(Dataset):
    """Images held in memory as uint8 (a quarter of float32's size), returned as float32 in [-1, 1]."""

    def __init__(self, images: Tensor, labels: Tensor, flip: bool = False) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"expected uint8 (N, 3, S, S) images and N labels, got {images.shape} {labels.shape}")
        self.images = images
        self.labels = labels
        self.flip = flip

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[Tensor, Tensor]:
        index, flip = flip_key(key, self.flip)
        image = uint8_to_unit(self.images[index])
        return (image.flip(-1) if flip else image), self.labels[index]


def flip_key(key: int | tuple[int, bool], flip: bool) -> tuple[int, bool]:
    """(index, whether to mirror the image) of a dataset key. The trainer's sampler passes ``(index, flip)`` pairs
    drawn from (seed, step), so flips are exact on resume and in DataLoader workers; a plain index on a flipping
    dataset draws from torch's global RNG (the loader's worker seeding then governs it, as for torchvision)."""
    if isinstance(key, tuple):
        index, mirrored = key
        return int(index), bool(mirrored) and flip
    return int(key), flip and bool(torch.rand(()) < 0.5)


class ImageFileDataset(Dataset):
    """Image files read lazily with PIL; a file that cannot be read raises DataError naming it. ``flip`` mirrors
    the transformed image at random (see :func:`flip_key`)."""

    def __init__(
        self, paths: Sequence[Path], labels: Tensor, transform: Callable[[Image.Image], Tensor], flip: bool = False
    ) -> None:
        if len(paths) != labels.shape[0]:
            raise ValueError(f"got {len(paths)} paths but {labels.shape[0]} labels")
        self.paths = list(paths)
        self.labels = labels
        self.transform = transform
        self.flip = flip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[Tensor, Tensor]:
        index, flip = flip_key(key, self.flip)
        image = self.transform(load_rgb(self.paths[index]))
        return (image.flip(-1) if flip else image), self.labels[index]


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` with a decompression bomb (above ``Image.MAX_IMAGE_PIXELS``) refused, not only warned of."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            yield image


def load_rgb(path: Path) -> Image.Image:
    """Read an image file as RGB; any decoding failure becomes a one-line DataError naming the file."""
    try:
        with _opened(path) as image:
            if image.mode in HIGH_BIT_DEPTH:  # convert("RGB") would clip 16-bit values to 255: a white image
                raise DataError(f"{path}: {image.mode} image (16-bit or float); convert it to 8-bit RGB first")
            return image.convert("RGB")  # convert() loads the pixels, so truncated data fails here, not later
    except IMAGE_ERRORS as exc:
        raise DataError(f"{path}: cannot read image ({reason(exc)})") from exc


def image_dimensions(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels; errors as :func:`load_rgb`."""
    try:
        with _opened(path) as image:
            return image.size
    except IMAGE_ERRORS as exc:
        raise DataError(f"{path}: cannot read image ({reason(exc)})") from exc


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files (by :data:`IMAGE_SUFFIXES`) in ``folder``, sorted: directly inside it (as pytorch-fid picks
    them), or with ``recursive`` in every non-hidden sub-folder too (as torchvision's ImageFolder). An empty or
    missing folder is a DataError naming it."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    if recursive:
        paths = []
        root = folder.resolve()
        seen = {_identity(folder)}
        for parent, dirs, files in os.walk(folder, followlinks=True):
            # Linked folders are followed only inside ``folder`` and only once: a link to a parent (a cycle) or to
            # another class's folder would relabel and duplicate images.
            dirs[:] = [name for name in dirs if not name.startswith(".") and _visit(Path(parent, name), root, seen)]
            paths += [Path(parent, name) for name in files]
    else:
        paths = list(folder.iterdir())
    # Regular files only: a FIFO, socket or device named *.png would block or never end when read.
    found = sorted(p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return found


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def _visit(path: Path, root: Path, seen: set[tuple[int, int]]) -> bool:
    """Whether the recursive listing enters ``path``: not a folder already visited (through another link), and
    for a link, one that resolves inside ``root``."""
    try:
        identity = _identity(path)
    except OSError:  # a broken link or a loop the OS refuses
        return False
    if identity in seen:
        logger.warning("not following %s: a folder already listed (a link cycle or a second link to it)", path)
        return False
    if path.is_symlink() and not path.resolve().is_relative_to(root):
        logger.warning("not following %s: the link leads out of %s", path, root)
        return False
    seen.add(identity)
    return True


def is_readable(path: Path) -> bool:
    """A cheap check (PIL ``verify``: header and, for PNG, chunk checksums) without decoding the pixels."""
    try:
        with _opened(path) as image:
            image.verify()
    except IMAGE_ERRORS as exc:
        logger.warning("skipping unreadable image %s (%s)", path, reason(exc))
        return False
    return True
