"""Tests for gan.spectral: power-iteration spectral norm against exact norms, the gradient formula and torch's SN."""

from __future__ import annotations

import copy
import pickle
import weakref
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrizations
from torch.testing import assert_close

import gan.spectral
from gan.spectral import (
    apply_spectral_norm,
    cached_weights,
    effective_weight,
    has_spectral_norm,
    power_iteration_,
    remove_spectral_norm,
    reshape_dim,
    set_power_iteration_mode,
    sn_estimate,
    spectral_norm,
    spectral_norm_modules,
)

# (name, factory, dim, input shape): the three layer kinds the brief names; W_mat is 6 x w for all of them.
LAYERS = [
    ("linear", lambda: nn.Linear(12, 6), 0, (3, 12)),
    ("conv2d", lambda: nn.Conv2d(3, 6, 2), 0, (2, 3, 4, 4)),
    ("conv_transpose2d", lambda: nn.ConvTranspose2d(4, 6, 2), 1, (2, 4, 3, 3)),
]
LAYER_IDS = [name for name, *_ in LAYERS]
LAYER_ARGS = [layer[1:] for layer in LAYERS]

# float64 is where the claims are identities; float32 gets the tolerances of the reference notes (section 6.4).
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


def _mat(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """The reference W_mat, written the way the brief states it (independent of the module's own reshape)."""
    if dim == 1:
        return weight.transpose(0, 1).reshape(weight.shape[1], -1)
    return weight.reshape(weight.shape[0], -1)


def _from_mat(weight_mat: torch.Tensor, shape: torch.Size, dim: int) -> torch.Tensor:
    """Inverse of :func:`_mat` for a weight of ``shape``."""
    if dim == 1:
        return weight_mat.reshape(shape[1], shape[0], *shape[2:]).transpose(0, 1)
    return weight_mat.reshape(shape)


def _known_spectrum(h: int, w: int, seed: int) -> tuple[torch.Tensor, float]:
    """W = U diag(10, 5, 1, 0.5, ...) V^T in float64: top gap 0.5, so power iteration converges fast."""
    gen = torch.Generator().manual_seed(seed)
    rank = min(h, w)
    s = torch.tensor([10.0, 5.0] + [2.0**-k for k in range(rank - 2)], dtype=torch.float64)
    left, _ = torch.linalg.qr(torch.randn(h, rank, generator=gen, dtype=torch.float64))
    right, _ = torch.linalg.qr(torch.randn(w, rank, generator=gen, dtype=torch.float64))
    return left @ torch.diag(s) @ right.T, 10.0


def _sn_layer_with_spectrum(factory: Callable[[], nn.Module], dim: int, dtype: torch.dtype) -> tuple[nn.Module, float]:
    """An SN layer whose W_mat has a known spectrum, restarted from a random u (the warm-up ran on the old weight)."""
    torch.manual_seed(0)
    module = spectral_norm(factory().to(dtype))
    shape = module.weight_orig.shape
    weight_mat, sigma_true = _known_spectrum(shape[dim], shape.numel() // shape[dim], seed=1)
    with torch.no_grad():
        module.weight_orig.copy_(_from_mat(weight_mat, shape, dim))
        module.weight_u.copy_(F.normalize(torch.randn(shape[dim], dtype=dtype), dim=0))
    return module, sigma_true


def _buffer_sigma(module: nn.Module, dim: int) -> torch.Tensor:
    """u^T W_mat v from the buffers, in float64."""
    weight_mat = _mat(module.weight_orig.detach().double(), dim)
    return module.weight_u.double() @ weight_mat @ module.weight_v.double()


def _discriminator(channels: int = 4) -> nn.Sequential:
    """A tiny SN discriminator: two convs with LeakyReLU(0.01) and a linear head, for 2 x 4 x 4 inputs."""
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(2, channels, 3, padding=1),
        nn.LeakyReLU(0.01),
        nn.Conv2d(channels, channels, 4, stride=2, padding=1),
        nn.LeakyReLU(0.01),
        nn.Flatten(),
        nn.Linear(channels * 4, 1),
    )
    return apply_spectral_norm(model)


# --- 1, 2: convergence to the exact matrix norm -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("factory", "dim", "input_shape"), LAYER_ARGS, ids=LAYER_IDS)
def test_sigma_converges_to_matrix_norm_from_below(factory, dim, input_shape, dtype):
    module, sigma_true = _sn_layer_with_spectrum(factory, dim, dtype)
    assert torch.linalg.matrix_norm(_mat(module.weight_orig.detach().double(), dim), 2) == pytest.approx(sigma_true)
    x = torch.randn(input_shape, dtype=dtype)
    for _ in range(30):
        module(x)
        # Cauchy-Schwarz: a unit-vector estimate never exceeds the largest singular value.
        assert _buffer_sigma(module, dim) <= sigma_true * (1 + 1e-6)
    assert abs(_buffer_sigma(module, dim).item() - sigma_true) / sigma_true < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("factory", "dim", "input_shape"), LAYER_ARGS, ids=LAYER_IDS)
def test_normalised_weight_has_unit_spectral_norm_after_convergence(factory, dim, input_shape, dtype):
    module, _ = _sn_layer_with_spectrum(factory, dim, dtype)
    x = torch.randn(input_shape, dtype=dtype)
    for _ in range(30):
        module(x)
    assert module.weight.dtype == dtype
    norm = torch.linalg.matrix_norm(_mat(module.weight.double(), dim), 2).item()
    assert norm == pytest.approx(1.0, abs=10 * TOLERANCE[dtype])


@pytest.mark.parametrize(("factory", "dim", "input_shape"), LAYER_ARGS, ids=LAYER_IDS)
def test_warmup_makes_sigma_close_before_the_first_forward(factory, dim, input_shape):
    torch.manual_seed(0)
    plain = factory().double()
    shape = plain.weight.shape
    weight_mat, sigma_true = _known_spectrum(shape[dim], shape.numel() // shape[dim], seed=1)
    with torch.no_grad():
        plain.weight.copy_(_from_mat(weight_mat, shape, dim))
    module = spectral_norm(plain)
    assert abs(_buffer_sigma(module, dim).item() - sigma_true) / sigma_true < 1e-8
    # module.weight is already normalised before any forward.
    assert torch.linalg.matrix_norm(_mat(module.weight, dim), 2).item() == pytest.approx(1.0, abs=1e-8)


# --- 3: parity with torch.nn.utils.parametrizations.spectral_norm -------------------------------------------------


def test_linear_matches_torch_parametrization_every_step():
    # Torch iterates u then v, we iterate v then u. For a 2-d weight, torch with dim=1 (W_mat = W^T) runs our
    # sequence exactly with the roles swapped: its _u is our v and its _v is our u, and u^T W v is the same number.
    torch.manual_seed(2)
    plain = nn.Linear(7, 5).double()
    theirs = parametrizations.spectral_norm(copy.deepcopy(plain), dim=1)
    ours = spectral_norm(plain)
    sn = theirs.parametrizations.weight[0]
    with torch.no_grad():  # overwrite the state of torch's 15 registration iterations
        sn._u.copy_(ours.weight_v)
        sn._v.copy_(ours.weight_u)
    x = torch.randn(4, 7, dtype=torch.float64)
    for _ in range(5):
        assert_close(ours(x), theirs(x), atol=1e-12, rtol=0)  # one iteration each
        assert_close(sn._u, ours.weight_v, atol=1e-12, rtol=0)
        assert_close(sn._v, ours.weight_u, atol=1e-12, rtol=0)
        theirs.eval()  # reading theirs.weight in train mode would iterate again
        assert_close(theirs.weight, ours.weight, atol=1e-12, rtol=0)
        theirs.train()


@pytest.mark.parametrize(
    ("factory", "dim", "input_shape"), [LAYER_ARGS[1], LAYER_ARGS[2]], ids=["conv2d", "conv_transpose2d"]
)
def test_conv_matches_torch_parametrization_iterates_and_weight(factory, dim, input_shape):
    # Both walk the same alternating sequence u0 -> v1 -> u1 -> v2 -> ... Torch's first step is a u-update, so we give
    # it _v = v1 (our first half-step); then after j steps torch holds (u_j, v_{j+1}) while we hold (u_j, v_j).
    torch.manual_seed(3)
    plain = factory().double()
    theirs = parametrizations.spectral_norm(copy.deepcopy(plain))
    ours = spectral_norm(plain)
    sn = theirs.parametrizations.weight[0]
    weight_mat = _mat(ours.weight_orig.detach(), dim)
    with torch.no_grad():
        sn._v.copy_(F.normalize(weight_mat.T @ ours.weight_u, dim=0))
    x = torch.randn(input_shape, dtype=torch.float64)
    theirs_previous_v = None
    for _ in range(5):
        ours(x)
        theirs(x)
        assert_close(sn._u, ours.weight_u, atol=1e-12, rtol=0)
        if theirs_previous_v is not None:
            assert_close(theirs_previous_v, ours.weight_v, atol=1e-12, rtol=0)
        theirs_previous_v = sn._v.clone()
    # Same u, v -> same normalised weight: the reshape convention (dim 1 for ConvTranspose) and sigma agree.
    with torch.no_grad():
        sn._u.copy_(ours.weight_u)
        sn._v.copy_(ours.weight_v)
    theirs.eval()
    assert_close(theirs.weight, ours.weight, atol=1e-12, rtol=0)


# --- 4: eval versus train ----------------------------------------------------------------------------------------


def test_eval_forwards_change_nothing_and_train_forward_advances_u():
    torch.manual_seed(4)
    module = spectral_norm(nn.Conv2d(3, 8, 3)).eval()
    u0, v0 = module.weight_u.clone(), module.weight_v.clone()
    x = torch.randn(2, 3, 5, 5)
    first, second = module(x), module(x)
    assert torch.equal(first, second)
    assert torch.equal(module.weight_u, u0)
    assert torch.equal(module.weight_v, v0)
    module.train()
    module(x)
    assert not torch.equal(module.weight_u, u0)


# --- 5: the gradient formula -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("factory", "dim", "input_shape"), LAYER_ARGS, ids=LAYER_IDS)
def test_gradient_equals_projected_gradient_over_sigma(factory, dim, input_shape):
    torch.manual_seed(6)
    module = spectral_norm(factory().double())
    x = torch.randn(input_shape, dtype=torch.float64)
    out = module(x)  # train mode: one iteration, then u, v are the values this forward used
    probe = torch.randn_like(out)
    (out * probe).sum().backward()

    # G = dL/dW_SN from a plain twin layer that holds W_SN as its own weight.
    twin = factory().double()
    twin.load_state_dict({"weight": module.weight.detach(), "bias": module.bias.detach()})
    (twin(x) * probe).sum().backward()
    grad_sn, weight_sn = _mat(twin.weight.grad, dim), _mat(module.weight.detach(), dim)

    u, v = module.weight_u, module.weight_v
    sigma = u @ _mat(module.weight_orig.detach(), dim) @ v
    expected = (grad_sn - (grad_sn * weight_sn).sum() * torch.outer(u, v)) / sigma
    assert_close(_mat(module.weight_orig.grad, dim), expected, atol=1e-10, rtol=0)


# --- 6, 7: double backward and the two-forward GAN pattern ----------------------------------------------------------


def test_gradient_penalty_double_backward_flows_into_every_weight():
    disc = _discriminator()
    torch.manual_seed(7)
    real, fake = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    alpha = torch.rand(3, 1, 1, 1)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    d_real, d_fake, d_hat = disc(real), disc(fake), disc(x_hat)  # train mode: three iterations
    (grad_x,) = torch.autograd.grad(d_hat.sum(), x_hat, create_graph=True)
    penalty = ((grad_x.flatten(1).norm(dim=1) - 1) ** 2).mean()
    weights = [module.weight_orig for _, module in spectral_norm_modules(disc)]
    penalty_grads = torch.autograd.grad(penalty, weights, retain_graph=True)
    assert all(g.abs().sum() > 0 and torch.isfinite(g).all() for g in penalty_grads)
    (d_fake.mean() - d_real.mean() + 10 * penalty).backward()
    assert all(w.grad is not None and torch.isfinite(w.grad).all() for w in weights)


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: gradgradcheck issues thousands of tiny ops, and on a loaded machine the
    OpenMP barriers between threads made it 30x slower (0.4 s -> 13 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_gradgradcheck_through_spectral_norm_in_eval_mode():
    disc = _discriminator(channels=2).double().eval()  # eval: u, v are frozen, so the function is deterministic
    torch.manual_seed(8)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    weight = disc[0].weight_orig.detach().clone().requires_grad_(True)

    def func(inp: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return functional_call(disc, {"0.weight_orig": w}, (inp,))

    assert torch.autograd.gradcheck(func, (x, weight))
    assert torch.autograd.gradgradcheck(func, (x, weight))


@pytest.mark.parametrize("first_mode", ["train", "eval"])
def test_two_forwards_then_one_backward(first_mode):
    disc = _discriminator()
    torch.manual_seed(9)
    real, fake = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    disc.train(first_mode == "train")
    d_real = disc(real)
    disc.train()  # this forward rewrites u, v in place; the first graph holds clones
    d_fake = disc(fake)
    (d_real.mean() - d_fake.mean()).backward()
    assert all(torch.isfinite(m.weight_orig.grad).all() for _, m in spectral_norm_modules(disc))


# --- 8: state dicts and removal ----------------------------------------------------------------------------------


def _trained_conv(seed: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    module = spectral_norm(nn.Conv2d(3, 4, 3))
    for _ in range(3):
        module(torch.randn(2, 3, 5, 5))
    return module


def test_state_dict_round_trip():
    source = _trained_conv(seed=10)
    state = source.state_dict()
    assert set(state) == {"bias", "weight_orig", "weight_u", "weight_v"}
    assert state["weight_u"].shape == (4,) and state["weight_v"].shape == (27,)
    assert state["weight_u"].dtype == state["weight_v"].dtype == torch.float32
    target = _trained_conv(seed=11)
    target.load_state_dict(state)
    x = torch.randn(2, 3, 5, 5)
    assert_close(target.eval()(x), source.eval()(x), atol=0, rtol=0)


@pytest.mark.parametrize("direction", ["ours_to_torch_legacy", "torch_legacy_to_ours"])
def test_state_dict_is_compatible_with_torch_legacy_spectral_norm(direction):
    torch.manual_seed(12)
    ours = _trained_conv(seed=12)
    legacy = nn.utils.spectral_norm(nn.Conv2d(3, 4, 3))
    x = torch.randn(2, 3, 5, 5)
    if direction == "ours_to_torch_legacy":
        legacy.load_state_dict(ours.state_dict())
    else:
        legacy(x)
        ours.load_state_dict(legacy.state_dict())
    assert_close(ours.eval()(x), legacy.eval()(x))


def test_weight_orig_is_the_original_parameter():
    layer = nn.Linear(4, 3)
    weight = layer.weight
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)  # built before SN: must still train weight_orig
    spectral_norm(layer)
    assert layer.weight_orig is weight
    assert not isinstance(layer.weight, nn.Parameter)
    start = weight.detach().clone()
    layer(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    assert not torch.equal(layer.weight_orig, start)


def test_remove_spectral_norm_bakes_the_current_weight():
    module = _trained_conv(seed=13).eval()
    x = torch.randn(2, 3, 5, 5)
    before = module(x)
    remove_spectral_norm(module)
    assert not has_spectral_norm(module)
    assert isinstance(module.weight, nn.Parameter) and module.weight.requires_grad
    assert set(module.state_dict()) == {"bias", "weight"}
    assert not module._forward_pre_hooks and not module._forward_hooks
    assert not module._state_dict_hooks and not module._load_state_dict_post_hooks
    assert_close(module(x), before, atol=0, rtol=0)
    assert_close(module.train()(x), before, atol=0, rtol=0)  # nothing iterates any more
    spectral_norm(module)  # and it can be applied again


def test_module_weight_right_after_spectral_norm_is_normalised_unlike_torch_legacy():
    # The documented difference: torch's legacy hook leaves weight_orig.data (unnormalised, shared storage) in
    # module.weight until the first forward; ours holds W / sigma from the warm-up u, v, in its own storage.
    torch.manual_seed(18)
    plain = nn.Conv2d(3, 4, 3)
    legacy = nn.utils.spectral_norm(copy.deepcopy(plain))
    assert legacy.weight.data_ptr() == legacy.weight_orig.data_ptr()
    assert torch.equal(legacy.weight, legacy.weight_orig.detach())
    ours = spectral_norm(plain)
    assert ours.weight.data_ptr() != ours.weight_orig.data_ptr() and not ours.weight.requires_grad
    assert torch.equal(ours.weight, ours.weight_orig.detach() / sn_estimate(ours))
    assert torch.equal(ours.weight, effective_weight(ours))


def test_load_state_dict_refreshes_module_weight():
    target, source = _trained_conv(seed=19), _trained_conv(seed=20)
    weight = source.weight_orig.detach()
    expected = weight / (source.weight_u @ weight.reshape(4, -1) @ source.weight_v)
    assert not torch.allclose(target.weight, expected)
    target.load_state_dict(source.state_dict())
    # Without a forward, module.weight already is the loaded layer's eval weight, not the snapshot of the old one.
    assert_close(target.weight, expected, atol=1e-7, rtol=0)
    assert torch.equal(target.weight, effective_weight(target))


def test_effective_weight_is_the_eval_weight_and_changes_nothing():
    module = _trained_conv(seed=21).train()
    buffers = [b.clone() for b in module.buffers()]
    weight = effective_weight(module)
    assert not weight.requires_grad
    assert all(torch.equal(b, before) for b, before in zip(module.buffers(), buffers))
    x = torch.randn(2, 3, 5, 5)
    assert_close(F.conv2d(x, weight, module.bias), module.eval()(x), atol=0, rtol=0)
    assert torch.equal(module.weight, weight)


def test_reshape_dim_is_the_sn_convention():
    assert reshape_dim(nn.Conv2d(2, 3, 3)) == reshape_dim(nn.Linear(2, 3)) == 0
    assert reshape_dim(nn.ConvTranspose2d(2, 3, 3)) == 1
    assert reshape_dim(spectral_norm(nn.Conv2d(2, 3, 3), dim=1)) == 1


# --- 9: monitoring, dtypes, errors -------------------------------------------------------------------------------


def test_sn_estimate_is_u_w_v_and_changes_nothing():
    module = _trained_conv(seed=14).train()
    u0, v0 = module.weight_u.clone(), module.weight_v.clone()
    estimate = sn_estimate(module)
    assert estimate.dtype == torch.float32 and estimate.ndim == 0 and not estimate.requires_grad
    assert_close(estimate, u0 @ module.weight_orig.detach().reshape(4, -1) @ v0)
    assert torch.equal(module.weight_u, u0) and torch.equal(module.weight_v, v0)


def test_autocast_bfloat16_keeps_float32_buffers_and_full_precision_iteration():
    torch.manual_seed(15)
    module = spectral_norm(nn.Conv2d(3, 4, 3))
    twin = copy.deepcopy(module)
    x = torch.randn(2, 3, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    twin(x)
    assert out.dtype == torch.bfloat16
    assert module.weight_u.dtype == module.weight_v.dtype == torch.float32
    # autocast is switched off inside the iteration, so it matches a float32 forward bit for bit.
    assert torch.equal(module.weight_u, twin.weight_u) and torch.equal(module.weight_v, twin.weight_v)


def test_bfloat16_weight_iterates_in_float32():
    torch.manual_seed(16)
    module = spectral_norm(nn.Linear(8, 6).to(torch.bfloat16))
    assert module.weight_u.dtype == module.weight_v.dtype == torch.float32
    out = module(torch.randn(3, 8, dtype=torch.bfloat16))
    assert out.dtype == module.weight.dtype == torch.bfloat16
    assert module.weight_u.dtype == torch.float32
    # W_SN = W / sigma up to bf16 rounding of the quotient; sigma itself is computed in float32.
    expected = module.weight_orig.float() / sn_estimate(module)
    assert_close(module.weight.float(), expected, atol=0, rtol=2**-8)


def test_double_casts_the_buffers_like_any_buffer():
    module = spectral_norm(nn.Linear(4, 3)).double()
    assert module.weight_u.dtype == module.weight_v.dtype == torch.float64
    assert module(torch.randn(2, 4, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: spectral_norm(nn.Linear(2, 2), n_power_iterations=0), "n_power_iterations"),
        (lambda: spectral_norm(nn.Linear(2, 2), n_power_iterations=-1), "n_power_iterations"),
        (lambda: spectral_norm(nn.Linear(2, 2), eps=0.0), "eps"),
        (lambda: spectral_norm(nn.Linear(2, 2), dim=2), "dim"),
        (lambda: spectral_norm(nn.BatchNorm2d(3)), "supports"),
        (lambda: spectral_norm(nn.Embedding(4, 2)), "supports"),
        (lambda: spectral_norm(spectral_norm(nn.Linear(2, 2))), "already"),
        (lambda: spectral_norm(nn.utils.spectral_norm(nn.Linear(2, 2))), "no 'weight' parameter"),
        (lambda: spectral_norm(nn.LazyLinear(2)), "lazy"),
        (lambda: remove_spectral_norm(nn.Linear(2, 2)), "not applied"),
        (lambda: sn_estimate(nn.Linear(2, 2)), "not applied"),
        (lambda: effective_weight(nn.Linear(2, 2)), "not applied"),
    ],
    ids=[
        "zero_iterations",
        "negative_iterations",
        "zero_eps",
        "bad_dim",
        "batchnorm",
        "embedding",
        "twice",
        "torch_legacy_applied",
        "lazy",
        "remove_without_sn",
        "estimate_without_sn",
        "effective_weight_without_sn",
    ],
)
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --- 10: deepcopy and model-level helpers --------------------------------------------------------------------------


def test_deepcopy_before_and_after_a_forward():
    disc = _discriminator()
    before = copy.deepcopy(disc)  # an EMA copy made before training
    x = torch.randn(3, 2, 4, 4)
    reference = disc.eval()(x)
    out = disc.train()(x)  # graph still alive
    after = copy.deepcopy(disc)
    out.sum().backward()  # copying did not disturb the original's graph
    names = [name for name, _ in spectral_norm_modules(disc)]
    for clone in (before, after):
        assert [name for name, _ in spectral_norm_modules(clone)] == names
    assert_close(after.eval()(x), disc.eval()(x), atol=0, rtol=0)
    u_original = disc[0].weight_u.clone()
    after.train()(x)  # the copy iterates on its own buffers
    assert torch.equal(disc[0].weight_u, u_original)
    assert not torch.equal(after[0].weight_u, u_original)
    assert_close(before.eval()(x), reference, atol=0, rtol=0)
    assert_close(pickle.loads(pickle.dumps(disc))(x), disc(x), atol=0, rtol=0)  # whole-model torch.save too


def test_apply_spectral_norm_and_module_listing():
    torch.manual_seed(17)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.Sequential(nn.ConvTranspose2d(4, 6, 2), nn.Conv1d(2, 2, 1)),
        nn.Linear(5, 2),
        nn.MultiheadAttention(4, 1),
    )
    assert spectral_norm_modules(model) == []
    apply_spectral_norm(model, n_power_iterations=2)
    listed = spectral_norm_modules(model)
    assert [name for name, _ in listed] == ["0", "2.0", "2.1", "3"]
    assert all(has_spectral_norm(module) for _, module in listed)
    assert not has_spectral_norm(model[1]) and not has_spectral_norm(model[4].out_proj)
    assert model[2][0].weight_u.shape == (6,)  # ConvTranspose2d(4, 6): dim 1, the output channels
    u_before = model[0].weight_u.clone()
    apply_spectral_norm(model)  # already applied modules are left alone
    assert spectral_norm_modules(model) == listed
    assert torch.equal(model[0].weight_u, u_before)


# --- 11: cached_weights: one W_SN per step in manual mode ------------------------------------------------------------

# (factory, input shape): the three layer kinds and a small Sequential critic.
CACHED_MODELS = [(factory, shape) for _, factory, _, shape in LAYERS] + [(_discriminator, (3, 2, 4, 4))]
CACHED_IDS = [*LAYER_IDS, "sequential"]


def _manual(factory: Callable[[], nn.Module]) -> nn.Module:
    """A float64 SN model in manual mode, seeded."""
    torch.manual_seed(0)
    model = factory()
    if not spectral_norm_modules(model):
        model = spectral_norm(model)
    set_power_iteration_mode(model, "manual")
    return model.double()


@pytest.fixture
def sigma_calls(monkeypatch) -> list[int]:
    """Counts the calls of gan.spectral._sigma, i.e. how often some W_SN (or sigma estimate) is computed."""
    calls = [0]
    original = gan.spectral._sigma

    def counting(*args: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(gan.spectral, "_sigma", counting)
    return calls


def _weights_seen(module: nn.Module) -> list[torch.Tensor]:
    """The ``module.weight`` tensor of each later forward (a pre-hook registered after spectral norm's)."""
    seen: list[torch.Tensor] = []
    module.register_forward_pre_hook(lambda m, args: seen.append(m.weight))
    return seen


def _wgan_gp_step(model: nn.Module, shape: tuple[int, ...]) -> list[torch.Tensor]:
    """D(real), D(fake), D(interpolates) with a gradient penalty, one backward; returns the three outputs."""
    gen = torch.Generator().manual_seed(11)
    real, fake = torch.randn(shape, generator=gen, dtype=torch.float64), torch.randn(shape, generator=gen).double()
    alpha = torch.rand(shape[0], *[1] * (len(shape) - 1), generator=gen, dtype=torch.float64)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    d_real, d_fake, d_hat = model(real), model(fake), model(x_hat)
    (grad_x,) = torch.autograd.grad(d_hat.sum(), x_hat, create_graph=True)
    penalty = ((grad_x.flatten(1).norm(dim=1) - 1) ** 2).mean()
    (d_fake.mean() - d_real.mean() + 10 * penalty).backward()
    return [d_real, d_fake, d_hat]


@pytest.mark.parametrize(("factory", "shape"), CACHED_MODELS, ids=CACHED_IDS)
def test_cached_wgan_gp_step_equals_uncached(factory, shape, sigma_calls):
    reference, model = _manual(factory), _manual(factory)
    expected = _wgan_gp_step(reference, shape)
    n_layers = len(spectral_norm_modules(model))
    sigma_calls[0] = 0
    with cached_weights(model):
        outputs = _wgan_gp_step(model, shape)
    assert sigma_calls[0] == n_layers  # one W_SN per layer for the three forwards
    for out, ref in zip(outputs, expected):
        assert_close(out, ref, atol=0, rtol=0)  # the same W_SN values: bitwise
    for (name, param), ref in zip(model.named_parameters(), reference.parameters()):
        assert_close(param.grad, ref.grad, atol=1e-12, rtol=1e-12, msg=name)  # summed at W_SN, then one backward


def test_cached_weight_is_computed_once_per_grad_mode(sigma_calls):
    module = _manual(lambda: nn.Conv2d(3, 6, 2))
    seen = _weights_seen(module)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    sigma_calls[0] = 0
    with cached_weights(module):
        module(x)
        module.eval()(x)  # eval forwards share the cache: manual mode and eval both use the stored u, v
        with torch.no_grad():
            module.train()(x)
            module(x)
        module(x)
    assert sigma_calls[0] == 2
    assert seen[0] is seen[1] is seen[4] and seen[2] is seen[3] and seen[0] is not seen[2]
    assert seen[0].requires_grad and not seen[2].requires_grad
    module(x)
    module(x)
    assert sigma_calls[0] == 4  # outside the context every forward computes W_SN again


def _sgd_step(module: nn.Module, out: torch.Tensor) -> None:
    out.sum().backward()
    torch.optim.SGD(module.parameters(), lr=0.1).step()


def _adam_step(**flavour: bool) -> Callable[[nn.Module, torch.Tensor], None]:
    def step(module: nn.Module, out: torch.Tensor) -> None:
        out.sum().backward()
        torch.optim.Adam(module.parameters(), lr=0.1, **flavour).step()

    return step


def _scale_in_place(module: nn.Module, out: torch.Tensor) -> None:
    with torch.no_grad():
        module.weight_orig.mul_(1.5)


def _load_state_dict(module: nn.Module, out: torch.Tensor) -> None:
    state = {key: value * 2 if key == "weight_u" else value for key, value in module.state_dict().items()}
    module.load_state_dict(state)


# (change between two forwards, whether the second forward may reuse the first W_SN)
CHANGES = [
    (lambda module, out: None, True),
    (lambda module, out: out.sum().backward(), False),  # the backward freed W_SN's graph
    (lambda module, out: out.sum().backward(retain_graph=True), False),  # seen as a backward all the same
    (_sgd_step, False),
    (_adam_step(foreach=False), False),
    (_adam_step(foreach=True), False),
    (_adam_step(fused=True), False),
    (_scale_in_place, False),
    (lambda module, out: power_iteration_(module), False),
    (_load_state_dict, False),
    (lambda module, out: module.weight_orig.requires_grad_(False), False),
]
CHANGE_IDS = [
    "nothing",
    "backward",
    "backward_retain_graph",
    "sgd",
    "adam",
    "adam_foreach",
    "adam_fused",
    "in_place",
    "power_iteration",
    "load_state_dict",
    "requires_grad_off",
]


@pytest.mark.parametrize(("change", "reused"), CHANGES, ids=CHANGE_IDS)
def test_cached_weight_is_recomputed_after_a_change(change, reused):
    reference, module = _manual(lambda: nn.Conv2d(3, 6, 2)), _manual(lambda: nn.Conv2d(3, 6, 2))
    seen = _weights_seen(module)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    change(reference, reference(x))
    expected = reference(x)
    with cached_weights(module):
        change(module, module(x))
        out = module(x)
        assert (seen[0] is seen[1]) == reused
        assert_close(out, expected, atol=0, rtol=0)
        if out.requires_grad:
            out.sum().backward()
            expected.sum().backward()
            assert_close(module.weight_orig.grad, reference.weight_orig.grad, atol=0, rtol=0)
    assert_close(module.weight_u, reference.weight_u, atol=0, rtol=0)


def test_no_grad_forward_then_grad_forward_gets_a_graph():
    reference, module = _manual(_discriminator), _manual(_discriminator)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    with cached_weights(module):
        with torch.no_grad():
            module(x)
        module(x).sum().backward()
    reference(x).sum().backward()
    for (name, param), ref in zip(module.named_parameters(), reference.parameters()):
        assert param.grad is not None, name
        assert_close(param.grad, ref.grad, atol=0, rtol=0, msg=name)


def _assert_holds_no_graph(model: nn.Module) -> None:
    """No SN layer holds a tensor with a graph, and its hook holds only plain settings again."""
    for name, module in spectral_norm_modules(model):
        assert all(not isinstance(v, torch.Tensor) or v.grad_fn is None for v in vars(module).values()), name
        for hook in module._forward_pre_hooks.values():
            assert all(isinstance(v, (bool, int, float)) for v in vars(hook).values()), name


def test_nothing_is_kept_after_the_context():
    model = _manual(_discriminator)
    seen: list[torch.Tensor] = []
    handle = model[0].register_forward_pre_hook(lambda m, args: seen.append(m.weight))
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    with cached_weights(model):
        model(x)  # graph dropped at once: only the cache keeps W_SN alive
        weight_sn = weakref.ref(seen.pop())
        handle.remove()  # a lambda does not pickle
        assert weight_sn() is not None
        inside = copy.deepcopy(model)  # the copy leaves the cache behind
        assert_close(pickle.loads(pickle.dumps(model))(x), inside(x), atol=0, rtol=0)
    assert weight_sn() is None
    _assert_holds_no_graph(model)
    after = copy.deepcopy(model)
    for clone in (inside, after, pickle.loads(pickle.dumps(model))):
        assert_close(clone(x), model(x), atol=0, rtol=0)


def test_forward_mode_layers_iterate_every_forward_inside_the_context():
    reference, model = _discriminator().double(), _discriminator().double()
    for disc in (reference, model):
        set_power_iteration_mode(disc[0], "manual")  # the other two layers stay in forward mode
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    with cached_weights(model):
        outputs = [model(x) for _ in range(3)]
    expected = [reference(x) for _ in range(3)]
    for out, ref in zip(outputs, expected):
        assert_close(out, ref, atol=0, rtol=0)
    for (name, buf), ref in zip(model.named_buffers(), reference.buffers()):
        assert_close(buf, ref, atol=0, rtol=0, msg=name)
    assert not torch.equal(model[2].weight_u, _discriminator()[2].weight_u.double())  # u did advance


def test_nested_contexts_keep_the_cache_until_the_outermost_exits(sigma_calls):
    model = _manual(_discriminator)
    seen = _weights_seen(model[0])
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    sigma_calls[0] = 0
    with cached_weights(model):
        model(x)
        with cached_weights(model[0]), cached_weights(model):
            model(x)
        model(x)
    assert seen[0] is seen[1] is seen[2]
    assert sigma_calls[0] == 3  # one per layer
    with pytest.raises(RuntimeError, match="boom"), cached_weights(model):
        model(x)
        raise RuntimeError("boom")
    _assert_holds_no_graph(model)
    model(x)
    assert sigma_calls[0] == 9  # after an exception too, the cache is gone


def test_torch_compile_inside_the_context_matches_eager():
    model = _manual(_discriminator)
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    with cached_weights(model):
        for _ in range(2):
            assert_close(compiled(x), eager(x), atol=0, rtol=0)
            compiled(x).sum().backward()
            eager(x).sum().backward()
            power_iteration_(model)
            power_iteration_(eager)
    for (name, param), ref in zip(model.named_parameters(), eager.parameters()):
        assert_close(param.grad, ref.grad, atol=0, rtol=0, msg=name)


def test_cached_weights_entered_while_compiling_is_a_no_op():
    model = _manual(_discriminator)
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)

    def twice(inp: torch.Tensor) -> torch.Tensor:
        with cached_weights(model):
            return model(inp) - 2 * model(inp)

    expected = twice(x)
    assert_close(torch.compile(twice, backend="aot_eager", fullgraph=True)(x), expected, atol=0, rtol=0)
    _assert_holds_no_graph(model)
