"""Domain classifier: StarGAN's "classification accuracy" of translated images, and offline features for FID."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from gan.checkpoint import atomic_save, load_marked, state_dict_mismatch
from gan.data.base import DataBundle
from gan.errors import CheckpointError
from gan.interrupt import check_stop
from gan.models.modes import evaluating

log = logging.getLogger(__name__)

FORMAT = "spectral-gan-classifier/1"
REQUIRED_KEYS = ("format", "args", "state_dict", "domains", "report")
FILENAME = "classifier.pt"
HOW_TO_TRAIN = "python evaluate.py train-classifier --checkpoint <run>/checkpoints/last.pt"


def _conv_block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    # GroupNorm, not BatchNorm: a sample's features and logits then do not depend on the rest of its batch or on
    # train/eval mode, which a feature extractor for FID needs and which keeps short trainings free of BN drift.
    return [
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.GroupNorm(math.gcd(8, c_out), c_out),
        nn.LeakyReLU(0.2, inplace=True),
    ]


class DomainClassifier(nn.Module):
    """A small CNN: stride-2 stages down to about 4x4, global average pooling to ``feature_dim`` features, a linear
    head to one logit per domain. Input: images in [-1, 1] as the data pipeline returns them."""

    def __init__(self, image_size: int, num_domains: int, multi_label: bool, width: int = 32) -> None:
        super().__init__()
        if image_size < 8 or num_domains < 1 or width < 1:
            raise ValueError(
                f"DomainClassifier: need image_size >= 8, num_domains >= 1, width >= 1, got "
                f"{image_size}, {num_domains}, {width}"
            )
        self.image_size, self.num_domains, self.multi_label, self.width = image_size, num_domains, multi_label, width
        self.report: dict[str, Any] | None = None  # ClassifierReport.to_dict() once trained or loaded (not saved here)
        self.feature_dim = 8 * width
        layers, channels, size = _conv_block(3, width, 1), width, image_size
        while size > 4:
            out = min(2 * channels, self.feature_dim)
            layers += _conv_block(channels, out, 2) + _conv_block(out, out, 1)
            channels, size = out, (size + 1) // 2
        # A last conv to feature_dim, so the feature width is the same at every image size.
        layers += _conv_block(channels, self.feature_dim, 1)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(self.feature_dim, num_domains)

    def config(self) -> dict[str, Any]:
        """The constructor arguments, enough to rebuild the module from a file."""
        return {
            "image_size": self.image_size,
            "num_domains": self.num_domains,
            "multi_label": self.multi_label,
            "width": self.width,
        }

    def features(self, x: Tensor) -> Tensor:
        """(N, feature_dim) penultimate features: the globally pooled last conv stage."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (self.image_size, self.image_size):
            size = self.image_size
            raise ValueError(f"DomainClassifier: expected (N, 3, {size}, {size}) images, got {tuple(x.shape)}")
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        """(N, num_domains) logits."""
        return self.head(self.features(x))


def _hits(logits: Tensor, targets: Tensor, multi_label: bool) -> Tensor:
    """Bool correctness: (N,) argmax == index, or (N, D) per attribute with sigmoid(logit) > 0.5 <=> logit > 0."""
    if multi_label:
        return (logits > 0) == (targets > 0.5)
    return logits.argmax(dim=1) == targets


def domain_accuracy(model: DomainClassifier, images: Tensor, targets: Tensor, batch_size: int = 256) -> float:
    """Share of ``images`` that ``model`` assigns to ``targets`` (StarGAN's classification accuracy).

    Single-label: ``targets`` are int64 indices (N,), accuracy = mean(argmax(logits) == target). Multi-label:
    ``targets`` are float 0/1 vectors (N, D), accuracy = the mean over images and attributes of
    (sigmoid(logit) > 0.5) == target, StarGAN's CelebA convention (a per-attribute mean, not exact-match).
    Runs in eval mode under no_grad and restores the module's previous train/eval mode.
    """
    expected = (images.shape[0], model.num_domains) if model.multi_label else (images.shape[0],)
    if tuple(targets.shape) != expected or images.shape[0] == 0:
        raise ValueError(
            f"domain_accuracy: expected N > 0 images and targets of shape {expected}, "
            f"got images {tuple(images.shape)}, targets {tuple(targets.shape)}"
        )
    device = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.int64, device=device)  # summed on the device, read once at the end
    with evaluating(model):
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start : start + batch_size].to(device))
            correct += _hits(logits, targets[start : start + batch_size].to(device), model.multi_label).sum()
    return int(correct) / targets.numel()


@dataclass
class ClassifierReport:
    """How a classifier was trained and how well it does on the held-out (test) split."""

    train_steps: int
    train_accuracy: float  # over the last tenth of the training steps, in train mode on augmented batches
    heldout_accuracy: float  # on data.test, the same convention as domain_accuracy; NaN without test images
    per_domain: dict[str, float] = field(default_factory=dict)  # held-out accuracy per domain (see _heldout)
    num_train: int = 0
    num_heldout: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only, so ``torch.load(..., weights_only=True)`` can read a saved report."""
        return dataclasses.asdict(self)


def _batches(loader: DataLoader) -> Iterator[tuple[Tensor, Tensor]]:
    """The loader's batches epoch after epoch (each epoch reshuffled by the loader's generator)."""
    while True:
        yield from loader


def _fit(
    model: DomainClassifier,
    dataset: Dataset,
    device: torch.device,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool,
    num_workers: int,
) -> float:
    """Adam with a cosine learning-rate decay; returns the train accuracy over the last tenth of the steps."""
    loader_rng, flip_rng = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    batch = min(batch_size, len(dataset))  # a tiny train set still gives full batches with drop_last
    loader = DataLoader(dataset, batch, shuffle=True, drop_last=True, generator=loader_rng, num_workers=num_workers)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    loss_fn = F.binary_cross_entropy_with_logits if model.multi_label else F.cross_entropy
    tail, correct, count = max(1, steps // 10), torch.zeros((), dtype=torch.int64, device=device), 0
    batches = _batches(loader)
    model.train()
    for step in tqdm(range(steps), desc="classifier", unit="step", disable=not progress):
        check_stop()  # a Ctrl-C / SIGTERM during training ends a long classifier fit within a step
        images, labels = next(batches)
        # Horizontal flips keep every domain (styles, face attributes) and are drawn from our own generator.
        flip = torch.rand(images.shape[0], generator=flip_rng) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images).to(device)
        labels = labels.to(device)
        logits = model(images)
        loss = loss_fn(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps - tail:  # accumulate on the device: no sync per step
            hit = _hits(logits.detach(), labels, model.multi_label)
            correct += hit.sum()
            count += hit.numel()
    return int(correct) / count if count else float("nan")


def _heldout(
    model: DomainClassifier, data: DataBundle, device: torch.device, num_workers: int, batch_size: int = 256
) -> tuple[float, dict[str, float]]:
    """Accuracy on ``data.test`` and per domain: single-label, the share of each domain's own test images
    classified correctly (per-class recall); multi-label, the accuracy of that attribute over all test images.
    Domains without test images are left out of the dict."""
    loader = DataLoader(data.test, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    hits, labels = [], []
    with evaluating(model):
        for images, target in loader:
            hits.append(_hits(model(images.to(device)), target.to(device), model.multi_label).cpu())
            labels.append(target)
    if not hits:
        return float("nan"), {}
    hit, label = torch.cat(hits).float(), torch.cat(labels)
    if model.multi_label:
        per_domain = {name: float(hit[:, d].mean()) for d, name in enumerate(data.domains)}
    else:
        per_domain = {name: float(hit[label == d].mean()) for d, name in enumerate(data.domains) if (label == d).any()}
    return float(hit.mean()), per_domain


def train_classifier(
    data: DataBundle,
    device: torch.device,
    steps: int = 2000,  # optimiser steps
    batch_size: int = 64,  # images per step (fewer if the train set is smaller)
    lr: float = 1e-3,  # Adam learning rate, decayed to zero on a cosine
    seed: int = 0,  # weight init, shuffling, flips: the same seed gives the same weights on the CPU
    width: int = 32,  # channels of the first stage; feature_dim = 8 * width
    progress: bool = False,  # a tqdm bar over the steps
    num_workers: int = 0,  # DataLoader workers (image files); their seeds also follow ``seed``
) -> tuple[DomainClassifier, ClassifierReport]:
    """Train a DomainClassifier on ``data.train`` only and measure it on ``data.test``.

    The caller's global (CPU) RNG state is left untouched: everything that draws from it runs in a forked RNG.
    """
    if len(data.train) == 0:
        raise ValueError("train_classifier: the train set is empty")
    start = time.perf_counter()
    # manual_seed below also reseeds every CUDA device, so all of them are forked, not just the CPU generator.
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        # Weight init, TensorImageDataset's flips and DataLoader worker seeds all draw from the global RNG.
        torch.manual_seed(seed)
        image_size = int(data.train[0][0].shape[-1])
        model = DomainClassifier(image_size, len(data.domains), data.multi_label, width).to(device)
        train_accuracy = _fit(model, data.train, device, steps, batch_size, lr, seed, progress, num_workers)
        heldout, per_domain = _heldout(model, data, device, num_workers)
    report = ClassifierReport(
        steps, train_accuracy, heldout, per_domain, len(data.train), len(data.test), time.perf_counter() - start
    )
    log.info(
        "classifier: %d steps in %.1f s, train accuracy %.3f, held-out accuracy %.3f on %d images",
        steps,
        report.seconds,
        train_accuracy,
        heldout,
        len(data.test),
    )
    model.report = report.to_dict()
    return model.eval(), report


def classifier_path(run_dir: Path) -> Path:
    """The conventional place of a run's domain classifier."""
    return Path(run_dir) / FILENAME


def save_classifier(
    path: Path,
    model: DomainClassifier,
    report: ClassifierReport,
    domains: list[str],
    provenance: dict[str, Any] | None = None,
) -> None:
    """Write the classifier atomically as plain types and tensors (readable with ``weights_only=True``).
    ``provenance`` (plain values: which data and settings it was trained with) lets a later run tell whether the
    file still fits its own data and settings."""
    if len(domains) != model.num_domains:
        raise ValueError(f"save_classifier: {len(domains)} domain names for a {model.num_domains}-domain classifier")
    payload = {
        "format": FORMAT,
        "args": model.config(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "domains": [str(name) for name in domains],
        "report": report.to_dict(),
        "provenance": dict(provenance or {}),
    }
    atomic_save(payload, Path(path))


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The file's payload with its format and keys checked; every problem is a one-line CheckpointError."""
    return load_marked(
        path,
        FORMAT,
        REQUIRED_KEYS,
        "classifier file",
        "spectral-gan domain classifier",
        map_location,
        not_found=f"train one with `{HOW_TO_TRAIN}`",
    )


def _build(path: Path, payload: dict[str, Any]) -> DomainClassifier:
    """The module the file describes, with its weights; a mismatch names the first offending tensor."""
    try:
        model = DomainClassifier(**payload["args"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid classifier arguments {payload['args']!r} ({exc})") from None
    stored, expected = payload["state_dict"], model.state_dict()
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: state_dict is a {type(stored).__name__}, not a dict of tensors")
    problem = state_dict_mismatch(expected, stored)
    if problem is not None:
        raise CheckpointError(f"{path}: weights do not match the stored architecture ({problem})")
    model.load_state_dict(stored)
    return model


def load_classifier(path: Path, device: str | torch.device = "cpu") -> tuple[DomainClassifier, dict[str, Any]]:
    """A classifier saved by ``save_classifier``, in eval mode on ``device``, and its metadata: ``domains``,
    ``report`` (a dict), ``args``. Missing, corrupt or foreign files are one-line CheckpointErrors."""
    path = Path(path)
    payload = _read(path, "cpu")
    domains = payload["domains"]
    if not isinstance(domains, (list, tuple)) or not all(isinstance(name, str) for name in domains):
        raise CheckpointError(f"{path}: 'domains' is a {type(domains).__name__}, not a list of domain names")
    if not isinstance(payload["args"], dict):
        raise CheckpointError(f"{path}: invalid classifier arguments (a {type(payload['args']).__name__}, not a dict)")
    model = _build(path, payload)
    if len(domains) != model.num_domains:
        raise CheckpointError(
            f"{path}: {len(payload['domains'])} domain names for a {model.num_domains}-domain classifier"
        )
    meta = {key: payload[key] for key in ("domains", "report", "args")}
    meta["provenance"] = payload.get("provenance") or {}  # absent in files of older versions
    model.report = dict(meta["report"]) if isinstance(meta["report"], dict) else None
    return model.to(device).eval(), meta
