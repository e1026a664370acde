"""Shared data types and the two dataset classes (in-memory tensors, lazily read image files)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from gan.errors import DataError

logger = logging.getLogger(__name__)

# What PIL raises for a broken file: OSError covers UnidentifiedImageError and truncated data; some plugins raise
# ValueError or SyntaxError on malformed headers; DecompressionBombError derives from plain Exception.
HIGH_BIT_DEPTH = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


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

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = uint8_to_unit(self.images[index])
        # torch's global RNG, so DataLoader worker seeding governs the flips like torchvision's RandomHorizontalFlip.
        if self.flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        return image, self.labels[index]


class ImageFileDataset(Dataset):
    """Image files read lazily with PIL; a file that cannot be read raises DataError naming it."""

    def __init__(self, paths: Sequence[Path], labels: Tensor, transform: Callable[[Image.Image], Tensor]) -> None:
        if len(paths) != labels.shape[0]:
            raise ValueError(f"got {len(paths)} paths but {labels.shape[0]} labels")
        self.paths = list(paths)
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(load_rgb(self.paths[index])), self.labels[index]


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def load_rgb(path: Path) -> Image.Image:
    """Read an image file as RGB; any decoding failure becomes a one-line DataError naming the file."""
    try:
        with Image.open(path) as image:
            if image.mode in HIGH_BIT_DEPTH:  # convert("RGB") would clip 16-bit values to 255: a white image
                raise DataError(f"{path}: {image.mode} image (16-bit or float); convert it to 8-bit RGB first")
            return image.convert("RGB")  # convert() loads the pixels, so truncated data fails here, not later
    except IMAGE_ERRORS as exc:
        raise DataError(f"{path}: cannot read image ({_reason(exc)})") from exc


def is_readable(path: Path) -> bool:
    """A cheap check (PIL ``verify``: header and, for PNG, chunk checksums) without decoding the pixels."""
    try:
        with Image.open(path) as image:
            image.verify()
    except IMAGE_ERRORS as exc:
        logger.warning("skipping unreadable image %s (%s)", path, _reason(exc))
        return False
    return True
