"""Running modules for a measurement: eval mode and no gradients, then each module's previous mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(*models: nn.Module | None) -> Iterator[None]:
    """Eval mode and no_grad for the duration (logging forwards must not advance SN's u or norm statistics); the
    previous train/eval mode of every module comes back afterwards, also after an exception."""
    modes = [(m, m.training) for m in models if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, was_training in modes:
            m.train(was_training)
