"""Status of a TaskAdapter from its plan, its Jobs and the worker's summary (pure; no API calls).

The Ready condition answers "is an adapter ready for the newest release of the family?"; Degraded says the
operator is serving an older adapter because the re-adaptation fell short (below threshold) or failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relora_operator import adapter_releases, improve
from relora_operator.conditions import condition, human_duration, ready_reason, seconds_between
from relora_operator.decisions import AdapterPlan, result_recorded
from relora_operator.outcome import HELD, Observed, Outcome, outcome_of, reason_or, worker_record
from relora_operator.redaction import redact, redact_obj
from relora_operator.views import AdapterView

TERMINAL = ("Ready", "Degraded", "Failed")


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
    found_lost = out.reason in ("JobDeleted", "JobLost") and ready_reason(old) not in ("JobDeleted", "JobLost")
    recreated_unseen = seen.recreated and ready_reason(old) != "JobDeleted"
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
            reason_or(old, out.reason),
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
    record = worker_record(seen.summary, seen.result)
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


def _digest_of(plan: AdapterPlan) -> str | None:
    from relora_operator import identity

    check = identity.check_of(plan.target) if plan.target is not None else None
    return check.digest if check is not None and check.digest else None


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
    old_reason, new_reason = reason_or(old, ""), reason_or(new, str(new_phase))
    if old_phase == new_phase and old_reason == new_reason:
        return None
    if old_phase in WAITING and new_phase in WAITING:
        return None
    kind = "Warning" if new_phase in ("Failed", "Degraded") or new_reason == "StorageUnavailable" else "Normal"
    return kind, new_reason, redact(f"{new_phase}: {new.get('message') or ''}")[:1024]
