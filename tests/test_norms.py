"""Norm layers by name, checked against torch's own layers (float64 where the claim is an identity)."""

import copy
import functools
import inspect
import io
import math

import pytest
import torch
from torch import nn

from gan.config import load_config
from gan.errors import ConfigError
from gan.models import Generator
from gan.norms import (
    NORMS,
    BatchInstanceNorm2d,
    check_norm_options,
    clamp_gates_,
    gate_parameters,
    make_norm,
    set_norm_step,
    set_sync_batch_stats,
    uses_batch_statistics,
)
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
        layer = _make(name, 3).double()
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


# ================================================================================================ the whole registry
ALL_NAMES = ["batch", "layer", "instance", "group", "batch_renorm", "switchable", "batch_instance", "none"]
BATCH_STAT_NAMES = ["batch", "batch_renorm", "switchable", "batch_instance"]
F = nn.functional


def _randomise(layer, seed=0):
    """Non-trivial parameters and running statistics, so that no test passes because gamma=1 or stats=(0, 1)."""
    g = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g, dtype=torch.float64).to(t.dtype) * (hi - lo) + lo)

    with torch.no_grad():
        for module in layer.modules():
            for name, lo, hi in [("weight", 0.5, 2), ("bias", -1, 1), ("running_mean", -1, 1), ("rho", 0.2, 0.8)]:
                if isinstance(getattr(module, name, None), torch.Tensor):
                    uniform(getattr(module, name), lo, hi)
            for name in ("running_var", "running_std"):
                if isinstance(getattr(module, name, None), torch.Tensor):
                    uniform(getattr(module, name), 0.5, 2)
            for name in ("mean_logits", "var_logits"):
                if isinstance(getattr(module, name, None), torch.Tensor):
                    uniform(getattr(module, name), -1, 1)
    return layer


def _fitting(name, channels):
    """Options that let ``name`` build at ``channels`` channels: group norm's default 32 groups do not divide the
    narrow test widths (3, 4, 8), so those get 2 groups (1 for an odd C); every other layer keeps its defaults."""
    if name == "group" and channels % 32:
        return {"num_groups": 2 if channels % 2 == 0 else 1}
    return {}


def _make(name, channels=3, **options):
    return make_norm(name, channels, **{**_fitting(name, channels), **options})


def _built(name, channels=3, seed=0, **options):
    return _randomise(_make(name, channels, **options).double(), seed)


def test_registry_has_every_layer_of_the_seed():
    assert set(NORMS.names()) == set(ALL_NAMES)


@pytest.mark.parametrize("channels", [4, 32, 64])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_name_builds_with_default_options_and_runs(name, channels):
    layer = _make(name, channels)  # the defaults wherever they fit: group norm's 32 groups at 32 and 64 channels
    x = torch.randn(2, channels, 4, 4)
    for mode in (True, False):
        out = layer.train(mode)(x)
        assert out.shape == x.shape and torch.isfinite(out).all()


def test_make_norm_rejects_a_bad_channel_count():
    with pytest.raises(ValueError, match="num_features must be a positive integer"):
        make_norm("batch", 0)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_layer_works_inside_the_generator(name):
    norm_layer = functools.partial(make_norm, name, **_fitting(name, 8))  # widths 8, 16, 32
    G = Generator(3, conv_dim=8, repeat_num=1, norm_layer=norm_layer)
    out = G(torch.rand(2, 3, 16, 16) * 2 - 1, torch.eye(3)[:2])
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


# ============================================================================================= BN / LN / IN / GN
def test_batch_is_torch_batch_norm_and_running_stats_match_a_hand_computation():
    x = _x(10)
    layer = make_norm("batch", 3).double()
    assert isinstance(layer, nn.BatchNorm2d)
    out = layer(x)
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    expected = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-5)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(layer.running_mean, 0.1 * mean, atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.running_var, 0.9 + 0.1 * x.var((0, 2, 3), unbiased=True), atol=1e-12, rtol=0)
    cumulative = make_norm("batch", 3, momentum=None).double()
    cumulative(x)
    cumulative(_x(11))
    torch.testing.assert_close(cumulative.running_mean, (mean + _x(11).mean((0, 2, 3))) / 2, atol=1e-12, rtol=0)


def test_batch_norm_with_batch_size_one_is_instance_norm_in_training():
    x1 = _x(12, shape=(1, 3, 5, 6))
    bn = _built("batch")
    inorm = make_norm("instance", 3, track_running_stats=True).double()
    inorm.load_state_dict({k: v for k, v in bn.state_dict().items()})
    torch.testing.assert_close(bn(x1), inorm(x1), atol=1e-10, rtol=0)
    torch.testing.assert_close(bn.running_mean, inorm.running_mean, atol=1e-12, rtol=0)
    torch.testing.assert_close(bn.running_var, inorm.running_var, atol=1e-12, rtol=0)


def test_layer_is_layer_norm_over_chw_with_per_channel_affine_and_group_norm_with_one_group():
    x = _x(13)
    layer = _built("layer")
    gamma = layer.weight[:, None, None].expand(3, 5, 6)
    beta = layer.bias[:, None, None].expand(3, 5, 6)
    torch.testing.assert_close(layer(x), F.layer_norm(x, (3, 5, 6), gamma, beta, 1e-5), atol=1e-10, rtol=0)
    ref = nn.GroupNorm(1, 3).double()
    ref.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), ref(x), atol=0, rtol=0)
    assert make_norm("layer", 3, affine=False).weight is None


def test_group_with_one_group_is_layer_norm_over_chw():
    x = _x(14)
    gn = _built("group", num_groups=1)
    expected = F.layer_norm(
        x, (3, 5, 6), gn.weight[:, None, None].expand(3, 5, 6), gn.bias[:, None, None].expand(3, 5, 6)
    )
    torch.testing.assert_close(gn(x), expected, atol=1e-10, rtol=0)


def test_group_with_one_group_per_channel_is_instance_norm_with_affine():
    x = _x(15)
    gn = _built("group", num_groups=3)
    assert gn.num_groups == 3
    inorm = nn.InstanceNorm2d(3, affine=True).double()
    inorm.load_state_dict(gn.state_dict())
    torch.testing.assert_close(gn(x), inorm(x), atol=1e-10, rtol=0)


def test_group_uses_num_groups_and_says_when_it_does_not_divide():
    assert make_norm("group", 64).num_groups == 32
    assert make_norm("group", 8, num_groups=4).num_groups == 4
    with pytest.raises(ValueError, match="num_groups 3 does not divide the 64 channels"):
        make_norm("group", 64, num_groups=3)
    with pytest.raises(ValueError, match="'num_groups' must be >= 1"):
        make_norm("group", 64, num_groups=0)
    with pytest.raises(TypeError, match="'num_groups' must be an integer"):
        make_norm("group", 64, num_groups=2.5)


@pytest.mark.parametrize(
    "channels, options",
    [(3, {}), (16, {}), (4, {"num_groups": 8}), (3, {"num_groups": 6}), (64, {"num_groups": 128})],
    ids=["default-32-on-3", "default-32-on-16", "8-on-4", "6-on-3", "128-on-64"],
)
def test_group_refuses_more_groups_than_channels_instead_of_falling_back(channels, options):
    # It used to build min(num_groups, C) groups, i.e. instance norm, while the config said group norm.
    groups = options.get("num_groups", 32)
    with pytest.raises(ValueError, match=f"num_groups {groups} does not divide the {channels} channels"):
        make_norm("group", channels, **options)


# ================================================================================================= Batch Renorm
def _brn(seed=0, step=0, **options):
    layer = _built("batch_renorm", seed=seed, **options)
    set_norm_step(layer, step)
    return layer


@pytest.mark.parametrize(
    "step, options", [(0, {}), (10**6, {"rmax": 1.0, "dmax": 0.0})], ids=["warm-up", "rmax=1,dmax=0"]
)
def test_batch_renorm_without_correction_is_batch_norm_in_outputs_and_gradients(step, options):
    brn = _brn(step=step, **options)
    assert brn.current_clip() == (1.0, 0.0)
    bn = nn.BatchNorm2d(3).double()
    bn.weight.data.copy_(brn.weight)
    bn.bias.data.copy_(brn.bias)
    x, upstream = _x(16), _x(17)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_a, out_b = brn(xa), bn(xb)
    torch.testing.assert_close(out_a, out_b, atol=1e-10, rtol=0)
    (out_a * upstream).sum().backward()
    (out_b * upstream).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-10, rtol=0)
    torch.testing.assert_close(brn.weight.grad, bn.weight.grad, atol=1e-10, rtol=0)
    torch.testing.assert_close(brn.bias.grad, bn.bias.grad, atol=1e-10, rtol=0)


def test_batch_renorm_inference_uses_the_moving_statistics_and_leaves_them_alone():
    brn = _brn(step=30000).eval()
    before = {k: v.clone() for k, v in brn.state_dict().items()}
    x = _x(18)
    expected = (x - brn.running_mean.view(1, -1, 1, 1)) / brn.running_std.view(1, -1, 1, 1)
    expected = expected * brn.weight.view(1, -1, 1, 1) + brn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(brn(x), expected, atol=1e-10, rtol=0)
    for key, value in brn.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_unclipped_batch_renorm_is_the_inference_transform_and_its_gradient_is_r_times_batch_norms():
    huge = {"rmax": 1e9, "dmax": 1e9, "warmup_steps": 0, "rmax_steps": 0, "dmax_steps": 0}
    brn = _brn(**huge)
    rm, rs = brn.running_mean.clone(), brn.running_std.clone()  # the moving stats BEFORE this step's update
    x = _x(19).requires_grad_(True)
    out = brn(x)
    gamma, beta = brn.weight.view(1, -1, 1, 1), brn.bias.view(1, -1, 1, 1)
    expected = (x - rm.view(1, -1, 1, 1)) / rs.view(1, -1, 1, 1) * gamma + beta
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)
    # r and d are constants for autograd: the gradient is BN's gradient scaled by r = sigma_B / sigma per channel.
    upstream = _x(20)
    (out * upstream).sum().backward()
    xb = x.detach().clone().requires_grad_(True)
    (F.batch_norm(xb, None, None, brn.weight.detach(), None, True, 0.0, 1e-5) * upstream).sum().backward()
    r = torch.sqrt(x.detach().var((0, 2, 3), unbiased=False) + 1e-5) / rs
    torch.testing.assert_close(x.grad, r.view(1, -1, 1, 1) * xb.grad, atol=1e-10, rtol=0)


def test_batch_renorm_factors_carry_no_gradient_and_respect_the_clip_range():
    brn = _brn(step=40000)
    assert brn.current_clip() == pytest.approx((3.0, 5.0))
    with torch.no_grad():
        brn.running_std.fill_(100.0)  # sigma_B / sigma is tiny -> r clipped at 1/3
        brn.running_mean.fill_(-1000.0)  # (mu_B - mu) / sigma is large -> d clipped at 5
    mean = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    std = torch.ones(3, dtype=torch.float64, requires_grad=True)
    r, d = brn.renorm_factors(mean, std)
    assert not r.requires_grad and not d.requires_grad
    torch.testing.assert_close(r, torch.full_like(r, 1 / 3), atol=1e-7, rtol=0)
    torch.testing.assert_close(d, torch.full_like(d, 5.0), atol=0, rtol=0)
    x = _x(21)
    mu_b, sigma_b = x.mean((0, 2, 3)), torch.sqrt(x.var((0, 2, 3), unbiased=False) + 1e-5)
    x_hat = (x - mu_b.view(1, -1, 1, 1)) / sigma_b.view(1, -1, 1, 1) * r.view(1, -1, 1, 1) + 5.0
    expected = x_hat * brn.weight.view(1, -1, 1, 1) + brn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(brn(x), expected.detach(), atol=1e-10, rtol=0)


def test_batch_renorm_moving_averages_match_a_hand_computation():
    brn = make_norm("batch_renorm", 3).double()  # moving stats start at (0, 1)
    alpha, eps = 0.01, 1e-5
    x1, x2 = _x(22), _x(23)
    brn(x1)
    sigma1 = torch.sqrt(x1.var((0, 2, 3), unbiased=False) + eps)
    torch.testing.assert_close(brn.running_mean, alpha * x1.mean((0, 2, 3)), atol=1e-12, rtol=0)
    torch.testing.assert_close(brn.running_std, 1 + alpha * (sigma1 - 1), atol=1e-12, rtol=0)
    rm, rs = brn.running_mean.clone(), brn.running_std.clone()
    with torch.no_grad():
        brn(x2)  # no_grad does not stop the update; only eval() does
    sigma2 = torch.sqrt(x2.var((0, 2, 3), unbiased=False) + eps)
    torch.testing.assert_close(brn.running_mean, rm + alpha * (x2.mean((0, 2, 3)) - rm), atol=1e-12, rtol=0)
    torch.testing.assert_close(brn.running_std, rs + alpha * (sigma2 - rs), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "step, clip", [(0, (1, 0)), (5000, (1, 0)), (25000, (2.142857, 5)), (40000, (3, 5)), (60000, (3, 5))]
)
def test_batch_renorm_schedule(step, clip):
    model = nn.Sequential(make_norm("batch_renorm", 3), nn.ReLU(), make_norm("batch_renorm", 3))
    set_norm_step(model, step)
    for layer in (model[0], model[2]):
        assert layer.step.dtype == torch.int64 and int(layer.step) == step
        assert layer.current_clip() == pytest.approx(clip, abs=1e-6)


def test_batch_renorm_schedule_options_and_step_in_the_state_dict():
    layer = make_norm("batch_renorm", 3, rmax=2.0, dmax=1.0, warmup_steps=10, rmax_steps=10, dmax_steps=20)
    for step, clip in [(9, (1, 0)), (10, (2, 0)), (15, (2, 0.5)), (20, (2, 1))]:
        set_norm_step(layer, step)
        assert layer.current_clip() == pytest.approx(clip)
    assert "step" in layer.state_dict()
    with pytest.raises(ValueError, match="'step' must be >= 0"):
        set_norm_step(layer, -1)


def test_batch_renorm_needs_more_than_one_value_per_channel_in_training_only():
    layer = make_norm("batch_renorm", 3)
    with pytest.raises(ValueError, match="more than one value per channel in training"):
        layer(torch.randn(1, 3, 1, 1))
    assert torch.isfinite(layer(torch.randn(1, 3, 2, 2))).all()  # N=1 is fine when H*W > 1
    assert layer.eval()(torch.randn(1, 3, 1, 1)).shape == (1, 3, 1, 1)


# ============================================================================================== Switchable Norm
ONE_HOT = {"in": [0.0, -math.inf, -math.inf], "ln": [-math.inf, 0.0, -math.inf], "bn": [-math.inf, -math.inf, 0.0]}


def _switchable(part, seed=0):
    layer = _built("switchable", seed=seed)
    with torch.no_grad():
        layer.mean_logits.copy_(torch.tensor(ONE_HOT[part]))
        layer.var_logits.copy_(torch.tensor(ONE_HOT[part]))
    return layer


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("part", ["in", "ln", "bn"])
def test_switchable_with_one_hot_weights_is_each_of_its_parts(part, training):
    layer = _switchable(part)
    x = _x(24)
    w, b, rm, rv = layer.weight, layer.bias, layer.running_mean.clone(), layer.running_var.clone()
    expected = {
        "in": lambda: F.instance_norm(x, weight=w, bias=b, eps=1e-5),
        "ln": lambda: F.group_norm(x, 1, w, b, 1e-5),
        "bn": lambda: F.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5),
    }[part]()
    assert layer.switch_weights()["mean"].tolist() == [float(p == part) for p in ("in", "ln", "bn")]
    torch.testing.assert_close(layer.train(training)(x), expected, atol=1e-10, rtol=0)


def test_switchable_default_weights_are_equal_and_mix_the_three_statistics():
    layer = _randomise(make_norm("switchable", 3).double())
    with torch.no_grad():
        layer.mean_logits.zero_()
        layer.var_logits.fill_(0.7)  # equal logits, whatever their value
    for weights in layer.switch_weights().values():
        torch.testing.assert_close(weights, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-15, rtol=0)
    x = _x(25)
    means = [x.mean(dims, keepdim=True) for dims in ((2, 3), (1, 2, 3), (0, 2, 3))]
    vars_ = [x.var(dims, unbiased=False, keepdim=True) for dims in ((2, 3), (1, 2, 3), (0, 2, 3))]
    x_hat = (x - sum(means) / 3) / torch.sqrt(sum(vars_) / 3 + 1e-5)
    expected = x_hat * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected, atol=1e-10, rtol=0)


def test_switchable_logits_get_gradients_that_sum_to_zero():
    layer = _built("switchable")
    (layer(_x(26)) * _x(27)).sum().backward()
    for logits in (layer.mean_logits, layer.var_logits):
        assert logits.grad.abs().max() > 1e-3
        assert abs(float(logits.grad.sum())) < 1e-10  # softmax is shift-invariant


def test_switchable_running_stats_match_a_hand_computation():
    layer = _switchable("bn")
    with torch.no_grad():
        layer.running_mean.zero_()
        layer.running_var.fill_(1.0)
    x = _x(28)
    layer(x)
    torch.testing.assert_close(layer.running_mean, 0.1 * x.mean((0, 2, 3)), atol=1e-12, rtol=0)
    torch.testing.assert_close(layer.running_var, 0.9 + 0.1 * x.var((0, 2, 3), unbiased=True), atol=1e-12, rtol=0)
    fresh = make_norm("switchable", 3)
    assert torch.equal(fresh.running_var, torch.ones(3)) and torch.equal(fresh.running_mean, torch.zeros(3))


def test_switchable_needs_more_than_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than one value per channel"):
        make_norm("switchable", 3)(torch.randn(1, 3, 1, 1))


# ====================================================================================== properties of every layer
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", ALL_NAMES)
def test_gradients_and_second_order_gradients_match_finite_differences(name, training):
    # GP and R1 differentiate the critic's input gradient: every layer needs an exact double backward.
    layer = _built(name, channels=4).train(training)
    params = dict(layer.named_parameters())
    x = _x(29, shape=(3, 4, 3, 3)).requires_grad_(True)

    def fn(inp, *values):
        return torch.func.functional_call(layer, dict(zip(params, values)), (inp,))

    inputs = (x, *(p.detach().clone().requires_grad_(True) for p in params.values()))
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-7)
    assert torch.autograd.gradgradcheck(fn, inputs, atol=1e-7)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_eval_output_of_a_sample_does_not_depend_on_the_rest_of_the_batch(name):
    layer = _built(name)
    set_norm_step(layer, 30000)
    layer(_x(30))  # a training step, so that the running statistics are not the initial ones
    layer.eval()
    x = _x(31)
    batch = layer(x)
    for i in range(x.shape[0]):
        torch.testing.assert_close(batch[i : i + 1], layer(x[i : i + 1]), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_state_dict_round_trip_gives_identical_outputs(name):
    a = _built(name, seed=1)
    set_norm_step(a, 30000)
    a(_x(32))
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = _make(name, 3).double()
    b.load_state_dict(torch.load(buffer, weights_only=True))
    for mode in (False, True):
        a.train(mode)
        b.train(mode)
        assert torch.equal(a(_x(33)), b(_x(33)))
    for (key, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), key  # the training forward updated both alike


# ============================================================================== sync flag without a process group
def test_set_sync_batch_stats_switches_exactly_the_batch_statistics_layers():
    model = nn.Sequential(*(_make(name, 3) for name in ALL_NAMES))
    assert set_sync_batch_stats(model, True) == len(BATCH_STAT_NAMES)
    flags = {name: getattr(layer, "sync_stats", None) for name, layer in zip(ALL_NAMES, model)}
    assert flags == {name: (True if name in BATCH_STAT_NAMES else None) for name in ALL_NAMES}
    assert set_sync_batch_stats(model, False) == len(BATCH_STAT_NAMES)
    assert not any(getattr(layer, "sync_stats", False) for layer in model)
    with pytest.raises(TypeError, match="must be true or false"):
        set_sync_batch_stats(model, 1)


def test_uses_batch_statistics_names_exactly_the_layers_whose_training_output_mixes_samples():
    assert [name for name in ALL_NAMES if uses_batch_statistics(name)] == BATCH_STAT_NAMES


@pytest.mark.parametrize("name", BATCH_STAT_NAMES)
def test_sync_without_a_process_group_is_bitwise_the_plain_layer(name):
    plain = _built(name)
    synced = copy.deepcopy(plain)
    set_sync_batch_stats(synced, True)
    for step in (0, 30000):
        set_norm_step(plain, step)
        set_norm_step(synced, step)
        assert torch.equal(plain(_x(34 + step)), synced(_x(34 + step)))
    for key, value in plain.state_dict().items():
        assert torch.equal(value, synced.state_dict()[key]), key


# ============================================================================================= option checking
@pytest.mark.parametrize("name", ALL_NAMES)
def test_default_options_pass_the_config_check(name):
    assert check_norm_options(name, {}) is None


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("group", {"num_groups": 3}, None),  # fits a model of width 48; a 4-channel probe would have refused it
        ("group", {"num_groups": 0}, "'num_groups' must be >= 1"),
        ("group", {"num_groups": 64}, None),  # the probe has 64 channels; the model build checks the real widths
        ("batch", {"eps": "1e-3", "momentum": None}, None),  # PyYAML reads 1e-3 as text
        ("batch", {"eps": -1.0}, "'eps' must be >= 0.0"),
        ("batch", {"eps": "small"}, "'eps' must be a number"),
        ("layer", {"affine": 1}, "must be true or false"),
        ("instance", {"momentum": 2}, "'momentum' must be in [0.0, 1.0]"),
        ("batch_renorm", {"rmax": 2.0, "dmax": 1.0, "warmup_steps": 100, "rmax_steps": 4e4}, None),
        ("batch_renorm", {"rmax": 0.5}, "'rmax' must be >= 1.0"),
        ("batch_renorm", {"warmup_steps": 100, "dmax_steps": 50}, "must be >= warmup_steps (100)"),
        ("batch_renorm", {"dmax": float("inf")}, "'dmax' must be a finite number"),
        ("switchable", {"momentum": -0.1}, "'momentum' must be in [0.0, 1.0]"),
        ("switchable", {"num_groups": 4}, "has no option 'num_groups'"),
        ("batch_instance", {"eps": True}, "'eps' must be a number"),
    ],
)
def test_check_norm_options_for_every_factory(name, options, message):
    problem = check_norm_options(name, options)
    if message is None:
        assert problem is None
    else:
        assert problem is not None and message in problem, problem


EPS_NAMES = ["batch", "layer", "instance", "group", "batch_renorm", "switchable", "batch_instance"]


def test_eps_names_are_every_layer_with_an_eps():
    assert EPS_NAMES == [name for name in ALL_NAMES if "eps" in inspect.signature(NORMS.get(name)).parameters]


@pytest.mark.parametrize("eps", [0, 0.0, "0.0", -0.0], ids=["int", "float", "yaml-text", "minus-zero"])
@pytest.mark.parametrize("name", EPS_NAMES)
def test_eps_zero_is_refused_for_every_layer_with_an_eps(name, eps):
    # eps = 0 divides a constant channel (variance 0) by zero: it used to pass the check and fail in training.
    problem = check_norm_options(name, {"eps": eps})
    assert problem is not None and f"'eps' must be > 0, got {eps!r}" in problem, problem
    with pytest.raises(ValueError, match="'eps' must be > 0"):
        _make(name, 4, eps=eps)
    assert check_norm_options(name, {"eps": 1e-300}) is None  # tiny but positive is allowed


def test_eps_zero_in_a_config_names_the_key_and_the_option():
    with pytest.raises(
        ConfigError, match=r"model\.discriminator\.norm_options: norm 'batch': option 'eps' must be > 0"
    ):
        load_config(overrides=["model.discriminator.norm=batch", "model.discriminator.norm_options={eps: 0}"])


def test_norm_options_from_a_config_reach_the_layers():
    cfg = load_config(overrides=["model.generator.norm=batch_renorm", "model.generator.norm_options={eps: 1e-3}"])
    assert make_norm(cfg.model.generator.norm, 8, **cfg.model.generator.norm_options).eps == 1e-3
    with pytest.raises(ConfigError, match="'rmax' must be >= 1.0"):
        load_config(overrides=["model.generator.norm=batch_renorm", "model.generator.norm_options={rmax: 0.5}"])


# ================================================================================================== on a GPU
CUDA_ONLY = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype")
@pytest.mark.parametrize("name", [pytest.param(name, marks=CUDA_ONLY) for name in ALL_NAMES])
def test_cuda_float32_matches_the_cpu_float64_layer_without_host_syncs(name):
    ref = _built(name)
    set_norm_step(ref, 30000)
    layer = copy.deepcopy(ref).to("cuda", torch.float32)
    x, upstream = _x(40), _x(41)
    xc, upc = x.to("cuda", torch.float32).requires_grad_(True), upstream.to("cuda", torch.float32)
    x = x.requires_grad_(True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # e.g. reading Batch Renorm's step on the host would raise here
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):  # the detector is live
            upc.sum().item()
        out = layer(xc)
        (out * upc).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ref_out = ref(x)
    (ref_out * upstream).sum().backward()
    close = {"atol": 1e-4, "rtol": 1e-4}
    torch.testing.assert_close(out.detach().cpu().double(), ref_out.detach(), **close)
    torch.testing.assert_close(xc.grad.cpu().double(), x.grad, **close)
    for (key, value), ref_value in zip(layer.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(value.cpu().to(ref_value.dtype), ref_value, **close, msg=key)
    for (key, param), ref_param in zip(layer.named_parameters(), ref.parameters()):
        torch.testing.assert_close(param.grad.cpu().double(), ref_param.grad, **close, msg=key)


@pytest.mark.parametrize("name", [pytest.param(name, marks=CUDA_ONLY) for name in ALL_NAMES])
def test_cuda_bf16_autocast_trains_and_keeps_float32_statistics(name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), make_norm(name, 8)).cuda()
    set_norm_step(net, 30000)
    x = torch.randn(4, 3, 8, 8, device="cuda") * 3 + 10  # |mean| >> std: the case where low precision hurts
    expected = copy.deepcopy(net)(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net(x)
    out.float().pow(2).mean().backward()
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.02)  # bf16 data, float32 statistics
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    assert all(b.dtype in (torch.float32, torch.int64) for b in net.buffers())
