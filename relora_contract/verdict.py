"""The verdict of a worker's run, read from one channel: its termination summary.

The worker writes one record on every exit (:class:`~relora_contract.summary.TerminationSummary`) and exits
with that record's ``exit_code``; the Job's podFailurePolicy keys on the exit code (Kubernetes' retry
mechanics: a final verdict is not retried), and the operator decides the adapter's status from the summary
alone, through :func:`verdict_of`. result.json only fills in numbers a summary lacks (or stands in for the
summary of a succeeded Job whose pod is gone); the pod's exit code only says, in words, how a pod ended that
left no summary.
"""

from __future__ import annotations

from enum import StrEnum

from relora_contract.exit_codes import ExitCode
from relora_contract.result import RunStatus
from relora_contract.summary import TerminationSummary


class Verdict(StrEnum):
    """What a run's end means for the adapter (or the projection) it worked on."""

    READY = "ready"  # published and ready: readapt met its threshold, project-delta (evaluate, demo) is done
    BELOW_THRESHOLD = "below-threshold"  # published, not ready: the quality stayed below the threshold
    BAD_INPUT = "bad-input"  # nothing published: an input is wrong, another attempt fails the same way
    RETRYABLE = "retryable"  # nothing published: a bug, storage, a signal; another attempt may succeed
    UNKNOWN = "unknown"  # no summary to read: the pod was killed before writing one (OOM, deadline, eviction)

    @property
    def final(self) -> bool:
        """Another attempt of the same run cannot change it (the podFailurePolicy's FailJob exit codes)."""
        return self in (Verdict.BELOW_THRESHOLD, Verdict.BAD_INPUT)


def verdict_of(summary: TerminationSummary | None) -> Verdict:
    """The one rule from a summary to its verdict: its ``status`` says published or not; of the runs that
    published nothing, its ``exit_code`` tells bad input (final) from the failures a retry may fix."""
    if summary is None:
        return Verdict.UNKNOWN
    if summary.status in (RunStatus.READY, RunStatus.OK):
        return Verdict.READY
    if summary.status == RunStatus.BELOW_THRESHOLD:
        return Verdict.BELOW_THRESHOLD
    if summary.exit_code == ExitCode.BAD_INPUT:
        return Verdict.BAD_INPUT
    return Verdict.RETRYABLE
