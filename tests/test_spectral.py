"""Tests for gan.spectral: power-iteration spectral norm against exact norms, the gradient formula and torch's SN."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrizations
from torch.testing import assert_close

from gan.spectral import (
    apply_spectral_norm,
    effective_weight,
    has_spectral_norm,
    remove_spectral_norm,
    reshape_dim,
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
