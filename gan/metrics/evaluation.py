"""Scoring a generator's translations: FID and KID per target domain, domain accuracy, paired L1 and PSNR.

Protocol (one definition for the training hook and ``evaluate.py``): for each target domain d, ``num_images``
held-out (test split) images that are not in d, evenly spaced over the test set (so every source domain takes part),
are translated into d; the outputs are quantised to uint8 (round to nearest); they are compared with ``num_images``
real images of d from ``real_split``, evenly spaced over that domain's images. FID/KID use the extractor's
features; domain accuracy is the share of translations that the domain classifier assigns to d (multi-label data:
whose attribute d it predicts as present). ``fid/mean`` and ``kid/mean`` average over target domains.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from torchvision import transforms as T

from gan.data.base import DataBundle, ImageFileDataset, PairedSet, TensorImageDataset, uint8_to_unit
from gan.errors import CheckpointError, DataError
from gan.interrupt import check_stop
from gan.labels import LabelSpace
from gan.metrics.features import FeatureExtractor, features_of
from gan.metrics.fid import StatsCache, StatsKey, feature_statistics, frechet_distance
from gan.metrics.inception import to_uint8
from gan.metrics.kid import kernel_inception_distance
from gan.models.modes import evaluating

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------------- images


def unflipped(dataset: Dataset) -> Dataset:
    """The same images without the training-time random flip (evaluation must not depend on, or draw from, RNG)."""
    if isinstance(dataset, TensorImageDataset):
        return TensorImageDataset(dataset.images, dataset.labels, flip=False)
    if isinstance(dataset, ImageFileDataset):
        transform = dataset.transform
        if isinstance(transform, T.Compose):  # a transform made with image_transform(flip=True)
            transform = T.Compose([t for t in transform.transforms if not isinstance(t, T.RandomHorizontalFlip)])
        return ImageFileDataset(dataset.paths, dataset.labels, transform, flip=False)
    return dataset


def spread(indices: Tensor, count: int) -> Tensor:
    """``count`` of ``indices`` evenly spaced over the list (all of them if there are fewer): test sets are ordered
    by domain, so taking the first ``count`` would draw every translation from one source domain."""
    n = indices.numel()
    if n <= count:
        return indices
    return indices[torch.arange(count) * n // count]


def members(space: LabelSpace, labels: Tensor, domain: int, count: int, inside: bool = True) -> Tensor:
    """Indices of ``count`` images in (or, with ``inside=False``, outside) ``domain``, spread over the dataset."""
    mask = space.contains(labels, domain)
    return spread(torch.nonzero(mask if inside else ~mask).flatten(), count)


def image_batches(dataset: Dataset, indices: Tensor, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(float images in [-1, 1], labels) batches of ``dataset[indices]``, in order."""
    for start in range(0, len(indices), batch_size):
        items = [dataset[int(i)] for i in indices[start : start + batch_size]]
        yield torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


def real_images(dataset: Dataset, space: LabelSpace, domain: int, count: int, batch_size: int) -> Iterator[Tensor]:
    """uint8 batches of ``count`` images of ``domain`` in ``dataset`` (spread over it, see :func:`spread`)."""
    for images, _ in image_batches(dataset, members(space, dataset.labels, domain, count), batch_size):
        yield to_uint8(images)


# ---------------------------------------------------------------------------------------------------- results
def value_span(values: Iterable[int]) -> str:
    """ "64" when every value is 64, "60-64" when they range (sample sizes of several domains)."""
    seen = sorted(set(values)) or [0]
    return str(seen[0]) if seen[0] == seen[-1] else f"{seen[0]}-{seen[-1]}"


@dataclass
class DomainScores:
    """Scores of the translations into one target domain."""

    fid: float | None  # None when only accuracy was measured (no feature extractor)
    kid_mean: float | None
    kid_std: float | None
    accuracy: float | None
    num_fake: int
    num_real: int
    kid_subset_size: int = 0  # min(metrics.kid_subset_size, num_fake, num_real)
    diversity: float | None = None  # tr Cov(fake features) / tr Cov(real features): near 0 = collapsed translations


@dataclass
class TranslationScores:
    """Everything measured on one generator; ``info`` names the feature extractor and protocol used."""

    info: dict[str, Any]
    domains: dict[str, DomainScores] = field(default_factory=dict)
    paired_l1: float | None = None
    paired_psnr: float | None = None

    @property
    def fid_mean(self) -> float | None:
        values = [s.fid for s in self.domains.values() if s.fid is not None]
        return float(np.mean(values)) if values else None

    @property
    def kid_mean(self) -> float | None:
        values = [s.kid_mean for s in self.domains.values() if s.kid_mean is not None]
        return float(np.mean(values)) if values else None

    @property
    def domain_accuracy(self) -> float | None:
        """Accuracy over all translations (each domain weighted by its number of translations)."""
        scored = [s for s in self.domains.values() if s.accuracy is not None]
        if not scored:
            return None
        return sum(s.accuracy * s.num_fake for s in scored) / sum(s.num_fake for s in scored)

    def scalars(self) -> dict[str, float]:
        """TensorBoard tags. Inception features give ``eval/fid/*`` and ``eval/kid/mean``; any other extractor is
        logged under its own name (``eval/<name>_fd/*``, ``eval/<name>_kd/mean``) so it is never read as FID."""
        out: dict[str, float] = {}
        if self.fid_mean is not None:
            fd, kd = self.distance_names()
            out.update({f"eval/{fd}/{d}": s.fid for d, s in self.domains.items()})
            out[f"eval/{fd}/mean"] = self.fid_mean
            out[f"eval/{kd}/mean"] = self.kid_mean
        if self.domain_accuracy is not None:
            out["eval/domain_accuracy"] = self.domain_accuracy
        diversity = {d: s.diversity for d, s in self.domains.items() if s.diversity is not None}
        finite = [v for v in diversity.values() if math.isfinite(v)]
        if diversity:
            out.update({f"stability/diversity/{d}": value for d, value in diversity.items()})
            out["stability/diversity/min"] = min(finite) if finite else math.nan
        return out  # paired L1/PSNR have their own hook (hooks.paired_l1)

    def distance_names(self) -> tuple[str, str]:
        """("fid", "kid") on Inception features; ("<name>_fd", "<name>_kd") on any other, never read as FID."""
        name = self.info.get("extractor")
        return ("fid", "kid") if name == "inception" else (f"{name}_fd", f"{name}_kd")

    def sample_sizes(self) -> str:
        """How many images each distance compares, e.g. "64 translations vs 64 real images per target domain"
        (a range where domains differ): FID is biased upward at small sizes, so every FID is shown with it."""
        fake = {s.num_fake for s in self.domains.values()}
        real = {s.num_real for s in self.domains.values() if s.fid is not None}
        if not real:
            return f"{value_span(fake)} translations per target domain"
        return f"{value_span(fake)} translations vs {value_span(real)} real images per target domain"

    def about(self) -> dict[str, Any]:
        """What the numbers were measured on (for status.json and JSON output): the extractor's description and the
        number of translated and real images of every target domain."""
        return {
            **self.info,
            "sample_sizes": self.sample_sizes(),
            "images": {d: {"fake": s.num_fake, "real": s.num_real} for d, s in self.domains.items()},
        }

    def descriptions(self) -> dict[str, str]:
        """TensorBoard descriptions of the tags of :meth:`scalars` that depend on the sample size and the features:
        what was compared, with how many images, on which network."""
        out: dict[str, str] = {}
        if self.fid_mean is not None:
            fd, kd = self.distance_names()
            if fd == "fid":
                info = self.info
                network = (
                    f"the FID Inception network (protocol {info.get('protocol')}, weights {info.get('weights_source')}"
                    f", {info.get('variant')} variant)"
                )
            else:
                network = (
                    f"the {self.info.get('extractor')}'s features ({self.info.get('weights')}); NOT Inception FID, "
                )
                network += "comparable only on this dataset with this classifier"
            caveat = (
                "Frechet distances are biased upward at small sample sizes: compare only values measured with the "
                "same numbers of images (never with published FIDs over 10k-50k images)."
            )
            for d, s in self.domains.items():
                out[f"eval/{fd}/{d}"] = (
                    f"Frechet distance between {s.num_fake} translations into {d} and {s.num_real} real {d} images, "
                    f"on {network}. {caveat}"
                )
            out[f"eval/{fd}/mean"] = f"Mean of eval/{fd}/<domain> over target domains ({self.sample_sizes()}), on "
            out[f"eval/{fd}/mean"] += f"{network}. {caveat}"
            subset = value_span(s.kid_subset_size for s in self.domains.values())
            out[f"eval/{kd}/mean"] = (
                f"Kernel distance ({self.info.get('kid_subsets')} random subsets of {subset} images; unbiased in the "
                f"sample size, noisier when it is small), averaged over target domains ({self.sample_sizes()}), on "
                f"{network}."
            )
        if self.domain_accuracy is not None:
            count = value_span(s.num_fake for s in self.domains.values())
            out["eval/domain_accuracy"] = (
                f"Share of the translations ({count} per target domain) that the domain classifier assigns to their "
                "target domain."
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.info,
            "sample_sizes": self.sample_sizes(),
            "fid_mean": self.fid_mean,
            "kid_mean": self.kid_mean,
            "domain_accuracy": self.domain_accuracy,
            "paired_l1": self.paired_l1,
            "paired_psnr": self.paired_psnr,
            "domains": {d: vars(s) for d, s in self.domains.items()},
        }


# ------------------------------------------------------------------------------------------------- evaluation


@dataclass
class Translations:
    """uint8 translations into one domain and the classifier's verdict on each (None without a classifier)."""

    images: Tensor
    correct: Tensor | None


def translate_into(
    G: nn.Module,
    data: DataBundle,
    domain: int,
    num_images: int,
    device: torch.device,
    batch_size: int,
    classifier: nn.Module | None = None,
) -> Translations:
    """Translate ``num_images`` held-out images not in ``domain`` (spread over the test set) into it (G in eval
    mode, no grad). Target labels follow gan.labels (multi-label: d set, its exclusive group cleared)."""
    test, space = unflipped(data.test), data.space
    sources = members(space, test.labels, domain, num_images, inside=False)
    images, correct = [], []
    with evaluating(G, classifier):
        for x, labels in image_batches(test, sources, batch_size):
            check_stop()
            target = space.toward(labels, domain).to(device)
            fake = to_uint8(G(x.to(device), space.vectors(target)))
            images.append(fake.cpu())
            if classifier is not None:
                correct.append(_classified_as(classifier, fake, domain, data.multi_label).cpu())
    if not images:
        raise DataError(f"domain {data.domains[domain]}: every held-out image is already in it; nothing to translate")
    return Translations(torch.cat(images), torch.cat(correct) if correct else None)


def _classified_as(classifier: nn.Module, images: Tensor, domain: int, multi_label: bool) -> Tensor:
    logits = classifier(uint8_to_unit(images))  # the saved PNG's pixels, as a user would see them
    return logits[:, domain] > 0 if multi_label else logits.argmax(dim=1) == domain


def sample_shortfall(data: DataBundle, num_images: int, real_split: str | None) -> str | None:
    """Why an evaluation of up to ``num_images`` translations per target domain cannot run on ``data``, else None:
    checked before a run or a command does any work. The translations into domain d come from the held-out images
    outside d; with ``real_split`` (FID/KID) d also needs at least 2 real images in that split and 2 translations
    (a covariance); without (accuracy only) one translation suffices."""
    space, held_out = data.space, _labels(data.test)
    need = 1 if real_split is None else 2
    for d, name in enumerate(data.domains):
        sources = int(members(space, held_out, d, num_images, inside=False).numel())
        if sources < need:
            others = ", ".join(
                f"{other} {int(members(space, held_out, o, len(held_out)).numel())}"
                for o, other in enumerate(data.domains)
                if o != d
            )
            what = "FID and KID need at least 2 translations" if need == 2 else "accuracy needs at least 1 translation"
            return (
                f"domain {name}: {what} into it, made from the held-out images of the other domains, which have "
                f"{sources} ({others}); add images to those domains or hold out a larger share of them"
            )
        if real_split is not None:
            reals = int(members(space, _labels(data.train if real_split == "train" else data.test), d, 2).numel())
            if reals < 2:
                return (
                    f"domain {name}: {reals} real image(s) in the {real_split} split; FID and KID need at least 2 "
                    "(add images to this domain; metrics.real_split chooses the split)"
                )
    return None


def _labels(dataset: Dataset) -> Tensor:
    return dataset.labels  # type: ignore[attr-defined] - every dataset of a DataBundle has them


def evaluate_translations(
    G: nn.Module,
    data: DataBundle,
    extractor: FeatureExtractor | None,
    real_features: Callable[[int], np.ndarray] | None,
    device: torch.device,
    num_images: int,
    classifier: nn.Module | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    batch_size: int = 50,
    paired_images: int | None = None,
    progress: bool = False,
) -> TranslationScores:
    """FID, KID and accuracy for every target domain (see the module docstring), plus paired L1/PSNR over
    ``paired_images`` sources when the data has ground truth (None: not measured; the training run has a hook of its
    own for them). ``real_features(d)`` returns the real images' features of domain d (cached by the caller).
    Without an extractor only the domain accuracy (and paired scores) are measured."""
    info = dict(extractor.info, kid_subsets=kid_subsets) if extractor else {}
    scores = TranslationScores(info=dict(info, num_images=num_images))
    for d, name in enumerate(data.domains):
        fake = translate_into(G, data, d, num_images, device, batch_size, classifier)
        accuracy = None if fake.correct is None else float(fake.correct.double().mean())
        fid = kid = diversity = None
        n_real = subset = 0
        if extractor is not None and real_features is not None:
            f_fake = features_of(extractor, fake.images.split(batch_size), len(fake.images), f"fake {name}", progress)
            f_real = real_features(d)
            n_real = len(f_real)
            if min(len(f_fake), n_real) < 2:
                raise DataError(
                    f"domain {name}: {len(f_fake)} translated and {n_real} real images; FID and KID need at least 2 "
                    "of each (more held-out or real images of this domain, or a larger num_images)"
                )
            subset = min(kid_subset_size, len(f_fake), n_real)
            kid = kernel_inception_distance(f_fake, f_real, subsets=kid_subsets, subset_size=subset)
            (mu_f, cov_f), (mu_r, cov_r) = feature_statistics(f_fake), feature_statistics(f_real)
            fid = frechet_distance(mu_f, cov_f, mu_r, cov_r)
            diversity = diversity_ratio(cov_f, cov_r)
        scores.domains[name] = DomainScores(
            fid, kid[0] if kid else None, kid[1] if kid else None, accuracy, len(fake.images), n_real, subset, diversity
        )
    if data.paired is not None and paired_images is not None:
        scores.paired_l1, scores.paired_psnr = paired_scores(G, data.paired, device, paired_images)
        scores.info["paired_images"] = min(paired_images, len(data.paired.labels))
    return scores


def diversity_ratio(cov_fake: np.ndarray, cov_real: np.ndarray) -> float:
    """How spread the translations into a domain are relative to its real images, on the same features: the ratio of
    the total variances tr Cov. About 1 for translations as varied as the data; towards 0 as G maps different inputs
    to the same output (collapse). Real features without variance give inf (any spread) or nan (none at all)."""
    fake, real = float(np.trace(cov_fake)), float(np.trace(cov_real))
    if real > 0:
        return fake / real
    return math.inf if fake > 0 else math.nan


def paired_scores(G: nn.Module, paired: PairedSet, device: torch.device, num_images: int) -> tuple[float, float]:
    """Mean L1 (in [-1, 1] units) and mean PSNR (dB, images scaled to [0, 1]) between G(x, d) and the true rendering
    of x's content in d, over ``num_images`` held-out images (spread over the set) and every target domain but
    their own.
    Measured on G's float output (not quantised to uint8, unlike FID); an exact match counts as 100 dB."""
    picks = spread(torch.arange(paired.images.size(0)), num_images)  # every source domain, not just the first
    x, src = paired.images[picks].to(device), paired.labels[picks].to(device)
    l1, psnr, num_domains = [], [], paired.targets.size(1)
    with evaluating(G):
        for d in range(num_domains):
            check_stop()
            keep = src != d
            if not keep.any():
                continue
            fake = G(x[keep], F.one_hot(torch.full_like(src[keep], d), num_domains).float())  # single-label data
            truth = paired.targets[picks][keep.cpu(), d].to(device)
            l1.append((fake - truth).abs().mean(dim=(1, 2, 3)))
            mse = ((fake - truth) / 2).square().mean(dim=(1, 2, 3)).clamp_min(1e-10)
            psnr.append(-10 * torch.log10(mse))
    return float(torch.cat(l1).mean()), float(torch.cat(psnr).mean())


# ------------------------------------------------------------------------------------------ real features


class RealFeatures:
    """Features of the real images of each domain, computed once per process; Inception statistics and features
    are also kept on disk (keyed by dataset, split, resolution, count, protocol), so later runs skip the pass."""

    def __init__(
        self,
        data: DataBundle,
        extractor: FeatureExtractor,
        dataset: str,
        split: str,
        resolution: int,
        count: int,
        batch_size: int,
        cache: StatsCache | None = None,
        progress: bool = False,
    ) -> None:
        self.data, self.extractor, self.cache = data, extractor, cache
        self.dataset, self.split, self.resolution, self.count = dataset, split, resolution, count
        self.batch_size, self.progress = batch_size, progress
        self._memory: dict[int, np.ndarray] = {}

    def key(self, domain: int) -> StatsKey:
        info = self.extractor.info
        extractor = "-".join(str(info.get(k, "na")) for k in ("extractor", "weights_sha256", "variant"))
        return StatsKey(
            f"{self.dataset}-{self.data.domains[domain]}-{self._fingerprint(domain)}",
            self.split,
            self.resolution,
            self.count,
            info["protocol"],
            extractor,
        )

    def _dataset(self) -> Dataset:
        return unflipped(self.data.train if self.split == "train" else self.data.test)

    def _fingerprint(self, domain: int) -> str:
        """A hash of the selected images themselves: their pixels (in-memory data) or their files' paths, sizes and
        modification times, so edited or replaced images never reuse old statistics."""
        dataset = self._dataset()
        return images_digest(dataset, members(self.data.space, dataset.labels, domain, self.count))[:12]

    def __call__(self, domain: int) -> np.ndarray:
        if domain in self._memory:
            return self._memory[domain]
        if members(self.data.space, self._dataset().labels, domain, self.count).numel() < 2:
            raise DataError(
                f"domain {self.data.domains[domain]}: fewer than 2 real images in the {self.split} split; FID and "
                "KID need at least 2 (metrics.real_split chooses the split)"
            )
        key = self.key(domain) if self.cache is not None else None  # hashes the images: computed once
        cached = self.cache.get_features(key) if self.cache is not None else None
        if cached is None:
            batches = real_images(self._dataset(), self.data.space, domain, self.count, self.batch_size)
            name = f"real {self.data.domains[domain]}"
            cached = features_of(self.extractor, batches, None, name, self.progress)
            if self.cache is not None:  # features for KID, statistics in pytorch-fid's .npz format for everyone
                try:
                    self.cache.put_features(key, cached)
                    self.cache.put(key, *feature_statistics(cached))
                except OSError as exc:  # the cache only saves time: an unwritable folder must not stop a run
                    log.warning(
                        "cannot write the statistics cache %s (%s); continuing without it",
                        self.cache.root,
                        exc.strerror or exc,
                    )
        self._memory[domain] = cached
        return cached


def images_digest(dataset: Dataset, indices: Tensor | None = None) -> str:
    """SHA-256 of the images themselves (``indices`` of ``dataset``, default all): their pixels (in-memory data) or
    their files' paths, sizes and modification times, so that edited or replaced images never reuse a cache entry."""
    digest = hashlib.sha256()
    if isinstance(dataset, TensorImageDataset):
        images = dataset.images if indices is None else dataset.images[indices]
        digest.update(images.numpy().tobytes())
    else:
        for i in range(len(dataset)) if indices is None else indices.tolist():
            path = Path(dataset.paths[i]).resolve()
            stat = path.stat()
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def check_classifier(path: Path, meta: dict[str, Any], data: DataBundle) -> None:
    """A classifier file made for other data (domains, image size, label kind) is a one-line CheckpointError."""
    size = int(data.test[0][0].shape[-1]) if len(data.test) else None
    check_classifier_fits(path, meta, list(data.domains), size, data.multi_label)


def check_classifier_fits(
    path: Path, meta: dict[str, Any], domains: list[str], image_size: int | None, multi_label: bool
) -> None:
    """:func:`check_classifier` from plain values (``image_size`` None: not checked), for callers without data."""
    args = meta["args"]
    if list(meta["domains"]) != domains:
        raise CheckpointError(f"{path}: classifier for domains {meta['domains']}, the data has {domains}")
    if image_size is not None and args.get("image_size") != image_size:
        raise CheckpointError(
            f"{path}: classifier for {args.get('image_size')} px images, the data has {image_size} px"
        )
    if bool(args.get("multi_label")) != multi_label:
        kind = "multi-label" if args.get("multi_label") else "single-label"
        raise CheckpointError(f"{path}: a {kind} classifier, the data is {'multi' if multi_label else 'single'}-label")
