"""Kubernetes Events of the operator, posted from any task of its event loop.

kopf's own poster only works inside kopf's per-object handlers (it reads a context variable that kopf sets
there); the operator's work now runs from its watch-fed caches (see ``cache``), so it posts its Events itself:
one `POST events` per transition, at most ``pool`` at once (as many as the status writes, so Events keep
pace with the transitions they report), never blocking the reconcile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from relora_operator import kube

logger = logging.getLogger(__name__)
COMPONENT = "relora-operator"
INSTANCE = os.environ.get("POD_NAME") or socket.gethostname()
_pending: set[asyncio.Task[None]] = set()
_slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def event_body(owner: Mapping[str, Any], kind: str, reason: str, message: str) -> dict[str, Any]:
    """A core/v1 Event about ``owner`` (a view's owner reference: apiVersion, kind, metadata)."""
    meta = owner.get("metadata") or {}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": owner.get("apiVersion"),
            "kind": owner.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": INSTANCE[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def post(owner: Mapping[str, Any], kind: str, reason: str, message: str, pool: int = 16) -> None:
    """Posts the Event in the background (best effort: an Event that cannot be posted is logged, not retried)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        logger.debug("no event loop: event %s of %s not posted", reason, owner.get("metadata"))
        return
    body = event_body(owner, kind, reason, message)
    slots = _slots.setdefault(loop, asyncio.Semaphore(pool))

    async def send() -> None:
        async with slots:
            try:
                await asyncio.to_thread(kube.create_event, body)
            except Exception as exc:  # Events are informative; the status is the record
                logger.warning("event %s of %s not posted: %s", reason, body["involvedObject"]["name"], exc)

    task = loop.create_task(send())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def drop_pending() -> int:
    """At shutdown: Events not yet posted are dropped (they are informative; statuses are the record)."""
    pending = list(_pending)
    for task in pending:
        task.cancel()
    return len(pending)
