"""gan/run.py, the Python API: README's snippet runs as written; resume helpers; the schedule-change warning."""

import re
from pathlib import Path

import pytest
import torch

from gan.build import load_run_config
from gan.errors import UserError
from gan.run import _schedule_change, find_resume

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
