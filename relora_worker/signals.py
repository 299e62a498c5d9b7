"""SIGTERM / SIGINT: stop at the next Python-level point, publish nothing partial, exit with a distinct code.

A Job deleted or a node drained sends SIGTERM and, after the grace period, SIGKILL. The handler raises
:class:`~relora_worker.errors.Terminated` (a BaseException, so no ``except Exception`` turns it into another
error) in the main thread; context managers then remove temporary folders and an unfinished version. Only
the few steps that make a version current run inside :func:`deferred`: a signal there is recorded and the
publish completes (the artifact is then whole and current, and the worker reports it).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from relora_worker.errors import Terminated

_state: dict[str, Any] = {"signal": None, "deferred": 0, "raised": False}
HANDLED = (signal.SIGTERM, signal.SIGINT)


def _handler(signum: int, _frame: FrameType | None) -> None:
    _state["signal"] = signum
    if _state["deferred"] == 0 and not _state["raised"]:
        _state["raised"] = True  # once: a second signal must not cut the clean-up of the first short
        raise Terminated(signum)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Handles SIGTERM/SIGINT for the duration of the block (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in HANDLED}
    _state.update(signal=None, deferred=0, raised=False)
    for s in HANDLED:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A section a signal must not interrupt: the signal is only recorded (the work then finishes)."""
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1


def received() -> int | None:
    """The signal number received so far, if any."""
    return _state["signal"]
