"""End-to-end: train.py on a tiny config, its TensorBoard tags, resume, stop signals and bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gan.checkpoint import latest, load_checkpoint
from gan.cli import train_main
from tests.events import Events

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _tags(run_dir: Path) -> tuple[set[str], Events]:
    acc = Events(run_dir)
    return acc.tags("scalars") | acc.tags("images"), acc


def test_train_logs_the_documented_tags(tiny_config, tmp_path):
    run = tmp_path / "run"
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run)]) == 0
    tags, acc = _tags(run)
    expected = {
        "loss/D/adv", "loss/D/cls", "loss/D/gp", "loss/G/adv", "loss/G/cls", "loss/G/rec",
        "lr/G", "lr/D", "perf/it_per_s", "eval/paired_l1", "images/translations",
        "sigma/D/conv1/sn_estimate", "sigma/D/conv2/sn_estimate", "sigma/D/src/sn_estimate", "sigma/D/cls/sn_estimate",
    }  # fmt: skip
    assert expected <= tags
    rows = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/paired_l1" in r] == [0, 3, 6]  # the evaluations themselves
    # TensorBoard also repeats the latest value at the scalars steps in between (smoothing-safe staircase).
    assert [e.step for e in acc.Scalars("eval/paired_l1")] == [0, 2, 3, 4, 6]
    lipschitz = {"sigma/D/conv1/operator", "sigma/D/src/operator", "lipschitz/D/upper_bound"}
    lipschitz |= {
        f"lipschitz/D/{kind}/{x}" for kind in ("grad_norm", "jacobian_norm") for x in ("real", "fake", "interp")
    }
    assert lipschitz <= tags
    for event in acc.Scalars("lipschitz/D/upper_bound"):  # every logged lower bound <= the upper bound
        lower = [acc.Scalars(tag) for tag in lipschitz if "_norm/" in tag]
        assert all(e.value <= event.value for series in lower for e in series if e.step == event.step)
    image = acc.Images("images/translations")[-1]
    # columns: input + 3 domains; rows: 2 inputs; 16 px tiles shown at 96 px, with names above and at the left
    assert 4 * 96 < image.width < 4 * 96 + 200 and 2 * 96 < image.height < 2 * 96 + 100
    assert acc.Scalars("lr/G")[-1].value == pytest.approx(0.0)  # linear decay reaches zero at the last step
    assert (run / "config.yaml").is_file() and (run / "scalars.jsonl").is_file()
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["last.pt", "step_00000003.pt", "step_00000006.pt"]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 6 and state["config"]["train"]["steps"] == 6
    assert {"weight_orig", "weight_u", "weight_v"} <= {k.split(".")[-1] for k in state["D"]}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)
    return {**{f"G.{k}": v for k, v in state["G"].items()}, **{f"D.{k}": v for k, v in state["D"].items()}}


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")]),
]


@pytest.mark.parametrize("device", DEVICES)
def test_resume_continues_exactly(tiny_config, tmp_path, device, request):
    # On CUDA, cuDNN's default kernels are not deterministic; train.deterministic makes them so (process-wide,
    # hence switched back off after the test).
    request.addfinalizer(lambda: torch.use_deterministic_algorithms(False))
    straight, split = tmp_path / "straight", tmp_path / "split"
    options = ["--set", f"train.device={device}", "--set", f"train.deterministic={device == 'cuda'}"]
    assert train_main(["--config", str(tiny_config), "--run-dir", str(straight), *options]) == 0
    # An interrupted twin of that run: it logged up to step 6 but only the step-3 checkpoint survived.
    shutil.copytree(straight, split)
    (split / "checkpoints" / "last.pt").unlink()
    (split / "checkpoints" / "step_00000006.pt").unlink()
    assert train_main(["--run-dir", str(split), "--resume", "auto"]) == 0
    assert load_checkpoint(split / "checkpoints" / "last.pt")["step"] == 6
    a, b = _weights(straight / "checkpoints" / "last.pt"), _weights(split / "checkpoints" / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=key)
    # purge_step drops the interrupted run's events after step 3, so the curve does not fold back.
    # The resumed writer goes on repeating the step-3 value at step 4 (the staircase between evaluations).
    events = _tags(split)[1].Scalars("eval/paired_l1")
    assert [e.step for e in events] == [0, 2, 3, 4, 6]
    straight_events = _tags(straight)[1].Scalars("eval/paired_l1")
    assert [e.value for e in events] == [e.value for e in straight_events]


def test_resume_with_changed_model_is_refused(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run), "--set", "train.steps=3"]) == 0
    before = (run / "checkpoints" / "last.pt").read_bytes()
    code = train_main(["--config", str(tiny_config), "--run-dir", str(run), "--resume", "auto",
                       "--set", "model.generator.conv_dim=8"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot resume with a changed model config (model.generator.conv_dim: 4 -> 8)" in err
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_a_used_run_dir_is_not_overwritten_without_resume(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run), "--set", "train.steps=3"]) == 0
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run)]) == 2
    assert "already holds checkpoints; continue it with --resume auto" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before


def test_resume_from_a_run_folder_and_changed_domains(tiny_config, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run), "--set", "train.steps=3"]) == 0
    assert train_main(["--resume", str(run), "--set", "train.steps=4"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    code = train_main(["--resume", str(run), "--set", "train.steps=5",
                       "--set", "data.synthetic.domains=[palette, outline, night]"])  # fmt: skip
    assert code == 2 and "was trained on domains ['palette', 'outline', 'texture']" in capsys.readouterr().err
    assert train_main(["--resume", str(tmp_path)]) == 2
    assert "no checkpoint in this folder" in capsys.readouterr().err


def test_resume_may_extend_training(tiny_config, tmp_path):
    run = tmp_path / "run"
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run), "--set", "train.steps=3"]) == 0
    assert train_main(["--run-dir", str(run), "--resume", "auto", "--set", "train.steps=5"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 5


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "train.batch_sze=4"], "unknown key 'train.batch_sze' (did you mean 'train.batch_size'?)"),
        (["--set", "model.generator.norm=layer_nrom"], "model.generator.norm: unknown name 'layer_nrom'"),
        (["--resume", "/nonexistent/last.pt"], "/nonexistent/last.pt: checkpoint not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_config, tmp_path, capsys, args, needle):
    code = train_main(["--config", str(tiny_config), "--run-dir", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_subprocess_bad_key_and_python_tag(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    evil = tmp_path / "evil.yaml"
    evil.write_text("train:\n  steps: !!python/object/apply:os.system ['touch pwned']\n")
    for path, needle in [(bad, "train.stepz"), (evil, "not valid YAML")]:
        proc = subprocess.run(
            [sys.executable, str(REPO / "train.py"), "--config", str(path), "--run-dir", str(tmp_path / "r")],
            capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert str(path) in proc.stderr and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "pwned").exists()


def _start_training(config: Path, run: Path, checkpoint_every: int) -> subprocess.Popen:
    """train.py in a child process, long enough to be stopped by a signal."""
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), "--config", str(config), "--run-dir", str(run),
         "--set", "train.steps=100000", "--set", f"hooks.checkpoint.every={checkpoint_every}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def test_sigterm_saves_a_checkpoint_and_exits_0(tiny_config, tmp_path):
    run = tmp_path / "run"
    proc = _start_training(tiny_config, run, checkpoint_every=100000)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "scalars.jsonl").is_file():
        time.sleep(0.2)
    while time.time() < deadline and (run / "scalars.jsonl").stat().st_size < 2000:
        time.sleep(0.2)  # wait until it has trained a few steps
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert 0 < state["step"] < 100000


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path, monkeypatch, capsys):
    from gan.trainer import Trainer

    original = Trainer.d_step

    def poisoned(self, *args):
        parts = original(self, *args)
        if self.step >= 4:  # steps 1-3 are fine (checkpoint at 3), step 5 is not
            self.nonfinite |= torch.tensor(True)
            parts["adv"] = torch.tensor(float("nan"))
        return parts

    monkeypatch.setattr(Trainer, "d_step", poisoned)
    run = tmp_path / "run"
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run)]) == 3
    err = capsys.readouterr().err
    assert "non-finite loss by step 5 (D/adv)" in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt", "step_00000003.pt"]


def test_a_second_ctrl_c_stops_at_once_without_a_torn_checkpoint(tiny_config, tmp_path):
    """Two Ctrl-C a few ms apart (the issue's trials: 4-12 ms) end the process at once with one line and exit 130;
    every checkpoint left is a complete one that a resume continues from."""
    run = tmp_path / "run"
    proc = _start_training(tiny_config, run, checkpoint_every=2)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "step_00000004.pt").is_file():
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.008)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    if proc.returncode == 130:  # the usual case: the second Ctrl-C came before the first stop finished
        assert err.rstrip().splitlines()[-1].startswith("error: second Ctrl-C: stopped at once")
    else:  # the first stop saved and exited within 8 ms
        assert proc.returncode == 0, err
    steps = [load_checkpoint(path)["step"] for path in (run / "checkpoints").glob("*.pt")]  # complete, CRCs checked
    assert max(steps) >= 4 and load_checkpoint(latest(run / "checkpoints"))["step"] == max(steps)  # resume's pick
    more = f"train.steps={max(steps) + 2}"
    assert train_main(["--run-dir", str(run), "--resume", "auto", "--set", more]) == 0
