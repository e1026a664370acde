"""Norm layers by name, checked against torch's own layers (float64 where the claim is an identity)."""

import pytest
import torch
from torch import nn

from gan.norms import NORMS, BatchInstanceNorm2d, check_norm_options, clamp_gates_, gate_parameters, make_norm
from gan.registry import UnknownNameError


def _x(seed=0, shape=(4, 3, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 0.5


def test_registry_names_and_unknown_name_lists_valid_ones():
    assert {"instance", "batch_instance", "none"} <= set(NORMS.names())
    with pytest.raises(UnknownNameError, match="choose one of: .*instance"):
        make_norm("nope", 3)


def test_instance_matches_torch_in_train_and_eval():
    x = _x()
    ours = make_norm("instance", 3).double()
    ref = nn.InstanceNorm2d(3, affine=True).double()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2)
        ours.bias.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    for mode in (True, False):
        ours.train(mode)
        ref.train(mode)
        torch.testing.assert_close(ours(x), ref(x), atol=1e-12, rtol=0)


def test_instance_track_running_stats_flag():
    layer = make_norm("instance", 3, track_running_stats=True)
    assert layer.track_running_stats and layer.running_mean is not None
    assert make_norm("instance", 3).running_mean is None


def _bin_reference(x, rho, gamma, beta, running_mean, running_var, training):
    bn = nn.functional.batch_norm(x, running_mean, running_var, None, None, training, 0.1, 1e-5)
    inn = nn.functional.instance_norm(x, eps=1e-5)
    r = rho.view(1, -1, 1, 1)
    return (r * bn + (1 - r) * inn) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)


@pytest.mark.parametrize("training", [True, False])
def test_batch_instance_rho_one_is_batch_norm_and_rho_zero_is_instance_norm(training):
    x = _x(1)
    layer = BatchInstanceNorm2d(3).double()
    bn = nn.BatchNorm2d(3).double()
    inorm = nn.InstanceNorm2d(3, affine=True).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
        layer.bias.uniform_(-1, 1)
        layer.running_mean.uniform_(-1, 1)
        layer.running_var.uniform_(0.5, 2)
    for ref in (bn, inorm):
        ref.weight.data.copy_(layer.weight)
        ref.bias.data.copy_(layer.bias)
    bn.running_mean.copy_(layer.running_mean)
    bn.running_var.copy_(layer.running_var)
    layer.train(training)
    bn.train(training)
    inorm.train(training)
    layer.rho.data.fill_(1.0)
    torch.testing.assert_close(layer(x), bn(x), atol=1e-10, rtol=0)
    torch.testing.assert_close(layer.running_mean, bn.running_mean, atol=1e-12, rtol=0)
    layer.rho.data.fill_(0.0)
    torch.testing.assert_close(layer(x), inorm(x), atol=1e-10, rtol=0)


def test_batch_instance_general_rho_and_gate_gradient():
    x = _x(2)
    layer = BatchInstanceNorm2d(3).double()
    with torch.no_grad():
        layer.rho.copy_(torch.tensor([0.2, 0.5, 0.9]))
        layer.weight.uniform_(0.5, 2)
        layer.bias.uniform_(-1, 1)
    rm, rv = layer.running_mean.clone(), layer.running_var.clone()
    expected = _bin_reference(x, layer.rho, layer.weight, layer.bias, rm, rv, True)
    out = layer(x)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)
    upstream = _x(3)
    (out * upstream).sum().backward()
    x_bn = nn.functional.batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
    x_in = nn.functional.instance_norm(x, eps=1e-5)
    manual = (layer.weight.view(1, -1, 1, 1) * (x_bn - x_in) * upstream).sum((0, 2, 3))
    torch.testing.assert_close(layer.rho.grad, manual.detach(), atol=1e-10, rtol=0)


def test_gates_are_clamped_after_a_step_not_in_forward():
    layer = BatchInstanceNorm2d(3)
    opt = torch.optim.SGD(layer.parameters(), lr=100.0)
    x = _x(4).float()
    (layer(x) * _x(5).float()).sum().backward()
    opt.step()
    assert (layer.rho < 0).any() or (layer.rho > 1).any()  # a large step leaves [0, 1]
    clamp_gates_(layer)
    assert ((layer.rho >= 0) & (layer.rho <= 1)).all()
    assert [p is layer.rho for p in gate_parameters(nn.Sequential(layer))] == [True]


def test_double_backward_through_every_layer():
    for name in NORMS.names():
        layer = make_norm(name, 3).double()
        x = _x(6).requires_grad_(True)
        (grad,) = torch.autograd.grad((layer(x) ** 3).sum(), x, create_graph=True)
        grad.pow(2).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), name


@pytest.mark.parametrize("name", ["instance", "batch_instance", "none"])
def test_state_dict_round_trip(name):
    a = make_norm(name, 3)
    a.train()
    a(_x(7).float())
    b = make_norm(name, 3)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    torch.testing.assert_close(a(_x(8).float()), b(_x(8).float()), atol=0, rtol=0)


def test_check_norm_options():
    assert check_norm_options("instance", {"affine": False}) is None
    assert "no option 'rho_init'" in check_norm_options("instance", {"rho_init": 0.0})
    assert "rho_init must lie in [0, 1]" in check_norm_options("batch_instance", {"rho_init": 2.0})
    assert "must be true or false" in check_norm_options("instance", {"affine": "yes"})
