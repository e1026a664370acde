"""Checkpoints: atomic save (temp file + rename), retention of the last K, ``latest()``, safe load."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from gan.errors import CheckpointError, reason, special_file

log = logging.getLogger(__name__)

LAST = "last.pt"
# A torch.save that failed with less than this free in its folder failed for want of space (the partial temp file
# had filled the disk).
FULL_DISK_BYTES = 1 << 20
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def step_path(directory: Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives."""
    return directory / f"step_{step:08d}.pt"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace``: a crash or a full disk leaves
    either the old file or the new one, never a partial file. A failed write is an OSError naming ``path`` (torch's
    zip writer reports a full disk as a RuntimeError without its errno: that becomes ENOSPC)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        full = shutil.disk_usage(path.parent).free < FULL_DISK_BYTES  # measured before the temp file goes
        Path(tmp).unlink(missing_ok=True)
        code = exc.errno if isinstance(exc, OSError) else (errno.ENOSPC if full else None)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], directory: Path, step: int, keep: int) -> Path:
    """Write ``step_<step>.pt`` and ``last.pt`` atomically, then delete all but the newest ``keep`` step files."""
    path = step_path(directory, step)
    atomic_save(state, path)
    atomic_save(state, directory / LAST)
    for old in step_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def step_checkpoints(directory: Path) -> list[Path]:
    """Step checkpoints in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest(directory: Path) -> Path | None:
    """The newest checkpoint: ``last.pt``, unless a step checkpoint of a later step exists (a process killed while
    writing ``last.pt`` leaves the previous one there, but ``step_<N>.pt``, written first, complete), else the
    newest step checkpoint, else None. Both are written atomically, so either is complete."""
    steps = step_checkpoints(directory)
    last = directory / LAST
    if not last.is_file():
        return steps[-1] if steps else None
    if steps:
        newest = int(_STEP_RE.match(steps[-1].name).group(1))
        if (_step_of(last) or -1) < newest:
            return steps[-1]
    return last


def _step_of(path: Path) -> int | None:
    """The ``step`` of a checkpoint file, read without loading its tensors into memory; None if unreadable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any unreadable file: the caller falls back to the step files
        return None
    step = state.get("step") if isinstance(state, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def remove_stale_temporaries(directory: Path) -> int:
    """Delete the ``.<name>.*.tmp`` files that a process killed during :func:`atomic_save` left in ``directory``
    (as large as a checkpoint). Call it only while holding the run folder's lock: then no live writer owns them."""
    removed = 0
    if directory.is_dir():
        for path in directory.glob(".*.tmp"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


REQUIRED_KEYS = ("format", "step", "config", "G", "D", "opt_G", "opt_D", "sched_G", "sched_D", "rng", "hooks")
FORMAT = "spectral-gan/1"


def check_integrity(path: Path, what: str = "checkpoint") -> None:
    """A CheckpointError unless ``path`` is an intact zip archive, the format ``torch.save`` writes: every member's
    CRC-32 is checked against its data. ``torch.load`` does not check them, so a flipped byte inside a tensor would
    otherwise load silently as a changed weight."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        raise CheckpointError(f"{path}: not a {what} (not the zip archive torch.save writes)") from None
    except (OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:  # truncated or unreadable
        raise CheckpointError(f"{path}: damaged {what} ({reason(exc, 200)})") from None
    if bad is not None:
        raise CheckpointError(
            f"{path}: damaged {what}: member {bad} fails its CRC-32 check (changed or corrupted after it was written)"
        )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a missing, corrupt, foreign or malformed file (a field of the
    wrong type, a network state that is not a mapping of tensors) is a CheckpointError."""
    state = load_marked(Path(path), FORMAT, REQUIRED_KEYS, "checkpoint", "spectral-gan checkpoint", map_location)
    check_structure(Path(path), state)
    return state


def state_dict_mismatch(expected: dict[str, Any], stored: dict[str, Any]) -> str | None:
    """How a stored state dict fails to fit a model's (``expected``): missing and unexpected names, or the first
    tensor of another shape; None when it fits."""
    missing, unexpected = sorted(expected.keys() - stored.keys()), sorted(stored.keys() - expected.keys())
    if missing or unexpected:
        return f"{len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. {(missing or unexpected)[0]}"
    for key, tensor in expected.items():
        if not torch.is_tensor(stored[key]) or stored[key].shape != tensor.shape:
            shape = tuple(stored[key].shape) if torch.is_tensor(stored[key]) else type(stored[key]).__name__
            return f"{key}: {shape} in the file, {tuple(tensor.shape)} expected"
    return None


_MAPPINGS = ("config", "opt_G", "opt_D", "sched_G", "sched_D", "rng", "hooks")


def check_structure(path: Path, state: dict[str, Any]) -> None:
    """The types every reader of a checkpoint relies on; a CheckpointError naming the field otherwise. (Whether the
    tensors fit the model is checked where the model is built.)"""

    def bad(field: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: malformed checkpoint: {field} {problem}")

    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise bad("step", f"must be a non-negative integer, not {step!r:.40}")
    for key in _MAPPINGS:
        if not isinstance(state[key], dict):
            raise bad(key, f"must be a mapping, not {type(state[key]).__name__}")
    domains = state.get("domains")
    if domains is not None and (
        not isinstance(domains, (list, tuple)) or not domains or not all(isinstance(d, str) for d in domains)
    ):
        raise bad("domains", "must be a non-empty list of names")
    for key in ("G", "D", "G_ema"):
        net = state.get(key)
        if key == "G_ema" and net is None:
            continue
        if not isinstance(net, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in net.items()):
            raise bad(key, "must be a state dict (names to tensors)")


def load_marked(
    path: Path,
    format_tag: str,
    required: tuple[str, ...],
    what: str,
    kind: str,
    map_location: str | torch.device = "cpu",
    not_found: str = "",
) -> dict[str, Any]:
    """A dict saved with a ``format`` marker, read with ``weights_only=True``; every problem (missing, unreadable,
    foreign, incomplete) is a one-line CheckpointError naming the file. ``not_found`` says how to make one."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a {what.removesuffix(' file')} file")
    if special_file(path) is not None:
        raise CheckpointError(f"{path}: is {special_file(path)}, not a {what.removesuffix(' file')} file")
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found{'; ' + not_found if not_found else ''}")
    check_integrity(path, what)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt, foreign or unsafe (pickled object) files
        raise CheckpointError(f"{path}: not a readable {what} ({reason(exc, 200)})") from None
    if not isinstance(state, dict) or state.get("format") != format_tag:
        raise CheckpointError(f"{path}: not a {kind} (no '{format_tag}' format marker)")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path}: {what} is missing {', '.join(missing)}")
    return state
