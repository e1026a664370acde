"""Running modules for a measurement: eval mode and no gradients, then every submodule's own previous mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def evaluating(*models: nn.Module | None, grad: bool = False) -> Iterator[None]:
    """Eval mode and no_grad (``grad=True``: gradients stay on, for input-gradient measurements) for the duration:
    logging forwards must not advance SN's u or norm statistics.

    Afterwards every submodule gets back its *own* previous mode, also after an exception: a model whose parts were
    in different modes (a frozen norm layer kept in eval inside a training network, say) is restored exactly,
    not flattened to the top module's mode.
    """
    modes = [(m, m.training) for model in models if model is not None for m in model.modules()]
    for model in models:
        if model is not None:
            model.eval()
    try:
        with torch.set_grad_enabled(grad):
            yield
    finally:
        for m, was_training in modes:
            m.training = was_training
