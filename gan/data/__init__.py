"""Data sources (synthetic styles, one folder per domain, CelebA attributes) behind one ``build_data`` call."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from gan.config import DataConfig
from gan.data.base import DataBundle, ImageFileDataset, PairedSet, TensorImageDataset
from gan.data.celeba import build_celeba
from gan.data.folder import build_folder
from gan.data.synthetic import STYLES, build_synthetic, render
from gan.data.transforms import image_transform
from gan.errors import ConfigError, DataError, UserError

__all__ = [
    "STYLES",
    "DataBundle",
    "ImageFileDataset",
    "PairedSet",
    "TensorImageDataset",
    "build_data",
    "image_transform",
    "render",
]

logger = logging.getLogger(__name__)


_SOURCES: dict[str, Callable[[DataConfig, bool], DataBundle]] = {
    "synthetic": build_synthetic,
    "folder": build_folder,
    "celeba": build_celeba,
}


def _source_path(cfg: DataConfig) -> str:
    """The path a failure most likely concerns, for errors that do not carry a file name."""
    if cfg.source == "folder":
        return cfg.folder.root
    if cfg.source == "celeba":
        return cfg.celeba.image_dir
    return "data"


def build_data(cfg: DataConfig, train_flip: bool = True) -> DataBundle:
    """Train and test datasets for ``cfg.source``; ``train_flip`` enables the random horizontal flip in training.

    Every failure caused by the files on disk is a one-line DataError naming the file or folder.
    """
    builder = _SOURCES.get(cfg.source)
    if builder is None:
        raise ConfigError(f"data.source: unknown source {cfg.source!r}; choose one of: {', '.join(_SOURCES)}")
    try:
        bundle = builder(cfg, train_flip)
    except UserError:
        raise
    except (OSError, Image.DecompressionBombError) as exc:  # e.g. a folder that cannot be listed (permissions)
        where = getattr(exc, "filename", None) or _source_path(cfg)
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise DataError(f"{Path(where)}: {reason.splitlines()[0]}") from exc
    logger.info(
        "data %s: %d train / %d test images, domains %s%s",
        cfg.source,
        len(bundle.train),
        len(bundle.test),
        ", ".join(bundle.domains),
        f", {bundle.skipped} unreadable skipped" if bundle.skipped else "",
    )
    return bundle
