"""Data sources (synthetic styles, one folder per domain, CelebA attributes), built from plain arguments; the
config is turned into a source by ``gan.build.build_data``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from gan.data.base import (
    IMAGE_SUFFIXES,
    DataBundle,
    ImageFileDataset,
    PairedSet,
    TensorImageDataset,
    image_dimensions,
    list_images,
    load_rgb,
    unreadable,
)
from gan.data.celeba import build_celeba
from gan.data.folder import build_folder
from gan.data.synthetic import STYLES, build_synthetic, render
from gan.data.transforms import image_transform, resize_transform
from gan.errors import DataError, UserError, reason

__all__ = [
    "IMAGE_SUFFIXES",
    "STYLES",
    "DataBundle",
    "ImageFileDataset",
    "PairedSet",
    "TensorImageDataset",
    "build_celeba",
    "build_folder",
    "build_synthetic",
    "image_dimensions",
    "image_transform",
    "list_images",
    "load_data",
    "load_rgb",
    "render",
    "resize_transform",
    "unreadable",
]

logger = logging.getLogger(__name__)


def load_data(build: Callable[[], DataBundle], where: str, source: str) -> DataBundle:
    """Run a source's builder; every failure caused by the files on disk is a one-line DataError naming the file
    or folder (``where`` when the error carries none). Files skipped under ``data.skip_bad_images`` make one
    warning in all, naming the first; the bundle's ``notes`` name each (a run writes them into train.log)."""
    try:
        bundle = build()
    except UserError:
        raise
    except (OSError, Image.DecompressionBombError) as exc:  # e.g. a folder that cannot be listed (permissions)
        path = getattr(exc, "filename", None) or where
        raise DataError(f"{Path(path)}: {reason(exc)}") from exc
    if bundle.skipped:
        more = f"; {bundle.skipped - 1} more in train.log" if bundle.skipped > 1 else ""
        first = bundle.notes[0] if bundle.notes else "see train.log"
        logger.warning("data.skip_bad_images: skipped %d file(s): %s%s", bundle.skipped, first, more)
    logger.info(
        "data %s: %d train / %d test images, domains %s%s",
        source,
        len(bundle.train),
        len(bundle.test),
        ", ".join(bundle.domains),
        f", {bundle.skipped} unreadable skipped" if bundle.skipped else "",
    )
    return bundle
