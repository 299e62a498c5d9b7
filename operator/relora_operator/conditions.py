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


def human_duration(seconds: float | None) -> str | None:
    """Seconds as kubectl shows ages: 1.5s, 42s, 4m12s, 2h5m, 3d4h (printer columns can only show a field, so
    statuses store this next to the number)."""
    if seconds is None:
        return None
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


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


def ready_reason(status: Mapping[str, Any]) -> str | None:
    """The reason of a status's summary ``Ready`` condition (None without one)."""
    found = get(status.get("conditions"), "Ready")
    return found.get("reason") if found else None
