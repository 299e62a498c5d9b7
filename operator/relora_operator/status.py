"""Status of a TaskAdapter from its plan, its Jobs and the worker's summary (pure; no API calls).

The Ready condition answers "is an adapter ready for the newest release of the family?"; Degraded says the
operator is serving an older adapter because the re-adaptation fell short (below threshold) or failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relora_contract.exit_codes import ExitCode
from relora_contract.result import ResultRecord, RunStatus
from relora_contract.summary import Command, TerminationSummary, outcome
from relora_operator import adapter_releases, improve
from relora_operator.conditions import condition, human_duration, seconds_between
from relora_operator.decisions import AdapterPlan, result_recorded
from relora_operator.redaction import redact, redact_obj
from relora_operator.views import AdapterView, JobView

TERMINAL = ("Ready", "Degraded", "Failed")
EXIT_BAD_INPUT, EXIT_BELOW_THRESHOLD = ExitCode.BAD_INPUT, ExitCode.BELOW_THRESHOLD  # the contract's codes


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
    summary: TerminationSummary | None = None  # termination message of the adaptation Job's last pod
    result: ResultRecord | None = None  # result.json (used when the summary is missing)
    projection_summary: TerminationSummary | None = None
    exit_code: int | None = None  # of the last failed pod, when the summary is missing
    pod_problem: str | None = None  # why a pod of the current Job cannot start (secret missing, image pull)
    early: ResultRecord | None = None  # the first ready version's result.json while its Job improves
    refusal: Any = None  # refusals.Refusal: the API server refused to create the adapter's (or projection) Job
    storage_error: str | None = None  # the finished Job's result.json was needed and storage did not answer
    lost_limit: int = 2  # re-creations of a lost Job before the adapter fails (RELORA_JOB_BACKOFF_LIMIT)
    recreated: bool = False  # this pass re-created the adapter's Job after it disappeared before it finished
    hold: Any = None  # rollout.Hold: the release's spec.rollout keeps the adapter's Job from starting now
    promotion_held: bool = False  # outside the canary of a release whose gate has not passed: keep serving


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


def _record(summary: TerminationSummary | None, result: ResultRecord | None) -> TerminationSummary:
    """The worker's numbers: the summary's, filled from result.json where the summary lacks them."""
    return outcome(summary, result) or _NOTHING


def failure_outcome(
    job: JobView, record: TerminationSummary, exit_code: int | None, served_text: str, attempts: int
) -> Outcome:
    code = record.exit_code if record.exit_code is not None else exit_code
    error = record.error or job.message or "the worker failed without a message"
    if code == EXIT_BELOW_THRESHOLD or record.status == RunStatus.BELOW_THRESHOLD:
        return Outcome(
            "Degraded",
            False,
            "BelowThreshold",
            f"quality {record.quality} stayed below the threshold {record.threshold} "
            f"after the budget; still serving {served_text}",
            degraded=True,
        )
    if code == EXIT_BAD_INPUT:
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
    return Outcome(
        "Failed",
        False,
        "JobFailed",
        f"worker failed after {attempts} attempt(s) (exit code {code}): {error}; still serving {served_text}",
        degraded=True,
    )


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
    if _ready_reason(adapter.status) == HELD and earlier.get("job") == adapter.status.get("job"):
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
        return Outcome("Ready", True, _old_reason(old, "Readapted"), old["message"])
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
    return _waiting_outcome(plan, seen, served_text, target)


def _lost_outcome(old: Mapping[str, Any], name: str, lost_limit: int, served_text: str) -> Outcome:
    """Job ``name`` disappeared before it finished: re-created up to the backoff limit, then the adapter fails
    (so a Job something keeps deleting does not loop forever)."""
    lost = int(old.get("lostJobs") or 0)
    if _ready_reason(old) != "JobDeleted":
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
    """What the finished Job's record says: Ready (or held by the canary), improved or kept (improveAfterReady),
    failed; while storage cannot give the record, retrying."""
    record = _record(seen.summary, seen.result)
    if seen.storage_error and record.quality is None and job.state in ("Succeeded", "Failed"):
        return Outcome(
            "Adapting",
            False,
            "StorageUnavailable",
            f"Job {job.name} finished but its result cannot be read: {seen.storage_error}; retrying",
            progressing=True,
        )
    improved = improve.improved_outcome(old, job.name, target, record)
    if improved is not None and job.state == "Succeeded":
        return Outcome(*improved)
    if job.state == "Succeeded" and seen.promotion_held:
        quality = f" (quality {record.quality:.4g})" if record.quality is not None else ""
        return _held(target, job.name, quality, served_text)
    if job.state == "Succeeded":
        return Outcome(
            "Ready",
            True,
            "Readapted",
            f"ready for release {target}: quality {record.quality} >= threshold {record.threshold}",
        )
    kept = improve.kept_outcome(old, job.name, target, record.error or job.message or "")
    if kept is not None:
        return Outcome(*kept)
    return failure_outcome(job, record, seen.exit_code, served_text, attempts=max(1, job.failed))


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


def adapter_status(
    adapter: AdapterView, plan: AdapterPlan, seen: Observed, now: str, history_limit: int = 5
) -> tuple[dict[str, Any], Outcome]:
    """The whole new ``status`` of ``adapter`` (compare with the old one; write only when it differs): the old
    status, updated by what is served and recorded for this plan, then the fields and conditions every status
    carries."""
    old = adapter.status
    out = outcome_of(adapter, plan, seen)
    status: dict[str, Any] = {k: v for k, v in old.items() if k != "kopf"}
    if plan.kind == "Verifying":
        # The target's identity is being read (one storage call): nothing to say yet that is worth a status
        # write and an Event per adapter; the next pass decides.
        return status, out
    spec = adapter.spec
    _count_lost_jobs(status, old, out, seen)
    entries = adapter_releases.entries_of(old)
    if plan.kind == "AsGiven" and spec is not None:
        entries = _serve_as_given(status, spec, plan, entries, history_limit)
    elif (plan.kind == "Restored" and not seen.promotion_held) or plan.kind == "Pinned":
        entries = _serve_restored(status, plan, entries, history_limit)
    elif plan.kind == "Adapt" and seen.job is not None and plan.adaptation is not None:
        entries, out = _track_adaptation(status, adapter, plan, seen, out, entries, now, history_limit)
    if plan.kind == "UpToDate" and status.get("served") and not status["served"].get("releaseIdentity"):
        # Served before identities existed: record the identity it is now known to be ready for.
        status["served"] = {**status["served"], "releaseIdentity": plan.target_identity or None}
    _summarize(status, spec, plan, entries)
    _set_outcome(status, old, out, adapter.generation, now)
    return _cleaned(status), out


def _count_lost_jobs(status: dict[str, Any], old: Mapping[str, Any], out: Outcome, seen: Observed) -> None:
    """status.lostJobs: how often the adapter's Job disappeared before it finished (the backoff limit counts
    them). Counted once per loss, when found lost or when re-created before a pass saw it gone; a new Job
    starts its own count."""
    found_lost = out.reason in ("JobDeleted", "JobLost") and _ready_reason(old) not in ("JobDeleted", "JobLost")
    recreated_unseen = seen.recreated and _ready_reason(old) != "JobDeleted"
    if found_lost or recreated_unseen:
        status["lostJobs"] = int(old.get("lostJobs") or 0) + 1
    if seen.job is not None and old.get("job") != seen.job.name:
        status["lostJobs"] = None


def _serve_as_given(
    status: dict[str, Any], spec: Any, plan: AdapterPlan, entries: list[dict[str, Any]], history_limit: int
) -> list[dict[str, Any]]:
    """The adapter as given (trained on the newest release) is served: no Job's numbers apply, and
    status.releases records it as Ready for that release. Returns the new status.releases entries."""
    status.update(
        served={
            "release": plan.target.version if plan.target else spec.trained_on_release,
            "adapterUri": spec.adapter_uri,
            "specHash": plan.spec_hash,
            "releaseIdentity": plan.target_identity or None,
            "modelDigest": _digest_of(plan),
        },
        **_NO_JOB_NUMBERS,
        quality=None,
        timeToReadinessSeconds=None,
        job=None,
    )
    return adapter_releases.upsert(
        entries,
        {
            "release": status["served"]["release"],
            "releaseIdentity": plan.target_identity or None,
            "phase": "Ready",
            "reason": "TrainedOnRelease",
            "adapterUri": spec.adapter_uri,
            "threshold": spec.quality.threshold,
            "specHash": plan.spec_hash,
        },
        history_limit,
        status["served"],
    )


# The numbers of an adaptation run that an artifact served without one (as given, restored) does not have.
_NO_JOB_NUMBERS: dict[str, Any] = dict.fromkeys(("alpha", "beta", "strategy", "resultUri", "projectionUri"))


def _serve_restored(
    status: dict[str, Any], plan: AdapterPlan, entries: list[dict[str, Any]], history_limit: int
) -> list[dict[str, Any]]:
    """An artifact made earlier serves again (a rollback, the canary's gate passed, spec.pinnedRelease): its
    own quality and Job are shown; the adapter as given, if that is what serves, joins status.releases as its
    oldest entry. Returns the new entries."""
    earlier = plan.restored or {}
    if all(e.get("adapterUri") != earlier.get("adapterUri") for e in entries):
        entries = adapter_releases.prune([*entries, adapter_releases.clean(earlier)], history_limit, earlier)
    status.update(
        served={
            "release": earlier["release"],
            "adapterUri": earlier["adapterUri"],
            "job": earlier.get("job"),
            "specHash": plan.spec_hash,
            "releaseIdentity": earlier.get("releaseIdentity"),
        },
        **_NO_JOB_NUMBERS,
        quality=earlier.get("quality"),
        timeToReadinessSeconds=earlier.get("timeToReadinessSeconds"),
        job=earlier.get("job"),
    )
    return entries


def _track_adaptation(
    status: dict[str, Any],
    adapter: AdapterView,
    plan: AdapterPlan,
    seen: Observed,
    out: Outcome,
    entries: list[dict[str, Any]],
    now: str,
    history_limit: int,
) -> tuple[list[dict[str, Any]], Outcome]:
    """The adaptation Job's status fields: its name, the first ready version while it improves, and once it
    finished its record (read once: a Job whose end the status already records keeps the words it was given,
    so a resync writes nothing). Returns the new entries and the outcome to show."""
    job, old = seen.job, adapter.status
    assert job is not None and plan.adaptation is not None
    status["job"] = job.name
    status["projectionUri"] = plan.adaptation.projection_uri
    if seen.early is not None and out.reason == improve.IMPROVING:
        status.update(improve.early_status(seen.early, plan.adaptation.target_release, job.name, plan.spec_hash))
    already_recorded = job.finished and result_recorded(old, job)  # Ready early: its Job's end is still news
    if job.finished and not already_recorded and out.reason != "StorageUnavailable":
        entry = _record_result(status, adapter, plan, seen, out, now)
        return adapter_releases.upsert(entries, entry, history_limit, status.get("served")), out
    if already_recorded:
        out = Outcome(
            old["phase"],
            old["phase"] == "Ready",
            _old_reason(old, out.reason),
            old.get("message") or out.message,
            degraded=old["phase"] != "Ready",
        )
    return entries, out


def _record_result(
    status: dict[str, Any], adapter: AdapterView, plan: AdapterPlan, seen: Observed, out: Outcome, now: str
) -> dict[str, Any]:
    """The finished Job's numbers into the status, its artifact served if it is Ready (and not the improvement
    that was not kept); returns its status.releases entry (a canary-held result is Ready for the release, served
    once the gate passes)."""
    job, spec, adaptation = seen.job, adapter.spec, plan.adaptation
    assert job is not None and adaptation is not None
    record = _record(seen.summary, seen.result)
    status.update(
        quality=record.quality,
        timeToReadinessSeconds=record.time_to_readiness_s,
        alpha=record.alpha,
        beta=record.beta,
        strategy=record.strategy or (spec.strategy.name if spec else None),
        resultUri=record.result_uri,
    )
    adapter_uri = record.adapter_uri or adaptation.output_uri
    if out.phase == "Ready" and out.reason != improve.KEPT:  # kept: the first version stays served
        status["served"] = {
            "release": adaptation.target_release,
            "adapterUri": adapter_uri,
            "job": job.name,
            "specHash": plan.spec_hash,
            "releaseIdentity": adaptation.target_identity or None,
        }
    ready = out.ready or out.reason == HELD
    return {
        "release": adaptation.target_release,
        "releaseIdentity": adaptation.target_identity or None,
        "phase": "Ready" if ready else "Degraded" if out.reason == "BelowThreshold" else "Failed",
        "reason": out.reason,
        "job": job.name,
        "adapterUri": (status.get("served") or {}).get("adapterUri")
        if out.ready
        else adapter_uri
        if out.reason in ("BelowThreshold", HELD)
        else None,
        "quality": record.quality,
        "threshold": record.threshold or (spec.quality.threshold if spec else None),
        "timeToReadinessSeconds": record.time_to_readiness_s,
        "timeToReadiness": human_duration(record.time_to_readiness_s),
        "specHash": plan.spec_hash,
        "startedAt": job.start_time,
        "finishedAt": job.completion_time or now,
        "message": None if out.ready else out.message[:1024],
    }


def _summarize(status: dict[str, Any], spec: Any, plan: AdapterPlan, entries: list[dict[str, Any]]) -> None:
    """The fields every status carries, derived from what is served: the target and ready releases, the URI
    served, status.releases with the served entry marked, and the release a rollback would go back to."""
    served = status.get("served")
    status["targetRelease"] = plan.target.version if plan.target else None
    ready_release = (served or {}).get("release") or (spec.trained_on_release if spec else None)
    if (
        served
        and plan.target is not None
        and plan.target_identity
        and served.get("release") == plan.target.version
        and served.get("releaseIdentity") not in (None, plan.target_identity)
    ):
        # Same version string, other weights (re-applied or re-created): never show it as ready for them.
        ready_release = f"{served['release']} (replaced)"
    status["readyRelease"] = ready_release
    status["adapterUri"] = (served or {}).get("adapterUri") or (spec.adapter_uri if spec else None)
    status["timeToReadiness"] = human_duration(status.get("timeToReadinessSeconds"))
    status["history"] = None  # replaced by status.releases (adapter_releases.from_history read it)
    status["releases"] = adapter_releases.mark(
        entries,
        served,
        plan.target.version if plan.target else None,
        plan.target_identity or None,
    )
    status["rollbackRelease"] = adapter_releases.rollback_release(status["releases"])


def _set_outcome(status: dict[str, Any], old: Mapping[str, Any], out: Outcome, gen: int, now: str) -> None:
    """Phase, message and the conditions (Ready, Progressing, Degraded, Promoted) from the outcome; a
    condition's lastTransitionTime moves only when its status does (conditions.condition)."""
    status["phase"] = out.phase
    status["message"] = out.message
    status["observedGeneration"] = gen
    previous = old.get("conditions")
    status["conditions"] = [
        condition("Ready", out.ready, out.reason, out.message, gen, previous, now),
        condition(
            "Progressing",
            out.progressing,
            out.reason if out.progressing else "Idle",
            out.message if out.progressing else "no re-adaptation in progress",
            gen,
            previous,
            now,
        ),
        condition(
            "Degraded",
            out.degraded,
            out.reason if out.degraded else "AsExpected",
            out.message
            if out.degraded
            else "serving an adapter for the newest release"
            if out.ready
            else "nothing has failed",
            gen,
            previous,
            now,
        ),
    ]
    status["conditions"].append(adapter_releases.promoted_condition(old, status, out.reason, out.message, gen, now))


def _cleaned(status: dict[str, Any]) -> dict[str, Any]:
    """The status as written: unset (None) fields dropped, and one redaction for everything (URIs in messages,
    history, served): defence in depth behind the CRD's refusal of URIs with credentials."""
    status = redact_obj({k: v for k, v in status.items() if v is not None})
    if isinstance(status.get("served"), dict):
        status["served"] = {k: v for k, v in status["served"].items() if v is not None}
    return status


def _ready_reason(status: Mapping[str, Any]) -> str | None:
    return next((c.get("reason") for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)


def _digest_of(plan: AdapterPlan) -> str | None:
    from relora_operator import identity

    check = identity.check_of(plan.target) if plan.target is not None else None
    return check.digest if check is not None and check.digest else None


def _old_reason(old: Mapping[str, Any], default: str) -> str:
    for c in old.get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("reason") or default)
    return default


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch turning ``old`` into ``new`` (None deletes); empty when nothing changed. Nested objects get
    a nested patch: a merge patch merges them, so a key gone from one (e.g. a dry run's plan) must be nulled."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if before == value:
            continue
        patch[key] = (
            status_patch(before, value) if isinstance(before, Mapping) and isinstance(value, Mapping) else value
        )
    for key in old:
        if key not in new and key != "kopf":
            patch[key] = None
    return patch


def duration(start: str | None, end: str | None) -> float | None:
    return seconds_between(start, end)


# Phases that only say "not started yet": moving between them is bookkeeping, not news, so it gets no Event
# (an Event is an API write; this keeps a rollout at about three Events per adapter).
WAITING = frozenset({"WaitingForProjection", "Queued", "Pending"})


def with_switch(
    event: tuple[str, str, str] | None, switch: tuple[str, str, str] | None, new: Mapping[str, Any]
) -> tuple[str, str, str] | None:
    """The transition's Event saying the switch of the served artifact too (``switch``:
    adapter_releases.switch_event), or the switch's own Event when there is no transition."""
    if switch is None or event is None:
        return event or switch
    kind, reason, _ = event
    return kind, reason, redact(f"{new.get('phase')}: {switch[2]}")[:1024]


def transition_event(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event for a status change, or None when it is no transition."""
    old_phase, new_phase = old.get("phase"), new.get("phase")
    old_reason, new_reason = _old_reason(old, ""), _old_reason(new, str(new_phase))
    if old_phase == new_phase and old_reason == new_reason:
        return None
    if old_phase in WAITING and new_phase in WAITING:
        return None
    kind = "Warning" if new_phase in ("Failed", "Degraded") or new_reason == "StorageUnavailable" else "Normal"
    return kind, new_reason, redact(f"{new_phase}: {new.get('message') or ''}")[:1024]
