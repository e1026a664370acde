"""gan/run.py, the Python API: README's snippet runs as written; resume helpers; the schedule-change warning."""

import os
import re
from pathlib import Path

import pytest
import torch

from gan.build import load_run_config
from gan.errors import UserError
from gan.run import _schedule_change, find_resume, train
from tests.test_data import write_domains

REPO = Path(__file__).resolve().parent.parent


def _readme_snippet() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_readme_python_snippet_trains_and_translates(tmp_path, monkeypatch):
    """README's 'Python API' code, executed exactly as printed there (in a temporary working directory)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_readme_snippet(), "README.md", "exec"), namespace)
    result, y, x = namespace["result"], namespace["y"], namespace["x"]
    assert result.completed and result.step == 20 and result.last_checkpoint.is_file()
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(y, x)


def test_find_resume_refuses_to_guess_between_runs(tmp_path):
    runs = tmp_path / "runs"
    assert find_resume("auto", None, runs) is None
    for name in ("a", "b"):
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "checkpoints" / "last.pt").write_bytes(b"")
        if name == "a":
            assert find_resume("auto", None, runs) == runs / "a" / "checkpoints" / "last.pt"
    with pytest.raises(UserError, match="holds 2 runs with checkpoints .* --run-dir"):
        find_resume("auto", None, runs)
    assert find_resume("auto", runs / "b", runs) == runs / "b" / "checkpoints" / "last.pt"


def test_schedule_change_on_resume_is_explained(tiny_config):
    cfg = load_run_config([tiny_config], ["train.steps=12", "train.lr_decay_steps=3"])
    old = {"steps": 6, "lr_decay_steps": 3}
    message = _schedule_change(old, cfg, 4)
    assert "from 6/3 to 12/3" in message and "step 4 becomes 1 x (was 0.667 x)" in message
    assert _schedule_change({"steps": 12, "lr_decay_steps": 3}, cfg, 4) is None


def test_training_refuses_a_decay_longer_than_the_run(tiny_config):
    from gan.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.lr_decay_steps: 10 exceeds train.steps = 4"):
        load_run_config([tiny_config], ["train.steps=4", "train.lr_decay_steps=10"])
    cfg = load_run_config([tiny_config], ["train.steps=4", "train.lr_decay_steps=10"], training=False)
    assert cfg.train.lr_decay_steps == 10  # an old checkpoint's config still loads for evaluation


OLD = REPO / "tests" / "data" / "checkpoint_debcbdd.pt"
# Written by commit debcbdd (before gan.build/gan.run existed): `python train.py --config <tests/conftest.py TINY>
# --set train.steps=4 --set train.lr_decay_steps=2 --set hooks.checkpoint.every=100 --set hooks.fid.every=1000`.


@pytest.mark.slow
def test_checkpoints_of_the_previous_version_load_resume_and_evaluate(tmp_path, capsys):
    import shutil

    from gan.checkpoint import load_checkpoint
    from gan.cli import evaluate_main, train_main
    from gan.run import load_generator

    G, space = load_generator(OLD)
    assert space.domains == ("palette", "outline", "texture") and not space.multi_label
    x = torch.zeros(1, 3, 16, 16)
    with torch.no_grad():
        assert G(x, space.vectors(torch.tensor([1]))).shape == x.shape
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(OLD, run / "checkpoints" / "last.pt")
    assert train_main(["--resume", str(run), "--set", "train.steps=6", "--set", "train.lr_decay_steps=2"]) == 0
    assert "from step 4" in capsys.readouterr().err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 6 and state["config"]["data"]["celeba"]["exclusive_groups"]  # the new key, defaulted
    assert evaluate_main(["paired-l1", "--checkpoint", str(OLD), "--num-images", "4", "--json"]) == 0
    assert '"step": 4' in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------- lifecycle edges
def _tiny(tiny_config, *overrides):
    return load_run_config([tiny_config], ["hooks.fid.every=0", "hooks.lipschitz.every=0", *overrides])


def _rows(run: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_resuming_another_runs_checkpoint_into_a_run_folder_is_refused(tiny_config, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(_tiny(tiny_config), a, handle_signals=False)
    train(_tiny(tiny_config), b, handle_signals=False)
    before = sorted(p.name for p in (b / "checkpoints").iterdir()), (b / "scalars.jsonl").read_text()
    with pytest.raises(UserError, match="holds checkpoints of its own run"):
        train(_tiny(tiny_config), b, resume=a / "checkpoints" / "step_00000003.pt", handle_signals=False)
    assert (sorted(p.name for p in (b / "checkpoints").iterdir()), (b / "scalars.jsonl").read_text()) == before
    branch = train(_tiny(tiny_config), tmp_path / "c", resume=a / "checkpoints" / "step_00000003.pt",
                   handle_signals=False)  # fmt: skip
    assert branch.step == 6 and branch.resumed_from == a / "checkpoints" / "step_00000003.pt"
    stray = tmp_path / "downloads" / "last.pt"
    stray.parent.mkdir()
    stray.write_bytes((a / "checkpoints" / "last.pt").read_bytes())
    with pytest.raises(UserError, match="not inside a run's checkpoints/ folder; .* --run-dir"):
        train(_tiny(tiny_config), None, resume=stray, handle_signals=False)
    assert sorted(p.name for p in stray.parent.iterdir()) == ["last.pt"]


@pytest.mark.slow
def test_a_new_run_in_a_folder_with_an_earlier_attempts_logs_starts_them_afresh(tiny_config, tmp_path, monkeypatch):
    from gan.trainer import Trainer

    run = tmp_path / "run"
    original, calls = Trainer.d_step, []

    def crash_on_second(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory (simulated)")
        return original(self, *args)

    monkeypatch.setattr(Trainer, "d_step", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated"):
        train(_tiny(tiny_config, "hooks.checkpoint.every=100", "hooks.scalars.every=1"), run, handle_signals=False)
    assert (run / "train.log").is_file() and _rows(run)  # training had begun: the folder and its logs stay
    assert not (run / "checkpoints").exists()
    monkeypatch.setattr(Trainer, "d_step", original)
    train(_tiny(tiny_config, "hooks.scalars.every=1"), run, handle_signals=False)
    steps = [(row["step"], tag) for row in _rows(run) for tag in row if tag not in ("step", "time")]
    assert len(steps) == len(set(steps))  # one value per (step, tag): the attempt's rows were dropped


@pytest.mark.slow
def test_a_failure_before_training_removes_every_folder_it_made(tiny_config, tmp_path):
    from gan.errors import DataError

    target = tmp_path / "runs" / "new"
    cfg = _tiny(tiny_config, "data.source=folder", f"data.folder.root={tmp_path / 'nowhere'}")
    with pytest.raises(DataError):
        train(cfg, target, handle_signals=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_first_error_is_the_one_raised_and_the_stop_flag_ends_with_the_run(tiny_config, tmp_path, monkeypatch):
    from gan.hooks import ProgressHook
    from gan.interrupt import request_stop, stop_requested
    from gan.trainer import Trainer

    def boom(self, *args):
        raise RuntimeError("the real error")

    def also_failing(self, trainer):
        raise ValueError("a hook failing at the end")

    monkeypatch.setattr(Trainer, "g_step", boom)
    monkeypatch.setattr(ProgressHook, "on_fit_end", also_failing)
    with pytest.raises(RuntimeError, match="the real error"):
        train(_tiny(tiny_config), tmp_path / "a", handle_signals=False)
    monkeypatch.undo()

    from gan.hooks import Hook

    class StopAtTwo(Hook):
        every = 2

        def after_step(self, trainer):
            request_stop()

    import gan.run as run_module

    real_build_hooks = run_module.build_hooks
    monkeypatch.setattr(run_module, "build_hooks", lambda *a, **k: [StopAtTwo(), *real_build_hooks(*a, **k)])
    result = train(_tiny(tiny_config), tmp_path / "b", handle_signals=False)
    assert result.step == 2 and not result.completed
    assert not stop_requested()  # a notebook can evaluate or train again right away


@pytest.mark.slow
def test_nan_with_the_guard_off_is_still_an_error_and_never_saved(tiny_config, tmp_path, monkeypatch):
    from gan.trainer import NonFiniteLossError, Trainer

    original = Trainer._detached

    def poisoned(self, parts, total):
        return original(self, parts, total * float("nan") if self.step >= 1 else total)

    monkeypatch.setattr(Trainer, "_detached", poisoned)
    cfg = _tiny(tiny_config, "hooks.nan_guard.every=0", "hooks.checkpoint.every=0")
    with pytest.raises(NonFiniteLossError):
        train(cfg, tmp_path / "run", handle_signals=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_the_last_checkpoint_is_written_before_the_final_evaluation(tiny_config, tmp_path, monkeypatch):
    """A hard interrupt (a second Ctrl-C) during the end-of-run evaluation cannot lose the trained steps."""
    from gan.checkpoint import load_checkpoint
    from gan.hooks import PairedL1Hook

    original = PairedL1Hook.after_step

    def interrupted_at_the_end(self, trainer):
        if trainer.step == 4:
            raise KeyboardInterrupt
        original(self, trainer)

    monkeypatch.setattr(PairedL1Hook, "after_step", interrupted_at_the_end)
    cfg = _tiny(tiny_config, "train.steps=4", "train.lr_decay_steps=2", "hooks.checkpoint.every=100")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", handle_signals=False)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 4


@pytest.mark.slow
def test_final_evaluation_joins_the_saved_hook_state(tiny_config, tmp_path):
    from gan.checkpoint import load_checkpoint

    cfg = _tiny(tiny_config, "train.steps=4", "train.lr_decay_steps=2", "hooks.checkpoint.every=100")
    train(cfg, tmp_path / "run", handle_signals=False)
    history = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["hooks"]["PairedL1Hook"]["history"]
    assert [step for step, _ in history] == [0, 3, 4]


def test_train_checks_configs_made_without_load_run_config(tiny_config, tmp_path):
    import dataclasses

    from gan.errors import ConfigError

    cfg = _tiny(tiny_config)
    bad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr_decay_steps=100))
    with pytest.raises(ConfigError, match="train.lr_decay_steps: 100 exceeds train.steps = 6"):
        train(bad, tmp_path / "run", handle_signals=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_crash_never_re_saves_a_torn_state_even_when_a_later_hook_changed(tiny_config, tmp_path, monkeypatch):
    """The end-of-run re-save (after final evaluations) applies only to a state on_fit_end judged worth keeping: a
    stateful hook after the checkpoint hook plus a crash inside step 4 must leave last.pt equal to step 3's file."""
    import gan.run as run_module
    from gan.checkpoint import load_checkpoint
    from gan.hooks import Hook
    from gan.trainer import Trainer

    class Counter(Hook):
        every = 1

        def __init__(self):
            self.count = 0

        def after_step(self, trainer):
            self.count += 1

        def state_dict(self):
            return {"count": self.count}

    real_build_hooks, original, calls = run_module.build_hooks, Trainer.g_step, []

    def crash_in_step_four(self, *args):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("out of memory (simulated)")
        return original(self, *args)

    monkeypatch.setattr(run_module, "build_hooks", lambda *a, **k: [*real_build_hooks(*a, **k), Counter()])
    monkeypatch.setattr(Trainer, "g_step", crash_in_step_four)
    cfg = _tiny(tiny_config, "train.n_critic=1", "hooks.checkpoint.every=3", "hooks.checkpoint.keep=5")
    with pytest.raises(RuntimeError, match="simulated"):
        train(cfg, tmp_path / "run", handle_signals=False)
    folder = tmp_path / "run" / "checkpoints"
    last, step3 = load_checkpoint(folder / "last.pt"), load_checkpoint(folder / "step_00000003.pt")
    assert last["step"] == 3
    for net in ("G", "D"):
        assert all(torch.equal(last[net][k], step3[net][k]) for k in step3[net])


@pytest.mark.slow
def test_resuming_an_older_checkpoint_into_its_own_run_is_refused(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(_tiny(tiny_config), run, handle_signals=False)
    with pytest.raises(UserError, match=r"step 3 is not the newest checkpoint .*\(step 6\).* --run-dir"):
        train(_tiny(tiny_config), run, resume=run / "checkpoints" / "step_00000003.pt", handle_signals=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt", "step_00000003.pt",
                                                                       "step_00000006.pt"]  # fmt: skip


@pytest.mark.slow
def test_a_missing_inception_file_is_found_before_any_folder_or_training(tiny_config, tmp_path):
    from gan.metrics.inception import WeightsError

    cfg = _tiny(tiny_config, "hooks.fid.every=3", "hooks.fid.extractor=inception")
    with pytest.raises(WeightsError, match="6726825d"):
        train(cfg, tmp_path / "runs" / "a", handle_signals=False)
    assert not (tmp_path / "runs").exists()
    cfg = _tiny(tiny_config, "hooks.fid.every=3", f"metrics.inception_weights={tmp_path / 'typo.pth'}")
    with pytest.raises(WeightsError, match="typo.pth"):  # auto, but with an explicit path: never replaced
        train(cfg, tmp_path / "runs" / "b", handle_signals=False)
    assert not (tmp_path / "runs").exists()


def test_run_folders_started_in_the_same_second_differ(tmp_path, monkeypatch):
    import gan.run as run_module

    monkeypatch.setattr(run_module.time, "strftime", lambda fmt: "20261201-120000")
    first = run_module._new_run_dir(tmp_path)
    first.mkdir()
    second = run_module._new_run_dir(tmp_path)
    assert (first.name, second.name) == ("20261201-120000", "20261201-120000-2")


@pytest.mark.slow
def test_a_diverged_run_stopped_by_a_signal_is_still_exit_3(tiny_config, tmp_path, monkeypatch):
    """NaN guard off, a non-finite loss, then a stop request: not a clean stop (exit 0) but NonFiniteLossError."""
    import gan.run as run_module
    from gan.hooks import Hook
    from gan.interrupt import request_stop
    from gan.trainer import NonFiniteLossError, Trainer

    class StopAtTwo(Hook):
        every = 2

        def after_step(self, trainer):
            request_stop()

    original, real_build_hooks = Trainer._detached, run_module.build_hooks

    def poisoned(self, parts, total):
        return original(self, parts, total * float("nan") if self.step >= 1 else total)

    monkeypatch.setattr(Trainer, "_detached", poisoned)
    monkeypatch.setattr(run_module, "build_hooks", lambda *a, **k: [StopAtTwo(), *real_build_hooks(*a, **k)])
    with pytest.raises(NonFiniteLossError):
        train(_tiny(tiny_config, "hooks.nan_guard.every=0"), tmp_path / "run", handle_signals=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_runs_classifier_is_retrained_when_it_was_made_for_other_settings(tiny_config, tmp_path, caplog):
    from gan.build import build_data, obtain_classifier
    from gan.metrics.classifier import classifier_path, load_classifier

    cfg = _tiny(tiny_config, "metrics.classifier.steps=3")
    data = build_data(cfg.data)
    cpu = torch.device("cpu")
    obtain_classifier(tmp_path, data, cfg, cpu)
    first = classifier_path(tmp_path).stat().st_mtime_ns
    with caplog.at_level("WARNING", logger="gan"):
        obtain_classifier(tmp_path, data, cfg, cpu)  # the same settings: loaded
    assert classifier_path(tmp_path).stat().st_mtime_ns == first and "replacing it" not in caplog.text
    other = _tiny(tiny_config, "metrics.classifier.steps=4")
    with caplog.at_level("WARNING", logger="gan"):
        obtain_classifier(tmp_path, data, other, cpu)
    assert "replacing it" in caplog.text
    assert load_classifier(classifier_path(tmp_path))[1]["report"]["train_steps"] == 4


# ------------------------------------------------------------------------------------------ run folders are owned
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        # b's only image stays in training; c holds 1 of its 10 out: 1 source for translations into a
        (
            {"a": 20, "b": 1, "c": 10},
            r"domain a: FID and KID need at least 2 translations .* which have 1 \(b 0, c 1\)",
        ),
        ({"a": 20, "b": 20, "c": 1}, r"domain c: 1 real image\(s\) in the train split"),
    ],
)
def test_a_domain_too_small_for_the_fid_hook_is_refused_before_the_run_folder(tiny_config, tmp_path, counts, message):
    write_domains(tmp_path / "data", counts)
    cfg = load_run_config(
        [tiny_config],
        ["data.source=folder", f"data.folder.root={tmp_path / 'data'}", "hooks.lipschitz.every=0"],
    )
    with pytest.raises(UserError, match=rf"hooks\.fid: {message}.*hooks\.fid\.every: 0"):
        train(cfg, tmp_path / "run", handle_signals=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_refused_resume_leaves_config_logs_and_events_as_they_were(tiny_config, tmp_path, monkeypatch):
    from gan import run as run_module

    run = tmp_path / "run"
    train(_tiny(tiny_config), run, handle_signals=False)
    (run / "checkpoints" / "last.pt").unlink()  # resume from step 3: the purge would drop steps 4-6
    before = _snapshot(run)

    def failing(*args, **kwargs):
        raise UserError("a check that fails after the trainer is built")

    monkeypatch.setattr(run_module, "build_hooks", failing)
    with pytest.raises(UserError, match="fails after"):
        train(_tiny(tiny_config, "train.g_lr=0.0002"), run, resume="auto", handle_signals=False)
    after = _snapshot(run)
    assert after.pop("status.json") != before.pop("status.json")  # says how this attempt ended
    assert after.pop("train.log").startswith(before.pop("train.log"))  # appended to, never rewritten
    assert after == before  # config.yaml, scalars.jsonl, events and checkpoints untouched


@pytest.mark.slow
def test_a_corrupt_run_classifier_is_found_before_a_resume_writes(tiny_config, tmp_path):
    run = tmp_path / "run"
    train(_tiny(tiny_config, "hooks.fid.every=3"), run, handle_signals=False)
    (run / "classifier.pt").write_bytes(b"not a classifier")
    before = _snapshot(run)
    with pytest.raises(UserError, match="classifier.pt"):
        train(_tiny(tiny_config, "hooks.fid.every=3", "train.steps=9"), run, resume="auto", handle_signals=False)
    assert _snapshot(run) == before


@pytest.mark.slow
def test_resume_auto_in_a_folder_without_checkpoints_trains_its_config(tiny_config, tmp_path, capsys):
    from gan.cli import train_main

    run = tmp_path / "run"
    run.mkdir()
    text = tiny_config.read_text().replace("steps: 6", "steps: 2").replace("lr_decay_steps: 3", "lr_decay_steps: 1")
    (run / "config.yaml").write_text(text)  # an attempt that stopped before its first checkpoint
    args = ["--resume", "auto", "--run-dir", str(run), "--set", "hooks.fid.every=0", "--set", "hooks.lipschitz.every=0"]
    assert train_main(args) == 0
    assert "starting it again from its config.yaml" in capsys.readouterr().err
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    assert (run / "config.before-step0.yaml").read_text() == text  # what was there is kept


@pytest.mark.slow
def test_resume_into_a_folder_with_another_runs_files_is_refused(tiny_config, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(_tiny(tiny_config), a, handle_signals=False)
    b.mkdir()
    (b / "config.yaml").write_text("another run\n")
    (b / "scalars.jsonl").write_text("")
    with pytest.raises(UserError, match=r"b: holds another run's files \(config.yaml, scalars.jsonl\)"):
        train(_tiny(tiny_config), b, resume=a / "checkpoints" / "last.pt", handle_signals=False)
    assert sorted(p.name for p in b.iterdir()) == ["config.yaml", "scalars.jsonl"]


@pytest.mark.parametrize("where", ["file", "under-file", "unwritable"])
def test_a_run_dir_that_cannot_be_a_folder_is_one_line(tiny_config, tmp_path, monkeypatch, where):
    from gan import outputs

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    run_dir = {"file": blocker, "under-file": blocker / "run", "unwritable": tmp_path / "ro" / "run"}[where]
    message = {"file": "is a file, not a folder", "under-file": "blocker is a file", "unwritable": "permission denied"}
    if where == "unwritable":
        (tmp_path / "ro").mkdir()
        real = os.access
        monkeypatch.setattr(outputs.os, "access", lambda p, mode: real(p, mode) and Path(p).name != "ro")
    with pytest.raises(UserError, match=rf"--run-dir .*{message[where]}"):
        train(_tiny(tiny_config), run_dir, handle_signals=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["blocker", "tiny.yaml"] + (["ro"] if where == "unwritable" else [])
    )


def test_skipped_images_are_one_warning_and_each_is_named_in_train_log(tiny_config, tmp_path, caplog):
    import logging

    write_domains(tmp_path / "data", {"a": 6, "b": 6, "c": 6})
    for name in ("a", "b"):
        (tmp_path / "data" / name / "bad.png").write_bytes(b"not an image")
    sets = ["data.source=folder", f"data.folder.root={tmp_path / 'data'}", "data.skip_bad_images=true"]
    with caplog.at_level(logging.WARNING, logger="gan"):
        train(
            _tiny(tiny_config, *sets, "train.steps=1", "train.lr_decay_steps=1"), tmp_path / "run", handle_signals=False
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "skip" in r.getMessage()]
    assert warnings == [f"data.skip_bad_images: skipped 2 file(s): {tmp_path / 'data' / 'a' / 'bad.png'}: cannot "
                        "read image (cannot identify image file "
                        f"'{tmp_path / 'data' / 'a' / 'bad.png'}'); 1 more in train.log"]  # fmt: skip
    log = (tmp_path / "run" / "train.log").read_text()
    assert all(f"data.skip_bad_images: skipped {tmp_path / 'data' / name / 'bad.png'}: " in log for name in "ab")
