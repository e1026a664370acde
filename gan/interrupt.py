"""A process-wide stop request (Ctrl-C, SIGTERM) that long loops honour between their iterations.

The training CLI's signal handler calls :func:`request_stop`; the trainer checks :func:`stop_requested` after every
step, and slow work inside a hook (training the domain classifier, extracting features) calls :func:`check_stop`,
which raises :class:`StopRequested` so that the run ends within seconds and writes its checkpoint. The flag is
only ever set by an explicit request, so library use without the CLI is unaffected.
"""

from __future__ import annotations

import threading

_flag = threading.Event()


class StopRequested(Exception):  # noqa: N818 - a request, not an error
    """Raised by :func:`check_stop` inside long work after a stop was requested."""


def request_stop() -> None:
    """Ask every loop that checks to stop at its next opportunity."""
    _flag.set()


def stop_requested() -> bool:
    return _flag.is_set()


def clear_stop() -> None:
    """Forget an earlier request (a new run in the same process starts clean)."""
    _flag.clear()


def check_stop() -> None:
    """Raise StopRequested if a stop was requested; long loops call this once per iteration."""
    if _flag.is_set():
        raise StopRequested
