"""Status of a BaseModelRelease: its projections and the aggregate of its family's TaskAdapters (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relora_operator.builders.jobs import ProjectionInputs
from relora_operator.conditions import condition, get, human_duration, ready_reason, seconds_between
from relora_operator.redaction import redact_obj
from relora_operator.rollout import LISTED, Gate
from relora_operator.settings import Settings
from relora_operator.views import AdapterView, JobView, ReleaseView

STEERED = ("Paused", "DryRun", "Halted")  # release phases in which spec.rollout (or its canary) holds the rollout
# TaskAdapter phase -> release counter.
COUNTER = {
    "Ready": "ready",
    "Degraded": "degraded",
    "RolledBack": "degraded",  # serving an older release's adapter on purpose (spec.pinnedRelease)
    "Failed": "failed",
    "Adapting": "running",
    "Queued": "queued",
    "WaitingForProjection": "queued",
    "Pending": "queued",
}


@dataclass(frozen=True)
class Steering:
    """What spec.rollout made of this pass: the canary gate (None: not the newest release), the dry run's plan,
    the per-release Job limit in force."""

    gate: Gate | None = None
    plan: dict[str, Any] | None = None
    max_concurrent: int | None = None


def _ready_status(status: Mapping[str, Any]) -> str | None:
    return (get(status.get("conditions"), "Ready") or {}).get("status")


def count_adapters(release: ReleaseView, adapters: Sequence[AdapterView]) -> dict[str, int]:
    counts = {"total": len(adapters), "ready": 0, "degraded": 0, "failed": 0, "running": 0, "queued": 0}
    for adapter in adapters:
        status = adapter.status
        if status.get("targetRelease") != release.version:
            counts["queued"] += 1  # not reconciled against this release yet
            continue
        counts[COUNTER.get(status.get("phase") or "Pending", "queued")] += 1
    return counts


def not_done(release: ReleaseView, adapters: Sequence[AdapterView]) -> tuple[list[str] | None, list[str] | None]:
    """Names of the adapters not in a final state for the release yet, and ``name (reason)`` of those Degraded or
    Failed for it: the first LISTED of each, sorted (the counts in status.adapters are exact)."""
    pending, failed = [], []
    for adapter in adapters:
        status = adapter.status
        phase = status.get("phase") if status.get("targetRelease") == release.version else None
        if phase in ("Degraded", "Failed"):
            reason = ready_reason(status) or phase
            failed.append(f"{adapter.name} ({reason})")
        elif phase != "Ready":
            pending.append(adapter.name)
    return sorted(pending)[:LISTED] or None, sorted(failed)[:LISTED] or None


def projection_entries(
    groups: Mapping[str, ProjectionInputs], jobs: Mapping[str, JobView], settings: Settings
) -> list[dict[str, Any]]:
    entries = []
    for name, proj in sorted(groups.items()):
        job = jobs.get(name)
        entry = {
            "fromRelease": proj.from_release,
            "rank": proj.rank,
            "targetModules": list(proj.target_modules),
            "job": name,
            "uri": proj.output_uri(settings),
            "state": job.state if job else "Pending",
        }
        if job is not None and job.failed_final and job.message:
            entry["message"] = job.message
        entries.append(entry)
    return entries


def release_status(
    release: ReleaseView,
    *,
    newest: bool,
    supersedes: str | None,
    adapters: Sequence[AdapterView],
    projections: list[dict[str, Any]],
    now: str,
    model: Any = None,
    identity: str | None = None,
    steering: Steering | None = None,
) -> dict[str, Any]:
    """``model`` is identity.ModelCheck (the last read of the model's digest), ``identity`` the release's."""
    status = _release_status(
        release,
        newest=newest,
        supersedes=supersedes,
        adapters=adapters,
        projections=projections,
        now=now,
        steering=steering or Steering(),
    )
    if model is not None:
        status["modelDigest"], status["modelDigestUri"] = model.digest, model.uri
    if identity:
        status["identity"] = identity
    storage = _storage_condition(release, model, now)
    if storage is not None:
        status["conditions"] = [*status.get("conditions", []), storage]
    return redact_obj(status)


def _storage_condition(release: ReleaseView, model: Any, now: str) -> dict[str, Any] | None:
    """StorageAvailable: whether the last read of the model's digest got an answer (None: none read yet)."""
    if model is None or not getattr(model, "at", 0):
        old = next((c for c in release.status.get("conditions") or [] if c.get("type") == "StorageAvailable"), None)
        return dict(old) if old else None
    ok = model.error is None
    return condition(
        "StorageAvailable",
        ok,
        "Reachable" if ok else "StorageUnavailable",
        f"read the model digest of {model.uri}" if ok else f"cannot read the model digest: {model.error}",
        release.generation,
        release.status.get("conditions"),
        now,
    )


def _release_status(
    release: ReleaseView,
    *,
    newest: bool,
    supersedes: str | None,
    adapters: Sequence[AdapterView],
    projections: list[dict[str, Any]],
    now: str,
    steering: Steering,
) -> dict[str, Any]:
    """The release's status before the model's digest is added: superseded, or its rollout's progress."""
    old = release.status
    status: dict[str, Any] = {k: v for k, v in old.items() if k != "kopf"}
    status["supersedes"] = supersedes
    status["observedGeneration"] = release.generation
    if not newest:
        # A newer release took over the family; keep the final numbers of this one.
        status["phase"] = "Superseded"
        status["conditions"] = _superseded_conditions(old, release.generation, now)
        return {k: v for k, v in status.items() if v is not None}
    counts = count_adapters(release, adapters)
    status["adapters"] = counts
    status["projections"] = projections or None
    status["startTime"] = old.get("startTime") or now
    done = counts["ready"] + counts["degraded"] + counts["failed"]
    # Suspended: queued in Kueue (projection Jobs go through Kueue like adaptation Jobs).
    projecting = any(p["state"] in ("Pending", "Running", "Suspended") for p in projections)
    complete = done == counts["total"] and not projecting
    gate = steering.gate or Gate()
    status["rollout"] = rollout_status(release, gate, steering)
    status["phase"] = _rollout_phase(release, gate, complete, projecting)
    _set_timing(status, old, complete, now)
    status["pendingAdapters"], status["failedAdapters"] = not_done(release, adapters)
    status["conditions"] = _rollout_conditions(status["phase"], counts, complete, gate, release.generation, old, now)
    return {k: v for k, v in status.items() if v is not None}


def _superseded_conditions(old: Mapping[str, Any], gen: int, now: str) -> list[dict[str, Any]]:
    """A superseded release moves no more: Ready stays what it was when its rollout ended (Complete) or was cut
    short, and nothing progresses or degrades any longer."""
    previous, why = old.get("conditions"), "a newer release of the family exists"
    ready = old.get("phase") == "Complete" or (_ready_status(old) == "True")
    return [
        condition("Ready", ready, "Superseded", why, gen, previous, now),
        condition("Progressing", False, "Superseded", why, gen, previous, now),
        condition("Degraded", False, "Superseded", why, gen, previous, now),
    ]


def _rollout_phase(release: ReleaseView, gate: Gate, complete: bool, projecting: bool) -> str:
    """The phase of the newest release's rollout: Complete once every adapter is final and no projection runs;
    before that, what holds it (spec.rollout, a failed canary) or what it is doing."""
    if complete:
        return "Complete"
    if release.rollout.dry_run:
        return "DryRun"
    if release.rollout.paused:
        return "Paused"
    if gate.state == "Failed":
        return "Halted"
    return "Projecting" if projecting else "RollingOut"


def _set_timing(status: dict[str, Any], old: Mapping[str, Any], complete: bool, now: str) -> None:
    """finishTime and the rollout's duration, set once when it completes (kept by later passes so an idle
    resync writes nothing), unset while it is not complete."""
    if complete:
        status["finishTime"] = old.get("finishTime") or now
        status["rolloutDurationSeconds"] = seconds_between(status["startTime"], status["finishTime"])
    else:
        status["finishTime"] = status["rolloutDurationSeconds"] = None
    status["rolloutDuration"] = human_duration(status["rolloutDurationSeconds"])


def _rollout_conditions(
    phase: str, counts: Mapping[str, int], complete: bool, gate: Gate, gen: int, old: Mapping[str, Any], now: str
) -> list[dict[str, Any]]:
    """Ready, Progressing and Degraded from the adapters' counts, plus CanaryPassed while a canary gates the
    rollout."""
    previous = old.get("conditions")
    summary = (
        f"{counts['ready']}/{counts['total']} ready, {counts['degraded']} degraded, "
        f"{counts['failed']} failed, {counts['running']} running, {counts['queued']} queued"
    )
    bad = counts["degraded"] + counts["failed"]
    conditions = [
        condition("Ready", complete, "RolloutComplete" if complete else "RollingOut", summary, gen, previous, now),
        condition(
            "Progressing",
            # Held by its spec.rollout (paused, dry run) or a failed canary: nothing moves until someone acts.
            not complete and phase not in STEERED,
            phase if phase in STEERED else "Idle" if complete else phase,
            summary,
            gen,
            previous,
            now,
        ),
        condition("Degraded", bad > 0, "AdaptersNotReady" if bad else "AsExpected", summary, gen, previous, now),
    ]
    if gate.state:
        passed = gate.state == "Passed"
        reason = {"Passed": "CanaryPassed", "Failed": "CanaryFailed"}.get(gate.state, "CanaryPending")
        conditions.append(condition("CanaryPassed", passed, reason, gate.message, gen, previous, now))
    return conditions


def rollout_status(release: ReleaseView, gate: Gate, steering: Steering) -> dict[str, Any]:
    """status.rollout: the steering in force, the canary gate and the dry run's plan."""
    spec = release.rollout
    out: dict[str, Any] = {"paused": spec.paused, "dryRun": spec.dry_run, "maxConcurrent": steering.max_concurrent}
    if gate.state:
        members = sorted(gate.members)
        canary = {
            "state": gate.state,
            "adapters": len(members),
            "members": members[:LISTED],
            "ready": gate.ready,
            "required": gate.required,
            "failed": len(gate.failures),
            "failures": list(gate.failures[:LISTED]) or None,
            "message": gate.message,
        }
        out["canary"] = {k: v for k, v in canary.items() if v is not None}
    if steering.plan is not None:
        out["plan"] = steering.plan
    return redact_obj({k: v for k, v in out.items() if v is not None})


def canary_event(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event for a change of the canary gate's state, or None."""
    before = ((old.get("rollout") or {}).get("canary") or {}).get("state")
    canary = (new.get("rollout") or {}).get("canary") or {}
    after = canary.get("state")
    if after == before or after not in ("Passed", "Failed"):
        return None
    if after == "Passed":
        return "Normal", "CanaryPassed", f"canary passed, the rest of the family follows: {canary.get('message')}"
    return "Warning", "CanaryFailed", f"rollout halted, the canary failed: {canary.get('message')}"
