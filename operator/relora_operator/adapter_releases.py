"""status.releases[] of a TaskAdapter (pure): one entry per release the adapter has an artifact for, which one is
*current* (the entry for the family's newest release) and which one is *served*, and the switch of the served
artifact (condition Promoted, and an Event saying from what to what and why: see status.with_switch).

One entry per release (keyed by release version and identity): a later result for the same release replaces
it. Newest first, at most RELORA_HISTORY_LIMIT entries; the oldest are pruned first, never the served one.
It replaced the per-Job ``status.history`` (read once, on the first write, and then removed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from relora_operator.conditions import condition, human_duration

# The worker's outcome (history's "outcome", the Ready reason) -> the entry's phase.
PHASES = {"Ready": "Ready", "BelowThreshold": "Degraded"}
FLAGS = ("current", "served")


def _key(entry: Mapping[str, Any]) -> tuple[Any, Any]:
    return entry.get("release"), entry.get("releaseIdentity")


def from_history(history: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Entries of the pre-releases[] per-Job history: the newest per release."""
    entries: list[dict[str, Any]] = []
    for h in history or []:
        outcome = str(h.get("outcome") or "")
        entry = {
            k: h.get(k)
            for k in (
                "release",
                "releaseIdentity",
                "job",
                "adapterUri",
                "quality",
                "timeToReadinessSeconds",
                "specHash",
                "startedAt",
                "finishedAt",
                "message",
            )
        }
        entry.update(
            phase=PHASES.get(outcome, "Failed"),
            reason="Readapted" if outcome == "Ready" else outcome,
            timeToReadiness=human_duration(h.get("timeToReadinessSeconds")),
        )
        if all(_key(e) != _key(entry) for e in entries):
            entries.append(clean(entry))
    return entries


def entries_of(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The adapter's entries, from status.releases or (objects written before it existed) status.history."""
    if status.get("releases") is not None:
        return [dict(e) for e in status["releases"]]
    return from_history(status.get("history"))


def clean(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if v is not None}


def is_served(entry: Mapping[str, Any], served: Mapping[str, Any] | None) -> bool:
    return (
        bool(served)
        and entry.get("adapterUri") == served.get("adapterUri")
        and entry.get("release") == served.get("release")
    )


def upsert(
    entries: Sequence[Mapping[str, Any]], entry: Mapping[str, Any], limit: int, served: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """``entry`` first, replacing the one of the same release; pruned to ``limit``, keeping the served one."""
    rest = [dict(e) for e in entries if _key(e) != _key(entry)]
    return prune([clean(entry), *rest], limit, served)


def prune(entries: list[dict[str, Any]], limit: int, served: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    limit = max(1, limit)
    if len(entries) <= limit:
        return entries
    kept = entries[:limit]
    if not any(is_served(e, served) for e in kept):
        pinned = next((e for e in entries[limit:] if is_served(e, served)), None)
        if pinned is not None:
            kept = [*entries[: limit - 1], pinned]
    return kept


def mark(
    entries: Sequence[Mapping[str, Any]],
    served: Mapping[str, Any] | None,
    target: str | None,
    target_identity: str | None,
) -> list[dict[str, Any]] | None:
    """The entries with ``current`` (the entry for the target release's weights) and ``served`` set on at most
    one entry each."""
    out, current_done, served_done = [], False, False
    for e in entries:
        entry = {k: v for k, v in e.items() if k not in FLAGS}
        if (
            not current_done
            and target is not None
            and entry.get("release") == target
            and entry.get("releaseIdentity") in (None, target_identity)
        ):
            entry["current"] = current_done = True
        if not served_done and is_served(entry, served):
            entry["served"] = served_done = True
        out.append(entry)
    return out or None


def rollback_release(entries: Sequence[Mapping[str, Any]] | None) -> str | None:
    """The release of the newest Ready entry with an artifact that is not served (what a rollback goes back to)."""
    return next(
        (
            str(e["release"])
            for e in entries or []
            if e.get("phase") == "Ready" and e.get("adapterUri") and not e.get("served")
        ),
        None,
    )


def describe(served: Mapping[str, Any] | None) -> str:
    if not served:
        return "nothing"
    job = f", Job {served['job']}" if served.get("job") else ", as given"
    return f"{served.get('adapterUri')} (release {served.get('release')}{job})"


def switched(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Whether the served artifact changed (from one that was served: the first one is no switch)."""
    return (
        bool(old)
        and bool(new)
        and (old.get("adapterUri"), old.get("release"))
        != (
            new.get("adapterUri"),
            new.get("release"),
        )
    )


def promoted_condition(
    old_status: Mapping[str, Any],
    new_status: Mapping[str, Any],
    reason: str,
    why: str,
    generation: int,
    now: str,
) -> dict[str, Any]:
    """Promoted: True while the served artifact is the current release's. Its reason and message tell the last
    switch of the served artifact (from what, to what, why); a switch always moves lastTransitionTime."""
    old_served, new_served = old_status.get("served"), new_status.get("served")
    entries = new_status.get("releases") or []
    current = next((e for e in entries if e.get("current")), None)
    promoted = current is not None and bool(current.get("served"))
    previous = old_status.get("conditions")
    if switched(old_served, new_served):
        message = f"switched from {describe(old_served)} to {describe(new_served)}: {why}"
        return condition("Promoted", promoted, reason, message, generation, None, now)
    old = next((c for c in previous or [] if c.get("type") == "Promoted"), None)
    if old is not None and old.get("status") == ("True" if promoted else "False"):
        return {**old, "observedGeneration": generation}
    if promoted:
        return condition("Promoted", True, reason, f"serving {describe(new_served)}", generation, previous, now)
    target = new_status.get("targetRelease")
    return condition(
        "Promoted",
        False,
        "NotPromoted",
        f"serving {describe(new_served)}; nothing for release {target} is served yet",
        generation,
        previous,
        now,
    )


def switch_event(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event for a switch of the served artifact, or None."""
    if not switched(old.get("served"), new.get("served")):
        return None
    cond = next((c for c in new.get("conditions") or [] if c.get("type") == "Promoted"), {})
    return "Normal", "ArtifactSwitched", str(cond.get("message") or "")[:1024]
