"""train.precision (fp32 | bf16 | fp16 with gradient scaling), train.channels_last and train.compile: the steps
train, spectral norm stays float32, the fp16 penalty recipe equals the plain penalty, channels-last and compiled
steps equal the plain ones, and the scalers' state survives a checkpoint."""

import dataclasses

import pytest
import torch

from gan.build import build_trainer, load_config
from gan.losses import gradient_penalty, r1_penalty
from gan.spectral import sn_estimate, spectral_norm_modules
from tests.closeness import assert_trained_alike

CPU = torch.device("cpu")


def _trainer(tiny, *overrides):
    cfg, data = tiny
    cfg = load_config(base=dataclasses.asdict(cfg), overrides=["train.n_critic=1", "loss.lambda_r1=1.0", *overrides])
    return build_trainer(cfg, data, CPU)


def _losses(t, steps=2):
    out = []
    for batch in list(t.make_loader())[:steps]:
        t.train_step(batch)
        out.append(
            {**{f"D/{k}": float(v) for k, v in t.last.d.items()}, **{f"G/{k}": float(v) for k, v in t.last.g.items()}}
        )
    return out


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_close_to_fp32_and_keeps_spectral_norm_in_float32(tiny, precision):
    reference = _losses(_trainer(tiny), steps=1)[0]
    t = _trainer(tiny, f"train.precision={precision}")
    losses = _losses(t, steps=12)
    assert not bool(t.nonfinite)
    # Same weights, same draws: the first step's losses differ by the forward's rounding only. (fp16: the scaled
    # penalty gradients overflow at GradScaler's initial scale 65536; the scaler skips those D steps and halves the
    # scale until they fit, as it is meant to.)
    for key, value in reference.items():
        if precision == "bf16" or key not in ("D/gp", "D/r1"):
            assert losses[0][key] == pytest.approx(value, rel=0.05, abs=0.02), key
    assert all(torch.isfinite(torch.tensor(list(row.values()))).all() for row in losses[-3:])
    if precision == "fp16":
        assert t.scaler_D.get_scale() < 65536.0
    for name, module in spectral_norm_modules(t.D):
        assert module.weight_u.dtype == torch.float32 and module.weight_v.dtype == torch.float32, name
        with torch.autocast("cpu", dtype=t.autocast_dtype):
            assert sn_estimate(module).dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in [*t.G.parameters(), *t.D.parameters()])  # master weights


def test_fp32_and_bf16_use_pass_through_scalers(tiny):
    for precision in ("fp32", "bf16"):
        t = _trainer(tiny, f"train.precision={precision}")
        assert not t.scaler_D.is_enabled() and not t.scaler_G.is_enabled()
    t = _trainer(tiny, "train.precision=fp16")
    assert t.scaler_D.is_enabled() and t.scaler_G.is_enabled()


def _critic():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.LeakyReLU(0.01), torch.nn.Conv2d(4, 1, 3))


@pytest.mark.parametrize("scale", [1.0, 1024.0, 65536.0])
def test_the_scaled_penalty_recipe_equals_the_plain_penalty(scale):
    D = _critic().double()
    real, fake = torch.rand(4, 3, 8, 8, dtype=torch.float64), torch.rand(4, 3, 8, 8, dtype=torch.float64)
    torch.manual_seed(1)
    plain = gradient_penalty(D, real, fake)
    (g_plain,) = torch.autograd.grad(plain, list(D.parameters())[:1])
    torch.manual_seed(1)
    scaled = gradient_penalty(D, real, fake, scale)
    (g_scaled,) = torch.autograd.grad(scaled, list(D.parameters())[:1])
    assert float(scaled.detach()) == pytest.approx(float(plain.detach()), rel=1e-12)
    assert torch.allclose(g_scaled, g_plain, rtol=1e-10, atol=0)
    x = real.clone().requires_grad_(True)
    assert float(r1_penalty(D(x), x, scale).detach()) == pytest.approx(float(r1_penalty(D(x), x).detach()), rel=1e-12)


def test_channels_last_gives_the_contiguous_losses(tiny):
    reference = _losses(_trainer(tiny))
    t = _trainer(tiny, "train.channels_last=true")
    got = _losses(t)
    for ref, value in zip(reference, got, strict=True):
        assert value == pytest.approx(ref, rel=1e-4, abs=1e-5)
    conv = next(m for m in t.D.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_fp16_scaler_state_travels_with_the_checkpoint(tiny):
    t = _trainer(tiny, "train.precision=fp16")
    _losses(t, steps=2)
    state = t.state_dict()
    assert state["scalers"]["D"]["scale"] == t.scaler_D.get_scale()
    fresh = _trainer(tiny, "train.precision=fp16")
    fresh.load_state_dict(state)
    assert fresh.scaler_D.get_scale() == t.scaler_D.get_scale() and fresh.scaler_G.get_scale() == t.scaler_G.get_scale()
    assert _trainer(tiny).state_dict()["scalers"] == {"D": {}, "G": {}}  # fp32: nothing to keep


def test_an_unknown_precision_is_a_config_error(tiny, tmp_path):
    from gan.errors import ConfigError

    cfg, _ = tiny
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(base=dataclasses.asdict(cfg), overrides=["train.precision=fp8"])
    for key in ("train.compile", "train.channels_last"):
        with pytest.raises(ConfigError, match=key):
            load_config(base=dataclasses.asdict(cfg), overrides=[f"{key}=maybe"])


@pytest.mark.slow
@pytest.mark.parametrize("penalty", ["loss.lambda_r1=0", "loss.lambda_gp=0"])
def test_compiled_steps_give_the_eager_losses_and_weights(tiny, penalty):
    """torch.compile (inductor, on the CPU) of G's and D's training forwards; the gradient penalty (or R1) runs its
    double backward through the eager D, which compile cannot differentiate twice."""
    eager, compiled = _trainer(tiny, penalty), _trainer(tiny, penalty, "train.compile=true")
    assert compiled.D_train is not compiled.D and eager.D_train is eager.D
    reference, losses = _losses(eager, steps=3), _losses(compiled, steps=3)
    for row, expected in zip(losses, reference):
        assert row.keys() == expected.keys()
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert_trained_alike(compiled.state_dict(), eager.state_dict())
