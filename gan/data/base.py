"""Shared data types and the two dataset classes (in-memory tensors, lazily read image files)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from gan.data.links import LinkRule, walk
from gan.errors import DataError, reason
from gan.labels import LabelSpace

logger = logging.getLogger(__name__)

# The one list of image-file suffixes (compared case-insensitively), for datasets, FID folders and translate.
IMAGE_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
# PIL modes that convert("RGB") maps correctly. PIL itself reduces 16-bit-per-channel RGB(A) (48/64-bit PNG and
# TIFF, 16-bit PPM) to "RGB"/"RGBA" by taking the high byte of each sample.
RGB_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
# 16-bit grayscale (PNG, TIFF, PGM): convert("RGB") would clip values above 255 to white; load_rgb scales them.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Decompression bombs: PIL only warns above Image.MAX_IMAGE_PIXELS (89 Mpixel) and decodes anyway; we refuse them
# (the warning is raised as an error while a file is opened, see _opened).
BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
# What PIL raises for a broken file: OSError covers UnidentifiedImageError and truncated data (truncated files are
# refused as long as nothing sets ImageFile.LOAD_TRUNCATED_IMAGES; a test checks that); some plugins raise
# ValueError or SyntaxError on malformed headers; DecompressionBombError derives from plain Exception.
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
    skipped: int = 0  # unreadable images and refused links dropped at build time (data.skip_bad_images)
    exclusive_groups: tuple[tuple[str, ...], ...] = ()  # multi-label: attributes of which an image has one at most
    notes: tuple[str, ...] = ()  # each file skipped at build time and why (data.skip_bad_images), for train.log

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
    """Read an image file as 8-bit RGB, decoding every pixel (a truncated file fails here, not later): 16-bit
    grayscale is scaled to 8 bits; float images and modes without a defined RGB conversion are refused. Every
    failure is a one-line DataError naming the file."""
    try:
        with _opened(path) as image:
            if image.mode in SIXTEEN_BIT_MODES:
                return _sixteen_bit_to_rgb(path, image)
            if image.mode == "F":  # no defined range: 0..1, 0..255 and HDR radiance all occur
                raise DataError(f"{path}: 32-bit float image; convert it to 8-bit or 16-bit first")
            if image.mode not in RGB_MODES:  # e.g. LAB (CIELab TIFF): PIL's convert("RGB") gives wrong colours
                raise DataError(f"{path}: {image.mode} image (no RGB conversion here); convert it to 8-bit RGB first")
            return image.convert("RGB")  # convert() loads the pixels, so truncated data fails here, not later
    except IMAGE_ERRORS as exc:
        raise DataError(f"{path}: cannot read image ({reason(exc)})") from exc


def _sixteen_bit_to_rgb(path: Path, image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image as RGB: value * 255 / 65535, rounded. Mode "I" (16-bit PGM, signed or 32-bit
    TIFF) must hold values in 0..65535: clipping would turn a 32-bit image white (and PIL reads unsigned 32-bit
    values above 2**31 as negative)."""
    values = np.asarray(image).astype(np.int64)  # loads the pixels; I;16B arrives big-endian, "I" as int32
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high > 65535:
        bits = f"32-bit integer image with values {low}..{high}, outside 0..65535"
        raise DataError(f"{path}: {bits}; convert it to 8-bit or 16-bit first")
    # value * 255 / 65535 is value / 257 (65535 = 255 * 257); adding 128 before the floor division rounds it (no
    # ties: value / 257 is never exactly k + 0.5).
    return Image.fromarray(((values + 128) // 257).astype(np.uint8)).convert("RGB")


def image_dimensions(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding the pixels; errors as :func:`load_rgb`."""
    try:
        with _opened(path) as image:
            return image.size
    except IMAGE_ERRORS as exc:
        raise DataError(f"{path}: cannot read image ({reason(exc)})") from exc


def list_images(folder: Path, recursive: bool = False, links: LinkRule | None = None) -> list[Path]:
    """The image files (by :data:`IMAGE_SUFFIXES`) in ``folder``, sorted: directly inside it (as pytorch-fid picks
    them), or with ``recursive`` in every non-hidden sub-folder too (as torchvision's ImageFolder), where the first
    link that ``links`` (default: only inside ``folder``) refuses is a DataError. An empty or missing folder is a
    DataError naming it."""
    found, refused = find_images(folder, recursive, links)
    if refused:
        raise DataError(refused[0])
    return found


def find_images(folder: Path, recursive: bool = False, links: LinkRule | None = None) -> tuple[list[Path], list[str]]:
    """As :func:`list_images`, but the links refused (recursive listing only: see :func:`gan.data.links.walk`) are
    returned as one-line reasons, for ``data.skip_bad_images`` to skip and count. Only regular files are listed: a
    FIFO, socket or device named *.png would block or never end when read."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    if recursive:
        paths, refused = walk(folder, links or LinkRule(), IMAGE_SUFFIXES)
    else:  # a flat folder (FID folders, translate inputs) has no labels that a link could change
        paths = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        refused = []
    if not paths and not refused:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return sorted(paths), refused


def unreadable(path: Path) -> str | None:
    """Why :func:`load_rgb` refuses the file (its one-line message), or None: the same full decode, so
    ``data.skip_bad_images`` skips exactly what loading would refuse (truncated data, float images, bombs, ...)."""
    try:
        load_rgb(path)
    except DataError as exc:
        return str(exc)
    return None


def is_readable(path: Path) -> bool:
    return unreadable(path) is None
