"""Online stability signals (gan.hooks: StabilityHook, the NaN guard's critic-gap check, the eval-metric watch) and
what a diverged run leaves behind: status.json with step and reason, the last good checkpoint, exit code 3."""

import json
import math

import pytest
import torch
from torch import nn

from gan.build import load_run_config
from gan.checkpoint import load_checkpoint
from gan.cli import train_main
from gan.hooks import MetricWatch, PairedL1Hook, overfitting, spectrum_tags
from gan.lipschitz import eval_weight
from gan.metrics.evaluation import diversity_ratio
from gan.metrics.fid import feature_statistics
from gan.run import read_status, train
from gan.spectral import apply_spectral_norm
from gan.trainer import DivergedError, Trainer
from gan.writers import read_scalars
from tests.conftest import after_d_step


def _tiny(tiny_config, *overrides):
    return load_run_config([tiny_config], ["hooks.fid.every=0", *overrides])


# --------------------------------------------------------------------------------------------- the signals
def test_overfitting_heuristic_by_hand():
    train_scores = torch.tensor([2.0, 3.0, -1.0, 4.0])
    held_out = torch.tensor([0.5, -2.0, -3.0, 1.0])
    fake = torch.tensor([-2.0, -2.0, -2.0, -2.0])
    # A fixed level (hinge, non-saturating: 0): r = mean(sign(x)).
    out = overfitting(train_scores, held_out, fake, threshold=0.0)
    assert float(out["stability/overfit/r_train"]) == pytest.approx((1 + 1 - 1 + 1) / 4)
    assert float(out["stability/overfit/r_heldout"]) == pytest.approx((1 - 1 - 1 + 1) / 4)
    assert float(out["stability/overfit/gap"]) == pytest.approx(0.5 - 0.0)
    # WGAN (no level): the midpoint of mean D(train) = 2 and mean D(fake) = -2, i.e. 0 here; shift everything by 10
    # and nothing changes, as a critic defined up to a constant must not.
    shifted = overfitting(train_scores + 10, held_out + 10, fake + 10, threshold=None)
    for key, value in out.items():
        assert float(shifted[key]) == pytest.approx(float(value)), key


def test_diversity_ratio_is_the_ratio_of_total_variances():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 5, generator=g, dtype=torch.float64)
    fake = 0.5 * torch.randn(200, 5, generator=g, dtype=torch.float64) + 3.0
    (_, cov_f), (_, cov_r) = feature_statistics(fake), feature_statistics(real)
    expected = fake.var(dim=0, unbiased=True).sum() / real.var(dim=0, unbiased=True).sum()
    assert diversity_ratio(cov_f, cov_r) == pytest.approx(float(expected), rel=1e-12)
    collapsed = torch.ones(10, 5, dtype=torch.float64)  # every translation the same image
    assert diversity_ratio(feature_statistics(collapsed)[1], cov_r) == 0.0
    assert math.isnan(diversity_ratio(feature_statistics(collapsed)[1], feature_statistics(collapsed)[1]))


def test_spectrum_tags_match_svd_of_the_weight_the_forward_uses():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.01), nn.Conv2d(8, 4, 3, 1, 1))
    apply_spectral_norm(D)
    tags = spectrum_tags(D, top=3)
    for name in ("0", "2"):
        layer = D.get_submodule(name)
        w = eval_weight(layer).double()
        s = torch.linalg.svdvals(w.reshape(w.shape[0], -1))
        for k in range(3):
            assert float(tags[f"stability/spectrum/{name}/top{k + 1}"]) == pytest.approx(float(s[k]), rel=1e-5)
        assert float(tags[f"stability/spectrum/{name}/mean_ratio"]) == pytest.approx(float((s / s[0]).mean()), 1e-5)


class _Trainer:
    """Just what the metric watch reads and writes."""

    def __init__(self):
        self.step, self.divergence = 0, None

    declare_divergence = Trainer.declare_divergence


class _Writer:
    def __init__(self):
        self.rows = []

    def scalars(self, values, step, descriptions=None, every=None, count=None):
        self.rows.append((step, dict(values)))


def test_metric_watch_declares_divergence_above_factor_times_best():
    hook = PairedL1Hook(_Writer(), every=1, num_images=1, watch=MetricWatch(("eval/paired_l1",), 3.0, stop=True))
    t = _Trainer()
    for step, value in [(0, 0.6), (100, 0.2), (200, 0.59)]:  # 0.59 < 3 x best 0.2: fine
        hook.history.append((step, value))
        t.step = step
        hook.after_eval(t, hook.writer)
    assert t.divergence is None
    assert hook.writer.rows[-1] == (200, {"best/eval/paired_l1": 0.2})
    hook.history.append((300, 0.61))
    t.step = 300
    with pytest.raises(DivergedError, match=r"eval/paired_l1 = 0.61 exceeds .* 3 x its best value 0.2 \(step 100\)"):
        hook.after_eval(t, hook.writer)
    assert t.divergence["step"] == 300
    hook.history.append((400, float("nan")))  # the first signal stays the recorded one
    with pytest.raises(DivergedError):
        hook.check_watch(t)
    assert t.divergence["step"] == 300


# ------------------------------------------------------------------------------------------ whole runs
def test_stability_tags_are_logged_and_summarised(tiny_config, tmp_path):
    cfg = _tiny(tiny_config, "hooks.stability.every=3", "hooks.stability.num_images=6")
    train(cfg, tmp_path / "run", handle_signals=False)
    scalars = read_scalars(tmp_path / "run" / "scalars.jsonl")
    expected = [
        "stability/overfit/r_train",
        "stability/overfit/r_heldout",
        "stability/overfit/gap",
        "stability/grad_norm/max",
        "stability/diverged",
        "stability/critic_gap",
        "stability/spectrum/conv1/top1",
        "stability/spectrum/conv1/mean_ratio",
        "best/eval/paired_l1",
    ]
    for tag in expected:
        assert tag in scalars, tag
    assert sorted(scalars["stability/overfit/r_train"]) == [0, 3, 6]
    assert set(scalars["stability/diverged"].values()) == {0.0}
    status = read_status(tmp_path / "run")
    assert status["status"] == "completed" and status["divergence"] is None
    assert status["final"]["stability/overfit/gap"] == scalars["stability/overfit/gap"][6]


def test_fid_hook_logs_diversity_and_collapse(tiny_config, tmp_path):
    cfg = load_run_config([tiny_config], ["hooks.fid.extractor=classifier", "hooks.stability.collapse_below=1e9"])
    train(cfg, tmp_path / "run", handle_signals=False)
    scalars = read_scalars(tmp_path / "run" / "scalars.jsonl")
    per_domain = [scalars[f"stability/diversity/{d}"][6] for d in ("palette", "outline", "texture")]
    assert scalars["stability/diversity/min"][6] == pytest.approx(min(per_domain))
    assert scalars["stability/collapsed"][6] == 1.0  # every ratio is below an absurd threshold


def test_nan_divergence_is_detected_and_recorded(tiny_config, tmp_path, monkeypatch, capsys):
    def poison(t, parts):
        if t.step >= 4:  # steps 1-3 fine (checkpoint at 3), step 5 not
            t.nonfinite |= torch.tensor(True)
            parts["adv"] = torch.tensor(float("nan"))

    after_d_step(monkeypatch, poison)
    run = tmp_path / "run"
    assert train_main(["--config", str(tiny_config), "--set", "hooks.fid.every=0", "--run-dir", str(run)]) == 3
    status = read_status(run)
    assert status["status"] == "diverged" and status["step"] == 5
    assert status["divergence"] == {"step": 5, "reason": "non-finite loss (D/adv)"}
    assert "non-finite loss by step 5" in status["reason"]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert read_scalars(run / "scalars.jsonl")["stability/diverged"][5] == 1.0


def test_exploding_critic_gap_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path, monkeypatch):
    def explode(t, parts):
        if t.step >= 4:
            t.max_gap = torch.maximum(t.max_gap, torch.tensor(5e4))

    after_d_step(monkeypatch, explode)
    run = tmp_path / "run"
    with pytest.raises(DivergedError, match="critic gap"):
        train(_tiny(tiny_config, "hooks.stability.gap_limit=1000"), run, handle_signals=False)
    status = read_status(run)
    assert status["status"] == "diverged" and status["divergence"]["step"] == 5
    assert "5e+04 exceeds hooks.stability.gap_limit 1000" in status["divergence"]["reason"]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3  # nothing of the diverged state


def test_divergence_without_stop_is_recorded_and_the_run_goes_on(tiny_config, tmp_path):
    # A limit of 0 for the input-gradient norm would be "off"; a tiny one fires at step 0.
    cfg = _tiny(tiny_config, "hooks.stability.stop=false", "hooks.stability.grad_norm_limit=1e-9",
                "hooks.stability.every=3")  # fmt: skip
    result = train(cfg, tmp_path / "run", handle_signals=False)
    assert result.completed and result.step == 6
    status = read_status(tmp_path / "run")
    assert status["status"] == "completed"
    assert status["divergence"]["step"] == 0 and "input-gradient norm" in status["divergence"]["reason"]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["divergence"] == status["divergence"]
    assert set(read_scalars(tmp_path / "run" / "scalars.jsonl")["stability/diverged"].values()) == {1.0}


def test_status_file_is_json_without_nan(tiny_config, tmp_path, monkeypatch):
    def poison(t, parts):
        if t.step >= 2:
            t.nonfinite |= torch.tensor(True)
            parts["adv"] = torch.tensor(float("nan"))
            t.last.critic_gap = torch.tensor(float("inf"))

    after_d_step(monkeypatch, poison)
    with pytest.raises(DivergedError):
        train(_tiny(tiny_config, "hooks.scalars.every=1", "hooks.nan_guard.every=0"), tmp_path / "run",
              handle_signals=False)  # fmt: skip
    assert '"nan"' in (tmp_path / "run" / "scalars.jsonl").read_text()  # a non-finite value was logged ...
    status = json.loads((tmp_path / "run" / "status.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert status["final"]["stability/critic_gap"] == "inf"  # ... and status.json stays strict JSON


def test_a_gap_divergence_between_guard_checks_is_never_checkpointed(tiny_config, tmp_path, monkeypatch):
    def explode(t, parts):
        if t.step == 2:  # during step 3, the checkpoint step; the NaN guard looks only every 2 steps
            t.max_gap = torch.maximum(t.max_gap, torch.tensor(5e4))

    after_d_step(monkeypatch, explode)
    run = tmp_path / "run"
    with pytest.raises(DivergedError, match="critic gap"):
        train(_tiny(tiny_config, "hooks.nan_guard.every=2", "hooks.stability.gap_limit=1000"), run,
              handle_signals=False)  # fmt: skip
    assert read_status(run)["divergence"]["step"] == 3
    assert not (run / "checkpoints").exists() or not list((run / "checkpoints").iterdir())


def test_a_divergence_found_by_the_final_evaluation_is_recorded_not_raised(tiny_config, tmp_path, monkeypatch):
    import gan.hooks as hooks_module

    values = iter([0.5, 0.2, 0.9])  # steps 0 and 4, then the final evaluation at step 6 (not a multiple of 4)
    monkeypatch.setattr(hooks_module, "paired_scores", lambda *a, **k: (next(values), 10.0))
    cfg = _tiny(tiny_config, "hooks.paired_l1.every=4", "hooks.stability.metric=eval/paired_l1")
    result = train(cfg, tmp_path / "run", handle_signals=False)
    assert result.completed
    status = read_status(tmp_path / "run")
    assert status["status"] == "completed" and status["divergence"]["step"] == 6
    assert "eval/paired_l1 = 0.9 exceeds" in status["divergence"]["reason"]
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["step"] == 6 and last["divergence"] == status["divergence"]  # saved before it, then marked
