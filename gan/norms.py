"""Normalization layers chosen by name: ``make_norm(name, num_features, **options)``.

The registry maps a YAML name to a factory ``(num_features, **options) -> nn.Module``. A new layer drops in with
``@NORMS.register("name")``; the config validates ``norm_options`` against the factory's keyword arguments.

Layers (x has shape (N, C, H, W); every layer shifts and scales per channel with its affine gamma/beta):

- ``batch``: per channel over (N, H, W) of the batch; running mean/var in eval (``nn.BatchNorm2d``).
- ``layer``: per sample over (C, H, W), per-channel affine (``GroupNorm(1, C)``, i.e. LayerNorm over (C, H, W)).
- ``instance``: per sample and channel over (H, W) (``nn.InstanceNorm2d``).
- ``group``: per sample over (H, W) and the C/G channels of each group (``nn.GroupNorm``).
- ``batch_renorm``: per channel over (N, H, W), corrected towards the moving mean/std by r, d (Ioffe 2017).
- ``switchable``: a learned softmax mix of the IN, LN and BN means and variances (Luo et al. 2018).
- ``batch_instance``: a learned per-channel gate between the BN and IN outputs (Nam & Kim 2018).
- ``none``: identity.

What the trainer owes these layers: :func:`set_norm_step` before each training step (Batch Renorm's warm-up reads the
step from a buffer, not from global state), :func:`clamp_gates_` after each optimizer step (Batch-Instance gates), and
:func:`set_sync_batch_stats` once when batch statistics should be reduced across data-parallel processes.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from gan.registry import Registry

NORMS: Registry[Callable[..., nn.Module]] = Registry("norm layer")

# check_norm_options builds each layer once to validate option values; 4 channels fits every layer's defaults but
# group norm's 32 groups (see _probe_channels).
_PROBE_CHANNELS = 4


def make_norm(name: str, num_features: int, **options: object) -> nn.Module:
    """Build the norm layer registered as ``name`` for ``num_features`` channels."""
    factory = NORMS.get(name)
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"norm {name!r}: num_features must be a positive integer, got {num_features!r}")
    return factory(num_features, **options)


def check_norm_options(name: str, options: dict[str, object]) -> str | None:
    """Why ``options`` do not fit the factory of ``name`` (unknown names, bad values), or None if they fit.

    Values are checked by building the layer once. The channel count of that probe is chosen so that it fits the
    options (see :func:`_probe_channels`): whether e.g. ``num_groups`` divides a layer's width depends on the model,
    which the config check does not know, so that error is left to the model build, where the width is known.
    """
    factory = NORMS.get(name)
    params = inspect.signature(factory).parameters
    allowed = [p for p in params if p != "num_features"]
    unknown = [key for key in options if key not in allowed]
    if unknown:
        return f"norm {name!r} has no option {unknown[0]!r}; its options are: {', '.join(allowed) or '(none)'}"
    try:
        make_norm(name, _probe_channels(name, options), **options)
    except (TypeError, ValueError) as exc:
        return f"norm {name!r}: {exc}"
    return None


def _probe_channels(name: str, options: Mapping[str, object]) -> int:
    """A channel count that ``num_groups`` (given, or the factory's default) divides, else 4, which fits the rest.

    With 4 channels, num_groups=3 would be rejected although it fits a model of width 48, and the default 32 groups
    would be rejected outright: probing with C = num_groups leaves only type and range errors to report.
    """
    groups = options.get("num_groups", _default(name, "num_groups"))
    if isinstance(groups, int) and not isinstance(groups, bool) and groups > 0:
        return groups
    return _PROBE_CHANNELS


def _default(name: str, option: str) -> object:
    """The default of ``option`` in the factory of ``name``, or None when it has no such option."""
    param = inspect.signature(NORMS.get(name)).parameters.get(option)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


# ------------------------------------------------------------------------------------------------ option checks
_NUMBER_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _check_bool(**flags: object) -> None:
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"option {key!r} must be true or false, got {value!r}")


def _float_option(key: str, value: object, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a finite float in [low, high]. Numeric strings count: PyYAML reads ``1e-5`` (no dot) as text, and
    ``norm_options`` is a free mapping that the typed config loader does not convert."""
    if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"option {key!r} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"option {key!r} must be a finite number, got {value!r}")
    if not low <= number <= high:
        bounds = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        raise ValueError(f"option {key!r} must be {bounds}, got {value!r}")
    return number


def _int_option(key: str, value: object, low: int = 0) -> int:
    """``value`` as an integer >= low; an integral float such as ``4e4`` is accepted."""
    number = _float_option(key, value)
    if number != int(number):
        raise TypeError(f"option {key!r} must be an integer, got {value!r}")
    if number < low:
        raise ValueError(f"option {key!r} must be >= {low}, got {value!r}")
    return int(number)


def _eps_option(value: object) -> float:
    """``eps`` as a float > 0. Every layer divides by ``sqrt(var + eps)``, and a constant channel (var = 0, e.g. a
    feature map that ReLU zeroed) would make that a division by zero, i.e. inf/NaN at the first training step."""
    eps = _float_option("eps", value, 0.0)  # type and range first: a negative eps keeps that message
    if eps == 0.0:
        raise ValueError(f"option 'eps' must be > 0, got {value!r}")
    return eps


def _momentum_option(value: object, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None  # torch's cumulative moving average
    return _float_option("momentum", value, 0.0, 1.0)


def _check_4d(x: Tensor, layer: nn.Module) -> None:
    if x.dim() != 4:
        raise ValueError(f"{type(layer).__name__} expects (N, C, H, W) input, got shape {tuple(x.shape)}")


def _check_batch_count(count: int, layer: nn.Module, shape: torch.Size) -> None:
    # One value per channel has no spread: the biased variance is 0 and the unbiased one undefined (torch's BN
    # raises the same way); say so instead of dividing by zero.
    if count <= 1:
        raise ValueError(
            f"{type(layer).__name__} needs more than one value per channel in training (N*H*W > 1 over all "
            f"processes), got input of shape {tuple(shape)}; use a larger batch, or eval mode"
        )


# ----------------------------------------------------------------------------------------- synchronised stats
class _AllReduceSum(torch.autograd.Function):
    """all_reduce(SUM) with autograd. Every rank's loss depends on the sum, so the gradient w.r.t. a rank's input is
    the sum of all ranks' output gradients: again an all_reduce. Backward calls ``apply`` so that the backward is
    itself differentiable (the gradient penalty and R1 differentiate through it)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _AllReduceSum.apply(grad)


def _sync_active(layer: nn.Module) -> bool:
    """Whether this forward reduces batch statistics across processes (opted in, training, world size > 1)."""
    return (
        bool(getattr(layer, "sync_stats", False))
        and layer.training
        and dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
    )


def _stats_input(x: Tensor) -> Tensor:
    """``x`` in at least float32 for computing statistics (a no-op for float32/64): under bf16/fp16 autocast the
    variance would otherwise keep ~3 significant digits; torch's own BN also keeps its statistics in float32."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _global_moments(x: Tensor) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and biased variance over (N, H, W) of every rank's batch, differentiably, and the count.

    Two all_reduces: [sum, count] gives the global mean, then the sum of squares centred on it gives the variance.
    The one-pass E[x^2] - mean^2 would cancel catastrophically when |mean| >> std; summing per-rank counts (rather
    than assuming equal batches) lets ranks hold different or empty batches. Sums accumulate in >= float32.
    """
    acc = torch.promote_types(x.dtype, torch.float32)
    dims = (0, 2, 3)
    local_count = torch.full((1,), x.numel() // x.shape[1], dtype=acc, device=x.device)
    packed = _AllReduceSum.apply(torch.cat([x.sum(dims, dtype=acc), local_count]))
    count = packed[-1]
    mean = packed[:-1] / count
    centred = (_stats_input(x) - mean.view(1, -1, 1, 1)).square().sum(dims)
    var = _AllReduceSum.apply(centred) / count
    return mean, var, round(count.item())  # one host read per layer, for the N*H*W > 1 check and n/(n-1)


@torch.no_grad()
def _update_running(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, count: int, momentum: float
) -> None:
    """PyTorch's convention: momentum weights the new value; the stored variance is unbiased over ``count``."""
    running_mean.lerp_(mean.to(running_mean.dtype), momentum)
    running_var.lerp_((var * (count / (count - 1))).to(running_var.dtype), momentum)


def _sync_batch_norm(
    x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, momentum: float, eps: float, layer: nn.Module
) -> Tensor:
    """Training-mode batch norm (no affine) with statistics over every rank's batch; updates the running stats."""
    mean, var, count = _global_moments(x)
    _check_batch_count(count, layer, x.shape)
    if running_mean is not None and running_var is not None:
        _update_running(running_mean, running_var, mean, var, count, momentum)
    scale = torch.rsqrt(var + eps).to(x.dtype)
    return (x - mean.to(x.dtype).view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1)


def _affine(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    if weight is None or bias is None:
        return x
    return x * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


def set_sync_batch_stats(model: nn.Module, enabled: bool) -> int:
    """Switch cross-process batch statistics on or off for every batch-statistics layer of ``model``.

    A layer takes part when it has a boolean ``sync_stats`` attribute (batch, batch_renorm, switchable,
    batch_instance). Syncing happens only in training with torch.distributed initialised and world size > 1; otherwise
    the layer runs its plain code path. Every rank must then run the same forwards and backwards, since the
    collectives sit inside them. Returns how many layers were set.
    """
    _check_bool(enabled=enabled)
    layers = [m for m in model.modules() if isinstance(getattr(m, "sync_stats", None), bool)]
    for layer in layers:
        layer.sync_stats = enabled
    return len(layers)


def uses_batch_statistics(name: str) -> bool:
    """Whether the layer registered as ``name`` normalises with statistics of the whole batch in training, so that
    one sample's output depends on the others (per-sample gradient penalties are then ill-defined)."""
    layer = make_norm(name, _probe_channels(name, {}))
    return any(isinstance(getattr(m, "sync_stats", None), bool) for m in layer.modules())


def set_norm_step(model: nn.Module, step: int) -> None:
    """Tell every scheduled layer of ``model`` (Batch Renorm) the training step; call before each training step.

    The step lives in each layer's persistent ``step`` buffer, so it travels with checkpoints and needs no globals.
    """
    step = _int_option("step", step, low=0)
    for module in model.modules():
        if isinstance(module, BatchRenorm2d):
            module.step.fill_(step)


# ------------------------------------------------------------------------------------------------ torch layers
@NORMS.register("batch")
def _batch(
    num_features: int,
    affine: bool = True,
    track_running_stats: bool = True,
    eps: float = 1e-5,
    momentum: float | None = 0.1,
) -> nn.Module:
    _check_bool(affine=affine, track_running_stats=track_running_stats)
    return BatchNorm2d(
        num_features,
        eps=_eps_option(eps),
        momentum=_momentum_option(momentum, allow_none=True),
        affine=affine,
        track_running_stats=track_running_stats,
    )


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` plus opt-in cross-process batch statistics (``sync_stats``, see :func:`set_sync_batch_stats`).

    Unlike ``nn.SyncBatchNorm`` it works on CPU (gloo) as well. Without syncing, ``forward`` is exactly the parent's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sync_stats = False

    def forward(self, x: Tensor) -> Tensor:
        if not _sync_active(self):
            return super().forward(x)
        self._check_input_dim(x)
        factor = 0.0
        if self.track_running_stats:  # the parent's bookkeeping: count batches, momentum None = cumulative average
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        x_hat = _sync_batch_norm(x, self.running_mean, self.running_var, factor, self.eps, self)
        return _affine(x_hat, self.weight, self.bias).to(x.dtype)  # the parent returns the input's dtype too


@NORMS.register("layer")
class LayerNorm2d(nn.GroupNorm):
    """Per-sample normalisation over (C, H, W) with a per-channel affine gamma/beta of shape (C,).

    This is torch's ``F.layer_norm(x, (C, H, W))`` with gamma/beta broadcast over H, W, which equals
    ``nn.GroupNorm(1, C)``; GroupNorm is used because the resolution is not known at construction, and a per-channel
    affine (not LayerNorm's elementwise (C, H, W) one) keeps the layer resolution-independent.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        _check_bool(affine=affine)
        super().__init__(1, num_features, eps=_eps_option(eps), affine=affine)


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
        num_features,
        eps=_eps_option(eps),
        momentum=_momentum_option(momentum),
        affine=affine,
        track_running_stats=track_running_stats,
    )


@NORMS.register("group")
def _group(num_features: int, num_groups: int = 32, eps: float = 1e-5, affine: bool = True) -> nn.Module:
    # No silent fallback for narrow layers (say min(num_groups, C) groups): the layer would quietly become another
    # norm (C groups = instance norm with affine) while the config says group norm with num_groups groups.
    _check_bool(affine=affine)
    groups = _int_option("num_groups", num_groups, low=1)
    if num_features % groups:
        raise ValueError(
            f"group norm: num_groups {groups} does not divide the {num_features} channels of this layer; choose a "
            f"num_groups that divides every channel count of the model"
        )
    return nn.GroupNorm(groups, num_features, eps=_eps_option(eps), affine=affine)


@NORMS.register("none")
def _none(num_features: int) -> nn.Module:
    return nn.Identity()


# -------------------------------------------------------------------------------------------- Batch Renorm
def _ramp(step: Tensor, start: int, end: int) -> Tensor:
    """0 up to ``start``, 1 from ``end`` on, linear in between (a jump at ``end`` when end == start)."""
    t = step.to(torch.float32)
    if end == start:
        return (t >= end).to(torch.float32)
    return ((t - start) / (end - start)).clamp(0.0, 1.0)


@NORMS.register("batch_renorm")
class BatchRenorm2d(nn.Module):
    """Batch Renormalization (Ioffe, NeurIPS 2017), the paper's form.

    Training, per channel: ``sigma_B = sqrt(var_B + eps)`` (biased var, eps inside the sqrt), ``r = clip(sigma_B /
    sigma, 1/rmax, rmax)``, ``d = clip((mu_B - mu) / sigma, -dmax, dmax)``, both detached, ``y = gamma *
    ((x - mu_B) / sigma_B * r + d) + beta``; then ``mu += momentum * (mu_B - mu)`` and the same for the moving STD
    ``sigma`` (``running_std``, the std of the batch, not an unbiased variance as in BN). Eval:
    ``y = gamma * (x - mu) / sigma + beta``.

    The clip bounds follow a schedule on the ``step`` buffer (set by :func:`set_norm_step`; it stays 0, i.e. plain
    BN, until the trainer sets it): (1, 0) up to ``warmup_steps``, then linear to ``rmax`` at ``rmax_steps`` and to
    ``dmax`` at ``dmax_steps``. eps defaults to torch's 1e-5 (not the paper's 1e-3) so warm-up equals ``batch``.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.01,
        affine: bool = True,
        rmax: float = 3.0,
        dmax: float = 5.0,
        warmup_steps: int = 5000,
        rmax_steps: int = 40000,
        dmax_steps: int = 25000,
    ) -> None:
        super().__init__()
        _check_bool(affine=affine)
        self.num_features, self.affine = num_features, affine
        self.eps = _eps_option(eps)
        self.momentum = _momentum_option(momentum)
        self.rmax, self.dmax = _float_option("rmax", rmax, 1.0), _float_option("dmax", dmax, 0.0)
        self.warmup_steps = _int_option("warmup_steps", warmup_steps)
        self.rmax_steps, self.dmax_steps = _int_option("rmax_steps", rmax_steps), _int_option("dmax_steps", dmax_steps)
        if min(self.rmax_steps, self.dmax_steps) < self.warmup_steps:
            raise ValueError(
                f"rmax_steps ({self.rmax_steps}) and dmax_steps ({self.dmax_steps}) must be >= warmup_steps "
                f"({self.warmup_steps}): the ramps start when the warm-up ends"
            )
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_std", torch.ones(num_features))
        self.register_buffer("step", torch.tensor(0, dtype=torch.int64))
        self.sync_stats = False

    def _clip_bounds(self) -> tuple[Tensor, Tensor]:
        # Tensor maths on the buffer's device: reading the step back to the host would stall the GPU every forward.
        r_frac = _ramp(self.step, self.warmup_steps, self.rmax_steps)
        d_frac = _ramp(self.step, self.warmup_steps, self.dmax_steps)
        return 1.0 + (self.rmax - 1.0) * r_frac, self.dmax * d_frac

    def current_clip(self) -> tuple[float, float]:
        """The (rmax, dmax) in force at the current ``step``."""
        rmax, dmax = self._clip_bounds()
        return float(rmax), float(dmax)

    def renorm_factors(self, batch_mean: Tensor, batch_std: Tensor) -> tuple[Tensor, Tensor]:
        """r and d for these batch statistics against the moving ones; detached, so no gradient flows through them."""
        rmax, dmax = (bound.to(batch_std.dtype) for bound in self._clip_bounds())
        mean, std = batch_mean.detach(), batch_std.detach()
        r = torch.clamp(std / self.running_std, min=1.0 / rmax, max=rmax)
        d = torch.clamp((mean - self.running_mean) / self.running_std, min=-dmax, max=dmax)
        return r, d

    def _train_transform(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(mu_B, r / sigma_B, d) for this batch; then moves the moving statistics towards the batch's."""
        if _sync_active(self):
            mean, var, count = _global_moments(x)
        else:
            var, mean = torch.var_mean(_stats_input(x), dim=(0, 2, 3), correction=0)
            count = x.numel() // x.shape[1]
        _check_batch_count(count, self, x.shape)
        std = torch.sqrt(var + self.eps)
        r, d = self.renorm_factors(mean, std)  # from the moving statistics BEFORE this step's update
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_std.lerp_(std.detach().to(self.running_std.dtype), self.momentum)
        return mean, r / std, d

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        if self.training:
            center, scale, shift = self._train_transform(x)
        else:
            center, scale, shift = self.running_mean, 1.0 / self.running_std, torch.zeros_like(self.running_mean)
        if self.weight is not None and self.bias is not None:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        # Centre before scaling: x * scale + (shift - mean * scale) would lose |mean| / std digits to cancellation.
        view = (1, -1, 1, 1)
        return ((x - center.view(view)) * scale.view(view) + shift.view(view)).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, rmax={self.rmax}, "
            f"dmax={self.dmax}, warmup_steps={self.warmup_steps}, rmax_steps={self.rmax_steps}, "
            f"dmax_steps={self.dmax_steps}"
        )


# ------------------------------------------------------------------------------------------ Switchable Norm
@NORMS.register("switchable")
class SwitchableNorm2d(nn.Module):
    """Switchable Normalization (Luo, Ren, Peng 2018).

    ``y = gamma * (x - sum_k w_k mu_k) / sqrt(sum_k v_k var_k + eps) + beta`` for k in (IN, LN, BN), with
    ``w = softmax(mean_logits)`` and ``v = softmax(var_logits)`` (separate logits, equal at init). IN and LN use the
    sample's own statistics in both modes; BN uses the batch in training and the running averages in eval.

    Deliberate differences from the official code: every variance is the BIASED one (the official IN variance is
    unbiased and LN/BN are built on it via E[x^2] - mu^2), so one-hot weights reproduce ``F.instance_norm``, LN
    (``F.group_norm`` with one group) and ``F.batch_norm`` exactly; LN/BN variances come from the IN statistics by the
    law of total variance (no cancellation). Running stats follow PyTorch: ``momentum`` weights the new value, the
    stored variance is unbiased, and ``running_var`` starts at 1, not the official 0, so a fresh layer in eval divides
    by sqrt(1 + eps) rather than sqrt(eps).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> None:
        super().__init__()
        _check_bool(affine=affine)
        self.num_features, self.affine = num_features, affine
        self.eps = _eps_option(eps)
        self.momentum = _momentum_option(momentum)
        self.mean_logits = nn.Parameter(torch.zeros(3))
        self.var_logits = nn.Parameter(torch.zeros(3))
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.sync_stats = False

    def switch_weights(self) -> dict[str, Tensor]:
        """The softmax importance weights {"mean": (3,), "var": (3,)}, in the order (in, ln, bn)."""
        return {"mean": torch.softmax(self.mean_logits, 0), "var": torch.softmax(self.var_logits, 0)}

    def _batch_stats(self, x: Tensor, mean_in: Tensor, var_in: Tensor) -> tuple[Tensor, Tensor]:
        """The BN part, (C,) each: batch statistics in training (updating the running ones), running ones in eval."""
        if not self.training:
            return self.running_mean, self.running_var
        if _sync_active(self):
            mean, var, count = _global_moments(x)
        else:
            mean = mean_in.mean(0)
            var = (var_in + (mean_in - mean).square()).mean(0)
            count = x.numel() // x.shape[1]
        _check_batch_count(count, self, x.shape)
        _update_running(self.running_mean, self.running_var, mean.detach(), var.detach(), count, self.momentum)
        return mean, var

    def forward(self, x: Tensor) -> Tensor:
        _check_4d(x, self)
        var_in, mean_in = torch.var_mean(_stats_input(x), dim=(2, 3), correction=0)  # (N, C)
        mean_ln = mean_in.mean(1, keepdim=True)  # (N, 1)
        var_ln = (var_in + (mean_in - mean_ln).square()).mean(1, keepdim=True)
        mean_bn, var_bn = self._batch_stats(x, mean_in, var_in)
        w = self.switch_weights()
        mean = w["mean"][0] * mean_in + w["mean"][1] * mean_ln + w["mean"][2] * mean_bn
        var = w["var"][0] * var_in + w["var"][1] * var_ln + w["var"][2] * var_bn
        scale = torch.rsqrt(var + self.eps)  # (N, C); gamma folded in, so the affine costs no extra pass over x
        if self.weight is not None:
            scale = scale * self.weight
        out = (x - mean[:, :, None, None]) * scale[:, :, None, None]
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)  # statistics are float32 or wider; hand back the input's dtype

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


# ------------------------------------------------------------------------------------- Batch-Instance Norm
@NORMS.register("batch_instance")
def _batch_instance(
    num_features: int, affine: bool = True, eps: float = 1e-5, momentum: float = 0.1, rho_init: float = 1.0
) -> nn.Module:
    _check_bool(affine=affine)
    return BatchInstanceNorm2d(num_features, eps=eps, momentum=momentum, affine=affine, rho_init=rho_init)


class BatchInstanceNorm2d(nn.Module):
    """Batch-Instance Normalization (Nam & Kim, NeurIPS 2018).

    ``y = gamma * (rho * x_BN + (1 - rho) * x_IN) + beta`` with a per-channel gate ``rho`` in [0, 1]. ``x_BN`` uses
    batch statistics in training and running statistics in eval; ``x_IN`` always uses the sample's own statistics.
    gamma is shared by both branches and beta is added once, as in the official code. ``rho`` starts at
    ``rho_init`` (1 = pure BN, the paper's choice; 0 = StarGAN's IN at step 0) and is NOT clamped in forward: the
    trainer calls :func:`clamp_gates_` after each optimizer step, so the gradient w.r.t. rho is never cut off.
    The BN branch can reduce its batch statistics across processes (``sync_stats``, see :func:`set_sync_batch_stats`).
    """

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True, rho_init: float = 1.0
    ) -> None:
        super().__init__()
        rho_init = _float_option("rho_init", rho_init)
        if not 0.0 <= rho_init <= 1.0:
            raise ValueError(f"rho_init must lie in [0, 1], got {rho_init!r}")
        self.num_features, self.affine = num_features, affine
        self.eps, self.momentum = _eps_option(eps), _momentum_option(momentum)
        self.rho = nn.Parameter(torch.full((num_features,), rho_init))
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.sync_stats = False

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        if _sync_active(self):
            x_bn = _sync_batch_norm(x, self.running_mean, self.running_var, self.momentum, self.eps, self)
        else:
            x_bn = F.batch_norm(
                x, self.running_mean, self.running_var, None, None, self.training, self.momentum, self.eps
            )
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
