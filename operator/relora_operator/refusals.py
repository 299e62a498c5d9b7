"""Job creations the API server refused, remembered per Job so that one bad adapter hurts only itself.

A 422/400 (a value the API server or an admission policy rejects in the Job) makes that adapter
``Ready=False, reason=InvalidSpec`` with the server's message (it names the field); a 403 (the operator's
RBAC lacks a verb) makes it ``reason=Forbidden``, naming the verb and resource to grant. Every other adapter of
the family and release goes on. A refused Job is tried again after ``retry_seconds`` (six resyncs, at most a
minute), so fixing the spec, the policy or the Role heals it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relora_operator.conditions import condition
from relora_operator.redaction import redact

RETRY_SECONDS = 60.0
REFUSED = {400: "InvalidSpec", 422: "InvalidSpec", 403: "Forbidden"}


@dataclass(frozen=True)
class Refusal:
    reason: str  # InvalidSpec | Forbidden
    message: str
    generation: int  # of the owner when refused: a new generation retries at once
    at: float


def api_message(exc: Any) -> str:
    """The API server's own message of an ApiException (its Status body), else the exception's text."""
    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", "") or exc)


def permission_message(verb: str, resource: str, namespace: str, detail: str = "") -> str:
    where = f" in namespace {namespace}" if namespace else " cluster-wide"
    return (
        f"the operator's ServiceAccount may not {verb} {resource}{where} (RBAC): grant verb {verb!r} on "
        f"{resource!r} to its Role/ClusterRole (the Helm chart does)" + (f"; API server: {detail}" if detail else "")
    )


def retry_seconds(settings: Any) -> float:
    """How long a refused creation waits before the next try: six resyncs, at most RETRY_SECONDS."""
    return min(RETRY_SECONDS, 6 * float(getattr(settings, "resync_seconds", RETRY_SECONDS)))


@dataclass
class Refusals:
    """The standing refusals of this process (kept in ``OperatorState``; a test makes its own): per Job, the
    API server's refusal of its creation; per object, when its last Forbidden Event was posted; and the lost
    Jobs a release pass re-created, until the adapter's pass counts them (status.lostJobs)."""

    refused: dict[tuple[str, str], Refusal] = field(default_factory=dict)
    events: dict[tuple[str, str], float] = field(default_factory=dict)
    recreated: set[tuple[str, str]] = field(default_factory=set)

    def record(self, job: dict[str, Any], exc: Any, generation: int = 0) -> Refusal | None:
        """Remembers the refusal of ``job``'s creation when ``exc`` is one (else None: the caller re-raises)."""
        reason = REFUSED.get(getattr(exc, "status", 0))
        if reason is None:
            return None
        meta = job["metadata"]
        detail = api_message(exc)
        if reason == "Forbidden":
            message = permission_message("create", "jobs.batch", meta["namespace"], detail)
        else:
            message = f"the API server refused Job {meta['name']}: {detail}"
        refusal = Refusal(reason, redact(message), generation, time.monotonic())
        self.refused[(meta["namespace"], meta["name"])] = refusal
        return refusal

    def get(self, namespace: str, job: str, generation: int | None = None) -> Refusal | None:
        """The standing refusal of Job ``job`` (for the adapter's status), None when there is none or the
        adapter's spec changed since."""
        refusal = self.refused.get((namespace, job))
        if refusal is not None and generation is not None and refusal.generation and generation != refusal.generation:
            self.refused.pop((namespace, job), None)
            return None
        return refusal

    def blocked(self, namespace: str, job: str, settings: Any = None) -> bool:
        """Whether creating ``job`` should wait (refused less than ``retry_seconds`` ago)."""
        refusal = self.get(namespace, job)
        return refusal is not None and time.monotonic() - refusal.at < retry_seconds(settings)

    def clear(self, namespace: str, job: str) -> None:
        self.refused.pop((namespace, job), None)

    def for_plan(self, namespace: str, adaptation_job: str | None, projection_job: str | None) -> Refusal | None:
        """The refusal that holds an adapter back: of its own Job, else of the projection it waits for."""
        for job in (adaptation_job, projection_job):
            refusal = self.get(namespace, job) if job else None
            if refusal is not None:
                return refusal
        return None

    def event_due(self, uid: str, what: str) -> bool:
        """Whether to post (again) the Event about ``what`` being forbidden for object ``uid``: at most once
        per RETRY_SECONDS, so a missing permission is visible without flooding the namespace with Events."""
        now = time.monotonic()
        if now - self.events.get((uid, what), -RETRY_SECONDS) < RETRY_SECONDS:
            return False
        self.events[(uid, what)] = now
        return True

    def note_recreated(self, namespace: str, job: str) -> None:
        self.recreated.add((namespace, job))

    def take_recreated(self, namespace: str, job: str) -> bool:
        """Whether ``job`` was re-created since the last call (then forgotten: counted once)."""
        try:
            self.recreated.remove((namespace, job))
            return True
        except KeyError:
            return False


def forbidden_release_status(
    status: Mapping[str, Any], messages: Sequence[str], generation: int, now: str
) -> dict[str, Any]:
    """The status of a release whose namespace the operator may not list or watch in full (RBAC): its caches
    cannot see the family, so no pass runs; ``Progressing=False`` and ``Degraded=True``, reason ``Forbidden``,
    name each verb and resource to grant. Everything else stays as it was (the last pass's counts)."""
    message = redact("; ".join(messages))
    previous = status.get("conditions") or []
    replaced = {
        "Progressing": condition("Progressing", False, "Forbidden", message, generation, previous, now),
        "Degraded": condition("Degraded", True, "Forbidden", message, generation, previous, now),
    }
    kept = [c for c in previous if c.get("type") not in replaced]
    return {**status, "conditions": [*kept, *replaced.values()]}
