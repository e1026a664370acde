"""Fréchet distance and statistics: exact references (sqrtm, pytorch-fid, torch-fidelity), stats files, the cache.

fid.md §11's function-level golden values are not used: its feature construction ``relu(randn(n, d) @ A + shift)``
does not say how ``A`` was drawn, so they cannot be reproduced; the tests compare live with the references instead.
"""

import logging
import os

import mpmath
import numpy as np
import pytest
import scipy.linalg
import torch

from gan.errors import DataError
from gan.metrics.fid import (
    StatsCache,
    StatsKey,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    load_stats,
    save_stats,
)


def relu_features(seed: int, n: int, d: int, shift: float) -> np.ndarray:
    """Non-negative, correlated, non-centred features (like Inception pool3), float64."""
    mixing = np.random.RandomState(0).randn(d, d) / np.sqrt(d)
    return np.maximum(np.random.RandomState(seed).randn(n, d) @ mixing + shift, 0.0)


def stats_pair(n1: int, n2: int, d: int, seed: int = 1) -> tuple[np.ndarray, ...]:
    return (
        *feature_statistics(relu_features(seed, n1, d, 0.3)),
        *feature_statistics(relu_features(seed + 1, n2, d, 0.35)),
    )


def sqrtm_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The textbook formula with scipy's matrix square root (no ``disp=``: removed in scipy 1.18)."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# ---------------------------------------------------------------------------------------------- frechet_distance

# Measured on these cases (2-core CPU, torch 2.14.1, scipy 1.17.1): full rank <= 1e-14 relative; rank-deficient
# 5.4e-8 and 3.7e-8: sqrtm adds sqrt(round-off) for each (near-)zero eigenvalue, which ours drops (see the mpmath test).
SQRTM_CASES = [
    pytest.param(500, 500, 64, 1, 1e-9, id="full-rank-d64"),
    pytest.param(1000, 800, 128, 3, 1e-9, id="full-rank-d128"),
    pytest.param(100, 100, 256, 1, 1e-7, id="rank-deficient-d256"),
    pytest.param(60, 80, 128, 5, 1e-7, id="rank-deficient-unequal-n"),
]


@pytest.mark.parametrize("n1, n2, d, seed, rel", SQRTM_CASES)
def test_frechet_distance_matches_sqrtm(n1, n2, d, seed, rel):
    stats = stats_pair(n1, n2, d, seed)
    assert frechet_distance(*stats) == pytest.approx(sqrtm_distance(*stats), rel=rel)


def mpmath_distance(f1: np.ndarray, f2: np.ndarray, digits: int = 50) -> mpmath.mpf:
    """The exact FD of the Gaussians fitted to two feature sets, in ``digits`` digits: with centred Ai = (Xi - mui) /
    sqrt(Ni - 1), Si = AiᵀAi and tr sqrt(S1 S2) is the nuclear norm of the small (N1, N2) matrix A1 A2ᵀ."""
    with mpmath.workdps(digits):

        def centred(f):
            x = mpmath.matrix(f.tolist())
            mu = [mpmath.fsum(x[i, j] for i in range(x.rows)) / x.rows for j in range(x.cols)]
            scale = mpmath.sqrt(x.rows - 1)
            return mu, mpmath.matrix([[(x[i, j] - mu[j]) / scale for j in range(x.cols)] for i in range(x.rows)])

        (mu1, a1), (mu2, a2) = centred(f1), centred(f2)
        mean_term = mpmath.fsum((p - q) ** 2 for p, q in zip(mu1, mu2))
        traces = mpmath.fsum(v**2 for v in a1) + mpmath.fsum(v**2 for v in a2)
        return mean_term + traces - 2 * mpmath.fsum(mpmath.svd_r(a1 * a2.T, compute_uv=False))


# rel: measured <= 7e-16 on the rank-deficient cases and 3.7e-15 on the full-rank one, where FD (1.8) is small next
# to the traces it is the difference of; the eigenvalues of S1 S2 (our route before) and sqrtm were 3e-8..1e-7 off.
@pytest.mark.parametrize(
    "n1, n2, d, seed",
    [(2, 2, 128, 1), (8, 8, 128, 1), (5, 8, 256, 2), (8, 8, 512, 1), (40, 30, 16, 3)],
    ids=["n2-d128", "n8-d128", "n5-n8-d256", "n8-d512", "full-rank-d16"],
)
def test_frechet_distance_matches_a_50_digit_mpmath_value(n1, n2, d, seed):
    f1, f2 = relu_features(seed, n1, d, 0.3), relu_features(seed + 1, n2, d, 0.35)
    exact = float(mpmath_distance(f1, f2))
    assert frechet_distance(*feature_statistics(f1), *feature_statistics(f2)) == pytest.approx(exact, rel=1e-13)


@pytest.mark.parametrize("n, d", [(500, 64), (50, 128)])
def test_identical_inputs_give_zero(n, d):
    mu, sigma = feature_statistics(relu_features(7, n, d, 0.3))
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9 * np.trace(sigma))


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
@pytest.mark.parametrize("n1, n2, d", [(500, 500, 64), (60, 80, 128)])
def test_matches_pytorch_fid(n1, n2, d, pytorch_fid_sqrtm):
    from pytorch_fid.fid_score import calculate_frechet_distance

    stats = stats_pair(n1, n2, d)
    assert frechet_distance(*stats) == pytest.approx(calculate_frechet_distance(*stats), rel=1e-6)


@pytest.mark.parametrize("n1, n2, d", [(500, 500, 64), (60, 80, 128)])
def test_matches_torch_fidelity(n1, n2, d):
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    f1, f2 = relu_features(1, n1, d, 0.3), relu_features(2, n2, d, 0.35)
    ref_stats = [fid_features_to_statistics(torch.from_numpy(f)) for f in (f1, f2)]
    ref = fid_statistics_to_metric(*ref_stats, verbose=False)["frechet_inception_distance"]
    assert frechet_distance_from_features(f1, f2) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(*stats_pair(n1, n2, d)) == pytest.approx(ref, rel=1e-6)


def test_accepts_tensors_and_from_features_is_statistics_then_distance():
    f1, f2 = relu_features(1, 200, 32, 0.3), relu_features(2, 150, 32, 0.35)
    expected = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    assert frechet_distance_from_features(f1, f2) == expected
    assert frechet_distance_from_features(torch.from_numpy(f1), torch.from_numpy(f2)) == expected
    tensors = [torch.from_numpy(a) for a in stats_pair(200, 150, 32)]
    assert frechet_distance(*tensors) == pytest.approx(expected, rel=1e-12)


def _bad(case: str) -> tuple[np.ndarray, ...]:
    mu1, sigma1, mu2, sigma2 = np.zeros(4), np.eye(4), np.ones(4), np.eye(4)
    if case == "dims":
        return mu1, sigma1, np.zeros(3), np.eye(3)
    if case == "non-square":
        return mu1, np.ones((4, 3)), mu2, sigma2
    if case == "sigma-size":
        return mu1, np.eye(5), mu2, sigma2
    if case == "mu-2d":
        return mu1[None], sigma1, mu2, sigma2
    sigma2 = sigma2.copy()
    sigma2[1, 2] = np.nan if case == "nan" else np.inf
    return mu1, sigma1, mu2, sigma2


@pytest.mark.parametrize(
    "case, message",
    [
        ("dims", "different feature dimensions: 4 and 3"),
        ("non-square", r"sigma1 must be square .* got \(4, 3\)"),
        ("sigma-size", r"sigma1 must be square .* got \(5, 5\)"),
        ("mu-2d", "mu1 must be a non-empty vector"),
        ("nan", "mu2 or sigma2 contains NaN or inf"),
        ("inf", "mu2 or sigma2 contains NaN or inf"),
    ],
)
def test_frechet_distance_rejects_bad_statistics(case, message):
    with pytest.raises(ValueError, match=message):
        frechet_distance(*_bad(case))


# -------------------------------------------------------------------------------------------- feature_statistics


def test_feature_statistics_equals_numpy():
    features = relu_features(3, 300, 48, 0.3) * 30 + 100  # large means: a one-pass covariance would lose digits
    mu, sigma = feature_statistics(features)
    np.testing.assert_allclose(mu, np.mean(features, 0), rtol=1e-12, atol=0)
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False), rtol=1e-12, atol=1e-12 * np.abs(sigma).max())
    assert np.array_equal(sigma, sigma.T)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_feature_statistics_float64_from_any_dtype_and_tensors(dtype):
    features = relu_features(4, 100, 16, 0.3).astype(dtype)
    mu, sigma = feature_statistics(features)
    assert mu.dtype == sigma.dtype == np.float64 and mu.shape == (16,) and sigma.shape == (16, 16)
    exact = features.astype(np.float64)  # computed in float64, not in the input's precision
    np.testing.assert_allclose(sigma, np.cov(exact, rowvar=False), rtol=1e-12, atol=1e-14)
    t_mu, t_sigma = feature_statistics(torch.from_numpy(features))
    assert np.array_equal(t_mu, mu) and np.array_equal(t_sigma, sigma)


@pytest.mark.parametrize(
    "features, message",
    [
        (np.zeros((1, 8)), "at least 2 feature vectors"),
        (np.zeros(8), r"shape \(N, d\)"),
        (np.full((3, 2), np.nan), "NaN or inf"),
    ],
)
def test_feature_statistics_rejects(features, message):
    with pytest.raises(ValueError, match=message):
        feature_statistics(features)


# -------------------------------------------------------------------------------------------- stats files


@pytest.mark.parametrize("name", ["stats.npz", "stats", "stats.custom"])
def test_save_load_round_trip_exact_name(tmp_path, name):
    mu, sigma = feature_statistics(relu_features(1, 50, 8, 0.3).astype(np.float32))
    meta = {"protocol": "pytorch_fid", "count": 50, "scale": 0.5}
    save_stats(tmp_path / name, mu, sigma, meta=meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    loaded_mu, loaded_sigma, loaded_meta = load_stats(tmp_path / name)
    assert np.array_equal(loaded_mu, mu) and np.array_equal(loaded_sigma, sigma) and loaded_sigma.dtype == np.float64
    assert loaded_meta == meta and type(loaded_meta["count"]) is int
    with np.load(tmp_path / name) as raw:  # what pytorch-fid does
        assert np.array_equal(raw["mu"], mu) and raw["sigma"].dtype == np.float64
        assert str(raw["meta_protocol"]) == "pytorch_fid"


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")
def test_pytorch_fid_reads_our_stats_files(tmp_path, pytorch_fid_sqrtm):
    """pytorch-fid's ``calculate_fid_given_paths`` builds its InceptionV3 (a download) even for .npz inputs, so
    this uses the function it hands each path to, which never touches the model for a .npz, then its distance."""
    from pytorch_fid.fid_score import calculate_frechet_distance, compute_statistics_of_path

    stats = stats_pair(300, 200, 32)
    paths = [str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]
    save_stats(paths[0], *stats[:2], meta={"protocol": "pytorch_fid"})
    save_stats(paths[1], *stats[2:])
    read = [compute_statistics_of_path(p, None, 50, 32, "cpu") for p in paths]
    assert all(np.array_equal(a, b) for a, b in zip([*read[0], *read[1]], stats))
    assert frechet_distance(*stats) == pytest.approx(calculate_frechet_distance(*read[0], *read[1]), rel=1e-6)


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "real.npz"
    save_stats(path, np.zeros(3), np.eye(3), meta={"version": 1})

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_stats(path, np.ones(3), 2 * np.eye(3), meta={"version": 2})
    monkeypatch.undo()
    mu, sigma, meta = load_stats(path)
    assert np.array_equal(mu, np.zeros(3)) and np.array_equal(sigma, np.eye(3)) and meta == {"version": 1}
    assert os.listdir(tmp_path) == ["real.npz"]


def _write_bad(path, case: str) -> None:
    if case == "garbage":
        path.write_bytes(b"\x00\x01 not an archive \xff" * 10)
    elif case == "truncated":
        save_stats(path, np.zeros(3), np.eye(3))
        path.write_bytes(path.read_bytes()[:100])
    elif case == "no-sigma":
        np.savez(path, mu=np.zeros(3))
    elif case == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif case == "shapes":
        np.savez(path, mu=np.zeros(3), sigma=np.eye(4))
    elif case == "pickled":
        np.savez(path, mu=np.zeros(3), sigma=np.array([{"a": 1}], dtype=object))
    elif case == "nan":
        np.savez(path, mu=np.array([0.0, np.nan]), sigma=np.eye(2))


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "file not found"),
        ("garbage", r"not a .npz FID statistics file \(not a zip archive of arrays\)"),
        ("truncated", "not a readable .npz|unreadable .npz"),
        ("no-sigma", r"no 'sigma' array in the file \(it has: mu\)"),
        ("npy", "single .npy array"),
        ("shapes", r"inconsistent shapes: mu \(3,\), sigma \(4, 4\)"),
        ("pickled", "unreadable .npz .*Object arrays"),
        ("nan", "'mu' contains NaN or inf"),
    ],
)
def test_load_stats_bad_files_one_line_error(tmp_path, case, message):
    path = tmp_path / "stats.npz"
    _write_bad(path, case)
    with pytest.raises(DataError, match=message) as info:
        load_stats(path)
    text = str(info.value)
    assert text.startswith(str(path)) and "\n" not in text


@pytest.mark.parametrize("meta, error", [({"bad name": 1}, ValueError), ({"x": [1, 2]}, TypeError)])
def test_save_stats_rejects_bad_metadata(tmp_path, meta, error):
    with pytest.raises(error):
        save_stats(tmp_path / "s.npz", np.zeros(2), np.eye(2), meta=meta)
    assert list(tmp_path.iterdir()) == []


def test_save_stats_rejects_what_load_stats_would_refuse(tmp_path):
    with pytest.raises(ValueError, match=r"sigma \(d, d\), got \(3,\) and \(3, 2\)"):
        save_stats(tmp_path / "s.npz", np.zeros(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match="NaN or inf"):
        save_stats(tmp_path / "s.npz", np.array([0.0, np.inf]), np.eye(2))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------- the cache

KEY = StatsKey("celeba-Male", "train", 128, 1000, "pytorch_fid", "inception-6726825d")


def test_cache_miss_then_round_trip(tmp_path):
    cache = StatsCache(tmp_path / "cache")
    assert cache.get(KEY) is None and cache.get_features(KEY) is None
    mu, sigma = feature_statistics(relu_features(1, 40, 6, 0.3))
    path = cache.put(KEY, mu, sigma)
    assert path == cache.path_for(KEY) and path.parent == tmp_path / "cache"
    got_mu, got_sigma = cache.get(KEY)
    assert np.array_equal(got_mu, mu) and np.array_equal(got_sigma, sigma)
    assert load_stats(path)[2] == KEY.as_dict()  # the key travels with the file

    features = relu_features(2, 10, 6, 0.3)
    cache.put_features(KEY, torch.from_numpy(features))
    got = cache.get_features(KEY)
    assert got.dtype == np.float64 and np.array_equal(got, features)
    assert cache.get(KEY) is not None  # stats and features live in separate files


@pytest.mark.parametrize(
    "change",
    [
        {"dataset": "celeba-Female"},
        {"split": "test"},
        {"resolution": 256},
        {"count": 999},
        {"protocol": "tf1"},
        {"extractor": "inception-00000000"},
        {"dataset": "celeba Male"},  # sanitised to the same text as "celeba-Male": the hash keeps them apart
    ],
)
def test_cache_different_keys_different_files(tmp_path, change):
    cache = StatsCache(tmp_path)
    other = StatsKey(**{**KEY.as_dict(), **change})
    assert cache.path_for(other) != cache.path_for(KEY)
    cache.put(KEY, np.zeros(2), np.eye(2))
    assert cache.get(other) is None


def test_cache_file_names_are_readable_and_safe(tmp_path):
    key = StatsKey("../../etc/my data", "train", 64, 10, "tf1", "weights: /home/u/w.pth")
    path = StatsCache(tmp_path).path_for(key)
    assert path.parent == tmp_path and "/" not in path.name and " " not in path.name
    assert path.name.startswith("etc-my-data_train_64px_n10_tf1_weights-") and path.suffix == ".npz"
    assert StatsCache(tmp_path).path_for(KEY).name.startswith("celeba-Male_train_128px_n1000_pytorch_fid_inception")


@pytest.mark.parametrize("what", ["stats", "features"])
def test_cache_corrupt_file_is_a_miss_with_warning(tmp_path, caplog, what):
    cache = StatsCache(tmp_path)
    path = cache.path_for(KEY) if what == "stats" else cache.features_path_for(KEY)
    path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="gan.metrics.fid"):
        result = cache.get(KEY) if what == "stats" else cache.get_features(KEY)
    assert result is None
    assert str(path) in caplog.text and "ignoring" in caplog.text


def test_cache_metadata_mismatch_is_a_miss(tmp_path, caplog):
    cache = StatsCache(tmp_path)
    other = StatsKey(**{**KEY.as_dict(), "count": 5})
    save_stats(cache.path_for(KEY), np.zeros(2), np.eye(2), meta=other.as_dict())  # e.g. a file copied by hand
    with caplog.at_level(logging.WARNING, logger="gan.metrics.fid"):
        assert cache.get(KEY) is None
    assert "was written for" in caplog.text
    save_stats(cache.path_for(KEY), np.zeros(2), np.eye(2))  # a plain pytorch-fid file: no key at all
    assert cache.get(KEY) is None


@pytest.mark.parametrize("change", [{"count": 0}, {"resolution": True}, {"split": ""}, {"dataset": 3}])
def test_stats_key_validates(change):
    with pytest.raises(ValueError, match="StatsKey"):
        StatsKey(**{**KEY.as_dict(), **change})
