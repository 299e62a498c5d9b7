"""metav1.Condition helpers: set a condition, keeping lastTransitionTime while its status does not change."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def seconds_between(start: str | None, end: str | None) -> float | None:
    a, b = parse_time(start), parse_time(end)
    return None if a is None or b is None else round((b - a).total_seconds(), 3)


def condition(
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    generation: int,
    previous: Iterable[Mapping[str, Any]] | None,
    now: str,
) -> dict[str, Any]:
    # A bool, or the status as written ("True", "False", "Unknown": a hand-off the target has not reported on).
    value = status if isinstance(status, str) else "True" if status else "False"
    old = next((c for c in previous or [] if c.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == value else None
    return {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": since or now,
        "observedGeneration": generation,
    }


def get(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
