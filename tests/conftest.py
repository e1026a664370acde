"""Shared fixtures: a tiny config that trains in seconds on the CPU."""

from pathlib import Path

import pytest

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
  checkpoint: {every: 3, keep: 2}
  nan_guard: {every: 1}
"""


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path
