"""Run-lifecycle regressions, seen from the command line: what a crash, a stop signal, a resume or a refused start
leaves behind in the run folder. The tests only drive ``train_main`` / ``train.py`` and read the run folder, so
they do not depend on the trainer's internals."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from gan.checkpoint import load_checkpoint
from gan.cli import train_main
from tests.events import Events

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


# ----------------------------------------------------------------------------------------------------- helpers
def _layer(tmp_path: Path, name: str, data: dict) -> Path:
    """A YAML file layered on top of the tiny config with a second ``--config``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _train(*args: object) -> int | None:
    """train_main, with an escaping exception counted as a failure (None) rather than as an error of the test."""
    try:
        return train_main([str(a) for a in args])
    except Exception:  # noqa: BLE001 - a crash is an acceptable way to fail, as is a non-zero exit code
        return None


def _assert_same_weights(a: dict, b: dict, what: str) -> None:
    """G and D state dicts equal bit for bit, and opt_D's per-parameter 'step' counts equal."""
    for net in ("G", "D"):
        assert a[net].keys() == b[net].keys(), f"{what}: {net} keys differ"
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{what}: {net}.{key} differs"
    steps_a = {k: v.get("step") for k, v in a["opt_D"]["state"].items()}
    steps_b = {k: v.get("step") for k, v in b["opt_D"]["state"].items()}
    assert steps_a.keys() == steps_b.keys(), f"{what}: opt_D state keys differ"
    for key in steps_a:
        assert torch.equal(torch.as_tensor(steps_a[key]), torch.as_tensor(steps_b[key])), f"{what}: opt_D step {key}"


def _rewind_to(run: Path, step: int) -> None:
    """Make ``run`` look interrupted after ``step``: later step files and last.pt are gone, and last.pt is a copy
    of ``step``'s checkpoint (its logs still hold the later steps)."""
    ckpts = run / "checkpoints"
    for path in ckpts.glob("step_*.pt"):
        if int(path.stem.split("_")[1]) > step:
            path.unlink()
    (ckpts / "last.pt").unlink()
    shutil.copy(ckpts / f"step_{step:08d}.pt", ckpts / "last.pt")


def _jsonl_rows(run: Path) -> list[dict]:
    path = run / "scalars.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a partly written last line while the run is alive
    return rows


def _all_tags(run: Path) -> set[str]:
    tags = {k for row in _jsonl_rows(run) for k in row if k not in ("step", "time")}
    if any(run.glob("events.out.tfevents.*")):
        events = Events(run)
        tags |= events.tags("scalars") | events.tags("images")
    return tags


def _popen(*args: object, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *map(str, args)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def _wait_for(condition, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"train.py exited ({proc.returncode}) before {what}:\n{err[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    proc.communicate()
    pytest.fail(f"timed out waiting for {what}")


def _sigterm_and_wait(proc: subprocess.Popen, within: float) -> tuple[float, str]:
    """Send SIGTERM; return (seconds to exit, stderr). Kills the process and fails if it outlives ``within``."""
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"train.py still running {within:.0f} s after SIGTERM; stderr tail:\n{err[-1500:]}")
    return time.time() - t0, err


# ------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("ckpt_every", [1, 4])
def test_crash_in_a_step_leaves_no_torn_checkpoint(tiny_config, tmp_path, monkeypatch, ckpt_every):
    """An exception inside a step must not save a half-updated state (D stepped, step counter not) under the
    last completed step, nor delete older step files beyond ``keep``."""
    from gan.trainer import Trainer

    layer = _layer(tmp_path, "crash", {"train": {"n_critic": 1}})
    clean = tmp_path / "clean"
    assert train_main(["--config", str(tiny_config), "--config", str(layer), "--run-dir", str(clean),
                       "--set", "hooks.checkpoint.every=1", "--set", "hooks.checkpoint.keep=100"]) == 0  # fmt: skip

    original, calls = Trainer.g_step, []

    def g_step(self, *args):
        calls.append(self.step)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return original(self, *args)

    monkeypatch.setattr(Trainer, "g_step", g_step)
    run, keep = tmp_path / "crash", 2
    every = ["--set", f"hooks.checkpoint.every={ckpt_every}", "--set", f"hooks.checkpoint.keep={keep}"]
    code = _train("--config", tiny_config, "--config", layer, "--run-dir", run, *every)
    assert code != 0
    completed = calls[-1]  # the failing G step belonged to the step after the last completed one
    ckpts = run / "checkpoints"
    if (ckpts / "last.pt").exists():
        last = load_checkpoint(ckpts / "last.pt")
        assert last["step"] == completed
        _assert_same_weights(last, load_checkpoint(clean / "checkpoints" / f"step_{completed:08d}.pt"), "last.pt")
    for path in ckpts.glob("step_*.pt"):  # every surviving step file is a clean state of its step
        step = int(path.stem.split("_")[1])
        assert step <= completed, f"{path.name} is past the last completed step {completed}"
        _assert_same_weights(load_checkpoint(path), load_checkpoint(clean / "checkpoints" / path.name), path.name)
    saved_before = [s for s in range(1, completed + 1) if s % ckpt_every == 0]
    for step in saved_before[-keep:]:
        assert (ckpts / f"step_{step:08d}.pt").is_file(), f"step_{step:08d}.pt was deleted"


def test_resume_with_loader_workers_is_exact(tiny_config, tmp_path):
    """With DataLoader workers (and the default random horizontal flip), a run resumed from step 3 ends with the
    same weights as the uninterrupted run."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    workers = ["--set", "data.num_workers=2", "--set", "hooks.checkpoint.keep=10"]
    assert train_main(["--config", str(tiny_config), "--run-dir", str(straight), *workers]) == 0
    shutil.copytree(straight, split)
    _rewind_to(split, 3)
    assert train_main(["--resume", "auto", "--run-dir", str(split)]) == 0
    a = load_checkpoint(straight / "checkpoints" / "step_00000006.pt")
    b = load_checkpoint(split / "checkpoints" / "last.pt")
    assert b["step"] == 6
    _assert_same_weights(a, b, "resumed step 6")


def test_lr_decay_longer_than_the_run_is_refused(tiny_config, tmp_path, capsys):
    """train.lr_decay_steps > train.steps is a config error (exit 2, one line naming both keys), before any run
    folder is made."""
    run = tmp_path / "new"
    code = _train(
        "--config", tiny_config, "--run-dir", run, "--set", "train.steps=4", "--set", "train.lr_decay_steps=10"
    )
    err = capsys.readouterr().err
    assert code == 2, err[-1500:]
    assert "train.lr_decay_steps" in err and "train.steps" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not run.exists()


def test_zero_spectral_norm_eps_is_refused_by_its_own_key(tiny_config, tmp_path, capsys):
    """model.discriminator.spectral_norm.eps=0 exits 2 with one line naming that key, not norm_options."""
    run = tmp_path / "new"
    code = _train("--config", tiny_config, "--run-dir", run, "--set", "model.discriminator.spectral_norm.eps=0")
    err = capsys.readouterr().err
    assert code == 2, err[-1500:]
    assert "model.discriminator.spectral_norm.eps" in err and "norm_options" not in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_every_zero_switches_hooks_off(tiny_config, tmp_path, capsys):
    """``every: 0`` turns a hook off, step-0 evaluation included: no eval/images/lipschitz tags, no classifier."""
    run = tmp_path / "run"
    off = [x for hook in ("fid", "paired_l1", "images", "lipschitz") for x in ("--set", f"hooks.{hook}.every=0")]
    code = _train("--config", tiny_config, "--run-dir", run, *off)
    assert code == 0, capsys.readouterr().err[-1500:]
    tags = _all_tags(run)
    assert tags, "nothing was logged"
    assert not [t for t in tags if t.startswith(("eval/", "images/", "lipschitz/"))]
    assert not (run / "classifier.pt").exists()


def _long_classifier_layer(tmp_path: Path, fid_every: int) -> Path:
    return _layer(tmp_path, f"long-fid-{fid_every}", {
        "train": {"steps": 10, "lr_decay_steps": 3},
        "hooks": {"fid": {"every": fid_every, "num_images": 4}, "checkpoint": {"every": 100, "keep": 2},
                  "paired_l1": {"every": 2, "num_images": 4}},
        "metrics": {"classifier": {"steps": 100000, "batch_size": 16}},
    })  # fmt: skip


def _passed_step(run: Path, step: int) -> bool:
    if any(row.get("step", -1) >= step for row in _jsonl_rows(run)):
        return True
    # scalars.jsonl may still sit in a write buffer; the log file names each evaluation's step
    log = run / "train.log"
    return log.is_file() and re.search(rf"step {step}: eval/paired_l1", log.read_text()) is not None


def test_sigterm_during_a_long_evaluation_saves_and_exits(tiny_config, tmp_path):
    """SIGTERM while the FID hook trains its classifier (first evaluation at step 2) ends the run within 10 s with
    exit 0 and a step-2 checkpoint."""
    run = tmp_path / "run"
    # A one-step run first, so that the long run is a resume: its first FID evaluation is at step 2, not step 0.
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run), "--set", "train.steps=1",
                       "--set", "train.lr_decay_steps=1", "--set", "hooks.checkpoint.every=1"]) == 0  # fmt: skip
    (run / "classifier.pt").unlink()
    layer = _long_classifier_layer(tmp_path, fid_every=2)
    proc = _popen("--config", tiny_config, "--config", layer, "--run-dir", run, "--resume", "auto", cwd=tmp_path)
    _wait_for(lambda: _passed_step(run, 2), proc, 90, "step 2")
    time.sleep(2)  # now inside the classifier training
    assert proc.poll() is None, "the run ended before SIGTERM"
    seconds, err = _sigterm_and_wait(proc, within=10)
    assert proc.returncode == 0, err[-1500:]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2


def test_sigterm_during_step0_classifier_training_exits(tiny_config, tmp_path):
    """SIGTERM while the step-0 evaluation trains the domain classifier ends the run within 10 s with exit 0."""
    run = tmp_path / "run"
    layer = _long_classifier_layer(tmp_path, fid_every=1000)
    proc = _popen("--config", tiny_config, "--config", layer, "--run-dir", run, cwd=tmp_path)
    _wait_for(lambda: _passed_step(run, 0), proc, 90, "the step-0 evaluation")
    time.sleep(2)  # paired L1 is done; the FID hook is training its classifier
    assert proc.poll() is None, "the run ended before SIGTERM"
    seconds, err = _sigterm_and_wait(proc, within=10)
    assert proc.returncode == 0, err[-1500:]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--config", str(REPO / "configs" / "folder.yaml")], id="folder-data-without-root"),
        pytest.param(["--set", "train.batch_sze=4"], id="invalid-set"),
    ],
)
def test_a_failed_start_leaves_no_run_folder(tiny_config, tmp_path, monkeypatch, args):
    """A start refused with exit 2 does not leave an empty run folder behind."""
    monkeypatch.chdir(tmp_path)  # folder.yaml's relative data root does not exist here
    base = [] if args[0] == "--config" else ["--config", str(tiny_config)]
    run = tmp_path / "new"
    assert _train(*base, *args, "--run-dir", run) == 2
    assert not run.exists()


def _finished_run(tiny_config: Path, name: str) -> None:
    assert train_main(["--config", str(tiny_config), "--run-dir", f"runs/{name}", "--set", "train.steps=3",
                       "--set", "train.lr_decay_steps=0"]) == 0  # fmt: skip


def test_resume_auto_with_several_runs_asks_for_run_dir(tiny_config, tmp_path, monkeypatch, capsys):
    """--resume auto without --run-dir and two runs under runs/: exit 2, one line naming the candidates (or their
    number) and asking for --run-dir; neither run is touched."""
    monkeypatch.chdir(tmp_path)
    _finished_run(tiny_config, "first-run")
    _finished_run(tiny_config, "second-run")
    capsys.readouterr()
    before = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("last.pt")}
    code = _train("--resume", "auto")
    err = capsys.readouterr().err
    assert code == 2, err[-1500:]
    assert err.count("\n") == 1 and "--run-dir" in err, err[-1500:]
    assert ("first-run" in err and "second-run" in err) or re.search(r"\b2\b", err), err
    assert {p: p.read_bytes() for p in (tmp_path / "runs").rglob("last.pt")} == before


def test_resume_auto_with_one_run_resumes_it_and_says_so(tiny_config, tmp_path, monkeypatch, capsys):
    """--resume auto without --run-dir and exactly one run under runs/: that run is continued, and the output
    names its folder and the step it resumes from."""
    monkeypatch.chdir(tmp_path)
    _finished_run(tiny_config, "only-run")
    capsys.readouterr()
    code = _train("--resume", "auto", "--set", "train.steps=4")
    out, err = capsys.readouterr()
    assert code == 0, err[-1500:]
    assert load_checkpoint(tmp_path / "runs" / "only-run" / "checkpoints" / "last.pt")["step"] == 4
    text = out + err
    assert "only-run" in text, text[-1500:]
    resume_lines = [line for line in text.splitlines() if "resum" in line.lower()]
    assert any(re.search(r"\b3\b", line) for line in resume_lines), (
        f"no line says it resumes from step 3:\n{text[-1500:]}"
    )


def test_resume_keeps_one_scalar_row_per_step_and_tag(tiny_config, tmp_path):
    """After a resume from step 3, scalars.jsonl holds each tag at most once per step: the interrupted run's rows
    after step 3 are dropped or replaced, not duplicated."""
    run = tmp_path / "run"
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run), "--set", "hooks.checkpoint.keep=10"]) == 0
    _rewind_to(run, 3)
    assert train_main(["--resume", "auto", "--run-dir", str(run)]) == 0
    counts = Counter((row["step"], tag) for row in _jsonl_rows(run) for tag in row if tag not in ("step", "time"))
    duplicates = sorted(key for key, n in counts.items() if n > 1)
    assert not duplicates, f"logged more than once: {duplicates[:8]}"
    assert max(step for step, _ in counts) == 6


def test_a_hook_failing_at_the_end_does_not_skip_the_final_checkpoint(tiny_config, tmp_path, monkeypatch):
    """An exception in a hook's on_fit_end still lets the final checkpoint be written (5 steps: not a multiple
    of checkpoint.every, so only the end-of-run save holds step 5)."""
    from gan.hooks import ImagesHook

    def broken(self, trainer):
        raise RuntimeError("images hook failed")

    monkeypatch.setattr(ImagesHook, "on_fit_end", broken)
    run = tmp_path / "run"
    _train("--config", tiny_config, "--run-dir", run, "--set", "train.steps=5")
    last = run / "checkpoints" / "last.pt"
    assert last.is_file()
    assert load_checkpoint(last)["step"] == 5


def test_a_second_live_training_in_the_same_run_folder_is_refused(tiny_config, tmp_path, capsys):
    """A run folder is locked while a training runs in it (here: held by this test, as another process would):
    a second training there gets one line and exit 2 and writes nothing; once the lock is gone it trains."""
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write("4242\n")
        holder.flush()
        assert train_main(["--config", str(tiny_config), "--run-dir", str(run)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another training is running in this run folder (pid 4242)" in err
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # no config.yaml, log, events or status.json
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run)]) == 0  # the lock died with its holder
    assert (run / "checkpoints" / "last.pt").is_file()


def test_resume_after_a_kill_during_last_pt_takes_the_newest_step_file(tiny_config, tmp_path, capsys):
    """A kill while last.pt was written leaves last.pt at the previous checkpoint and a temporary file as large as a
    checkpoint, but step_<N>.pt complete: --resume auto continues from step N and the leftover is removed."""
    run = tmp_path / "run"
    options = ["--set", "train.steps=9", "--set", "hooks.checkpoint.keep=5"]
    assert train_main(["--config", str(tiny_config), "--run-dir", str(run), *options]) == 0
    ckpts = run / "checkpoints"
    _rewind_to(run, 6)
    shutil.copy(ckpts / "step_00000003.pt", ckpts / "last.pt")  # last.pt still the step-3 one
    (ckpts / ".last.pt.k1ll3d.tmp").write_bytes(b"\0" * 1000)
    capsys.readouterr()
    assert train_main(["--resume", "auto", "--run-dir", str(run)]) == 0
    assert "from step 6" in capsys.readouterr().err
    assert not list(ckpts.glob(".*.tmp"))
    assert load_checkpoint(ckpts / "last.pt")["step"] == 9


def test_a_full_disk_during_training_is_one_line(tiny_config, tmp_path, monkeypatch, capsys):
    """ENOSPC while a checkpoint is written (torch's own error there has no errno: see test_checkpoint): one line
    naming the file and the full disk, exit 2, no traceback; status.json says the same; the checkpoints written
    before stay complete."""
    import errno

    from gan import checkpoint

    real_save, calls = torch.save, []

    def save(obj, f):
        calls.append(1)
        if len(calls) > 2:  # step 3's step file and last.pt are written, step 6's is not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    run = tmp_path / "run"
    assert train_main(["--config", str(tiny_config), "--set", "hooks.fid.every=0", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip().splitlines()[-1]
        == f"error: {run / 'checkpoints' / 'step_00000006.pt'}: no space left on the device (the disk is full)"
    )
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "the disk is full" in status["reason"]
    monkeypatch.undo()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert not list((run / "checkpoints").glob(".*tmp"))
