"""Spectral normalization (Miyato et al., ICLR 2018) by power iteration, in the legacy torch state-dict layout."""

from __future__ import annotations

import contextlib
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "apply_spectral_norm",
    "has_spectral_norm",
    "remove_spectral_norm",
    "sn_estimate",
    "spectral_norm",
    "spectral_norm_modules",
]

M = TypeVar("M", bound=nn.Module)

_NAME = "weight"
_ORIG = _NAME + "_orig"
_U = _NAME + "_u"
_V = _NAME + "_v"

# Iterations run once at registration so the first training step already divides by a sigma close to the
# true one (the same choice as torch.nn.utils.parametrizations.spectral_norm).
_WARMUP_ITERATIONS = 15

_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, *_CONV_TRANSPOSE)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the iteration and of sigma: at least float32, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager[object]:
    # CUDA autocast would run torch.mv in fp16; sigma and u, v must keep full precision.
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _weight_matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """W_mat: ``weight`` with ``dim`` moved to the front, reshaped to (h, -1)."""
    if dim != 0:
        weight = weight.movedim(dim, 0)
    return weight.reshape(weight.shape[0], -1)


def _power_iteration(weight_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n_iterations: int, eps: float) -> None:
    """Run ``n_iterations`` of ``v = normalize(W^T u); u = normalize(W v)`` and write the result into u, v in place.

    This is the only place that advances the estimate, so a later policy (e.g. one iteration per optimizer step)
    only has to decide when to call it.
    """
    dtype = _work_dtype(weight_mat.dtype)
    with torch.no_grad(), _autocast_off(weight_mat.device.type):
        w = weight_mat.to(dtype)
        u_new = u.to(dtype)
        for _ in range(n_iterations):
            v_new = F.normalize(torch.mv(w.mT, u_new), dim=0, eps=eps)
            u_new = F.normalize(torch.mv(w, v_new), dim=0, eps=eps)
        # In place: DataParallel's replica 0 shares the buffers' storage with the wrapped module, so the update
        # survives the replica; copy_ also casts back if module.half() made the buffers half.
        v.copy_(v_new)
        u.copy_(u_new)


def _sigma(weight_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sigma = u^T W_mat v in the work dtype; differentiable w.r.t. ``weight_mat`` only when u, v are constants."""
    dtype = _work_dtype(weight_mat.dtype)
    with _autocast_off(weight_mat.device.type):
        return torch.dot(u.to(dtype), torch.mv(weight_mat.to(dtype), v.to(dtype)))


class _SpectralNormHook:
    """Forward pre-hook that sets ``module.weight = weight_orig / sigma`` before each forward.

    It holds only plain settings (no tensors, no reference to the module), so deepcopy and pickling of the module
    copy it trivially. Its type also marks a module as carrying our spectral norm.
    """

    def __init__(self, dim: int, n_power_iterations: int, eps: float) -> None:
        self.dim = dim
        self.n_power_iterations = n_power_iterations
        self.eps = eps

    def compute_weight(self, module: nn.Module, do_power_iteration: bool) -> torch.Tensor:
        """The normalised weight, differentiable w.r.t. ``weight_orig`` (through W and through sigma)."""
        weight: torch.Tensor = getattr(module, _ORIG)
        u: torch.Tensor = getattr(module, _U)
        v: torch.Tensor = getattr(module, _V)
        weight_mat = _weight_matrix(weight, self.dim)
        if do_power_iteration:
            _power_iteration(weight_mat, u, v, self.n_power_iterations, self.eps)
        # Clone: the next training forward rewrites the buffers in place, and this forward's graph must keep the
        # values it used (D(real) - D(fake), then one backward). Cloned in eval mode too, so an eval graph also
        # survives a later training forward.
        dtype = _work_dtype(weight.dtype)
        sigma = _sigma(weight_mat, u.to(dtype=dtype, copy=True), v.to(dtype=dtype, copy=True))
        return weight / sigma

    def __call__(self, module: nn.Module, args: tuple[object, ...]) -> None:
        setattr(module, _NAME, self.compute_weight(module, do_power_iteration=module.training))


def _release_graph_weight(module: nn.Module, args: tuple[object, ...], output: object) -> None:
    """Forward hook: replace ``module.weight`` by a detached snapshot once the forward has used it.

    The module then holds no autograd graph between forwards, so ``copy.deepcopy`` (EMA copies) works after a
    forward, and the last graph is not kept alive by the module.
    """
    weight = module.__dict__.get(_NAME)
    if isinstance(weight, torch.Tensor):
        setattr(module, _NAME, weight.detach())


def _find_hook(module: nn.Module) -> _SpectralNormHook | None:
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, _SpectralNormHook):
            return hook
    return None


def _require_hook(module: nn.Module) -> _SpectralNormHook:
    hook = _find_hook(module)
    if hook is None:
        raise ValueError(f"spectral_norm is not applied to this {type(module).__name__}")
    return hook


def has_spectral_norm(module: nn.Module) -> bool:
    """Whether ``module`` carries this file's spectral norm (not torch's legacy hook or parametrization)."""
    return _find_hook(module) is not None


def _check_args(module: nn.Module, n_power_iterations: int, eps: float, dim: int | None) -> int:
    """Validate the arguments of :func:`spectral_norm`; returns ``dim`` resolved to a non-negative index."""
    if not isinstance(module, _SUPPORTED):
        raise ValueError(
            f"spectral_norm supports Linear, Conv1d/2d/3d and ConvTranspose1d/2d/3d, not {type(module).__name__}"
        )
    if has_spectral_norm(module):
        raise ValueError(f"spectral_norm is already applied to this {type(module).__name__}")
    if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) or n_power_iterations < 1:
        raise ValueError(f"n_power_iterations must be an int >= 1, got {n_power_iterations!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    weight = dict(module.named_parameters(recurse=False)).get(_NAME)
    if weight is None:
        raise ValueError(
            f"this {type(module).__name__} has no 'weight' parameter; "
            "is another reparametrization (weight_norm, torch spectral_norm) applied?"
        )
    if isinstance(weight, nn.parameter.UninitializedParameter):
        raise ValueError("the weight of a lazy module is not initialized yet; run one forward before spectral_norm")
    if not weight.is_floating_point():
        raise ValueError(f"spectral_norm needs a real floating-point weight, got {weight.dtype}")
    if dim is None:
        dim = 1 if isinstance(module, _CONV_TRANSPOSE) else 0
    if not -weight.ndim <= dim < weight.ndim:
        raise ValueError(f"dim {dim} is out of range for a {weight.ndim}-d weight")
    return dim % weight.ndim


def spectral_norm(module: M, n_power_iterations: int = 1, eps: float = 1e-12, dim: int | None = None) -> M:
    """Divide ``module.weight`` by a power-iteration estimate of its largest singular value, before every forward.

    Maths. W_mat is the weight with ``dim`` moved to the front, reshaped to (h, w); ``dim`` defaults to 1 for
    ConvTranspose (weight (in, out/groups, *k)) and 0 otherwise. For a conv this is the (out, in*kh*kw) reshape,
    not the operator norm of the convolution. Unit vectors u (h) and v (w) track the top singular pair:
    ``v = normalize(W_mat^T u)``, ``u = normalize(W_mat v)``, ``sigma = u^T W_mat v`` and the forward uses
    ``W_SN = W / sigma``. With unit u, v, sigma <= sigma_max(W_mat) (Cauchy-Schwarz), so an unconverged estimate errs
    towards ||W_SN|| >= 1; the error shrinks geometrically with ratio (sigma_2 / sigma_1)^2 per iteration.

    Gradient. The iteration runs under no_grad, so u and v are constants; the gradient flows through W and through
    sigma. With G = dL/dW_SN: ``dL/dW = (G - <G, W_SN> u v^T) / sigma``. Without the sigma path (pytorch#7905) it
    would be G / sigma, which lets the weight grow along u v^T unchecked. Double backward (gradient penalty) works.

    When u, v change. Every forward in training mode runs ``n_power_iterations`` and updates the buffers in place;
    eval mode iterates nothing and takes sigma from the stored u, v, so eval forwards are deterministic. Hence a step
    that calls D on real, fake and interpolates iterates three times, monitoring forwards belong in eval mode (a
    training-mode forward advances u even under no_grad), and gradcheck must run in eval mode. Each forward uses
    clones of u and v so that two forwards before one backward work (pytorch#12671, #13350).

    Precision. The iteration and sigma run in float32 (float64 for float64 weights) with autocast disabled: fp16
    underflows eps (pytorch#61954) and bf16 keeps 8 mantissa bits. W_SN keeps the weight's dtype. u and v are
    created in that work dtype and are ordinary buffers: under autocast they stay float32, and ``module.double()``
    casts them like any buffer (an explicit ``module.half()`` stores them in half, the arithmetic stays float32).

    Initialisation. u ~ N(0, I) normalised, then 15 warm-up iterations (v is set by the first half-step, so u and v
    are consistent). The legacy torch hook starts from one iteration on a random u, where sigma can be far below
    sigma_max and the first discriminator step uses ||W_SN|| >> 1; 15 mat-vec pairs once is cheap.

    State and ``module.weight``. The weight Parameter (the same object, so an existing optimizer keeps working) is
    renamed ``weight_orig``; persistent buffers ``weight_u``, ``weight_v``: the layout of
    ``torch.nn.utils.spectral_norm``, so state dicts load both ways. ``module.weight`` becomes a plain attribute
    that a forward pre-hook recomputes; after each forward a forward hook replaces it by a detached snapshot, so the
    module holds no graph between forwards and ``copy.deepcopy`` works before and after a forward. Code that reads
    ``module.weight`` without calling the module's forward (e.g. ``nn.MultiheadAttention.out_proj``) sees that
    stale snapshot.

    Raises ValueError for an unsupported module, n_power_iterations < 1, eps <= 0, a bad ``dim``, a lazy or
    non-float weight, or a module that already carries this spectral norm.
    """
    dim = _check_args(module, n_power_iterations, eps, dim)
    weight: nn.Parameter = getattr(module, _NAME)
    with torch.no_grad():
        weight_mat = _weight_matrix(weight, dim)
        dtype = _work_dtype(weight.dtype)
        u = F.normalize(torch.randn(weight_mat.shape[0], device=weight.device, dtype=dtype), dim=0, eps=eps)
        v = torch.zeros(weight_mat.shape[1], device=weight.device, dtype=dtype)  # overwritten by the first half-step
        _power_iteration(weight_mat, u, v, _WARMUP_ITERATIONS, eps)
    delattr(module, _NAME)
    module.register_parameter(_ORIG, weight)
    module.register_buffer(_U, u)
    module.register_buffer(_V, v)
    hook = _SpectralNormHook(dim, n_power_iterations, eps)
    with torch.no_grad():
        setattr(module, _NAME, hook.compute_weight(module, do_power_iteration=False))
    module.register_forward_pre_hook(hook)
    module.register_forward_hook(_release_graph_weight, always_call=True)
    return module


def remove_spectral_norm(module: M) -> M:
    """Bake the current normalised weight (stored u, v; no further iteration) into a plain Parameter ``weight``.

    Removes ``weight_orig``, the buffers and both hooks. Raises ValueError if the module carries no spectral norm.
    """
    hook = _require_hook(module)
    with torch.no_grad():
        weight = hook.compute_weight(module, do_power_iteration=False)
    requires_grad = getattr(module, _ORIG).requires_grad
    # Hook handles are not kept on the module (deepcopy would copy their weak references to the original's hook
    # dicts), so the hooks are found by identity, as torch's own remove_spectral_norm does.
    for key, pre_hook in list(module._forward_pre_hooks.items()):
        if pre_hook is hook:
            del module._forward_pre_hooks[key]
    for key, post_hook in list(module._forward_hooks.items()):
        if post_hook is _release_graph_weight:
            del module._forward_hooks[key]
            module._forward_hooks_always_called.pop(key, None)
    for name in (_ORIG, _U, _V, _NAME):
        delattr(module, name)
    module.register_parameter(_NAME, nn.Parameter(weight, requires_grad=requires_grad))
    return module


def sn_estimate(module: nn.Module) -> torch.Tensor:
    """The current sigma estimate u^T W_mat v as a detached float32 scalar, for monitoring.

    Runs no power iteration and changes no buffer, in either mode. Raises ValueError without spectral norm.
    """
    hook = _require_hook(module)
    with torch.no_grad():
        weight_mat = _weight_matrix(getattr(module, _ORIG), hook.dim)
        return _sigma(weight_mat, getattr(module, _U), getattr(module, _V)).float()


def spectral_norm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every submodule of ``model`` (itself included, name ``""``) that carries spectral norm, in module order."""
    return [(name, module) for name, module in model.named_modules() if has_spectral_norm(module)]


def apply_spectral_norm(model: M, n_power_iterations: int = 1, eps: float = 1e-12) -> M:
    """Apply :func:`spectral_norm` to every Linear, Conv*d and ConvTranspose*d in ``model`` (itself included).

    Modules that already carry it are left alone, so applying twice is harmless. ``nn.MultiheadAttention.out_proj``
    is skipped: attention reads its weight without calling its forward, so the hook would never run.
    """
    skipped = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    for module in list(model.modules()):
        if isinstance(module, _SUPPORTED) and id(module) not in skipped and not has_spectral_norm(module):
            spectral_norm(module, n_power_iterations=n_power_iterations, eps=eps)
    return model
