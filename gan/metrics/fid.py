"""Fréchet distance between Gaussian feature statistics (FID), and pytorch-fid compatible statistics files."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from gan.errors import DataError, special_file

log = logging.getLogger(__name__)

MetaValue = str | int | float
_META_PREFIX = "meta_"
_META_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _float64(values: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """``values`` as a float64 numpy array (torch tensors of any dtype, bfloat16 included, on any device)."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and covariance ``(d, d)`` of ``(N, d)`` features, in float64.

    Same numbers as pytorch-fid's ``np.mean(act, 0)`` and ``np.cov(act, rowvar=False)`` (two-pass: centre first,
    then ``XᵀX / (N - 1)``), whatever the input dtype: a one-pass ``Σxxᵀ - N μμᵀ`` loses digits when the channel
    means are large compared to their spread, which Inception features often are.
    """
    x = _float64(features, "features")
    if x.ndim != 2:
        raise ValueError(f"features must have shape (N, d), got {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    mu = np.mean(x, axis=0)
    centred = x - mu
    sigma = centred.T @ centred  # numpy sees the transpose of one buffer and uses syrk: exactly symmetric
    sigma /= x.shape[0] - 1
    return mu, sigma


def _check_statistics(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> None:
    for i, mu, sigma in ((1, mu1, sigma1), (2, mu2, sigma2)):
        if mu.ndim != 1 or mu.size == 0:
            raise ValueError(f"mu{i} must be a non-empty vector, got shape {mu.shape}")
        d = mu.shape[0]
        if sigma.shape != (d, d):
            raise ValueError(f"sigma{i} must be square with the size of mu{i}, ({d}, {d}), got {sigma.shape}")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ValueError(f"mu{i} or sigma{i} contains NaN or inf")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the statistics have different feature dimensions: {mu1.shape[0]} and {mu2.shape[0]}")


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(S1 S2) = Σ sqrt(λ_i(S1^½ S2 S1^½))``: S1 S2 is similar to that symmetric PSD matrix, so the symmetric
    eigensolver gives its eigenvalues as real numbers, and no square root of the non-symmetric S1 S2 is needed.

    Rank-deficient covariances (N <= d features: d - N + 1 zero eigenvalues) are why eigenvalues below round-off are
    set to 0 (see :func:`_drop_round_off`): a zero eigenvalue comes out as ±(round-off), and each positive one adds
    ``sqrt(round-off)`` to the trace. Kept, they made the eigenvalues of ``S1 S2`` (torch-fidelity's route, ours
    before) and scipy's ``sqrtm`` (pytorch-fid) 3e-8..2e-7 relative too low in FID at N=2..100, d=128..2048, against
    a 50-digit mpmath value; dropped, the error is <= 7e-16 (tests/test_fid.py; the numbers are in its comments).

    ``torch.linalg`` (MKL) rather than numpy (OpenBLAS): faster at d=2048 on the 2-core CPU machine. There the two
    symmetric eigensolves take about as long as the one general ``eigvals(S1 S2)`` did (one thread, a loaded
    machine: 3.4 s vs 3.1 s at N=1000, 6.5 s vs 5.9 s at N=10000), against 14 s for scipy 1.17's ``sqrtm``.
    """
    # A covariance is symmetric; averaging with the transpose makes sure the solvers, which read one triangle,
    # see all of it. For an exactly symmetric matrix (ours, np.cov) it changes no bit.
    s1, s2 = (torch.from_numpy((s + s.T) / 2) for s in (sigma1, sigma2))
    eigenvalues, vectors = torch.linalg.eigh(s1)
    root1 = (vectors * _drop_round_off(eigenvalues).sqrt()) @ vectors.T  # S1^½, with S1's round-off zeros at 0
    product = root1 @ s2 @ root1  # symmetric up to round-off; eigvalsh reads its lower triangle
    return float(_drop_round_off(torch.linalg.eigvalsh(product)).sqrt().sum())


def _drop_round_off(eigenvalues: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a symmetric PSD matrix with those below ``d·eps·λ_max`` (and negative ones) set to 0.

    A backward-stable symmetric eigensolver returns each eigenvalue to within about ``d·eps·|λ|_max``, so one below
    that cannot be told from zero; dropping a genuine one that small changes the trace by less than the round-off
    of the eigensolver already does.
    """
    tol = eigenvalues.shape[0] * torch.finfo(eigenvalues.dtype).eps * eigenvalues.abs().max()
    return torch.where(eigenvalues > tol, eigenvalues, 0.0)


def frechet_distance(
    mu1: np.ndarray | torch.Tensor,
    sigma1: np.ndarray | torch.Tensor,
    mu2: np.ndarray | torch.Tensor,
    sigma2: np.ndarray | torch.Tensor,
) -> float:
    """Fréchet distance ``|mu1 - mu2|² + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)`` between two Gaussians, in float64.

    Against the exact value (50-digit mpmath, from the features): <= 1e-14 relative on full-rank covariances and
    <= 7e-16 on rank-deficient ones (N <= d). scipy's ``sqrtm`` formula (pytorch-fid) agrees with it to <= 1e-14 on
    full-rank covariances, but on rank-deficient ones is itself 3e-8..2e-7 low (N=2..100, d=128..2048), so ours is
    that much above pytorch-fid's there (tests/test_fid.py). float32 is not enough: ~1 % error on rank-deficient
    inputs.
    """
    m1, s1, m2, s2 = (_float64(v, n) for v, n in ((mu1, "mu1"), (sigma1, "sigma1"), (mu2, "mu2"), (sigma2, "sigma2")))
    _check_statistics(m1, s1, m2, s2)
    diff = m1 - m2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product(s1, s2))
    # A squared distance: a negative result is cancellation round-off (identical inputs), not information.
    return max(value, 0.0)


def frechet_distance_from_features(f1: np.ndarray | torch.Tensor, f2: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two ``(N, d)`` feature sets.

    No separate path for N < d, on purpose. The nuclear norm of ``X1 X2ᵀ / sqrt((N1-1)(N2-1))`` (centred features)
    equals ``tr sqrt(S1 S2)`` and is as accurate (<= 3e-16 relative to 50-digit mpmath at d=128..2048, N=2..100),
    but the statistics route is within 7e-16 there too, and one path gives features and saved statistics the same
    number.
    """
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))


# ---------------------------------------------------------------------------------------------- statistics files


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _encode_meta(meta: dict[str, MetaValue]) -> dict[str, np.ndarray]:
    arrays = {}
    for name, value in meta.items():
        if not isinstance(name, str) or not _META_NAME.match(name):
            raise ValueError(f"metadata name {name!r} must be letters, digits and underscores")
        if not isinstance(value, (str, int, float)):
            raise TypeError(f"metadata {name!r} must be a str, int or float, got {type(value).__name__}")
        arrays[_META_PREFIX + name] = np.asarray(value)
    return arrays


def _decode_meta(arrays: dict[str, np.ndarray]) -> dict[str, MetaValue]:
    return {
        k[len(_META_PREFIX) :]: v.item() if v.ndim == 0 else v.tolist()
        for k, v in arrays.items()
        if k.startswith(_META_PREFIX)
    }


def _write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to exactly ``path``: a temp file in the same folder, fsync, then ``os.replace``, so a reader
    sees the old file or the new one, never a partial one. Writing through a file object also stops ``np.savez``
    from appending ``.npz`` to the name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open with 0o666 (not mkstemp's 0o600) so the final file gets the usual umask permissions.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not every file system allows a folder fsync
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (no pickles); any problem is a one-line ``DataError`` naming the file."""
    if not path.exists():
        raise DataError(f"{path}: {what} file not found")
    if not path.is_file():
        raise DataError(f"{path}: is {special_file(path) or 'a folder'}, not a .npz {what} file")
    with path.open("rb") as file:
        magic = file.read(6)
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):  # numpy would call anything else pickled
        raise DataError(f"{path}: not a .npz {what} file (not a zip archive of arrays)")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz {what} file ({_one_line(exc)})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not a .npz {what} file (it holds a single .npy array)")
    try:
        with data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: unreadable .npz {what} file ({_one_line(exc)})") from exc


def _numeric(arrays: dict[str, np.ndarray], name: str, path: Path) -> np.ndarray:
    if name not in arrays:
        raise DataError(f"{path}: no '{name}' array in the file (it has: {', '.join(arrays) or 'nothing'})")
    array = arrays[name]
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise DataError(f"{path}: '{name}' is not numeric (dtype {array.dtype})")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: '{name}' contains NaN or inf")
    return array.astype(np.float64, copy=False)


def save_stats(
    path: str | os.PathLike[str],
    mu: np.ndarray | torch.Tensor,
    sigma: np.ndarray | torch.Tensor,
    meta: dict[str, MetaValue] | None = None,
) -> None:
    """Write ``mu``, ``sigma`` (float64) and ``meta_<name>`` scalars to exactly ``path``, atomically, in the layout
    pytorch-fid reads (``np.load(path)['mu']``, ``['sigma']``). Missing parent folders are created."""
    m, s = _float64(mu, "mu"), _float64(sigma, "sigma")
    if m.ndim != 1 or s.shape != (m.size, m.size):
        raise ValueError(f"mu must be (d,) and sigma (d, d), got {m.shape} and {s.shape}")
    if not (np.isfinite(m).all() and np.isfinite(s).all()):
        raise ValueError("mu or sigma contains NaN or inf")  # load_stats would refuse the file
    _write_npz_atomic(Path(path), {"mu": m, "sigma": s, **_encode_meta(meta or {})})


def load_stats(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, dict[str, MetaValue]]:
    """``(mu, sigma, meta)`` from a statistics ``.npz`` (ours or pytorch-fid's ``--save-stats``); ``meta`` maps the
    names given to :func:`save_stats` (without the ``meta_`` prefix) to their values. Bad files raise ``DataError``."""
    path = Path(path)
    arrays = _read_npz(path, "FID statistics")
    mu, sigma = _numeric(arrays, "mu", path), _numeric(arrays, "sigma", path)
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise DataError(f"{path}: inconsistent shapes: mu {mu.shape}, sigma {sigma.shape} (want (d,) and (d, d))")
    return mu, sigma, _decode_meta(arrays)


# ------------------------------------------------------------------------------------------------------ the cache


@dataclasses.dataclass(frozen=True)
class StatsKey:
    """What real-image statistics depend on; two keys that differ in any field never share a cache file."""

    dataset: str
    split: str
    resolution: int
    count: int
    protocol: str
    extractor: str

    def __post_init__(self) -> None:
        for name in ("dataset", "split", "protocol", "extractor"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"StatsKey.{name} must be a non-empty str, got {value!r}")
        for name in ("resolution", "count"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"StatsKey.{name} must be a positive int, got {value!r}")

    def as_dict(self) -> dict[str, MetaValue]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short hash of every field, exactly as given (before any file-name sanitising)."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _safe(text: str, limit: int = 48) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")[:limit] or "x"


class StatsCache:
    """Statistics (and, for KID, features) of real images under ``root``, one ``.npz`` per :class:`StatsKey`.

    Every file records its key as metadata and is checked on reading; a corrupt or mismatching file is logged and
    treated as absent (it is recomputed and overwritten), never an error.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_for(self, key: StatsKey) -> Path:
        """``<dataset>_<split>_<res>px_n<count>_<protocol>_<extractor>_<hash>.npz``, readable and collision-free."""
        parts = [_safe(key.dataset), _safe(key.split), f"{key.resolution}px", f"n{key.count}"]
        parts += [_safe(key.protocol), _safe(key.extractor), key.digest()]
        return self.root / ("_".join(parts) + ".npz")

    def features_path_for(self, key: StatsKey) -> Path:
        return self.path_for(key).with_suffix(".features.npz")

    def get(self, key: StatsKey) -> tuple[np.ndarray, np.ndarray] | None:
        """``(mu, sigma)`` for ``key``, or None when absent, unreadable or recorded for another key."""
        path = self.path_for(key)
        if not path.exists():
            return None
        try:
            mu, sigma, meta = load_stats(path)
        except DataError as exc:
            log.warning("ignoring cached statistics: %s", exc)
            return None
        return (mu, sigma) if self._matches(path, key, meta) else None

    def put(self, key: StatsKey, mu: np.ndarray | torch.Tensor, sigma: np.ndarray | torch.Tensor) -> Path:
        path = self.path_for(key)
        save_stats(path, mu, sigma, meta=key.as_dict())
        return path

    def get_features(self, key: StatsKey) -> np.ndarray | None:
        """The ``(N, d)`` float64 features stored for ``key`` (KID needs them, not only their statistics), or None."""
        path = self.features_path_for(key)
        if not path.exists():
            return None
        try:
            arrays = _read_npz(path, "cached features")
            features = _numeric(arrays, "features", path)
            if features.ndim != 2:
                raise DataError(f"{path}: features have shape {features.shape}, want (N, d)")
        except DataError as exc:
            log.warning("ignoring cached features: %s", exc)
            return None
        return features if self._matches(path, key, _decode_meta(arrays)) else None

    def put_features(self, key: StatsKey, features: np.ndarray | torch.Tensor) -> Path:
        x = _float64(features, "features")
        if x.ndim != 2:
            raise ValueError(f"features must have shape (N, d), got {x.shape}")
        path = self.features_path_for(key)
        _write_npz_atomic(path, {"features": x, **_encode_meta(key.as_dict())})
        return path

    @staticmethod
    def _matches(path: Path, key: StatsKey, meta: dict[str, MetaValue]) -> bool:
        stored = {name: meta.get(name) for name in key.as_dict()}
        if stored != key.as_dict():
            log.warning("ignoring cache file %s: it was written for %s, not %s", path, stored, key.as_dict())
            return False
        return True
