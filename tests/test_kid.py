"""Kernel Inception Distance: equal to torch-fidelity 0.4.0 and to the estimator written out element by element.

fid.md §11's KID golden value is not used: its features ``relu(randn(n, d) @ A + shift)`` leave ``A`` unspecified,
so the tests compare live with torch-fidelity instead.
"""

import itertools

import numpy as np
import pytest
import torch

from gan.metrics.kid import kernel_inception_distance


def relu_features(seed: int, n: int, d: int, shift: float) -> np.ndarray:
    mixing = np.random.RandomState(0).randn(d, d) / np.sqrt(d)
    return np.maximum(np.random.RandomState(seed).randn(n, d) @ mixing + shift, 0.0)


def torch_fidelity_kid(f1, f2, subsets, subset_size, degree=3, gamma=None, coef0=1, seed=2020):
    from torch_fidelity.metric_kid import kid_features_to_metric

    out = kid_features_to_metric(
        torch.from_numpy(f1),
        torch.from_numpy(f2),
        kid_subsets=subsets,
        kid_subset_size=subset_size,
        kid_kernel="poly",
        kid_kernel_poly_degree=degree,
        kid_kernel_poly_gamma=gamma,
        kid_kernel_poly_coef0=coef0,
        rng_seed=seed,
        verbose=False,
    )
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


@pytest.mark.parametrize(
    "n1, n2, d, subsets, subset_size, options",
    [
        (300, 300, 64, 20, 100, {}),
        (250, 400, 64, 10, 250, {}),  # subset = all of set 1: the permutation still matters for set 2
        (200, 150, 32, 15, 50, {"seed": 7}),
        (200, 200, 32, 10, 60, {"degree": 2, "gamma": 0.1, "coef0": 0.5}),
        (120, 100, 2048, 5, 40, {}),  # Inception's width, small sets
    ],
)
def test_matches_torch_fidelity(n1, n2, d, subsets, subset_size, options):
    f1, f2 = relu_features(1, n1, d, 0.3), relu_features(2, n2, d, 0.32)
    mean, std = kernel_inception_distance(f1, f2, subsets=subsets, subset_size=subset_size, **options)
    ref_mean, ref_std = torch_fidelity_kid(f1, f2, subsets, subset_size, **options)
    assert mean == pytest.approx(ref_mean, rel=1e-9)
    assert std == pytest.approx(ref_std, rel=1e-9)


def test_defaults_are_torch_fidelitys():
    f1, f2 = relu_features(3, 1000, 8, 0.3), relu_features(4, 1000, 8, 0.5)
    ours = kernel_inception_distance(f1, f2, subsets=3)  # subset_size 1000, degree 3, gamma 1/d, coef0 1, seed 2020
    assert ours == pytest.approx(torch_fidelity_kid(f1, f2, 3, 1000), rel=1e-9)


def element_wise_kid(f1, f2, subsets, m, degree, gamma, coef0, seed):
    """The unbiased MMD² written from its definition with Python loops over pairs (only for tiny inputs)."""
    gamma = 1.0 / f1.shape[1] if gamma is None else gamma
    rng = np.random.RandomState(seed)

    def k(a, b):
        return (gamma * float(np.dot(a, b)) + coef0) ** degree

    values = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        pairs = [(i, j) for i, j in itertools.product(range(m), repeat=2) if i != j]
        xx = sum(k(x[i], x[j]) for i, j in pairs) / (m * (m - 1))
        yy = sum(k(y[i], y[j]) for i, j in pairs) / (m * (m - 1))
        xy = sum(k(x[i], y[j]) for i, j in itertools.product(range(m), repeat=2)) / (m * m)
        values.append(xx + yy - 2 * xy)
    return float(np.mean(values)), float(np.std(values))


@pytest.mark.parametrize(
    "degree, gamma, coef0",
    [(3, None, 1.0), (2, None, 1.0), (3, 0.5, 0.0), (1, 2.0, 3.0), (4, 0.25, -0.5)],
)
def test_kernel_options_match_definition(degree, gamma, coef0):
    f1 = np.random.RandomState(5).randn(12, 3)
    f2 = np.random.RandomState(6).randn(9, 3) + 0.5
    options = {"degree": degree, "gamma": gamma, "coef0": coef0, "seed": 11}
    ours = kernel_inception_distance(f1, f2, subsets=4, subset_size=6, **options)
    assert ours == pytest.approx(element_wise_kid(f1, f2, 4, 6, **options), rel=1e-12, abs=1e-14)


def test_inputs_any_dtype_or_tensor_same_float64_result():
    f1, f2 = relu_features(1, 80, 16, 0.3).astype(np.float32), relu_features(2, 80, 16, 0.4).astype(np.float32)
    expected = kernel_inception_distance(f1.astype(np.float64), f2.astype(np.float64), subsets=5, subset_size=30)
    assert kernel_inception_distance(f1, f2, subsets=5, subset_size=30) == expected
    assert kernel_inception_distance(torch.from_numpy(f1), torch.from_numpy(f2), subsets=5, subset_size=30) == expected


@pytest.mark.parametrize(
    "n1, n2, subset_size, message",
    [
        (50, 100, 60, r"subset_size 60 is larger .*set 1: 50, set 2: 100.* at most 50"),
        (100, 40, 60, r"set 1: 100, set 2: 40.* at most 40"),
        (100, 100, 1, "at least 2"),
    ],
)
def test_subset_size_checked(n1, n2, subset_size, message):
    with pytest.raises(ValueError, match=message):
        kernel_inception_distance(np.ones((n1, 4)), np.ones((n2, 4)), subsets=2, subset_size=subset_size)


@pytest.mark.parametrize(
    "f1, f2, options, message",
    [
        (np.ones((10, 4)), np.ones((10, 5)), {}, "different dimensions: 4 and 5"),
        (np.ones(10), np.ones((10, 4)), {}, r"f1 must have shape \(N, d\)"),
        (np.ones((10, 4)), np.full((10, 4), np.nan), {}, "f2 contains NaN"),
        (np.ones((10, 4)), np.ones((10, 4)), {"subsets": 0}, "subsets must be at least 1"),
    ],
)
def test_bad_inputs(f1, f2, options, message):
    with pytest.raises(ValueError, match=message):
        kernel_inception_distance(f1, f2, **{"subset_size": 5, **options})


def test_same_distribution_is_near_zero():
    features = relu_features(9, 400, 16, 0.3)
    mean, std = kernel_inception_distance(features[:200], features[200:], subsets=20, subset_size=100)
    shifted, _ = kernel_inception_distance(features[:200], features[200:] + 0.5, subsets=20, subset_size=100)
    assert abs(mean) < 3 * std and shifted > 100 * abs(mean)
