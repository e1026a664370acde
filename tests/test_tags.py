"""What a run shows: every TensorBoard tag described, sparse tags as a staircase that smoothing cannot shift, events
in the run folder itself (TensorBoard lists the run under its own name), labelled grids on disk, and the console's
line after every evaluation."""

import json

import numpy as np
import pytest
from PIL import Image

from gan.cli import train_main
from gan.hooks import eval_line
from gan.tags import describe, is_sparse
from gan.writers import RunWriter
from tests.conftest import TINY
from tests.events import Events

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------------------------- descriptions
@pytest.mark.parametrize(
    ("tag", "needle"),
    [
        ("loss/G/rec", "reconstruction"),
        ("sigma/D/conv3/operator", "layer conv3"),
        ("sigma/D/cls/sn_estimate", "layer cls"),
        ("lipschitz/D/grad_norm/interp", "interpolates"),
        ("lipschitz/D/bound_ratio", "loose"),
        ("norm/G/9.body.1/switch_var_weights/ln", "ln statistics in the variance"),
        ("stability/spectrum/src/top2", "Singular value number 2 of D layer src"),
        ("eval/classifier_fd/outline", "outline"),
        ("best/eval/paired_l1", "Best value of eval/paired_l1"),
    ],
)
def test_describe_names_the_quantity(tag, needle):
    assert needle in describe(tag, every=500, count=16)


def test_sparse_tags_say_how_often_and_how_to_read_them():
    assert is_sparse("eval/fid/mean") and is_sparse("sigma/D/conv1/operator") and is_sparse("stability/diverged")
    assert not is_sparse("loss/D/adv") and not is_sparse("lr/G") and not is_sparse("stability/critic_gap")
    text = describe("eval/paired_l1", every=250, count=64)
    assert "64 held-out images" in text and "every 250 steps" in text and "staircase" in text
    assert "staircase" not in describe("loss/D/adv") and "smoothing" in describe("loss/D/adv")
    assert describe("made/up/tag") is None


# ----------------------------------------------------------------------------------------------------- staircase
def _tb(folder):
    return Events(folder)


def test_sparse_tags_are_repeated_in_tensorboard_only(tmp_path):
    w = RunWriter(tmp_path)
    w.scalars({"eval/paired_l1": 0.5}, 0)
    for step in (10, 20, 30, 40):
        if step == 30:
            w.scalars({"eval/paired_l1": 0.25}, 30)
        w.scalars({"loss/D/adv": float(step)}, step)
        w.repeat_sparse(step)
    w.close()
    acc = _tb(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("eval/paired_l1")] == [
        (0, 0.5),
        (10, 0.5),
        (20, 0.5),
        (30, 0.25),
        (40, 0.25),
    ]  # fmt: skip  (step 30: the fresh value only, not the old one repeated)
    assert [e.step for e in acc.Scalars("loss/D/adv")] == [10, 20, 30, 40]
    rows = [json.loads(line) for line in (tmp_path / "scalars.jsonl").read_text().splitlines()]
    assert [(r["step"], r["eval/paired_l1"]) for r in rows if "eval/paired_l1" in r] == [(0, 0.5), (30, 0.25)]


def test_a_resumed_writer_repeats_the_values_at_its_checkpoint(tmp_path):
    w = RunWriter(tmp_path)
    w.scalars({"eval/fid/mean": 9.0}, 0)
    w.scalars({"eval/fid/mean": 7.0}, 20)  # logged after the checkpoint at step 10: purged on resume
    w.close()
    resumed = RunWriter(tmp_path, purge_step=11)
    resumed.repeat_sparse(12)
    resumed.close()
    assert [(e.step, e.value) for e in _tb(tmp_path).Scalars("eval/fid/mean")] == [(0, 9.0), (12, 9.0)]


# -------------------------------------------------------------------------------------------------- a whole run
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run with every hook on (Switchable Norm in G for its tags) and the progress bar on."""
    folder = tmp_path_factory.mktemp("tags")
    tiny_config = folder / "tiny.yaml"
    tiny_config.write_text(TINY)
    run = folder / "run"
    options = ["hooks.lipschitz.every=3", "hooks.stability.every=3", "hooks.norms.every=2", "train.progress=true",
               "model.generator.norm=switchable", "model.discriminator.norm=batch_instance"]  # fmt: skip
    args = ["--config", str(tiny_config), "--run-dir", str(run)] + [a for o in options for a in ("--set", o)]
    assert train_main(args) == 0
    return run


def test_every_tag_of_a_run_has_a_description(run):
    events = Events(run)
    tags = {t for t in events.tags() if not t.startswith(("_hparams_/", "custom_scalars__"))}  # plugins' own records
    rows = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
    jsonl = {k for row in rows for k in row} - {"step", "time"}
    assert jsonl <= tags and {"images/translations", "config", "eval/about"} <= tags
    assert {"sigma/D/cls/operator", "lipschitz/D/bound_ratio", "norm/D/rho_mean"} <= tags
    missing = sorted(t for t in tags if not events.description(t))
    assert missing == []


def test_events_are_in_the_run_folder_and_sparse_tags_start_at_step_0(run):
    assert not (run / "tb").exists()
    assert any(p.name.endswith(".hparams") for p in run.glob("events.out.tfevents.*"))
    acc = _tb(run)
    for tag in ("sigma/D/cls/sn_estimate", "sigma/D/cls/operator", "sigma/D/conv1/sn_estimate"):
        assert acc.Scalars(tag)[0].step == 0  # the domain head has both series, from the initial weights on
    l1 = [(e.step, e.value) for e in acc.Scalars("eval/paired_l1")]
    assert [s for s, _ in l1] == [0, 2, 3, 4, 6]  # measured at 0, 3, 6; repeated at the scalars steps 2 and 4
    assert l1[1][1] == l1[0][1] and l1[3][1] == l1[2][1]
    ratio = acc.Scalars("lipschitz/D/bound_ratio")[0].value
    upper = acc.Scalars("lipschitz/D/upper_bound")[0].value
    lower = max(acc.Scalars(f"lipschitz/D/grad_norm/{k}")[0].value for k in ("real", "fake", "interp"))
    lower = max(lower, *(acc.Scalars(f"lipschitz/D/jacobian_norm/{k}")[0].value for k in ("real", "fake", "interp")))
    assert ratio == pytest.approx(upper / lower, rel=1e-5) and ratio >= 1


def test_translation_grids_are_written_as_png(run):
    names = sorted(p.name for p in (run / "images").iterdir())
    assert names == ["translations_00000000.png", "translations_00000003.png", "translations_00000006.png",
                     "translations_last.png"]  # fmt: skip
    last = np.asarray(Image.open(run / "images" / "translations_last.png").convert("RGB"))
    assert np.array_equal(last, np.asarray(Image.open(run / "images" / "translations_00000006.png").convert("RGB")))
    image = _tb(run).Images("images/translations")[-1]
    assert (image.width, image.height) == (last.shape[1], last.shape[0])
    assert last.shape[0] >= 2 * 96 and last.shape[1] >= 4 * 96  # 2 rows, input + 3 domains, 16 px tiles at >= 96 px


# ---------------------------------------------------------------------------------------------------- console
def test_eval_line_has_every_measurement():
    values = {
        "eval/paired_l1": 0.25431, "eval/paired_psnr": 17.912, "eval/fid/mean": 251.93, "eval/kid/mean": 0.1971,
        "eval/domain_accuracy": 1.0, "lipschitz/D/upper_bound": 24.13, "lipschitz/D/grad_norm/real": 0.31,
        "lipschitz/D/jacobian_norm/fake": 1.07, "loss/D/adv": 3.0,
    }  # fmt: skip
    line = eval_line(1000, values, "64 translations vs 64 real images per target domain")
    assert line == (
        "step 1000: paired L1 0.2543, PSNR 17.91 dB | FID 251.9, KID 0.1971 (64 translations vs 64 real images per "
        "target domain) | domain accuracy 1.000 | Lipschitz(D) <= 24.13, >= 1.07 measured"
    )
    assert "classifier FD 0.1131" in eval_line(5, {"eval/classifier_fd/mean": 0.1131})
    assert eval_line(7, {"loss/D/adv": 1.0, "sigma/D/conv1/operator": 0.9}) is None


def test_console_shows_the_hint_and_one_line_per_evaluation(tiny_config, tmp_path, capsys):
    args = ["--config", str(tiny_config), "--run-dir", str(tmp_path / "r"), "--set", "train.progress=true"]
    assert train_main(args) == 0
    err = capsys.readouterr().err
    assert "tensorboard --logdir" in err
    lines = [line.split("\r")[-1] for line in err.splitlines()]
    for step in (0, 3, 6):
        assert sum(line.startswith(f"step {step}: paired L1 ") for line in lines) == 1
    assert any("PSNR" in line and line.startswith("eval/paired_l1:") for line in lines)  # the final summary
    assert any(line.startswith("domain classifier: held-out accuracy") for line in lines)
