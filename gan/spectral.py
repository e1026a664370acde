"""Spectral normalization (Miyato et al., ICLR 2018) by power iteration, in the legacy torch state-dict layout."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "apply_spectral_norm",
    "cached_weights",
    "effective_weight",
    "get_power_iteration_mode",
    "has_spectral_norm",
    "migrate_spectral_norm_state_dict",
    "power_iteration_",
    "remove_spectral_norm",
    "reshape_dim",
    "set_power_iteration_mode",
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


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the iteration and of sigma: at least float32, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def autocast_off(device_type: str) -> contextlib.AbstractContextManager[object]:
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
    dtype = work_dtype(weight_mat.dtype)
    with torch.no_grad(), autocast_off(weight_mat.device.type):
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
    dtype = work_dtype(weight_mat.dtype)
    with autocast_off(weight_mat.device.type):
        return torch.dot(u.to(dtype), torch.mv(weight_mat.to(dtype), v.to(dtype)))


class _BackwardSeen:
    """Gradient hook on a cached W_SN: records that a backward ran through it.

    That backward freed the graph below W_SN (the division and sigma) unless it was retained, so the cache must not
    hand this W_SN to a later forward. It holds only a flag, so the graph it hangs on references nothing else.
    """

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, grad: torch.Tensor) -> None:
        self.seen = True


class _CachedWeight(NamedTuple):
    """One W_SN of :func:`cached_weights` and what it was computed from."""

    sources: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # weight_orig, u, v: held so their ids stay unique
    stamp: tuple[int, int, int, bool]  # their _version counters and weight_orig.requires_grad
    weight: torch.Tensor
    backward_seen: _BackwardSeen | None  # None when W_SN has no graph (no_grad or a frozen weight_orig)


# Transient state of a hook: the cache of cached_weights(), never copied or pickled.
_CACHE_STATE = ("_cache", "_cache_users")


class _SpectralNormHook:
    """Forward pre-hook that sets ``module.weight = weight_orig / sigma`` before each forward.

    Outside :func:`cached_weights` it holds only plain settings (no tensors, no reference to the module), so deepcopy
    and pickling of the module copy it trivially; inside, copies drop the cache (``__getstate__``). Its type also
    marks a module as carrying our spectral norm.
    """

    # Class-level defaults so hooks pickled before these attributes existed load in "forward" mode and uncached.
    iterate_in_forward: bool = True
    _cache: dict[tuple[bool, bool], _CachedWeight] | None = None
    _cache_users: int = 0

    def __init__(self, dim: int, n_power_iterations: int, eps: float) -> None:
        self.dim = dim
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        self.iterate_in_forward = True

    def __getstate__(self) -> dict[str, object]:
        # A copy made inside cached_weights() starts uncached: the cache holds graphs, which deepcopy cannot copy.
        return {key: value for key, value in self.__dict__.items() if key not in _CACHE_STATE}

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
        dtype = work_dtype(weight.dtype)
        sigma = _sigma(weight_mat, u.to(dtype=dtype, copy=True), v.to(dtype=dtype, copy=True))
        return weight / sigma

    def __call__(self, module: nn.Module, args: tuple[object, ...]) -> None:
        do_power_iteration = module.training and self.iterate_in_forward
        # is_compiling() first: dynamo folds it to True, so a compiled forward never reads (or guards on) the cache.
        if not torch.compiler.is_compiling() and self._cache is not None and not self.iterate_in_forward:
            weight = self.cached_weight(module, self._cache)
        else:
            weight = self.compute_weight(module, do_power_iteration=do_power_iteration)
        setattr(module, _NAME, weight)

    def cached_weight(self, module: nn.Module, cache: dict[tuple[bool, bool], _CachedWeight]) -> torch.Tensor:
        """W_SN from ``cache`` if it is still what :meth:`compute_weight` would return, else computed and cached."""
        sources = (getattr(module, _ORIG), getattr(module, _U), getattr(module, _V))
        stamp = (sources[0]._version, sources[1]._version, sources[2]._version, sources[0].requires_grad)
        # The grad mode decides whether W_SN carries a graph; inference tensors must not leak into normal mode.
        key = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        entry = cache.get(key)
        if (
            entry is not None
            and entry.stamp == stamp
            and all(cached is current for cached, current in zip(entry.sources, sources))
            and not (entry.backward_seen is not None and entry.backward_seen.seen)
        ):
            return entry.weight
        weight = self.compute_weight(module, do_power_iteration=False)
        backward_seen = None
        if weight.requires_grad:
            backward_seen = _BackwardSeen()
            weight.register_hook(backward_seen)
        cache[key] = _CachedWeight(sources, stamp, weight, backward_seen)
        return weight

    def open_cache(self) -> None:
        """Enter one :func:`cached_weights` context (they nest: the cache lives until the outermost exits)."""
        if self._cache_users == 0:
            self._cache = {}
        self._cache_users += 1

    def close_cache(self) -> None:
        """Leave one :func:`cached_weights` context; the last one out drops the cached tensors and their graphs."""
        self._cache_users -= 1
        if self._cache_users == 0:
            del self._cache, self._cache_users  # back to the class defaults: no cache, plain settings only


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


def reshape_dim(module: nn.Module) -> int:
    """The dim that spectral norm moves to the front of ``module.weight`` before reshaping it to W_mat.

    The layer's own ``dim`` if it carries this spectral norm, else the default :func:`spectral_norm` picks: 1 for
    ConvTranspose (weight (in, out/groups, *k)), 0 otherwise.
    """
    hook = _find_hook(module)
    if hook is not None:
        return hook.dim
    return 1 if isinstance(module, _CONV_TRANSPOSE) else 0


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
        dim = reshape_dim(module)
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
    clones of u and v so that two forwards before one backward work (pytorch#12671, #13350). That is the default
    "forward" mode; :func:`set_power_iteration_mode` (``"manual"``) plus :func:`power_iteration_` give exactly one
    update per optimizer step instead, and one W_SN for all forwards of the step.

    Precision. The iteration and sigma run in float32 (float64 for float64 weights) with autocast disabled: fp16
    underflows eps (pytorch#61954) and bf16 keeps 8 mantissa bits. W_SN keeps the weight's dtype. u and v are
    created in that work dtype and are ordinary buffers: under autocast they stay float32, and ``module.double()``
    casts them like any buffer (an explicit ``module.half()`` stores them in half, the arithmetic stays float32).

    Initialisation. u ~ N(0, I) normalised, then 15 warm-up iterations (v is set by the first half-step, so u and v
    are consistent). The legacy torch hook starts from one iteration on a random u, where sigma can be far below
    sigma_max and the first discriminator step uses ||W_SN|| >> 1; 15 mat-vec pairs once is cheap.

    State dicts. The weight Parameter (the same object, so an existing optimizer keeps working) is renamed
    ``weight_orig``; persistent buffers ``weight_u``, ``weight_v``; ``state_dict()._metadata[prefix]`` gets
    ``"spectral_norm": {"weight.version": 1}``. That is the layout and metadata of ``torch.nn.utils.spectral_norm``,
    so state dicts load both ways. A load_state_dict pre-hook also accepts the two other layouts torch writes: keys
    of ``torch.nn.utils.parametrizations.spectral_norm`` are renamed (see :func:`migrate_spectral_norm_state_dict`),
    and torch's oldest, unversioned legacy layout (``weight`` = W / sigma stored, no ``weight_v``) is converted as
    torch converts it: sigma = mean(W_orig / W) and v = pinv(W_mat) u rescaled to u^T W_mat v = sigma, here in
    float64 (torch's float32 solve can return a noisy v for convs; the eval weight agrees either way).

    ``module.weight`` is a plain attribute, not a Parameter: a forward pre-hook recomputes it, and after each forward
    a forward hook replaces it by a detached snapshot, so the module holds no graph between forwards and
    ``copy.deepcopy`` works before and after a forward. Right after ``spectral_norm``, after ``load_state_dict`` and
    after :func:`power_iteration_` it is W / sigma from the stored u, v. Torch's legacy hook differs here: right after
    registration its ``module.weight`` is ``weight_orig.data``, the unnormalised W sharing weight_orig's storage (so a
    load changes it with weight_orig) until the first forward, and nothing but a forward recomputes it. Code that
    reads ``module.weight`` without calling the module's forward (e.g. ``nn.MultiheadAttention.out_proj``) sees the
    last snapshot; :func:`effective_weight` is always current.

    Raises ValueError for an unsupported module, n_power_iterations < 1, eps <= 0, a bad ``dim``, a lazy or
    non-float weight, or a module that already carries this spectral norm.
    """
    dim = _check_args(module, n_power_iterations, eps, dim)
    weight: nn.Parameter = getattr(module, _NAME)
    with torch.no_grad():
        weight_mat = _weight_matrix(weight, dim)
        dtype = work_dtype(weight.dtype)
        u = F.normalize(torch.randn(weight_mat.shape[0], device=weight.device, dtype=dtype), dim=0, eps=eps)
        v = torch.zeros(weight_mat.shape[1], device=weight.device, dtype=dtype)  # overwritten by the first half-step
        _power_iteration(weight_mat, u, v, _WARMUP_ITERATIONS, eps)
    delattr(module, _NAME)
    module.register_parameter(_ORIG, weight)
    module.register_buffer(_U, u)
    module.register_buffer(_V, v)
    hook = _SpectralNormHook(dim, n_power_iterations, eps)
    module.register_forward_pre_hook(hook)
    _store_weight(module)
    module.register_forward_hook(_release_graph_weight, always_call=True)
    module.register_state_dict_post_hook(_record_version)
    module.register_load_state_dict_pre_hook(_migrate_on_load)
    module.register_load_state_dict_post_hook(_store_weight_after_load)
    return module


def remove_spectral_norm(module: M) -> M:
    """Bake the current normalised weight (stored u, v; no further iteration) into a plain Parameter ``weight``.

    Removes ``weight_orig``, the buffers and all the hooks. Raises ValueError if the module carries no spectral norm.
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
    for key, load_hook in list(module._load_state_dict_pre_hooks.items()):
        if getattr(load_hook, "hook", None) is _migrate_on_load:
            del module._load_state_dict_pre_hooks[key]
    for hooks, function in (
        (module._state_dict_hooks, _record_version),
        (module._load_state_dict_post_hooks, _store_weight_after_load),
    ):
        for key in [key for key, registered in hooks.items() if registered is function]:
            del hooks[key]
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


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight an eval-mode forward of this SN layer uses: W / (u^T W_mat v) from the stored u, v, detached.

    Runs no power iteration and writes nothing, in either mode and train/eval state, so monitoring never moves u, v;
    unlike the ``module.weight`` snapshot it is never stale. Raises ValueError without spectral norm.
    """
    hook = _require_hook(module)
    with torch.no_grad():
        return hook.compute_weight(module, do_power_iteration=False)


def _store_weight(module: nn.Module) -> None:
    """Set the ``module.weight`` snapshot to :func:`effective_weight` (no iteration)."""
    setattr(module, _NAME, effective_weight(module))


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


# --- when u, v advance: per forward (torch-like) or once per optimizer step ---------------------------------------

_MODES = ("forward", "manual")


def set_power_iteration_mode(model: nn.Module, mode: str) -> int:
    """Choose when every SN layer of ``model`` advances u, v; returns the number of SN layers switched.

    ``"forward"`` (the default, as torch): every training-mode forward runs ``n_power_iterations``. A WGAN-GP step
    that calls D on real, fake and interpolates then iterates three times and each call divides by a different sigma.
    ``"manual"``: training forwards iterate nothing and take sigma from the stored u, v, exactly like eval forwards
    (the gradient formula is unchanged: u, v are constants either way); call :func:`power_iteration_` once per
    optimizer step. Every forward of a step then sees the same W_SN, so the real, fake and penalty terms agree, and
    u, v change only at a point the trainer chooses. Under DDP that point comes after the gradient all-reduce, where
    every rank holds the same W, so the deterministic iteration keeps u, v identical without broadcasting buffers.
    Inside :func:`cached_weights` the step's W_SN is computed once and shared by all its forwards.

    DDP. With manual mode, ``broadcast_buffers=False`` is safe: DDP syncs parameters and buffers once at construction,
    the optimizer applies the same all-reduced gradient on every rank, so W, u and v stay bitwise equal (tested on two
    gloo ranks). The default ``broadcast_buffers=True`` re-broadcasts rank 0's buffers in place at every forward;
    pytorch#22095 is the in-place error this causes when a forward saved a buffer for backward and D is called twice
    before backward. This file's SN (like both torch SNs) saves clones of u, v, so with torch 2.14 the real, fake and
    interpolate forwards of a WGAN-GP step ran without that error under the default too (checked on two gloo ranks);
    the broadcast is still a wasted collective per forward, and in forward mode each forward iterates again.
    Raises ValueError for an unknown mode.
    """
    if mode not in _MODES:
        raise ValueError(f"power iteration mode must be one of {_MODES}, got {mode!r}")
    layers = spectral_norm_modules(model)
    for _, module in layers:
        _require_hook(module).iterate_in_forward = mode == "forward"
    return len(layers)


def get_power_iteration_mode(module: nn.Module) -> str:
    """The power iteration mode of one SN layer; raises ValueError if it carries no spectral norm."""
    return "forward" if _require_hook(module).iterate_in_forward else "manual"


def power_iteration_(model: nn.Module) -> int:
    """Advance u, v of every SN layer of ``model`` by its ``n_power_iterations``, in either mode and train/eval state.

    Meant for "manual" mode: call it once per optimizer step, e.g. after ``backward`` and before ``optimizer.step``
    (in-place buffer writes after backward cannot disturb a graph, and each forward kept clones of u, v anyway).
    It also refreshes the detached ``module.weight`` snapshot. Returns the number of SN layers advanced.
    """
    layers = spectral_norm_modules(model)
    for _, module in layers:
        hook = _require_hook(module)
        weight_mat = _weight_matrix(getattr(module, _ORIG).detach(), hook.dim)
        _power_iteration(weight_mat, getattr(module, _U), getattr(module, _V), hook.n_power_iterations, hook.eps)
        _store_weight(module)
    return len(layers)


@contextmanager
def cached_weights(model: nn.Module) -> Iterator[None]:
    """Inside this context, each "manual"-mode SN layer of ``model`` computes W_SN = W / sigma once and reuses it.

    Why. In "manual" mode (:func:`set_power_iteration_mode`) no forward moves u or v, so every forward between two
    :func:`power_iteration_` calls recomputes the same sigma = u^T W_mat v and W / sigma. A WGAN-GP critic step calls
    D three times (real, fake, interpolates), so without the cache it builds three copies of that small graph and
    backpropagates through the division three times. Inside the context the first forward's W_SN (the tensor and its
    autograd node) is handed to the later forwards.

    Maths. W_SN is a deterministic function of (W, u, v), so the cached tensor is bitwise the one a recomputation
    would give: outputs are identical. With uses i = 1..k, autograd first sums the incoming gradients at W_SN,
    G = sum_i G_i, then applies the backward of the division once: ``dL/dW = (G - <G, W_SN> u v^T) / sigma``. That map
    is linear in G, so it equals the sum of the k separate backward passes of the uncached path, up to the order of
    floating-point summation (about 1e-16 relative in float64). The same holds for a gradient penalty's double
    backward, whose terms also meet at W_SN.

    When W_SN is recomputed. The cache holds one W_SN per grad mode (``torch.is_grad_enabled()``, and inference mode),
    so a no_grad forward never hands a graph-less W_SN to a training forward. An entry is also dropped when
    weight_orig, u or v changed in place (their ``_version``: an optimizer step, :func:`power_iteration_`,
    ``load_state_dict``), is a different tensor (``functional_call``), when weight_orig's requires_grad changed, and
    once a backward has run through the cached W_SN, since that backward freed its graph unless ``retain_graph``
    (so forward, backward, forward, backward, as in gradient accumulation, works). Writes through ``.data`` bypass the
    version counter and are not seen: do not write ``weight_orig.data`` inside the context.

    Scope. Layers in "forward" mode are not cached (each training forward iterates). Eval-mode forwards use the cache
    too: manual mode and eval both take sigma from the stored u, v. Contexts nest; the cache lives on the layers' hooks
    until the outermost context exits, and then nothing of it remains (``module.weight`` is detached after every
    forward as always). ``copy.deepcopy`` and pickle work inside and outside; a copy made inside starts uncached.

    torch.compile. A compiled forward ignores the cache (the hook checks ``torch.compiler.is_compiling()`` first, so
    the compiled graph has no guard on it and recomputes W_SN as before), and the context is a no-op when entered
    while compiling. Caching helps eager forwards.
    """
    if torch.compiler.is_compiling():
        yield
        return
    hooks = [_require_hook(module) for _, module in spectral_norm_modules(model)]
    for hook in hooks:
        hook.open_cache()
    try:
        yield
    finally:
        for hook in hooks:
            hook.close_cache()


# --- state dicts: torch's legacy versions and its parametrization ---------------------------------------------------

# torch's legacy SpectralNorm._version, recorded as local_metadata["spectral_norm"]["weight.version"]. Version 1 (the
# current one, ours) stores weight_orig, weight_u and weight_v; version None stored weight_orig, weight = W / sigma
# and weight_u, without weight_v.
_VERSION = 1
_VERSION_KEY = _NAME + ".version"

# torch's parametrization keys (after a module prefix) and ours. Its eval weight is W / (u^T W_mat v) with its own
# u, v, and so is ours, so the buffers map one to one. Its training step runs u = normalize(W v) then
# v = normalize(W^T u), so a stored pair satisfies v = normalize(W^T u); our next step recomputes that same v first and
# then u = normalize(W v), which is the u torch would compute next: training continues on the same sequence.
_PARAMETRIZATION_KEYS = {
    "parametrizations.weight.original": _ORIG,
    "parametrizations.weight.0._u": _U,
    "parametrizations.weight.0._v": _V,
}


def _record_version(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any]) -> None:
    """State-dict post-hook: ``metadata[prefix]["spectral_norm"] = {"weight.version": 1}``, as torch's legacy hook."""
    local_metadata.setdefault("spectral_norm", {})[_VERSION_KEY] = _VERSION


def migrate_spectral_norm_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``state_dict`` with torch parametrization SN keys renamed to this file's (legacy torch) layout.

    ``<prefix>parametrizations.weight.original`` becomes ``<prefix>weight_orig`` and ``...weight.0._u`` / ``._v``
    become ``weight_u`` / ``weight_v``, at any depth, so whole-model state dicts migrate. Other keys are kept, in
    order; the ``_metadata`` attribute is copied. Layers loaded through ``load_state_dict`` migrate by themselves (a
    pre-hook registered by :func:`spectral_norm`); this function is for code that inspects or stores the dict.
    """
    migrated: dict[str, Any] = OrderedDict()
    for key, value in state_dict.items():
        migrated[_migrated_key(key)] = value
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        migrated._metadata = metadata  # type: ignore[attr-defined]
    return migrated


def _migrated_key(key: str) -> str:
    for old, new in _PARAMETRIZATION_KEYS.items():
        if key == old or key.endswith("." + old):
            return key[: len(key) - len(old)] + new
    return key


def _migrate_on_load(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """Load state-dict pre-hook: bring this layer's entries of the (already copied) dict into the current layout.

    Renames parametrization keys, then converts the unversioned legacy layout (:func:`_convert_version_none`).
    """
    for old, new in _PARAMETRIZATION_KEYS.items():
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)
    version = local_metadata.get("spectral_norm", {}).get(_VERSION_KEY)
    if version is None or version < _VERSION:
        _convert_version_none(module, state_dict, prefix, version, strict, missing_keys)


def _convert_version_none(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    version: int | None,
    strict: bool,
    missing_keys: list[str],
) -> None:
    """Convert torch's version-None layout in place, with the rules of torch's SpectralNormLoadStateDictPreHook.

    A dict without version metadata that has weight_orig, weight_u and weight_v but no weight is taken as current
    (hand-made, migrated, or written before this file recorded the version). Otherwise weight_orig, weight and weight_u
    must be present (else they are reported missing and nothing changes). That layout was saved after at least one
    training forward, so u = normalize(W_mat v) and W = W_orig / sigma: sigma = mean(W_orig / W), and ``weight`` is
    replaced by a v with W_mat v parallel to u and u^T W_mat v = sigma, so the eval weight is the stored W.
    """
    key = prefix + _NAME
    if version is None and key not in state_dict and all(key + s in state_dict for s in ("_orig", "_u", "_v")):
        return
    absent = [key + suffix for suffix in ("_orig", "", "_u") if key + suffix not in state_dict]
    if absent:
        if strict:
            missing_keys.extend(absent)
        return
    with torch.no_grad():
        weight_orig = state_dict[key + "_orig"]
        sigma = (weight_orig / state_dict.pop(key)).mean()
        weight_mat = _weight_matrix(weight_orig, _require_hook(module).dim)
        state_dict[key + "_v"] = _solve_v(weight_mat, state_dict[key + "_u"], sigma)


def _solve_v(weight_mat: torch.Tensor, u: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """v = pinv(W_mat) u, rescaled so that u^T W_mat v = sigma; computed in float64, returned in u's dtype.

    This is torch's ``_solve_v_and_rescale`` (least squares: W_mat v = u when u lies in W_mat's range), but torch
    computes ``pinverse(W^T W)`` in the dict's dtype with rcond 1e-15: for a float32 conv (W_mat wider than tall,
    W^T W singular) it inverts rounding noise, and v comes out far from the saved one, though the eval weight still
    matches after the rescale. In float64 the solution lies in W_mat's row space, where W_mat v = c u fixes v: it is
    the v of the saved pair up to rounding.
    """
    dtype = torch.float32 if weight_mat.device.type == "mps" else torch.float64  # MPS has no float64
    w, u_work = weight_mat.to(dtype), u.to(device=weight_mat.device, dtype=dtype)
    v = torch.linalg.pinv(w) @ u_work
    v = v * (sigma.to(dtype) / torch.dot(u_work, w @ v))
    return v.to(u.dtype)


def _store_weight_after_load(module: nn.Module, incompatible_keys: object) -> None:
    """Load state-dict post-hook: the ``module.weight`` snapshot follows the loaded weight_orig, u and v."""
    _store_weight(module)
