"""Feature extractors for FID/KID (the Inception network, or a trained domain classifier when working offline) and
the batched feature computation over image folders and tensors."""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from gan.data.base import list_images, load_rgb, uint8_to_unit
from gan.interrupt import check_stop
from gan.metrics.inception import (
    FEATURE_DIM,
    PROTOCOLS,
    SHA256_PREFIX,
    find_weights,
    fold_batchnorm,
    load_inception,
    packaged_source_of,
    preprocess,
    sha256_of,
)
from gan.models.modes import evaluating

log = logging.getLogger(__name__)

DECODE_WORKERS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class FeatureExtractor(Protocol):
    """uint8 (N, 3, H, W) images -> (N, dims) features; ``info`` names what was measured and how."""

    info: dict[str, Any]

    def __call__(self, images: Tensor) -> Tensor: ...


def _metric_precision(device: torch.device):
    """Full float32 convolutions on CUDA: TF32 would move FID by far more than the reference tolerance."""
    if device.type == "cuda":
        # No cudnn.benchmark: it re-tunes every conv for each new batch shape (the last, partial batch included),
        # which cost more than it saved in short FID passes on an H100.
        return torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False)
    return nullcontext()


class InceptionExtractor:
    """The FID Inception network under a named preprocessing protocol (``pytorch_fid`` or ``tf1``).

    ``fast`` folds BatchNorm into the convolutions and runs channels-last (about 2x faster on CPU); features then
    differ from pytorch-fid's by float32 rounding (~1e-7 relative). ``fast=False`` reproduces them bit for bit on CPU.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        protocol: str = "pytorch_fid",
        device: torch.device | str = "cpu",
        fast: bool = True,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown FID protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
        path = find_weights(weights)
        digest = sha256_of(path)
        converted = packaged_source_of(path)
        net = load_inception(path, "cpu")  # an unreadable file is refused before any warning about its hash
        if not digest.startswith(SHA256_PREFIX) and converted is None:
            # Loadable weights with the right layout but another hash: results are recorded with the hash, not refused.
            log.warning(
                "%s: sha256 %s... is not the published %s...; FID values will not be comparable with others",
                path,
                digest[:8],
                SHA256_PREFIX,
            )
        self.device = torch.device(device)
        self.protocol, self.fast = protocol, fast
        if fast:
            net = fold_batchnorm(net).to(memory_format=torch.channels_last)
        self.net = net.to(self.device)
        self.dims = FEATURE_DIM
        self.info = {
            "extractor": "inception",
            "protocol": protocol,
            "weights": str(path),
            "weights_sha256": digest[:16],
            "official_weights": digest.startswith(SHA256_PREFIX) or converted is not None,
            "weights_source": converted or "state dict",
            "variant": "fast" if fast else "exact",  # BatchNorm folded (float32 rounding differs) or pytorch-fid's
            "dims": FEATURE_DIM,
        }

    def __call__(self, images: Tensor) -> Tensor:
        x = preprocess(images.to(self.device), self.protocol)
        if self.fast:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), _metric_precision(self.device):
            return self.net(x).float()


class ClassifierExtractor:
    """Penultimate features of a trained domain classifier: an offline stand-in, logged under its own name.

    Distances on these features are *not* Inception FID; they compare runs of one project on one dataset only.
    """

    def __init__(self, classifier: nn.Module, device: torch.device | str = "cpu", source: str = "") -> None:
        self.device = torch.device(device)
        self.net = classifier.to(self.device)
        self.dims = int(classifier.feature_dim)
        self.info = {"extractor": "classifier", "protocol": "classifier", "weights": source, "dims": self.dims}

    def __call__(self, images: Tensor) -> Tensor:
        with evaluating(self.net):  # the [-1, 1] range the classifier was trained on
            return self.net.features(uint8_to_unit(images.to(self.device))).float()


def features_of(
    extractor: FeatureExtractor,
    batches: Iterable[Tensor],
    total: int | None = None,
    desc: str = "features",
    progress: bool = False,
) -> np.ndarray:
    """Run ``extractor`` over uint8 batches; float64 (N, dims) features in input order. A stop request (Ctrl-C,
    SIGTERM during training) ends the loop between batches (gan.interrupt)."""
    out: list[np.ndarray] = []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in batches:
            check_stop()
            out.append(extractor(batch).cpu().double().numpy())
            bar.update(len(batch))
    if not out:
        raise ValueError("no images to compute features of")
    return np.concatenate(out)


def tensor_batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    """Consecutive slices of an in-memory uint8 tensor."""
    for start in range(0, images.shape[0], batch_size):
        yield images[start : start + batch_size]


# ------------------------------------------------------------------------------------------------ image folders


def read_uint8(path: Path) -> Tensor:
    """An image file as a uint8 (3, H, W) tensor (RGB); unreadable files raise a DataError naming them."""
    array = np.asarray(load_rgb(path), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _decoded(files: Sequence[Path], workers: int) -> Iterator[Tensor]:
    """Images of ``files`` in order, decoded by a thread pool (PIL releases the GIL while decoding) with a bounded
    read-ahead, so a folder of 50k images never sits in memory at once."""
    if workers <= 1:
        yield from (read_uint8(path) for path in files)
        return
    ahead = 4 * workers
    with ThreadPoolExecutor(workers) as pool:
        pending = deque(pool.submit(read_uint8, path) for path in files[:ahead])
        for path in files[ahead:]:
            yield pending.popleft().result()
            pending.append(pool.submit(read_uint8, path))
        while pending:
            yield pending.popleft().result()


def file_batches(files: Sequence[Path], batch_size: int, workers: int = DECODE_WORKERS) -> Iterator[Tensor]:
    """uint8 batches of files in order; a batch is cut early where the image size changes (no resizing here:
    the protocol resizes inside the metric, as the references do)."""
    batch: list[Tensor] = []
    for image in _decoded(files, workers):
        if batch and (len(batch) == batch_size or image.shape != batch[0].shape):
            yield torch.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield torch.stack(batch)


def folder_features(
    extractor: FeatureExtractor, folder: Path, batch_size: int = 50, progress: bool = False
) -> np.ndarray:
    """Features of every image in ``folder`` (see :func:`list_images`)."""
    files = list_images(folder)
    return features_of(extractor, file_batches(files, batch_size), len(files), desc=folder.name, progress=progress)
