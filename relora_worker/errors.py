"""Errors the worker reports to its caller, each with the exit code the CLI documents.

A :class:`ReloraError` always carries a one-line message that names the file, field or URI at fault and
says what was expected; the CLI prints it and exits with :attr:`ReloraError.exit_code`.
"""

from __future__ import annotations

import signal

from relora_contract.exit_codes import ExitCode

# The contract's codes (relora_contract.exit_codes), under the names the worker's modules use.
EXIT_OK = ExitCode.OK
EXIT_INTERNAL = ExitCode.INTERNAL
EXIT_BAD_INPUT = ExitCode.BAD_INPUT
EXIT_BELOW_THRESHOLD = ExitCode.BELOW_THRESHOLD
EXIT_STORAGE = ExitCode.STORAGE
EXIT_TERMINATED = ExitCode.TERMINATED
EXIT_INTERRUPTED = ExitCode.INTERRUPTED


class ReloraError(Exception):
    """Base class of every expected failure; ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_INTERNAL


class BadInputError(ReloraError, ValueError):
    """A model, adapter, dataset, field, option or URI is wrong. Nothing is published."""

    exit_code = EXIT_BAD_INPUT


class StorageError(ReloraError):
    """Object storage is unreachable, refuses access or times out (after bounded retries)."""

    exit_code = EXIT_STORAGE


class PublishConflict(StorageError):
    """Another publisher made its version current first; this one's version was withdrawn."""


class Terminated(BaseException):
    """SIGTERM/SIGINT arrived: stop, publish nothing partial. A BaseException, like KeyboardInterrupt, so that
    no ``except Exception`` on the way up turns it into a different error."""

    reason = "Terminated"

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_TERMINATED
        name = signal.Signals(signum).name
        super().__init__(f"terminated by {name} before finishing; nothing of this run was published")
