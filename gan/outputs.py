"""Output paths checked before any work: a file or folder a command will write must be writable where it points, so
that a bad path is one line naming the option, the path and the problem, before a checkpoint is loaded or a
statistic computed, and nothing is created by the check itself.

The rule for missing folders: every command creates the missing parent folders of a file it writes, and the
missing folders of an output folder (as ``mkdir -p`` would). The check only makes sure that they can be created:
no file stands where one of them would go, and the nearest existing folder above them is writable."""

from __future__ import annotations

import os
from pathlib import Path

from gan.errors import UserError, reason


def check_output_file(path: Path, option: str, force: bool = True, hint: str = "give a file name") -> None:
    """``path`` can be written as a file: not a folder (``hint`` says what to give instead) nor a device, pipe or
    broken link; no file where a parent folder should be; the folder it goes into writable (or creatable). An
    existing file is refused unless ``force`` (pass True where replacing is the command's normal behaviour), and
    must be writable itself."""
    label = f"{option} {path}"
    try:
        if path.is_dir():
            raise UserError(f"{label}: is a folder; {hint}")
        if path.exists() or path.is_symlink():
            _check_existing_file(path, label, force)
        _check_writable(_nearest_folder(path.parent, label), label)
    except OSError as exc:  # a name too long, a folder on the way we may not look into: whatever stat() refuses
        raise _os_error(label, exc) from None


def check_output_folder(path: Path, option: str, hint: str = "give a folder name") -> None:
    """``path`` can be written into as a folder: not a file (``hint`` says what to give instead), no file where
    one of its parents should be, and writable, or creatable under a writable folder."""
    label = f"{option} {path}"
    try:
        if path.exists() and not path.is_dir():
            raise UserError(f"{label}: is a file, not a folder; {hint}")
        _check_writable(_nearest_folder(path, label), label)
    except OSError as exc:
        raise _os_error(label, exc) from None


def _os_error(label: str, exc: OSError) -> UserError:
    if isinstance(exc, PermissionError):
        return UserError(f"{label}: permission denied: a folder on the way cannot be searched")
    return UserError(f"{label}: {reason(exc)}")


def _check_existing_file(path: Path, label: str, force: bool) -> None:
    if not path.exists():
        raise UserError(f"{label}: is a broken symbolic link (to {os.readlink(path)})")
    if not path.is_file():
        raise UserError(f"{label}: exists and is not a regular file (a device, pipe or socket); give a file name")
    if not force:
        raise UserError(f"{label}: exists; pass --force to replace it")
    if not os.access(path, os.W_OK):
        raise UserError(f"{label}: permission denied (the file is read-only)")


def _nearest_folder(path: Path, label: str) -> Path:
    """The folder at or above ``path`` that exists: where the missing ones would be created. A file or a broken
    link in the way is refused (creating a folder there would fail)."""
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
        if candidate.exists():
            raise UserError(f"{label}: {candidate} is a file, not a folder")
        if candidate.is_symlink():
            raise UserError(f"{label}: {candidate} is a broken symbolic link (to {os.readlink(candidate)})")
    raise UserError(f"{label}: no existing folder above it (was the working folder deleted?)")


def _check_writable(folder: Path, label: str) -> None:
    """New entries can be made in ``folder`` (write and search permission; a read-only file system says so)."""
    if os.access(folder, os.W_OK | os.X_OK):
        return
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        raise UserError(f"{label}: permission denied: {folder} is on a read-only file system")
    raise UserError(f"{label}: permission denied: cannot write in {folder}")
