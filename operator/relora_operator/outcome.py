"""The adapter's state in a few words (pure; no API calls): from its plan and what its Jobs showed, the phase,
Ready/Progressing/Degraded and the reason and message every status and Event carries. status.py assembles
the rest of the status dict around the Outcome decided here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relora_contract.result import ResultRecord, RunStatus
from relora_contract.summary import Command, TerminationSummary, outcome
from relora_contract.verdict import Verdict, verdict_of
from relora_operator import adapter_releases, improve
from relora_operator.conditions import ready_reason
from relora_operator.decisions import AdapterPlan
from relora_operator.views import AdapterView, JobView


@dataclass(frozen=True)
class Outcome:
    """The adapter's state in a few words: drives phase, conditions and the Event."""

    phase: str
    ready: bool
    reason: str
    message: str
    progressing: bool = False
    degraded: bool = False


@dataclass(frozen=True)
class Observed:
    """What the operator saw of the adapter's Jobs this time."""

    job: JobView | None = None
    projection: JobView | None = None
    summary: TerminationSummary | None = None  # termination message of the adaptation Job's last pod: the verdict
    result: ResultRecord | None = None  # result.json, read when needs_result says so: numbers, not the verdict
    projection_summary: TerminationSummary | None = None
    pod_end: str | None = None  # how the Job's last pod ended ("OOMKilled, exit code 137"): said without a summary
    pod_problem: str | None = None  # why a pod of the current Job cannot start (secret missing, image pull)
    early: ResultRecord | None = None  # the first ready version's result.json while its Job improves
    refusal: Any = None  # refusals.Refusal: the API server refused to create the adapter's (or projection) Job
    storage_error: str | None = None  # the finished Job's result.json was needed and storage did not answer
    lost_limit: int = 2  # re-creations of a lost Job before the adapter fails (RELORA_JOB_BACKOFF_LIMIT)
    recreated: bool = False  # this pass re-created the adapter's Job after it disappeared before it finished
    hold: Any = None  # rollout.Hold: the release's spec.rollout keeps the adapter's Job from starting now
    promotion_held: bool = False  # outside the canary of a release whose gate has not passed: keep serving
    batch_left: str | None = None  # the batch Job that ended without this adapter's outcome: its own Job is next


# A result Ready for the release that is not served yet (outside the canary, before its gate passed).
HELD = "WaitingForCanary"


def _problem(problem: str | None) -> str:
    return f"; its pod cannot start: {problem}" if problem else ""


def _served_text(served: Mapping[str, Any] | None, adapter: AdapterView) -> str:
    if served:
        return f"{served.get('adapterUri')} (release {served.get('release')})"
    spec = adapter.spec
    return f"{spec.adapter_uri} (release {spec.trained_on_release})" if spec else "nothing"


# Neither a summary nor result.json: every number of the worker's is unknown.
_NOTHING = TerminationSummary(command=Command.READAPT, status=RunStatus.ERROR)


def worker_record(summary: TerminationSummary | None, result: ResultRecord | None) -> TerminationSummary:
    """The worker's numbers: the summary's, filled from result.json where the summary lacks them."""
    return outcome(summary, result) or _NOTHING


def needs_result(job: JobView, summary: TerminationSummary | None) -> bool:
    """Whether the finished Job's result.json must be read: its summary published an adapter but lacks the
    numbers (an older worker's summary), or the Job succeeded and its pod (with the summary) is gone. A run
    that published nothing has no result.json to read: its summary (or the Job) says why."""
    if summary is None:
        return job.state == "Succeeded"
    return summary.quality is None and verdict_of(summary) in (Verdict.READY, Verdict.BELOW_THRESHOLD)


def summary_of(
    job: JobView, summary: TerminationSummary | None, result: ResultRecord | None
) -> TerminationSummary | None:
    """The summary the verdict is read from: the pod's. When the pod of a Job that succeeded is gone (garbage
    collected, its node lost) or its summary cannot be read, the same record made again from result.json: the
    worker makes its summary from that record (TerminationSummary.readapt with ResultRecord.verdict_code)."""
    if summary is not None or result is None or job.state != "Succeeded":
        return summary
    return TerminationSummary.readapt(result, result.verdict_code)


def failure_outcome(
    job: JobView, verdict: Verdict, record: TerminationSummary, pod_end: str | None, served_text: str, attempts: int
) -> Outcome:
    """A finished Job whose verdict is not ready: below threshold (Degraded), bad input, past its deadline,
    failed after its retries; without a summary (killed before writing one) the Job and its pod say why."""
    error = record.error or job.message or "the worker failed without a message"
    if verdict == Verdict.BELOW_THRESHOLD:
        return Outcome(
            "Degraded",
            False,
            "BelowThreshold",
            f"quality {record.quality} stayed below the threshold {record.threshold} "
            f"after the budget; still serving {served_text}",
            degraded=True,
        )
    if verdict == Verdict.BAD_INPUT:
        return Outcome("Failed", False, "BadInput", f"{error}; still serving {served_text}", degraded=True)
    if job.reason == "DeadlineExceeded":
        limit = f" ({job.active_deadline_seconds} s)" if job.active_deadline_seconds else ""
        return Outcome(
            "Failed",
            False,
            "DeadlineExceeded",
            f"Job {job.name} ran longer than its activeDeadlineSeconds{limit} and was stopped (spec."
            f"activeDeadlineSeconds, default RELORA_JOB_ACTIVE_DEADLINE_SECONDS); still serving {served_text}",
            degraded=True,
        )
    if verdict == Verdict.UNKNOWN and job.state == "Succeeded":
        # Exit 0, but neither its summary (gone with its pod) nor its result.json says what was published.
        words = f"Job {job.name} succeeded, but its pod's summary is gone and its output has no result.json"
    elif verdict == Verdict.UNKNOWN:
        ended = f" (its last pod: {pod_end})" if pod_end else ""
        words = f"worker failed after {attempts} attempt(s) and left no summary{ended}: "
        words += job.message or "the Job gives no message"
    else:
        words = f"worker failed after {attempts} attempt(s) (exit code {record.exit_code}): {error}"
    return Outcome("Failed", False, "JobFailed", f"{words}; still serving {served_text}", degraded=True)


def outcome_of(adapter: AdapterView, plan: AdapterPlan, seen: Observed) -> Outcome:
    """The adapter's state in a few words. The plan alone decides when it needs no Job (invalid, waiting for a
    release, as given, restored, up to date); otherwise what its Job (or its absence) shows does."""
    served_text = _served_text(adapter.status.get("served"), adapter)
    target = plan.target.version if plan.target else "?"
    settled = _plan_outcome(plan, served_text, target) or _restored_outcome(adapter, plan, seen, served_text, target)
    if settled is not None:
        return settled
    if plan.kind == "UpToDate":
        return _up_to_date_outcome(adapter.status, target)
    if seen.job is None:
        return _jobless_outcome(adapter, plan, seen, served_text, target)
    return _job_outcome(adapter, seen.job, seen, served_text, target)


def _plan_outcome(plan: AdapterPlan, served_text: str, target: str) -> Outcome | None:
    """The plan kinds whose outcome is fixed by the plan itself (its message says why), or None."""
    if plan.kind == "Invalid":
        return Outcome("Failed", False, "InvalidSpec", f"{plan.message}; still serving {served_text}", degraded=True)
    if plan.kind == "Verifying":
        return Outcome("Queued", False, "Queued", plan.message, progressing=True)
    if plan.kind == "ReleaseChanged":
        return Outcome("Failed", False, "ReleaseChanged", plan.message, degraded=True)
    if plan.kind == "JobLost":
        return Outcome("Failed", False, "JobLost", plan.message, degraded=True)
    if plan.kind == "NoRelease":
        return Outcome("Pending", False, "NoRelease", plan.message)
    if plan.kind == "MissingRelease":
        return Outcome("Failed", False, "ReleaseNotFound", plan.message, degraded=True)
    if plan.kind == "AsGiven":
        return Outcome("Ready", True, "TrainedOnRelease", f"the adapter as given is for release {target}")
    if plan.kind == "PinMissing":
        return Outcome(
            "Failed", False, "RollbackTargetNotFound", f"{plan.message}; still serving {served_text}", degraded=True
        )
    return None


def _restored_outcome(
    adapter: AdapterView, plan: AdapterPlan, seen: Observed, served_text: str, target: str
) -> Outcome | None:
    """An artifact already made serves (again): pinned by spec.pinnedRelease, or restored for the newest release
    (a rollback, or the canary's gate passing); None for the other plans."""
    if plan.kind == "Pinned" and plan.restored is not None:
        pin = plan.restored
        return Outcome(
            "RolledBack",
            False,
            "RolledBack",
            f"rolled back (spec.pinnedRelease): serving {adapter_releases.describe(pin)}; unset spec.pinnedRelease "
            f"to serve release {target}'s adapter again",
        )
    if plan.kind != "Restored" or plan.restored is None:
        return None
    earlier = plan.restored
    quality = f" (quality {earlier['quality']:.4g})" if earlier.get("quality") is not None else ""
    if seen.promotion_held:
        return _held(target, str(earlier.get("job")), quality, served_text)
    if ready_reason(adapter.status) == HELD and earlier.get("job") == adapter.status.get("job"):
        return Outcome(
            "Ready",
            True,
            "CanaryPassed",
            f"the canary of release {target} passed: serving the adapter Job {earlier.get('job')} produced "
            f"for it{quality}",
        )
    return Outcome(
        "Ready",
        True,
        "RestoredFromHistory",
        f"serving again the adapter Job {earlier.get('job')} produced for release {target}, the newest{quality}",
    )


def _up_to_date_outcome(old: Mapping[str, Any], target: str) -> Outcome:
    """Ready for the newest release. Keeps the words of the pass that made it Ready, so an idle resync writes
    nothing."""
    if old.get("phase") == "Ready" and old.get("message"):
        return Outcome("Ready", True, reason_or(old, "Readapted"), old["message"])
    return Outcome("Ready", True, "Readapted", f"ready for release {target}")


def _jobless_outcome(adapter: AdapterView, plan: AdapterPlan, seen: Observed, served_text: str, target: str) -> Outcome:
    """The adapter needs a Job that does not exist: refused by the API server, lost, held by the rollout, or
    waiting (for its projection, for a free slot)."""
    if seen.refusal is not None:
        return Outcome(
            "Failed", False, seen.refusal.reason, f"{seen.refusal.message}; still serving {served_text}", degraded=True
        )
    if plan.adaptation is not None and _job_lost(adapter, plan.adaptation.job_name):
        return _lost_outcome(adapter.status, plan.adaptation.job_name, seen.lost_limit, served_text)
    if seen.hold is not None:
        return Outcome(
            "Queued",
            False,
            seen.hold.reason,
            f"{seen.hold.message}; still serving {served_text}",
            progressing=seen.hold.reason == HELD,
        )
    if seen.batch_left:
        return Outcome(
            "Queued",
            False,
            "BatchUnfinished",
            f"batch Job {seen.batch_left} ended before it finished this adapter; queued for a Job of its own for "
            f"release {target}; still serving {served_text}",
            progressing=True,
        )
    return _waiting_outcome(plan, seen, served_text, target)


def _lost_outcome(old: Mapping[str, Any], name: str, lost_limit: int, served_text: str) -> Outcome:
    """Job ``name`` disappeared before it finished: re-created up to the backoff limit, then the adapter fails
    (so a Job something keeps deleting does not loop forever)."""
    lost = int(old.get("lostJobs") or 0)
    if ready_reason(old) != "JobDeleted":
        lost += 1  # found lost just now
    if lost > lost_limit:
        return Outcome(
            "Failed",
            False,
            "JobLost",
            f"Job {name} disappeared before it finished {lost} times (deleted, TTL, node drain); not re-created "
            f"again (RELORA_JOB_BACKOFF_LIMIT={lost_limit}): edit the TaskAdapter to try again; still "
            f"serving {served_text}",
            degraded=True,
        )
    return Outcome(
        "Queued",
        False,
        "JobDeleted",
        f"Job {name} disappeared before it finished (deleted, TTL, node drain); re-creating it (re-creation "
        f"{lost} of {lost_limit})",
        progressing=True,
    )


def _waiting_outcome(plan: AdapterPlan, seen: Observed, served_text: str, target: str) -> Outcome:
    """Queued behind the shared projection or the concurrency limits, unless the projection failed or its pod
    cannot start (then the user has something to fix)."""
    proj = seen.projection
    if plan.projection is not None and (proj is None or not proj.complete):
        if proj is not None and proj.failed_final:
            error = (seen.projection_summary.error if seen.projection_summary else None) or proj.message
            return Outcome(
                "Failed",
                False,
                "ProjectionFailed",
                f"delta projection {proj.name} failed: {error}; still serving {served_text}",
                degraded=True,
            )
        if seen.pod_problem:
            return Outcome(
                "Queued",
                False,
                "WaitingForProjection",
                f"the delta projection Job {plan.projection.job_name}" + _problem(seen.pod_problem),
                progressing=True,
            )
    # One message for "projection running" and "projection done, no free slot yet": an adapter that goes
    # from one to the other needs no second status write (the release's status shows the projection).
    behind = (
        f"the shared delta projection {plan.projection.from_release}->{target} (Job {plan.projection.job_name}) and "
        if plan.projection is not None
        else ""
    )
    return Outcome(
        "Queued",
        False,
        "Queued",
        f"queued for release {target}: waiting for {behind}a free slot under the concurrency limits",
        progressing=True,
    )


def _job_outcome(adapter: AdapterView, job: JobView, seen: Observed, served_text: str, target: str) -> Outcome:
    """The adaptation Job exists: suspended by Kueue, running (perhaps Ready early while it improves), or
    finished."""
    if job.state == "Suspended":
        return Outcome(
            "Queued",
            False,
            "QueuedInKueue",
            f"Job {job.name} is suspended until Kueue admits it",
            progressing=True,
        )
    if job.state == "Running" and seen.early is not None and not seen.promotion_held:
        return Outcome(*improve.ready_outcome(target, job.name, seen.early))
    if job.state == "Running":
        lost = int(adapter.status.get("lostJobs") or 0) + (1 if seen.recreated else 0)
        again = f"; re-created after it disappeared ({lost} of {seen.lost_limit})" if lost else ""
        return Outcome(
            "Adapting",
            False,
            "Adapting",
            f"re-adapting to release {target} (Job {job.name}{again})" + _problem(seen.pod_problem),
            progressing=True,
        )
    return _finished_outcome(adapter.status, job, seen, served_text, target)


def _finished_outcome(old: Mapping[str, Any], job: JobView, seen: Observed, served_text: str, target: str) -> Outcome:
    """What the finished Job's summary says (verdict_of): Ready (or held by the canary), improved or kept
    (improveAfterReady), below threshold, failed; while storage cannot give the numbers it needs, retrying."""
    if seen.storage_error and seen.result is None and needs_result(job, seen.summary):
        return Outcome(
            "Adapting",
            False,
            "StorageUnavailable",
            f"Job {job.name} finished but its result cannot be read: {seen.storage_error}; retrying",
            progressing=True,
        )
    summary = summary_of(job, seen.summary, seen.result)
    verdict = verdict_of(summary)
    record = worker_record(summary, seen.result)
    if verdict == Verdict.READY:
        improved = improve.improved_outcome(old, job.name, target, record)
        if improved is not None:
            return Outcome(*improved)
        if seen.promotion_held:
            quality = f" (quality {record.quality:.4g})" if record.quality is not None else ""
            return _held(target, job.name, quality, served_text)
        return Outcome(
            "Ready",
            True,
            "Readapted",
            f"ready for release {target}: quality {record.quality} >= threshold {record.threshold}",
        )
    kept = improve.kept_outcome(old, job.name, target, record.error or job.message or "")
    if kept is not None:
        return Outcome(*kept)
    return failure_outcome(job, verdict, record, seen.pod_end, served_text, attempts=max(1, job.failed))


def _held(target: str, job: str, quality: str, served_text: str) -> Outcome:
    return Outcome(
        "Queued",
        False,
        HELD,
        f"adapted for release {target} by Job {job}{quality}; still serving {served_text} until the canary of "
        f"release {target} passes",
        progressing=True,
    )


def _job_lost(adapter: AdapterView, job_name: str) -> bool:
    """The status says this Job was running (or was just found lost) and it is gone: deleted, not finished."""
    from relora_operator.decisions import was_running

    return was_running(adapter, job_name)


def reason_or(old: Mapping[str, Any], default: str) -> str:
    return str(ready_reason(old) or default)
