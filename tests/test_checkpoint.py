"""Checkpoints: atomic writes, retention, latest(), and safe, checked loading."""

import pickle

import pytest
import torch

from gan import checkpoint as ck
from gan.errors import CheckpointError


def _state(step):
    base = {key: {} for key in ck.REQUIRED_KEYS}
    base.update(format=ck.FORMAT, step=step, G={"w": torch.full((2,), float(step))})
    return base


def test_save_keeps_last_k_and_last_pt(tmp_path):
    for step in (10, 20, 30, 40):
        ck.save_checkpoint(_state(step), tmp_path, step, keep=2)
    assert [p.name for p in ck.step_checkpoints(tmp_path)] == ["step_00000030.pt", "step_00000040.pt"]
    assert ck.latest(tmp_path).name == "last.pt"
    assert ck.load_checkpoint(ck.latest(tmp_path))["step"] == 40
    assert not list(tmp_path.glob(".*tmp"))


def test_failed_save_leaves_old_file_and_no_partial(tmp_path, monkeypatch):
    ck.save_checkpoint(_state(1), tmp_path, 1, keep=3)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(_state(2), tmp_path, 2, keep=3)
    monkeypatch.undo()
    assert ck.load_checkpoint(tmp_path / "last.pt")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_00000001.pt"]


def test_latest_falls_back_to_newest_step_file(tmp_path):
    assert ck.latest(tmp_path) is None
    ck.atomic_save(_state(5), ck.step_path(tmp_path, 5))
    ck.atomic_save(_state(50), ck.step_path(tmp_path, 50))
    assert ck.latest(tmp_path).name == "step_00000050.pt"


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        ck.load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable checkpoint"):
        ck.load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a spectral-gan checkpoint"):
        ck.load_checkpoint(foreign)
    partial = tmp_path / "partial.pt"
    torch.save({"format": ck.FORMAT, "step": 1}, partial)
    with pytest.raises(CheckpointError, match="missing config"):
        ck.load_checkpoint(partial)


class _Evil:
    def __reduce__(self):
        return (print, ("executed",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"format": ck.FORMAT, "payload": _Evil()}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        ck.load_checkpoint(path)
