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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relora_operator import kube

logger = logging.getLogger(__name__)
COMPONENT = "relora-operator"
INSTANCE = os.environ.get("POD_NAME") or socket.gethostname()


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


@dataclass
class Events:
    """The Events being posted by this process (kept in ``OperatorState``; a test makes its own): the tasks
    not done yet (so that shutdown can drop them) and, per event loop, the slots that bound them."""

    pool: int = 16
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = field(default_factory=dict)

    def post(self, owner: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        """Posts the Event in the background (best effort: one that cannot be posted is logged, not retried)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            logger.debug("no event loop: event %s of %s not posted", reason, owner.get("metadata"))
            return
        body = event_body(owner, kind, reason, message)
        slots = self.slots.setdefault(loop, asyncio.Semaphore(self.pool))

        async def send() -> None:
            async with slots:
                try:
                    await asyncio.to_thread(kube.create_event, body)
                except Exception as exc:  # Events are informative; the status is the record
                    logger.warning("event %s of %s not posted: %s", reason, body["involvedObject"]["name"], exc)

        task = loop.create_task(send())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def drop_pending(self) -> int:
        """At shutdown: Events not yet posted are dropped (they are informative; statuses are the record)."""
        pending = list(self.pending)
        for task in pending:
            task.cancel()
        return len(pending)
