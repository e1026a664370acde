"""Spectral norm in production: one power iteration per optimizer step, autocast, torch.compile, DDP, and loading the
state dicts of both torch spectral norms."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.utils import parametrizations
from torch.testing import assert_close

from gan.spectral import (
    apply_spectral_norm,
    get_power_iteration_mode,
    migrate_spectral_norm_state_dict,
    power_iteration_,
    remove_spectral_norm,
    set_power_iteration_mode,
    spectral_norm,
    spectral_norm_modules,
)


def _discriminator(seed: int = 0, n_power_iterations: int = 1) -> nn.Sequential:
    """A small SN critic in StarGAN's shape: strided 4x4 convs, LeakyReLU(0.01), a 3x3 patch output."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 4, 2, 1),
        nn.LeakyReLU(0.01),
        nn.Conv2d(8, 16, 4, 2, 1),
        nn.LeakyReLU(0.01),
        nn.Conv2d(16, 1, 3, 1, 1),
    )
    return apply_spectral_norm(model, n_power_iterations=n_power_iterations)


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buf.clone() for name, buf in model.named_buffers()}


def _assert_same_buffers(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    for name, buf in model.named_buffers():
        assert torch.equal(buf, expected[name]), name


def _gradient_penalty(model: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


# --- 1: one power iteration per optimizer step -------------------------------------------------------------------


@pytest.mark.parametrize("n_power_iterations", [1, 2])
def test_manual_mode_three_forwards_and_one_power_iteration_equal_one_update(n_power_iterations):
    disc = _discriminator(n_power_iterations=n_power_iterations)
    torch_like = copy.deepcopy(disc)  # forward mode: one training forward is one update
    assert set_power_iteration_mode(disc, "manual") == 3
    assert [get_power_iteration_mode(m) for _, m in spectral_norm_modules(disc)] == ["manual"] * 3
    before = _buffers(disc)
    real, fake = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    weights = []
    for x in (real, fake, (real + fake) / 2):  # a WGAN-GP step calls D three times
        disc(x)
        weights.append([m.weight.clone() for _, m in spectral_norm_modules(disc)])
        _assert_same_buffers(disc, before)
    # Every forward of the step divided by the same sigma: the real, fake and penalty terms see one W_SN.
    assert all(torch.equal(a, b) for later in weights[1:] for a, b in zip(weights[0], later))
    assert power_iteration_(disc) == 3
    torch_like(real)
    for (name, buf), theirs in zip(disc.named_buffers(), torch_like.buffers()):
        assert torch.equal(buf, theirs), name
    assert not torch.equal(disc[0].weight_u, before["0.weight_u"])


def test_manual_mode_training_forward_equals_eval_forward_and_gradient_formula_holds():
    torch.manual_seed(1)
    module = spectral_norm(nn.Conv2d(3, 6, 3).double())
    set_power_iteration_mode(module, "manual")
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    out = module(x)
    assert_close(out, module.eval()(x), atol=0, rtol=0)
    probe = torch.randn_like(out)
    (out * probe).sum().backward()
    twin = nn.Conv2d(3, 6, 3).double()  # G = dL/dW_SN from a plain layer that holds W_SN
    twin.load_state_dict({"weight": module.weight.detach(), "bias": module.bias.detach()})
    (twin(x) * probe).sum().backward()
    grad_sn, weight_sn = twin.weight.grad.reshape(6, -1), module.weight.detach().reshape(6, -1)
    u, v = module.weight_u, module.weight_v
    sigma = u @ module.weight_orig.detach().reshape(6, -1) @ v
    expected = (grad_sn - (grad_sn * weight_sn).sum() * torch.outer(u, v)) / sigma
    assert_close(module.weight_orig.grad.reshape(6, -1), expected, atol=1e-10, rtol=0)


def test_manual_mode_step_with_gradient_penalty_and_optimizer():
    disc = _discriminator()
    set_power_iteration_mode(disc, "manual")
    optimizer = torch.optim.Adam(disc.parameters(), lr=1e-3)
    torch.manual_seed(2)
    for _ in range(3):
        real, fake, alpha = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.rand(2, 1, 1, 1)
        before = _buffers(disc)
        loss = disc(fake).mean() - disc(real).mean() + 10 * _gradient_penalty(disc, real, fake, alpha)
        optimizer.zero_grad()
        loss.backward()
        _assert_same_buffers(disc, before)  # nothing moved during the three forwards and the backward
        power_iteration_(disc)
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in disc.parameters())


def test_mode_switch_details():
    disc = _discriminator()
    with pytest.raises(ValueError, match="mode"):
        set_power_iteration_mode(disc, "sometimes")
    assert set_power_iteration_mode(nn.Sequential(nn.Linear(2, 2)), "manual") == 0
    assert power_iteration_(nn.Linear(2, 2)) == 0
    with pytest.raises(ValueError, match="not applied"):
        get_power_iteration_mode(nn.Linear(2, 2))
    set_power_iteration_mode(disc, "manual")
    for clone in (copy.deepcopy(disc), pickle.loads(pickle.dumps(disc))):  # EMA copies and whole-model saves
        assert get_power_iteration_mode(clone[0]) == "manual"
    before = _buffers(disc)
    disc.eval()
    power_iteration_(disc)  # explicit: advances in eval mode too
    assert not torch.equal(disc[0].weight_u, before["0.weight_u"])
    assert not disc.training
    set_power_iteration_mode(disc, "forward")
    advanced = _buffers(disc)
    disc.train()(torch.randn(1, 3, 8, 8))
    assert not torch.equal(disc[0].weight_u, advanced["0.weight_u"])


# --- 2: autocast -------------------------------------------------------------------------------------------------


def _autocast_step(device: str, dtype: torch.dtype) -> None:
    disc = _discriminator().to(device)
    twin = copy.deepcopy(disc)
    set_power_iteration_mode(disc, "manual")
    x = torch.randn(2, 3, 8, 8, device=device)
    with torch.autocast(device, dtype=dtype):
        out = disc(x)
        power_iteration_(disc)
        disc.train()(x)  # and forward mode under autocast
    assert out.dtype == dtype
    for _, module in spectral_norm_modules(disc):
        assert module.weight_u.dtype == module.weight_v.dtype == torch.float32
    twin(x)  # the iteration ran with autocast off, so it matches a float32 forward
    for (name, buf), theirs in zip(disc.named_buffers(), twin.buffers()):
        assert_close(buf, theirs, atol=1e-6, rtol=0, msg=name)


def test_autocast_cpu_bfloat16_keeps_float32_buffers():
    _autocast_step("cpu", torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_cuda_keeps_float32_buffers(dtype):
    _autocast_step("cuda", dtype)


# --- 3: torch.compile --------------------------------------------------------------------------------------------


def _check_compiled(backend: str, atol: float, mode: str = "forward") -> None:
    """Compiled and eager twins stay equal through train forwards, backward, buffer updates and eval forwards."""
    disc = _discriminator()
    set_power_iteration_mode(disc, mode)
    eager = copy.deepcopy(disc)
    compiled = torch.compile(disc, backend=backend, fullgraph=True)  # fullgraph: the SN hooks trace without breaks
    torch.manual_seed(3)
    x = torch.randn(2, 3, 8, 8)
    for _ in range(2):
        assert_close(compiled(x), eager(x), atol=atol, rtol=0)
        compiled(x).sum().backward()
        eager(x).sum().backward()
        if mode == "manual":  # eager, outside the compiled graph, as a trainer would call it
            power_iteration_(disc)
            power_iteration_(eager)
    for (name, mine), theirs in zip(disc.named_parameters(), eager.parameters()):
        assert_close(mine.grad, theirs.grad, atol=10 * atol, rtol=0, msg=name)
    for (name, buf), theirs in zip(disc.named_buffers(), eager.buffers()):
        assert_close(buf, theirs, atol=atol, rtol=0, msg=name)
    assert not torch.equal(disc[0].weight_u, _discriminator()[0].weight_u)  # u, v did move
    disc.eval()
    eager.eval()
    assert_close(compiled(x), eager(x), atol=atol, rtol=0)


@pytest.mark.parametrize("mode", ["forward", "manual"])
def test_torch_compile_aot_eager_matches_eager(mode):
    _check_compiled("aot_eager", atol=0, mode=mode)  # same kernels as eager: bitwise


@pytest.mark.slow
def test_torch_compile_inductor_matches_eager():
    _check_compiled("inductor", atol=1e-5)  # ~20 s of C++ compilation on CPU; fused kernels round differently


# --- 4: DistributedDataParallel ----------------------------------------------------------------------------------

WORLD = 2


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    """Train a DDP SN critic a few WGAN-GP steps (manual mode, no buffer broadcast); save what must agree."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        disc = _discriminator(seed=0)
        set_power_iteration_mode(disc, "manual")
        ddp = nn.parallel.DistributedDataParallel(disc, broadcast_buffers=False)
        optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(100 + rank)  # each rank sees different data
        for _ in range(4):
            real, fake = torch.randn(2, 3, 8, 8, generator=gen), torch.randn(2, 3, 8, 8, generator=gen)
            alpha = torch.rand(2, 1, 1, 1, generator=gen)
            loss = ddp(fake).mean() - ddp(real).mean() + 10 * _gradient_penalty(ddp, real, fake, alpha)
            optimizer.zero_grad()
            loss.backward()  # all-reduce: every rank now holds the same gradient
            power_iteration_(ddp)
            optimizer.step()
        torch.save(disc.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_manual_mode_keeps_u_v_and_weights_identical_on_every_rank(tmp_path):
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    states = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]
    start = _discriminator(seed=0).state_dict()
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key  # bitwise
        # The last bias gets no gradient from a mean difference plus GP, and a 1-channel output's u is always [1].
        if not key.endswith("bias") and value.numel() > 1:
            assert not torch.equal(value, start[key]), key  # trained: weights moved, u, v advanced


# --- 5: loading torch's state dicts ------------------------------------------------------------------------------

LAYERS: list[tuple[str, Callable[[], nn.Module], tuple[int, ...]]] = [
    ("linear", lambda: nn.Linear(12, 6), (3, 12)),
    ("conv2d", lambda: nn.Conv2d(3, 6, 3), (2, 3, 5, 5)),
    ("conv_transpose2d", lambda: nn.ConvTranspose2d(4, 6, 3, stride=2), (2, 4, 3, 3)),
]
LAYER_IDS = [name for name, *_ in LAYERS]
LAYER_ARGS = [layer[1:] for layer in LAYERS]
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-10}


def _trained(module: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype) -> nn.Module:
    """Three training forwards, so u, v are not just the registration state."""
    for _ in range(3):
        module(torch.randn(input_shape, dtype=dtype))
    return module


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("factory", "input_shape"), LAYER_ARGS, ids=LAYER_IDS)
def test_load_torch_parametrization_state_dict(factory, input_shape, dtype):
    torch.manual_seed(4)
    theirs = _trained(parametrizations.spectral_norm(factory().to(dtype)), input_shape, dtype)
    state = theirs.state_dict()
    assert {"parametrizations.weight.original", "parametrizations.weight.0._u"} <= set(state)
    ours = spectral_norm(factory().to(dtype))
    ours.load_state_dict(state)  # strict: every key found a home through the load pre-hook
    x = torch.randn(input_shape, dtype=dtype)
    tol = TOLERANCE[dtype]
    assert_close(ours.eval()(x), theirs.eval()(x), atol=tol, rtol=0)
    # The sequences continue together: torch's next u = normalize(W v) is the u our next step computes.
    ours.train()(x)
    theirs.train()(x)
    assert_close(ours.weight_u, theirs.parametrizations.weight[0]._u, atol=tol, rtol=0)


@pytest.mark.parametrize(("factory", "input_shape"), LAYER_ARGS, ids=LAYER_IDS)
def test_load_torch_legacy_state_dict_float64(factory, input_shape):
    torch.manual_seed(5)
    theirs = _trained(nn.utils.spectral_norm(factory().double()), input_shape, torch.float64)
    ours = spectral_norm(factory().double())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(input_shape, dtype=torch.float64)
    assert_close(ours.eval()(x), theirs.eval()(x), atol=1e-10, rtol=0)


def test_migrate_whole_model_state_dict():
    torch.manual_seed(6)
    theirs = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    parametrizations.spectral_norm(theirs[0])
    parametrizations.spectral_norm(theirs[1][1])
    state = theirs.state_dict()
    migrated = migrate_spectral_norm_state_dict(state)
    assert list(migrated) == [
        "0.bias",
        "0.weight_orig",
        "0.weight_u",
        "0.weight_v",
        "1.1.bias",
        "1.1.weight_orig",
        "1.1.weight_u",
        "1.1.weight_v",
    ]
    assert migrated["1.1.weight_u"] is state["1.1.parametrizations.weight.0._u"]
    assert set(state) != set(migrated)  # the input is not modified
    ours = apply_spectral_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.Flatten(), nn.Linear(4, 2))))
    ours.load_state_dict(migrated)
    nested = apply_spectral_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.Flatten(), nn.Linear(4, 2))))
    nested.load_state_dict(state)  # the per-layer pre-hooks migrate nested prefixes too
    x = torch.randn(2, 3, 3, 3)
    assert_close(ours.eval()(x), theirs.eval()(x), atol=1e-6, rtol=0)
    assert_close(nested.eval()(x), theirs.eval()(x), atol=1e-6, rtol=0)


def test_remove_spectral_norm_removes_the_load_hook():
    module = spectral_norm(nn.Linear(3, 2))
    assert len(module._load_state_dict_pre_hooks) == 1
    assert len(module._load_state_dict_post_hooks) == len(module._state_dict_hooks) == 1
    remove_spectral_norm(module)
    assert not module._load_state_dict_pre_hooks
    assert not module._load_state_dict_post_hooks and not module._state_dict_hooks
    assert "spectral_norm" not in module.state_dict()._metadata[""]


# --- 6: torch legacy state-dict versions (after torch's test_spectral_norm_load_state_dict) ------------------------


def _nested(spectral: Callable[[nn.Module], nn.Module]) -> nn.Sequential:
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    spectral(model[0])
    spectral(model[1][1])
    return model


def test_state_dict_metadata_records_the_legacy_version_like_torch():
    ours, legacy = _nested(spectral_norm), _nested(nn.utils.spectral_norm)
    state, legacy_state = ours.state_dict(), legacy.state_dict()
    assert state._metadata["0"]["spectral_norm"] == {"weight.version": 1}
    assert state._metadata == legacy_state._metadata  # every prefix: the module versions and the SN version
    assert list(state) == list(legacy_state)
    # Both directions, strict, with the metadata: torch sees version 1 and converts nothing.
    legacy.load_state_dict(state)
    x = torch.randn(2, 3, 3, 3)
    assert_close(legacy.eval()(x), ours.eval()(x), atol=1e-6, rtol=0)
    ours.load_state_dict(_nested(nn.utils.spectral_norm).state_dict())
    assert_close(ours(x), _nested(nn.utils.spectral_norm).eval()(x), atol=1e-6, rtol=0)


def _version_none(module: nn.Module) -> dict[str, torch.Tensor]:
    """The unversioned legacy layout, crafted from a torch legacy state dict as torch's own test does."""
    state = copy.deepcopy(module.state_dict())
    del state._metadata[""]["spectral_norm"]
    del state["weight_v"]
    state["weight"] = module.weight.detach().clone()  # W / sigma stored, as before version 1
    return state


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(("factory", "input_shape"), LAYER_ARGS, ids=LAYER_IDS)
def test_load_torch_version_none_state_dict(factory, input_shape, dtype):
    torch.manual_seed(8)
    source = _trained(nn.utils.spectral_norm(factory().to(dtype)), input_shape, dtype)
    reference = copy.deepcopy(source.state_dict())
    state = _version_none(source)
    theirs = nn.utils.spectral_norm(factory().to(dtype))
    theirs.load_state_dict(state)
    ours = spectral_norm(factory().to(dtype))
    ours.load_state_dict(state)  # strict: the pre-hook turned weight into weight_v
    assert "weight_v" not in state and "weight" in state  # the caller's dict is not modified
    tol = TOLERANCE[dtype]
    x = torch.randn(input_shape, dtype=dtype)
    for module in (source, theirs, ours):
        module.eval()
    assert_close(ours(x), theirs(x), atol=10 * tol, rtol=0)
    assert_close(ours(x), source(x), atol=10 * tol, rtol=0)
    assert torch.equal(ours.weight_u, reference["weight_u"])
    # v is recovered (float64 pinv); torch's float32 pinverse(W^T W) is noisy for the wide conv matrices.
    assert_close(ours.weight_v, reference["weight_v"], atol=100 * tol, rtol=0)
    if dtype == torch.float64:
        assert_close(ours.weight_v, theirs.weight_v, atol=tol, rtol=0)
    # Training continues on the sequence the saved module would have run.
    source.train()
    ours.train()
    for _ in range(2):
        assert_close(ours(x), source(x), atol=10 * tol, rtol=0)
        assert_close(ours.weight_u, source.weight_u, atol=10 * tol, rtol=0)


def test_partial_legacy_state_dicts_report_the_same_keys_as_torch():
    # The non-strict sequence of torch's test: each step removes or adds one entry; both layers must agree on what
    # is missing and unexpected (torch's version-None check reports weight_orig, weight, weight_u as missing).
    torch.manual_seed(9)
    theirs = _trained(nn.utils.spectral_norm(nn.Linear(3, 5)), (2, 3), torch.float32)
    ours = spectral_norm(nn.Linear(3, 5))
    state = copy.deepcopy(theirs.state_dict())
    state["nonsense"] = "nonsense"
    steps = [
        lambda d: None,
        lambda d: d.pop("weight_orig"),
        lambda d: d.pop("weight_u"),
        lambda d: d.pop("weight_v"),
        lambda d: d.__setitem__("weight", theirs.weight.detach().clone()),
        lambda d: d._metadata[""].pop("spectral_norm"),
        lambda d: d.pop("weight"),
        lambda d: d.pop("bias"),
    ]
    for step in steps:
        step(state)
        expected = theirs.load_state_dict(copy.deepcopy(state), strict=False)
        assert ours.load_state_dict(copy.deepcopy(state), strict=False) == expected
    with pytest.raises(RuntimeError, match="nonsense"):
        ours.load_state_dict(state)
