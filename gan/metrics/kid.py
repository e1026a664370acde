"""Kernel Inception Distance: unbiased MMD² with a polynomial kernel over random subsets, as torch-fidelity 0.4.0."""

from __future__ import annotations

import numpy as np
import torch


def _features(values: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (N, d), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _polynomial_kernel(a: np.ndarray, b: np.ndarray, degree: float, gamma: float, coef0: float) -> np.ndarray:
    k = a @ b.T  # for a is b numpy uses syrk: half the work
    k *= gamma
    k += coef0
    k **= degree
    return k


def _mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """U-statistic for the within-set terms (kernel diagonals k(x, x) left out), plain mean for the cross term:
    the estimator torch-fidelity (after MMD-GAN) calls ``unbiased``. It can be slightly negative."""
    m = k_xx.shape[0]
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def _check_options(n1: int, n2: int, subsets: int, subset_size: int) -> None:
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be at least 2 (the estimator divides by m - 1), got {subset_size}")
    if subset_size > min(n1, n2):
        raise ValueError(
            f"KID subset_size {subset_size} is larger than the number of feature vectors "
            f"(set 1: {n1}, set 2: {n2}); use a subset size of at most {min(n1, n2)}"
        )


def kernel_inception_distance(
    f1: np.ndarray | torch.Tensor,
    f2: np.ndarray | torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: float = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 2020,
) -> tuple[float, float]:
    """Mean and standard deviation (ddof=0) over ``subsets`` random subsets of the unbiased MMD² between two
    ``(N, d)`` feature sets, kernel ``k(x, y) = (gamma x·y + coef0)^degree`` with ``gamma = 1/d`` by default.

    Float64 throughout. Subsets are drawn without replacement from ``np.random.RandomState(seed)``, set 1 then
    set 2 for each subset, exactly as torch-fidelity does, so with its defaults the numbers match
    ``torch_fidelity`` on the same (float64) features.
    """
    x, y = _features(f1, "f1"), _features(f2, "f2")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"the feature sets have different dimensions: {x.shape[1]} and {y.shape[1]}")
    _check_options(len(x), len(y), subsets, subset_size)
    kernel_options = {"degree": degree, "gamma": 1.0 / x.shape[1] if gamma is None else gamma, "coef0": coef0}
    rng = np.random.RandomState(seed)
    mmds = np.empty(subsets)
    for i in range(subsets):
        # Two draws per subset in this order (set 1, then set 2): the RNG stream, hence the subsets, match.
        a = x[rng.choice(len(x), subset_size, replace=False)]
        b = y[rng.choice(len(y), subset_size, replace=False)]
        mmds[i] = _mmd2_unbiased(
            _polynomial_kernel(a, a, **kernel_options),
            _polynomial_kernel(b, b, **kernel_options),
            _polynomial_kernel(a, b, **kernel_options),
        )
    return float(np.mean(mmds)), float(np.std(mmds))
