"""Server processes of the test session: own process group, output to a log file, always stopped.

Every server (moto, etcd, kube-apiserver, kube-controller-manager) is started through `ManagedProcess`, so
that one place guarantees "no orphans": each child leads its own process group (we kill the whole group,
not just the leader), it gets SIGKILL from the kernel if pytest dies without cleaning up (PR_SET_PDEATHSIG),
and an atexit hook stops whatever a fixture finalizer did not.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1
_LIVE: list[ManagedProcess] = []
_LOCK = threading.Lock()  # the test kubelet starts and stops pod processes from its worker threads
# Loaded here, in the parent: dlopen() between fork and exec can deadlock in a threaded process.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGKILL it when the parent thread exits.

    Linux only, best effort: on another OS the atexit hook and fixture finalizers still stop the children.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProcessDied(RuntimeError):
    """A server exited while the tests still needed it; the message carries the tail of its log."""


class ManagedProcess:
    """One server process, started at construction, logging stdout+stderr to `log_path`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,  # own process group: stop() kills helpers the server spawned too
            preexec_fn=_die_with_parent,
        )
        self._stopped = False
        with _LOCK:
            _LIVE.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, max_bytes: int = 6000) -> str:
        """The end of the log, for failure messages."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode("utf-8", errors="replace")

    def check_alive(self) -> None:
        if not self.alive():
            raise ProcessDied(
                f"{self.name} exited with code {self.popen.returncode}; log {self.log_path}:\n{self.tail()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `timeout` seconds.

        Idempotent: a second call (finalizer, then atexit) must not signal a group id the OS may reuse.
        """
        with _LOCK:
            if self._stopped:
                return
            self._stopped = True
        self._signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)
        # Always SIGKILL the group: the leader may be gone while a child of it still holds a port.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self._log.close()
        with _LOCK, contextlib.suppress(ValueError):
            _LIVE.remove(self)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    process: ManagedProcess | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `predicate` until it is true; fail fast (with the log tail) if `process` dies meanwhile."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if process is not None:
            process.check_alive()
        try:
            if predicate():
                return
        except Exception as err:  # not ready yet (connection refused, 404, ...): keep polling
            last_error = err
        if time.monotonic() > deadline:
            tail = f"\nlog {process.log_path}:\n{process.tail()}" if process is not None else ""
            last = f" (last error: {last_error!r})" if last_error is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{last}{tail}")
        time.sleep(interval)


def stop_all() -> None:
    """Stop every process still running, newest first (clients before the servers they talk to)."""
    with _LOCK:
        live = list(_LIVE)
    for proc in reversed(live):
        proc.stop(timeout=5)


atexit.register(stop_all)
