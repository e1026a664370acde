"""Tests for gan.lipschitz: exact oracles for linear maps, and lower bound <= certified upper bound everywhere."""

from __future__ import annotations

import functools
import logging
import math

import pytest
import torch
from torch import nn

from gan.lipschitz import (
    LipschitzMonitor,
    adversarial_path,
    circular_conv_operator_norm,
    dense_operator_matrix,
    grad_norms,
    input_gradient_norms,
    jacobian_norms,
    jacobian_spectral_norm,
    layer_input_shapes,
    layer_upper_bound,
    summed_map_norm,
)
from gan.models.discriminator import Discriminator
from gan.norms import make_norm
from gan.spectral import apply_spectral_norm, spectral_norm


class PathNet(nn.Module):
    """A D-shaped module (``main`` then the head ``src``) around arbitrary layers."""

    def __init__(self, main: list[nn.Module], src: nn.Module) -> None:
        super().__init__()
        self.main = nn.Sequential(*main)
        self.src = src

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.src(self.main(x))


def _sn_discriminator(image_size: int = 16, dtype: torch.dtype = torch.float64, **kwargs: object) -> Discriminator:
    torch.manual_seed(0)
    D = Discriminator(image_size, 3, conv_dim=4, repeat_num=2, **kwargs)
    return apply_spectral_norm(D).to(dtype)


def _dense_path(net: nn.Module, shapes: dict[str, tuple[int, ...]]) -> torch.Tensor:
    """The dense matrix of a purely linear path (bias-free), as the product of the layers' dense matrices."""
    matrix = None
    for name, layer in adversarial_path(net):
        dense = dense_operator_matrix(layer, shapes[name])
        matrix = dense if matrix is None else dense @ matrix
    return matrix


def _trained_discriminator() -> Discriminator:
    """A small SN D after 30 hinge-loss steps telling shifted noise from noise, so weights are off their init."""
    D = apply_spectral_norm(Discriminator(16, 3, conv_dim=8, repeat_num=2))
    gen = torch.Generator().manual_seed(1)
    optimizer = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(30):
        real = torch.randn(8, 3, 16, 16, generator=gen) * 0.5 + 0.5
        fake = torch.randn(8, 3, 16, 16, generator=gen)
        loss = torch.relu(1 - D(real)[0]).mean() + torch.relu(1 + D(fake)[0]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return D


# ------------------------------------------------------------------------------------------------- the path
def test_adversarial_path_and_input_shapes() -> None:
    D = _sn_discriminator(norm_layer=functools.partial(make_norm, "batch"))
    names = [name for name, _ in adversarial_path(D)]
    assert names == ["conv1", "act1", "conv2", "norm2", "act2", "src"]
    shapes = layer_input_shapes(D, 16)
    assert shapes == {
        "conv1": (3, 16, 16),
        "act1": (4, 8, 8),
        "conv2": (4, 8, 8),
        "norm2": (8, 4, 4),
        "act2": (8, 4, 4),
        "src": (8, 4, 4),
    }


# --------------------------------------------------------------------------------- certified layer bounds
@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups", "size"),
    [(1, 1, 1, 1, 6), (2, 1, 1, 1, 8), (2, 0, 1, 1, 7), (3, 2, 1, 1, 7), (1, 2, 2, 1, 6), (2, 1, 1, 2, 6),
     (1, "same", 1, 1, 5), (1, 1, 1, 1, 1)],
)  # fmt: skip
def test_conv_certificate_bounds_the_exact_norm(
    stride: int, padding: int | str, dilation: int, groups: int, size: int
) -> None:
    torch.manual_seed(stride * 7 + size)
    kernel = 3 if padding == "same" or size < 4 else 4
    conv = nn.Conv2d(4, 6, kernel, stride, padding, dilation, groups).double()
    shape = (4, size, size)
    exact = torch.linalg.matrix_norm(dense_operator_matrix(conv, shape), 2).item()
    bound, reason = layer_upper_bound(conv, shape)
    assert reason is None
    assert exact <= bound
    if size >= 6 and dilation == 1:
        assert bound <= 1.6 * exact  # only boundary effects separate the circular grid from zero padding


@pytest.mark.parametrize(("out_channels", "grid"), [(3, (5, 5)), (7, (4, 6)), (2, (3, 3))])
def test_circular_norm_matches_the_dense_circular_conv(out_channels: int, grid: tuple[int, int]) -> None:
    torch.manual_seed(out_channels)
    conv = nn.Conv2d(4, out_channels, 3, padding=1, padding_mode="circular", bias=False).double()
    exact = torch.linalg.matrix_norm(dense_operator_matrix(conv, (4, *grid)), 2)
    assert circular_conv_operator_norm(conv.weight.detach(), grid).item() == pytest.approx(exact.item(), abs=1e-10)


@pytest.mark.parametrize(("padding", "size"), [(1, 6), (0, 5), (2, 4)])
def test_stride_one_conv_certificate_is_the_circular_norm_on_the_padded_grid(padding: int, size: int) -> None:
    # The certified bound and the tests use one circular-conv norm: for stride 1 the polyphase kernel is the kernel.
    torch.manual_seed(size)
    conv = nn.Conv2d(3, 5, 3, padding=padding).double()
    grid = (size + 2 * padding, size + 2 * padding)
    bound, reason = layer_upper_bound(conv, (3, size, size))
    assert reason is None
    assert bound == pytest.approx(circular_conv_operator_norm(conv.weight, grid).item() * (1 + 1e-9), rel=1e-15)


def test_unboundable_layers_give_nan_with_a_reason() -> None:
    bound, reason = layer_upper_bound(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), (2, 5, 5))
    assert math.isnan(bound) and "reflect" in reason
    bound, reason = layer_upper_bound(make_norm("switchable", 4), (4, 5, 5))
    assert math.isnan(bound) and "SwitchableNorm2d" in reason


def test_per_sample_norm_bounds_use_gamma_over_sqrt_eps() -> None:
    norm = make_norm("group", 4, num_groups=2, eps=1e-4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, -2.0, 1.0, 0.1]))
    assert layer_upper_bound(norm, (4, 3, 3)) == (pytest.approx(2.0 / math.sqrt(1e-4), rel=1e-12), None)


# ------------------------------------------------------------------------------- oracles on linear maps
def test_linear_network_grad_norm_equals_exact_norm() -> None:
    torch.manual_seed(0)
    net = PathNet([nn.Linear(6, 5), nn.Linear(5, 4)], nn.Linear(4, 1)).double()
    product = net.src.weight @ net.main[1].weight @ net.main[0].weight
    x = torch.randn(64, 6, dtype=torch.float64)
    assert input_gradient_norms(net, x).max().item() == pytest.approx(
        torch.linalg.matrix_norm(product, 2).item(), abs=1e-10
    )


def test_conv_only_network_grad_and_jacobian_norms_are_exact() -> None:
    torch.manual_seed(0)
    net = PathNet([nn.Conv2d(2, 3, 4, 2, 1), nn.Conv2d(3, 4, 3, 1, 1)], nn.Conv2d(4, 1, 3, 1, 1)).double()
    shapes = layer_input_shapes(net, 6)
    matrix = _dense_path(net, shapes)
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    summed = (matrix.T @ torch.ones(matrix.shape[0], dtype=torch.float64)).norm().item()
    assert input_gradient_norms(net, x).max().item() == pytest.approx(summed, abs=1e-10)
    exact = torch.linalg.matrix_norm(matrix, 2).item()
    jacobian = jacobian_spectral_norm(net, x, n_iterations=300)
    assert (jacobian <= exact * (1 + 1e-10)).all() and (jacobian >= 0.99 * exact).all()
    bound = LipschitzMonitor().measure(net, 6)["lipschitz/D/upper_bound"].item()
    assert exact <= bound and summed <= bound


def test_summed_map_norm_is_the_exact_functional_norm() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 1, 3, 1, 1, bias=False).double()
    dense = dense_operator_matrix(conv, (3, 4, 4))
    exact = dense.sum(0).norm().item()
    assert exact <= summed_map_norm(conv, (3, 4, 4)) <= exact * (1 + 2e-9)


def test_sn_mlp_grad_norms_stay_below_the_product_of_layer_norms() -> None:
    torch.manual_seed(0)
    layers = [spectral_norm(nn.Linear(8, 16)), nn.LeakyReLU(0.2), spectral_norm(nn.Linear(16, 16)), nn.LeakyReLU(0.2)]
    net = PathNet(layers, spectral_norm(nn.Linear(16, 1))).double()
    product = 1.0
    for layer in (net.main[0], net.main[2], net.src):
        product *= torch.linalg.matrix_norm(dense_operator_matrix(layer, (layer.in_features,)), 2).item()
    x = torch.randn(1000, 8, dtype=torch.float64) * 3
    assert input_gradient_norms(net, x).max().item() <= product + 1e-6


# -------------------------------------------------------------------------- the monitor's upper bound
def _finite_difference_ratios(D: nn.Module, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """|sum D(x) - sum D(y)| / ||x - y|| and ||D(x) - D(y)|| / ||x - y|| for far and near random pairs."""
    x = torch.randn(64, 3, 16, 16, generator=gen, dtype=torch.float64)
    step = torch.randn(64, 3, 16, 16, generator=gen, dtype=torch.float64)
    y = torch.cat([x[:32] + step[:32], x[32:] + 1e-4 * step[32:]])
    with torch.no_grad():
        diff = (D(x)[0] - D(y)[0]).flatten(1)
    dist = (x - y).flatten(1).norm(dim=1)
    return diff.sum(1).abs() / dist, diff.norm(dim=1) / dist


def test_finite_differences_never_exceed_the_upper_bound() -> None:
    D = _sn_discriminator().eval()
    bound = LipschitzMonitor().measure(D, 16)["lipschitz/D/upper_bound"].item()
    summed, vector = _finite_difference_ratios(D, torch.Generator().manual_seed(0))
    assert summed.max().item() <= bound and vector.max().item() <= bound


def test_upper_bound_with_batch_norm_uses_running_statistics() -> None:
    D = _sn_discriminator(norm_layer=functools.partial(make_norm, "batch"))
    norm = D.main.norm2
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8, generator=gen, dtype=torch.float64))
        norm.running_var.copy_(torch.rand(8, generator=gen, dtype=torch.float64) + 0.1)
        norm.running_mean.copy_(torch.randn(8, generator=gen, dtype=torch.float64))
    expected = max(abs(g) / math.sqrt(v + norm.eps) for g, v in zip(norm.weight.tolist(), norm.running_var.tolist()))
    monitor = LipschitzMonitor()
    bound = monitor.measure(D, 16)["lipschitz/D/upper_bound"].item()
    assert monitor.layer_bounds["norm2"] == pytest.approx(expected, rel=1e-12)
    others = math.prod(value for name, value in monitor.layer_bounds.items() if name != "norm2")
    assert bound == pytest.approx(expected * others, rel=1e-12)
    summed, vector = _finite_difference_ratios(D.eval(), gen)
    assert summed.max().item() <= bound and vector.max().item() <= bound


def test_unboundable_layer_makes_the_bound_nan_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    D = _sn_discriminator(norm_layer=functools.partial(make_norm, "switchable"))
    monitor = LipschitzMonitor(n_iterations=5)
    with caplog.at_level(logging.WARNING, logger="gan.lipschitz"):
        assert math.isnan(monitor.measure(D, 16)["lipschitz/D/upper_bound"].item())
        monitor.measure(D, 16)
    assert sum("norm2" in record.getMessage() for record in caplog.records) == 1


def test_monitor_tags_and_warm_start() -> None:
    D = _sn_discriminator(dtype=torch.float32)
    monitor = LipschitzMonitor(n_iterations=2000, tol=1e-4)
    tags = monitor.measure(D, 16)
    expected = {  # the domain head cls too: off the adversarial path (not in the bound) but charted like the others
        f"sigma/D/{layer}/{kind}" for layer in ("conv1", "conv2", "src", "cls") for kind in ("sn_estimate", "operator")
    }
    assert set(tags) == expected | {"lipschitz/D/upper_bound"}
    first = {name: state.iterations for name, state in monitor.states.items()}
    monitor.measure(D, 16)
    second = {name: state.iterations - first[name] for name, state in monitor.states.items()}
    assert all(second[name] < first[name] for name in first)  # converged states stop after two iterations


# ------------------------------------------------------------------------ invariants on a trained D
@pytest.fixture(scope="module")
def trained() -> Discriminator:
    return _trained_discriminator()


def test_lower_bounds_stay_below_the_upper_bound_on_a_trained_d(trained: Discriminator) -> None:
    gen = torch.Generator().manual_seed(5)
    real = torch.randn(8, 3, 16, 16, generator=gen) * 0.5 + 0.5
    fake = torch.randn(8, 3, 16, 16, generator=gen)
    bound = LipschitzMonitor().measure(trained, 16)["lipschitz/D/upper_bound"].item()
    grads = grad_norms(trained, real, fake, gen)
    jacobians = jacobian_norms(trained, real, fake, gen)
    assert len(grads) == len(jacobians) == 3
    assert all(value.item() <= bound for value in [*grads.values(), *jacobians.values()])
    patches = trained(real)[0][0].numel()
    for x in (real, fake):
        per_sample = jacobian_spectral_norm(trained, x)
        assert (per_sample >= input_gradient_norms(trained, x) / math.sqrt(patches) * (1 - 1e-5)).all()


def test_monitoring_changes_no_buffer_rng_mode_or_gradient(trained: Discriminator) -> None:
    trained.train()
    trained.main.act1.eval()  # a mixed-mode model must come back mixed
    modes = [module.training for module in trained.modules()]
    buffers = {name: value.clone() for name, value in trained.named_buffers()}
    rng = torch.get_rng_state()
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.rand(4, 3, 16, 16, generator=gen), torch.rand(4, 3, 16, 16, generator=gen)
    trained.zero_grad(set_to_none=True)
    LipschitzMonitor(n_iterations=5).measure(trained, 16)
    grad_norms(trained, real, fake, gen)
    jacobian_norms(trained, real, fake, gen, n_iterations=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [module.training for module in trained.modules()] == modes
    assert all(torch.equal(value, buffers[name]) for name, value in trained.named_buffers())
    assert all(param.grad is None for param in trained.parameters())


def test_interpolates_come_from_the_given_generator(trained: Discriminator) -> None:
    real, fake = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    first = grad_norms(trained, real, fake, torch.Generator().manual_seed(9))
    second = grad_norms(trained, real, fake, torch.Generator().manual_seed(9))
    assert first == second


def test_a_stop_request_ends_every_lipschitz_and_spectrum_measurement():
    """Ctrl-C / SIGTERM during the step-0 measurements: each long loop checks the stop request (the run then saves
    and exits within seconds instead of finishing a certificate that takes minutes at 128 px)."""
    from gan.hooks import spectrum_tags
    from gan.interrupt import StopRequested, clear_stop, request_stop

    D = apply_spectral_norm(Discriminator(16, 3, conv_dim=4, repeat_num=2))
    x = torch.randn(2, 3, 16, 16)
    measurements = {
        "certificate": lambda: LipschitzMonitor().measure(D, 16),
        "circular conv norm": lambda: circular_conv_operator_norm(torch.randn(4, 3, 3, 3), (16, 16)),
        "jacobian": lambda: jacobian_spectral_norm(D, x, 5),
        "spectrum": lambda: spectrum_tags(D, 3),
    }
    request_stop()
    try:
        for name, measure in measurements.items():
            with pytest.raises(StopRequested):
                measure()
                pytest.fail(f"{name}: ran to the end after a stop request")
    finally:
        clear_stop()
    for measure in measurements.values():  # and without a request they run
        measure()
