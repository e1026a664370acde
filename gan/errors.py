"""Errors caused by what a user gave us (a config, an image, a checkpoint): the CLIs print them in one line."""

import argparse
import errno
import os
import stat
from typing import NoReturn


class UserError(Exception):
    """Bad input from the user; the CLIs print ``str(error)`` and exit with code 2."""


class ConfigError(UserError):
    """A config file or override is invalid."""


class DataError(UserError):
    """A dataset on disk is missing, empty or unreadable."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or does not match the run."""


class UsageError(UserError):
    """A command line argparse refused (an unknown option, a missing or malformed value)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are UsageErrors: one line (``train.py: argument --workers: invalid int value: 'x'``,
    pointing to ``--help``) like every other error of the CLIs, instead of argparse's usage block and its own exit.
    Its sub-command parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def reason(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its ``strerror`` for OS errors), or its type's name: the part
    after ``<file>: `` in our one-line messages. ``limit`` truncates very long messages."""
    text = (getattr(exc, "strerror", None) or str(exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:limit] if limit else first


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, as the CLIs print it. A DataLoader worker re-raises our errors with its
    traceback in the message; the last line is ours, after the ``module.Class: `` prefix that the traceback adds."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
    return lines[-1].removeprefix(prefix)


# OSErrors of the storage rather than of the program: the CLIs print them in one line (exit code 2) as well.
STORAGE_ERRORS = {
    errno.ENOSPC: "no space left on the device (the disk is full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}


def storage_problem(exc: BaseException) -> str | None:
    """``<file>: <what>`` for an OSError of the storage (a full disk, a quota, missing permissions, a read-only file
    system), else None (any other error is a bug to report, with its traceback)."""
    if not isinstance(exc, OSError) or exc.errno not in STORAGE_ERRORS:
        return None
    name = exc.filename
    where = os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else "a file"
    return f"{where}: {STORAGE_ERRORS[exc.errno]}"


def special_file(path: "os.PathLike[str] | str") -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder ("a pipe (FIFO)", "a socket",
    "a device"), else None: opening a pipe to read it waits for a writer for ever."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    return "a socket" if stat.S_ISSOCK(mode) else "a device"
