"""The hand-off in the adapter's pass: after its status is computed, keep the serving target on status.served
and put the result into the Served condition (plus an Event when the target changed).

The target follows ``status.served`` and nothing else: it changes when, and only when, the adapter became
Ready for a (new) artifact, and a rollback (served going back to an earlier artifact) takes the target back.
The target is read again when what to serve changed, on every pass while the target has not reported on it
(Unknown), every ``refusals.retry_seconds`` (six resyncs, at most a minute) while it failed, and every
RELORA_SERVING_RECHECK_SECONDS once done, so an edited or deleted target is put back; a pass in between copies
the last Served condition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from relora_operator import kube, refusals
from relora_operator.conditions import condition, now_iso
from relora_operator.redaction import redact
from relora_operator.serving import INTEGRATIONS, common
from relora_operator.serving.common import HandOff, Result
from relora_operator.state import OperatorState
from relora_operator.views import AdapterView, ReleaseView

logger = logging.getLogger(__name__)
SERVED = "Served"


def handoff_of(adapter: AdapterView, status: Mapping[str, Any], family: Iterable[ReleaseView]) -> HandOff | None:
    """What to serve for ``adapter`` given its new ``status`` (None: nothing is served yet)."""
    served = status.get("served") or {}
    if not served.get("adapterUri") or not served.get("release"):
        return None
    same = [r for r in family if r.version == served["release"]]
    release = max(same, key=lambda r: r.order, default=None)
    return HandOff(
        namespace=adapter.namespace,
        adapter=adapter.name,
        uid=adapter.uid,
        owner=adapter.owner,
        family=adapter.family,
        release=served["release"],
        uri=served["adapterUri"],
        model_uri=release.model_uri if release is not None else None,
    )


def run(field: str, target: Any, handoff: HandOff, api_client: Any) -> Result:
    """One integration's hand-off (blocking); any error becomes a Served=False result, never a crash."""
    try:
        return INTEGRATIONS[field](api_client, target, handoff)
    except common.Invalid as exc:
        return Result("False", common.INVALID, str(exc))
    except Exception as exc:  # the other adapters' hand-offs go on; this one is retried
        logger.exception("hand-off of %s/%s failed", handoff.namespace, handoff.adapter)
        return Result("False", common.ERROR, f"hand-off failed: {type(exc).__name__}: {exc}; retrying")


def with_served(status: Mapping[str, Any], served: Mapping[str, Any] | None) -> dict[str, Any]:
    """``status`` whose conditions end with ``served`` (None: without a Served condition)."""
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != SERVED]
    return {**status, "conditions": conditions + ([dict(served)] if served else [])}


async def sync(
    state: OperatorState,
    adapter: AdapterView,
    old: Mapping[str, Any],
    new: dict[str, Any],
    family: Iterable[ReleaseView],
    settings: Any,
) -> dict[str, Any]:
    """``new`` with its Served condition, after keeping the serving target on ``new['served']``. What was last
    handed off per adapter (``state.handoffs``: what, the Served status it got, when) says which passes may
    skip the target."""
    spec = adapter.spec
    if spec is None:
        return new
    previous = next((c for c in old.get("conditions") or [] if c.get("type") == SERVED), None)
    if spec.serving is None:
        state.handoffs.pop(adapter.uid, None)
        return with_served(new, None) if previous or _has_served(new) else new
    try:
        field, target = spec.serving.selected()
    except ValueError as exc:  # stored before the CRD's rule: this adapter's Served says so, the pass goes on
        return with_served(new, _condition(adapter, old, Result("False", common.INVALID, str(exc))))
    handoff = handoff_of(adapter, new, family)
    key = (field, target.model_dump_json(), handoff, adapter.generation)
    last = state.handoffs.get(adapter.uid)
    due = (
        previous is None
        or last is None
        or last[0] != key
        or last[1] == "Unknown"
        or time.monotonic() - last[2] >= _recheck_seconds(last[1], settings)
    )
    if not due:
        return with_served(new, previous)
    if handoff is None:
        result = Result("False", common.NOTHING, f"no adapter is served yet (phase {new.get('phase')})")
    else:
        result = await asyncio.to_thread(run, field, target, handoff, kube.api_client(settings.api_workers))
    state.handoffs[adapter.uid] = (key, result.status, time.monotonic())
    if result.change:
        state.events.post(adapter.owner, "Normal", "HandedOff", redact(result.change))
    served = _condition(adapter, old, result)
    return with_served(new, served)


def _recheck_seconds(status: str, settings: Any) -> float:
    # Done: RELORA_SERVING_RECHECK_SECONDS (drift); failed: six resyncs, at most a minute (a fix is seen soon).
    return float(settings.serving_recheck_seconds) if status == "True" else refusals.retry_seconds(settings)


def _condition(adapter: AdapterView, old: Mapping[str, Any], result: Result) -> dict[str, Any]:
    message = redact(result.message)
    return condition(
        SERVED, result.status, result.reason, message, adapter.generation, old.get("conditions"), now_iso()
    )


def _has_served(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == SERVED for c in status.get("conditions") or [])
