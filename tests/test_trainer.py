"""Trainer parts: deterministic batches, the lr schedule, both penalties, every loss, EMA, gates, hooks' purity."""

import dataclasses

import pytest
import torch

from gan.config import load_config
from gan.data import build_data
from gan.hooks import ImagesHook, PairedL1Hook, SigmaHook, grid_targets
from gan.trainer import StepBatchSampler, Trainer


class _NullWriter:
    def __init__(self):
        self.scalar_tags, self.images = set(), []

    def scalars(self, values, step):
        self.scalar_tags |= set(values)

    def image(self, tag, image, step):
        self.images.append((tag, tuple(image.shape)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.conftest import TINY

    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY)
    cfg = load_config([path])
    return cfg, build_data(cfg.data)


def _trainer(tiny, *overrides):
    cfg, data = tiny
    if overrides:
        cfg = load_config(base=dataclasses.asdict(cfg), overrides=list(overrides))
    return Trainer(cfg, data, torch.device("cpu"))


def test_batches_are_a_function_of_seed_and_step():
    a = StepBatchSampler(10, 3, seed=1, start_step=0, total_steps=9)
    b = StepBatchSampler(10, 3, seed=1, start_step=4, total_steps=9)
    assert list(a)[4:] == list(b)
    epoch0 = sum(list(a)[:3], [])
    assert len(set(epoch0)) == 9  # one epoch draws without replacement
    assert list(StepBatchSampler(10, 3, seed=2, start_step=0, total_steps=3)) != list(a)[:3]


def test_linear_lr_decay(tiny):
    t = _trainer(tiny, "train.steps=10", "train.lr_decay_steps=4")
    assert [t._lr_factor(s) for s in (0, 5, 6, 8, 10)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    assert _trainer(tiny, "train.lr_decay_steps=0")._lr_factor(5) == 1.0


@pytest.mark.parametrize("loss", ["wgan", "hinge", "nonsaturating", "lsgan"])
def test_every_adversarial_loss_trains_a_step(tiny, loss):
    t = _trainer(tiny, f"loss.adversarial={loss}", "loss.lambda_r1=1.0", "train.n_critic=1")
    batch = next(iter(t.make_loader()))
    t.train_step(batch)
    assert set(t.last.d) == {"adv", "cls", "gp", "r1"} and set(t.last.g) == {"adv", "cls", "rec"}
    assert not bool(t.nonfinite)


def test_penalties_can_be_switched_off(tiny):
    t = _trainer(tiny, "loss.lambda_gp=0", "train.n_critic=1")
    t.train_step(next(iter(t.make_loader())))
    assert set(t.last.d) == {"adv", "cls"}


def test_ema_generator_follows_with_its_decay(tiny):
    t = _trainer(tiny, "train.g_ema_decay=0.5", "train.n_critic=1")
    before = [p.detach().clone() for p in t.G_ema.parameters()]
    t.train_step(next(iter(t.make_loader())))
    for b, p_ema, p in zip(before, t.G_ema.parameters(), t.G.parameters()):
        torch.testing.assert_close(p_ema, 0.5 * b + 0.5 * p.detach())
    assert t.sample_generator() is t.G_ema
    assert _trainer(tiny).G_ema is None


def test_batch_instance_gates_are_clamped_and_grouped(tiny):
    t = _trainer(tiny, "model.generator.norm=batch_instance", "train.n_critic=1", "train.g_lr=1000.0")
    t.train_step(next(iter(t.make_loader())))
    gates = [m.rho for m in t.G.modules() if hasattr(m, "rho")]
    assert gates and all(((g >= 0) & (g <= 1)).all() for g in gates)
    assert len(t.opt_G.param_groups) == 2 and t.opt_G.param_groups[1]["weight_decay"] == 0.0


def test_logging_hooks_change_no_training_state(tiny):
    t = _trainer(tiny)
    t.train_step(next(iter(t.make_loader())))
    writer = _NullWriter()
    hooks = [ImagesHook(writer, 1, 2), PairedL1Hook(writer, 1, 4), SigmaHook(writer, 1)]
    buffers = {k: v.clone() for k, v in {**t.D.state_dict(), **t.G.state_dict()}.items()}
    rng = torch.get_rng_state()
    for hook in hooks:
        hook.on_fit_start(t)
        hook.after_step(t)
    for key, value in {**t.D.state_dict(), **t.G.state_dict()}.items():
        torch.testing.assert_close(value, buffers[key], atol=0, rtol=0, msg=key)
    assert torch.equal(torch.get_rng_state(), rng)
    assert t.G.training and t.D.training
    assert {"eval/paired_l1", "sigma/D/conv1/sn_estimate"} <= writer.scalar_tags
    assert writer.images[-1] == ("images/translations", (3, 2 + 2 * 18, 2 + 4 * 18))


def test_grid_targets():
    labels = torch.tensor([0, 2])
    assert [t.tolist() for t in grid_targets(labels, ["a", "b", "c"], False)] == [[0, 0], [1, 1], [2, 2]]
    multi = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    names = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male"]
    targets = [t.tolist()[0] for t in grid_targets(multi, names, True)]
    assert targets == [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1], [1, 0, 0, 0]]
