"""Normalization layers chosen by name: ``make_norm(name, num_features, **options)``.

The registry maps a YAML name to a factory ``(num_features, **options) -> nn.Module``. A new layer drops in with
``@NORMS.register("name")``; the config validates ``norm_options`` against the factory's keyword arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from gan.registry import Registry

NORMS: Registry[Callable[..., nn.Module]] = Registry("norm layer")


def make_norm(name: str, num_features: int, **options: object) -> nn.Module:
    """Build the norm layer registered as ``name`` for ``num_features`` channels."""
    return NORMS.get(name)(num_features, **options)


def check_norm_options(name: str, options: dict[str, object]) -> str | None:
    """Why ``options`` do not fit the factory of ``name`` (unknown option names), or None if they fit."""
    factory = NORMS.get(name)
    params = inspect.signature(factory).parameters
    allowed = [p for p in params if p != "num_features"]
    unknown = [key for key in options if key not in allowed]
    if unknown:
        return f"norm {name!r} has no option {unknown[0]!r}; its options are: {', '.join(allowed) or '(none)'}"
    try:
        make_norm(name, 4, **options)
    except (TypeError, ValueError) as exc:
        return f"norm {name!r}: {exc}"
    return None


@NORMS.register("none")
def _none(num_features: int) -> nn.Module:
    return nn.Identity()


@NORMS.register("instance")
def _instance(
    num_features: int,
    affine: bool = True,
    track_running_stats: bool = False,
    eps: float = 1e-5,
    momentum: float = 0.1,
) -> nn.Module:
    _check_bool(affine=affine, track_running_stats=track_running_stats)
    return nn.InstanceNorm2d(
        num_features, eps=float(eps), momentum=float(momentum), affine=affine, track_running_stats=track_running_stats
    )


@NORMS.register("batch_instance")
def _batch_instance(
    num_features: int, affine: bool = True, eps: float = 1e-5, momentum: float = 0.1, rho_init: float = 1.0
) -> nn.Module:
    _check_bool(affine=affine)
    return BatchInstanceNorm2d(num_features, eps=float(eps), momentum=float(momentum), affine=affine, rho_init=rho_init)


def _check_bool(**flags: object) -> None:
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"option {key!r} must be true or false, got {value!r}")


class BatchInstanceNorm2d(nn.Module):
    """Batch-Instance Normalization (Nam & Kim, NeurIPS 2018).

    ``y = gamma * (rho * x_BN + (1 - rho) * x_IN) + beta`` with a per-channel gate ``rho`` in [0, 1]. ``x_BN`` uses
    batch statistics in training and running statistics in eval; ``x_IN`` always uses the sample's own statistics.
    gamma is shared by both branches and beta is added once, as in the official code. ``rho`` starts at
    ``rho_init`` (1 = pure BN, the paper's choice; 0 = StarGAN's IN at step 0) and is NOT clamped in forward: the
    trainer calls :func:`clamp_gates_` after each optimizer step, so the gradient w.r.t. rho is never cut off.
    """

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True, rho_init: float = 1.0
    ) -> None:
        super().__init__()
        if not 0.0 <= float(rho_init) <= 1.0:
            raise ValueError(f"rho_init must lie in [0, 1], got {rho_init!r}")
        self.num_features, self.eps, self.momentum, self.affine = num_features, eps, momentum, affine
        self.rho = nn.Parameter(torch.full((num_features,), float(rho_init)))
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        x_bn = F.batch_norm(x, self.running_mean, self.running_var, None, None, self.training, self.momentum, self.eps)
        x_in = F.instance_norm(x, eps=self.eps)
        rho = self.rho.view(1, -1, 1, 1)
        out = rho * x_bn + (1 - rho) * x_in
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


def gate_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The gates (``rho``) of every Batch-Instance layer in ``model``."""
    for module in model.modules():
        if isinstance(module, BatchInstanceNorm2d):
            yield module.rho


@torch.no_grad()
def clamp_gates_(model: nn.Module) -> None:
    """Clamp every Batch-Instance gate of ``model`` to [0, 1]; call after each optimizer step."""
    for param in gate_parameters(model):
        param.clamp_(0.0, 1.0)
