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
    with pytest.raises(CheckpointError, match=r"corrupt.pt: not a checkpoint \(not the zip archive torch.save"):
        ck.load_checkpoint(corrupt)  # one line of ours, not torch's advice about weights_only
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


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_the_tensor_data_is_detected(tmp_path):
    """torch.load does not check the zip members' CRCs: one flipped bit of a weight would load as a changed model."""
    state = _state(3)
    state["G"] = {"w": torch.arange(100_000, dtype=torch.float32)}  # 400 kB: the file's middle lies in its data
    path = tmp_path / "last.pt"
    ck.atomic_save(state, path)
    assert ck.load_checkpoint(path)["step"] == 3
    _flip(path, path.stat().st_size // 2)
    assert not torch.equal(torch.load(path, weights_only=True)["G"]["w"], state["G"]["w"])  # torch alone: silent
    with pytest.raises(CheckpointError, match=r"last.pt: damaged checkpoint: member .*/data/\d+ fails its CRC-32"):
        ck.load_checkpoint(path)


def test_truncated_and_folder_checkpoints_are_named_as_such(tmp_path):
    path = tmp_path / "step_00000003.pt"
    ck.atomic_save(_state(3), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="step_00000003.pt: (not a checkpoint|damaged checkpoint)"):
        ck.load_checkpoint(path)
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(CheckpointError, match="folder.pt: is a folder, not a checkpoint file"):
        ck.load_checkpoint(tmp_path / "folder.pt")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"step": "abc"}, "step must be a non-negative integer"),
        ({"step": -1}, "step must be a non-negative integer"),
        ({"step": True}, "step must be a non-negative integer"),
        ({"config": [1, 2]}, "config must be a mapping, not list"),
        ({"hooks": None}, "hooks must be a mapping, not NoneType"),
        ({"rng": "x"}, "rng must be a mapping"),
        ({"domains": None}, None),  # absent domains are allowed here (older files); readers that need them check
        ({"domains": []}, "domains must be a non-empty list of names"),
        ({"domains": [1, 2]}, "domains must be a non-empty list of names"),
        ({"G": {"w": 3}}, "G must be a state dict"),
        ({"D": [torch.zeros(1)]}, "D must be a state dict"),
        ({"G_ema": {"w": "x"}}, "G_ema must be a state dict"),
    ],
)
def test_malformed_fields_are_named(tmp_path, change, message):
    state = {**_state(3), "domains": ["a", "b"], **change}
    path = tmp_path / "last.pt"
    torch.save(state, path)
    if message is None:
        assert ck.load_checkpoint(path)["step"] == 3
        return
    with pytest.raises(CheckpointError, match=f"last.pt: malformed checkpoint: {message}"):
        ck.load_checkpoint(path)


def test_latest_prefers_a_newer_step_file_over_a_stale_last_pt(tmp_path):
    """A kill during the write of last.pt (after step_N.pt was written) leaves last.pt at the previous step: resume
    must take the complete, newer step file."""
    ck.save_checkpoint(_state(3), tmp_path, 3, keep=5)
    ck.atomic_save(_state(6), ck.step_path(tmp_path, 6))  # step_6 written; the process died before last.pt
    assert ck.latest(tmp_path).name == "step_00000006.pt"
    ck.atomic_save(_state(6), tmp_path / "last.pt")
    assert ck.latest(tmp_path).name == "last.pt"  # equal steps: last.pt, as before
    (tmp_path / "last.pt").write_bytes(b"torn")  # unreadable last.pt: the newest step file
    assert ck.latest(tmp_path).name == "step_00000006.pt"


def test_stale_temporaries_are_removed(tmp_path):
    ck.save_checkpoint(_state(1), tmp_path, 1, keep=2)
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"x" * 100)
    assert ck.remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step_00000001.pt"]


@pytest.mark.parametrize("free", [0, 1 << 30])
def test_torch_reporting_a_full_disk_without_errno_becomes_enospc(tmp_path, monkeypatch, free):
    """torch's zip writer turns the ENOSPC of a full disk into 'RuntimeError: [enforce fail at inline_container.cc]';
    with (almost) no space left in the folder it is reported as the full disk it is, naming the checkpoint."""
    import errno
    import shutil
    from collections import namedtuple

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 184320 vs 184272")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(torch, "save", broken_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 31, (1 << 31) - free, free))
    target = tmp_path / "last.pt"
    if free:  # space left: some other failure, raised as it is
        with pytest.raises(RuntimeError, match="enforce fail"):
            ck.atomic_save(_state(1), target)
    else:
        with pytest.raises(OSError) as caught:
            ck.atomic_save(_state(1), target)
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # no temporary file left
