"""Trainer parts: deterministic batches, the lr schedule, both penalties, every loss, EMA, gates, hooks' purity."""

import dataclasses

import pytest
import torch

from gan.build import build_trainer, eval_setup, load_run_config
from gan.config import load_config
from gan.hooks import FidHook, ImagesHook, PairedL1Hook, SigmaHook, StabilityHook
from gan.trainer import StepBatchSampler


class _NullWriter:
    def __init__(self, run_dir=None):
        self.scalar_tags, self.images = set(), []
        self.run_dir = run_dir  # where ImagesHook writes its PNGs

    def scalars(self, values, step, descriptions=None, every=None, count=None):
        self.scalar_tags |= set(values)

    def repeat_sparse(self, step):
        pass

    def image(self, tag, image, step):
        self.images.append((tag, tuple(image.shape)))

    def text(self, tag, text, step):
        pass


def _trainer(tiny, *overrides):
    cfg, data = tiny
    if overrides:
        cfg = load_config(base=dataclasses.asdict(cfg), overrides=list(overrides))
    return build_trainer(cfg, data, torch.device("cpu"))


def _fid_hook(writer, t, run_dir):
    """The fid hook as gan.build assembles it, for the trainer's own (resolved) config."""
    cfg = load_run_config(base=t.metadata["config"])
    m = cfg.metrics
    return FidHook(writer, cfg.hooks.fid.every, cfg.hooks.fid.num_images, eval_setup(cfg, run_dir),
                   m.kid_subsets, m.kid_subset_size, m.batch_size)  # fmt: skip


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


def test_logging_hooks_change_no_training_state(tiny, tmp_path):
    t = _trainer(tiny)
    t.train_step(next(iter(t.make_loader())))
    writer = _NullWriter(tmp_path)
    hooks = [ImagesHook(writer, 1, 2), PairedL1Hook(writer, 1, 4), SigmaHook(writer, 1),
             StabilityHook(writer, 1, 4, grad_norm_limit=1e6, stop=True)]  # fmt: skip
    buffers = {k: v.clone() for k, v in {**t.D.state_dict(), **t.G.state_dict()}.items()}
    rng = torch.get_rng_state()
    for hook in hooks:
        hook.on_fit_start(t)
        hook.after_step(t)
    for key, value in {**t.D.state_dict(), **t.G.state_dict()}.items():
        torch.testing.assert_close(value, buffers[key], atol=0, rtol=0, msg=key)
    assert torch.equal(torch.get_rng_state(), rng)
    assert t.G.training and t.D.training
    assert {"eval/paired_l1", "sigma/D/conv1/sn_estimate", "stability/overfit/gap"} <= writer.scalar_tags
    # 2 rows x (input + 3 domains) of 16 px tiles shown at 96 px, with names on top and at the left; also on disk
    tag, (channels, height, width) = writer.images[-1]
    assert tag == "images/translations" and channels == 3
    assert 2 * 96 < height < 2 * 96 + 100 and 4 * 96 < width < 4 * 96 + 200
    assert (tmp_path / "images" / "translations_last.png").is_file()


@pytest.mark.parametrize("extractor", ["classifier", "inception"])
def test_fid_hook_leaves_training_state_untouched(tiny, tmp_path, request, extractor):
    if extractor == "inception":
        request.getfixturevalue("hub_weights")  # random weights in the hub cache; never the real file
    t = _trainer(tiny, f"hooks.fid.extractor={extractor}", "hooks.fid.num_images=3", f"metrics.stats_cache={tmp_path}")
    t.train_step(next(iter(t.make_loader())))
    writer = _NullWriter()
    hook = _fid_hook(writer, t, tmp_path)
    state = {k: v.clone() for k, v in {**t.D.state_dict(), **t.G.state_dict()}.items()}
    rng = torch.get_rng_state()
    hook.on_fit_start(t)  # step 1: nothing yet
    hook.after_step(t)  # trains and saves the classifier, then evaluates
    hook.after_step(t)  # reuses both
    for key, value in {**t.D.state_dict(), **t.G.state_dict()}.items():
        torch.testing.assert_close(value, state[key], atol=0, rtol=0, msg=key)
    assert torch.equal(torch.get_rng_state(), rng)
    assert t.G.training and t.D.training
    assert (tmp_path / "classifier.pt").is_file()
    domains = ["palette", "outline", "texture"]
    fd, kd = ("fid", "kid") if extractor == "inception" else ("classifier_fd", "classifier_kd")
    expected = {f"eval/{fd}/{d}" for d in domains} | {f"eval/{fd}/mean", f"eval/{kd}/mean", "eval/domain_accuracy"}
    expected |= {f"stability/diversity/{d}" for d in domains} | {"stability/diversity/min", "stability/collapsed"}
    expected |= {f"best/eval/{fd}/mean", f"best/eval/{kd}/mean", "best/eval/domain_accuracy"}
    assert writer.scalar_tags == expected
    assert len(hook.history) == 2 and hook.history[0][1] == hook.history[1][1]  # same G, same numbers
    restored = _fid_hook(writer, t, tmp_path)
    restored.load_state_dict(hook.state_dict())
    assert restored.history == hook.history


def test_final_evaluation_is_skipped_after_a_stop_or_an_error(tiny, tmp_path):
    t = _trainer(tiny, "hooks.fid.extractor=classifier")
    hooks = [_fid_hook(_NullWriter(), t, tmp_path), PairedL1Hook(_NullWriter(), 1, 4)]
    t.step, t.completed = 3, False  # what fit() leaves after Ctrl-C, SIGTERM or an exception
    for hook in hooks:
        hook.on_fit_end(t)
        assert hook.history == []
    t.completed = True
    for hook in hooks:
        hook.on_fit_end(t)
        assert [step for step, _ in hook.history] == [3]


def test_fid_hook_inception_without_weights_is_a_clear_error(tiny, tmp_path):
    from gan.metrics.inception import WeightsError

    t = _trainer(tiny, "hooks.fid.extractor=inception")
    with pytest.raises(WeightsError, match="6726825d"):
        _fid_hook(_NullWriter(), t, tmp_path).after_step(t)


def test_batch_renorm_gets_the_training_step(tiny):
    t = _trainer(tiny, "model.generator.norm=batch_renorm", "model.discriminator.norm=batch_renorm", "loss.lambda_gp=0")
    loader = iter(t.make_loader())
    for _ in range(3):
        t.train_step(next(loader))
    steps = [int(m.step) for net in (t.G, t.D) for m in net.modules() if hasattr(m, "current_clip")]
    assert steps and set(steps) == {2}  # set before each step: the third step is step 2


def test_gate_learning_rate_multiplier(tiny):
    t = _trainer(tiny, "model.generator.norm=batch_instance", "train.gate_lr_multiplier=7.0", "train.g_lr=2e-4")
    base, gates = t.opt_G.param_groups
    assert base["lr"] == pytest.approx(2e-4) and gates["lr"] == pytest.approx(1.4e-3)


def test_sync_batchnorm_flag_reaches_every_batch_statistics_layer(tiny):
    t = _trainer(tiny, "model.generator.norm=switchable", "model.discriminator.norm=batch", "model.sync_batchnorm=true")
    flags = [m.sync_stats for net in (t.G, t.D) for m in net.modules() if hasattr(m, "sync_stats")]
    assert flags and all(flags)
    assert not any(
        m.sync_stats for m in _trainer(tiny, "model.generator.norm=batch").G.modules() if hasattr(m, "sync_stats")
    )


def test_batch_statistics_in_d_with_a_penalty_warns(tiny, caplog):
    with caplog.at_level("WARNING", logger="gan"):
        _trainer(tiny, "model.discriminator.norm=batch")
    assert "per-sample gradient penalty" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="gan"):
        _trainer(tiny, "model.discriminator.norm=layer")
        _trainer(tiny, "model.discriminator.norm=batch", "loss.lambda_gp=0")
    assert "per-sample" not in caplog.text


def test_norms_hook_logs_switch_weights_and_rho(tiny):
    from gan.hooks import NormsHook

    writer = _NullWriter()
    NormsHook(writer, 1).after_step(_trainer(tiny, "model.generator.norm=switchable"))
    assert "norm/G/1/switch_weights/in" in writer.scalar_tags and "norm/G/1/switch_var_weights/bn" in writer.scalar_tags
    writer = _NullWriter()
    NormsHook(writer, 1).after_step(_trainer(tiny, "model.generator.norm=batch_instance"))
    assert writer.scalar_tags == {"norm/G/rho_mean"}


@pytest.mark.parametrize(
    "norm", ["batch", "layer", "instance", "group", "batch_renorm", "switchable", "batch_instance", "none"]
)
def test_every_norm_trains_in_g_and_d(tiny, norm):
    options = ["model.generator.norm_options={num_groups: 2}"] if norm == "group" else []
    d_options = ["model.discriminator.norm_options={num_groups: 2}"] if norm == "group" else []
    t = _trainer(tiny, f"model.generator.norm={norm}", f"model.discriminator.norm={norm}", "train.n_critic=1",
                 *options, *d_options)  # fmt: skip
    t.train_step(next(iter(t.make_loader())))
    assert not bool(t.nonfinite)


def test_spectral_norm_updates_once_per_d_step_by_default(tiny):
    from gan.spectral import get_power_iteration_mode, spectral_norm_modules

    t = _trainer(tiny, "train.n_critic=1")
    layers = [m for _, m in spectral_norm_modules(t.D)]
    assert {get_power_iteration_mode(m) for m in layers} == {"manual"}
    calls = []
    import gan.spectral as spectral

    original = spectral._power_iteration
    spectral._power_iteration = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    try:
        t.train_step(next(iter(t.make_loader())))  # D runs on real, fake, interpolates, and once in the G step
    finally:
        spectral._power_iteration = original
    assert len(calls) == len(layers)
    forward = _trainer(tiny, "model.discriminator.spectral_norm.update=forward")
    assert {get_power_iteration_mode(m) for _, m in spectral_norm_modules(forward.D)} == {"forward"}


def test_lipschitz_layout_pairs_each_layer():
    from gan.hooks import PER_LAYER, lipschitz_layout
    from gan.models import Discriminator

    layout = lipschitz_layout(Discriminator(16, 3, 4, 2))
    per_layer = layout[PER_LAYER]
    assert per_layer["conv2"] == [
        "Multiline", ["sigma/D/conv2/sn_estimate", "sigma/D/conv2/operator"],
    ]  # fmt: skip
    assert set(per_layer) == {"conv1", "conv2", "src", "cls"}  # the domain head too
    # The certified upper bound, the measured lower bounds and their ratio each get a chart (scales that fit).
    charts = {title: tags for title, (_, tags) in layout["Lipschitz bounds of D"].items()}
    assert [tags for tags in charts.values() if "lipschitz/D/upper_bound" in tags] == [["lipschitz/D/upper_bound"]]
    assert ["lipschitz/D/grad_norm/.*"] in charts.values() and ["lipschitz/D/bound_ratio"] in charts.values()
    assert ["lipschitz/D/jacobian_norm/.*"] in charts.values()
    no_jacobian = lipschitz_layout(Discriminator(16, 3, 4, 2), jacobian=False)["Lipschitz bounds of D"]
    assert all("jacobian" not in tags[1][0] for tags in no_jacobian.values())


def test_batch_instance_gates_in_d_are_clamped_and_have_their_own_group(tiny):
    """Batch-Instance Norm in D: gates clamped to [0, 1] after every D step, own Adam group (lr x multiplier, no
    weight decay), as in G (the huge learning rate would push them far outside [0, 1] without the clamp)."""
    t = _trainer(tiny, "model.discriminator.norm=batch_instance", "train.n_critic=1", "train.d_lr=1000.0",
                 "train.gate_lr_multiplier=7.0", "loss.lambda_gp=0")  # fmt: skip
    base, gates_group = t.opt_D.param_groups
    assert gates_group["lr"] == pytest.approx(7000.0) and gates_group["weight_decay"] == 0.0
    assert base["lr"] == pytest.approx(1000.0)
    t.train_step(next(iter(t.make_loader())))
    gates = [m.rho for m in t.D.modules() if hasattr(m, "rho")]
    assert gates and all(((g >= 0) & (g <= 1)).all() for g in gates)
    assert any(((g == 0) | (g == 1)).any() for g in gates)  # the clamp was needed: some gate hit a bound


def test_old_single_group_d_optimizer_state_is_mapped_per_parameter(tiny):
    """A checkpoint of the previous version with Batch-Instance Norm in D has one opt_D group (no gate group):
    loading maps Adam's moments to the same parameters in the new groups, and training goes on."""
    overrides = ("model.discriminator.norm=batch_instance", "train.n_critic=1", "loss.lambda_gp=0")
    t = _trainer(tiny, *overrides)
    old_opt = torch.optim.Adam(t.D.parameters(), lr=1e-4, betas=(0.5, 0.999))  # how the old version built it
    old_sched = torch.optim.lr_scheduler.LambdaLR(old_opt, t._lr_factor)
    generator = torch.Generator().manual_seed(0)
    for p in t.D.parameters():
        p.grad = torch.randn(p.shape, generator=generator)
    old_opt.step()
    old_sched.step()
    state = {**t.state_dict(), "opt_D": old_opt.state_dict(), "sched_D": old_sched.state_dict()}
    fresh = _trainer(tiny, *overrides)
    fresh.load_state_dict(state)
    assert len(fresh.opt_D.param_groups) == 2
    for p_old, p_new in zip(t.D.parameters(), fresh.D.parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(fresh.opt_D.state[p_new][key], old_opt.state[p_old][key], rtol=0, atol=0)
    base, gates = fresh.opt_D.param_groups
    assert gates["lr"] == pytest.approx(base["lr"] * 10.0) and fresh.sched_D.last_epoch == 1
    fresh.train_step(next(iter(fresh.make_loader())))
    assert not bool(fresh.nonfinite)


def test_an_evaluation_due_at_the_resume_step_and_missing_is_made_up(tiny):
    """A stop request (or a preemption) during the evaluation at step 3 saves step 3 without it: after the resume the
    hook evaluates step 3 first, so the curve has no gap; an evaluation already in the history is not repeated."""
    t = _trainer(tiny)
    t.step = 3
    writer = _NullWriter()
    hook = PairedL1Hook(writer, 3, 4)
    hook.load_state_dict({"history": [[0, 0.5]]})
    hook.on_fit_start(t)
    assert [step for step, _ in hook.history] == [0, 3]
    hook.on_fit_start(t)
    assert [step for step, _ in hook.history] == [0, 3]
    t.step = 4
    idle = PairedL1Hook(writer, 3, 4)
    idle.on_fit_start(t)  # not due at step 4: nothing
    assert idle.history == []


@pytest.mark.parametrize("overrides", [(), ("train.n_critic=1", "loss.lambda_gp=0")])
def test_d_on_reals_and_fakes_as_one_batch_equals_two_forwards(tiny, overrides):
    merged, separate = _trainer(tiny, *overrides), _trainer(tiny, *overrides)
    assert merged.merge_critic
    separate.merge_critic = False
    for batch in list(merged.make_loader())[:3]:
        merged.train_step(batch)
        separate.train_step(batch)
        for key, value in separate.last.d.items():
            torch.testing.assert_close(merged.last.d[key], value, rtol=1e-5, atol=1e-6, msg=key)
        torch.testing.assert_close(merged.last.critic_gap, separate.last.critic_gap, rtol=1e-5, atol=1e-6)
    for (key, x), y in zip(merged.D.state_dict().items(), separate.D.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.parametrize(
    "overrides",
    [("model.discriminator.spectral_norm.update=forward",), ("model.discriminator.norm=batch", "loss.lambda_gp=0")],
)
def test_d_is_called_per_batch_where_samples_or_forwards_interact(tiny, overrides):
    assert not _trainer(tiny, *overrides).merge_critic


def test_training_clock_stands_still_while_hooks_run(tiny):
    """The progress bar's clock: hook time (evaluations, checkpoints; here a hook that sleeps at step 0 and after
    every step) is left out, so the bar's rate and ETA are those of the training steps alone."""
    import time

    from gan.hooks import Hook

    class Slow(Hook):
        every = 1

        def __init__(self, seconds: float) -> None:
            self.seconds, self.inside = seconds, []

        def on_fit_start(self, trainer) -> None:
            time.sleep(self.seconds)

        def after_step(self, trainer) -> None:
            before = trainer.training_clock()
            time.sleep(self.seconds)
            self.inside.append(trainer.training_clock() - before)  # 0: the clock stands still inside a hook phase

    t = _trainer(tiny, "train.steps=3", "train.lr_decay_steps=0")
    slow = Slow(0.3)
    t.hooks = [slow]
    clock0, wall0 = t.training_clock(), time.perf_counter()
    t.fit()
    trained, wall = t.training_clock() - clock0, time.perf_counter() - wall0
    assert slow.inside == [0.0, 0.0, 0.0]
    assert t.hook_seconds >= 4 * 0.3  # on_fit_start and three steps
    assert trained == pytest.approx(wall - t.hook_seconds, abs=0.05) and trained < wall - 1.1


def test_scalars_reach_the_disk_before_each_checkpoint(tiny, tmp_path, monkeypatch):
    """After a kill -9 a resume continues from the newest checkpoint: every scalars.jsonl row up to its step must be
    on disk by then (the writer's buffer is flushed before each checkpoint is written)."""
    import json

    from gan import hooks as hooks_module
    from gan.hooks import CheckpointHook, ScalarsHook
    from gan.writers import RunWriter

    writer = RunWriter(tmp_path)
    seen = []
    real_save = hooks_module.save_checkpoint

    def spy(state, directory, step, keep):
        rows = [json.loads(line) for line in (tmp_path / "scalars.jsonl").read_text().splitlines()]
        seen.append((step, max((r["step"] for r in rows), default=None)))
        return real_save(state, directory, step, keep)

    monkeypatch.setattr(hooks_module, "save_checkpoint", spy)
    t = _trainer(tiny, "train.steps=3", "train.lr_decay_steps=0")
    t.hooks = [ScalarsHook(writer, 1), CheckpointHook(tmp_path / "checkpoints", 1, 5, flush=writer.flush)]
    try:
        t.fit()
    finally:
        writer.close()
    assert seen == [(1, 1), (2, 2), (3, 3)]
