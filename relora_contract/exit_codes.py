"""The worker's exit codes: what the CLI returns, the Job's pod failure policy keys on, and the operator reads."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit status of ``relora`` (and of the worker container)."""

    OK = 0  # done: the adapter (or projection) is published
    INTERNAL = 1  # a bug or an unexpected error: retrying may help
    BAD_INPUT = 2  # a model, adapter, dataset, field, option or URI is wrong: nothing published
    BELOW_THRESHOLD = 3  # the run finished below the quality threshold: published, not ready
    STORAGE = 4  # object storage unreachable, refused or timed out after bounded retries
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM (pod deleted, node drained, deadline reached)

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "published",
    ExitCode.INTERNAL: "internal error",
    ExitCode.BAD_INPUT: "bad input",
    ExitCode.BELOW_THRESHOLD: "below threshold",
    ExitCode.STORAGE: "storage unavailable",
    ExitCode.INTERRUPTED: "interrupted (SIGINT)",
    ExitCode.TERMINATED: "terminated (SIGTERM)",
}

# Outcomes that another attempt of the same Job cannot change: its pod failure policy fails the Job at once.
FINAL: tuple[ExitCode, ...] = (ExitCode.BAD_INPUT, ExitCode.BELOW_THRESHOLD)
