"""Errors caused by what a user gave us (a config, an image, a checkpoint): the CLIs print them in one line."""


class UserError(Exception):
    """Bad input from the user; the CLIs print ``str(error)`` and exit with code 2."""


class ConfigError(UserError):
    """A config file or override is invalid."""


class DataError(UserError):
    """A dataset on disk is missing, empty or unreadable."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or does not match the run."""


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
