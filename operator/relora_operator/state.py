"""What the operator process remembers between passes, in one object (``OperatorState``).

The reconcile passes are level-triggered: they recompute everything from the caches. What is left is short-lived
bookkeeping that the caches cannot tell: Jobs created a moment ago and not yet in the index, the statuses we
wrote that the index has not echoed yet, the locks that keep passes of one family (and the writes of one
adapter) in order, the API server's refusals, the model digests read, the last hand-off to serving, the
Events being posted and the batch records read. One instance is made at start-up (``handlers.on_startup``,
kept in kopf's operator memo) and passed to the reconcile functions; a test makes its own, so no test sees
another's leftovers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relora_operator.batch_results import BatchRecords
from relora_operator.events import Events
from relora_operator.identity import Identities
from relora_operator.refusals import Refusals

# How long a created Job counts as "in flight" when the watch never reports it (a lost event): long enough for
# a slow API server's echo, short enough that a Job deleted meanwhile is re-created by a later pass.
RECENT_TTL = 120.0


@dataclass
class OperatorState:
    """The operator's in-memory bookkeeping; nothing here survives a restart, and nothing needs to."""

    # One admission at a time across releases: the concurrency limits are operator-wide.
    admission: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Jobs created by us, not yet seen by the watch: (namespace, name) -> time.monotonic() of the create.
    recently_created: dict[tuple[str, str], float] = field(default_factory=dict)
    # Serializes the Job creation of one family's release passes: the timer's and a projection Job's end's.
    family_locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    # One adapter's compute-and-write at a time, so that two passes' patches reach the API server in order.
    adapter_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # The status last written per object uid: the index may not have seen our own write yet.
    written: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The shard Lease loop (sharding.run) and its stop signal, so that clean-up hands the shards over at once.
    stop_leases: asyncio.Event = field(default_factory=asyncio.Event)
    lease_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Job creations the API server refused, Forbidden Events posted, lost Jobs re-created (refusals.py).
    refusals: Refusals = field(default_factory=Refusals)
    # This process's reads of the releases' model digests, and the reads in flight (identity.py).
    identities: Identities = field(default_factory=Identities)
    # Per adapter uid: what was last handed off to serving, the Served status it got, when (serving/handoff.py).
    handoffs: dict[str, tuple[Any, str, float]] = field(default_factory=dict)
    # The Events being posted in the background (events.py).
    events: Events = field(default_factory=Events)
    # The batch records read, per batch Job (spec.batching: batch_results.py).
    batches: BatchRecords = field(default_factory=BatchRecords)

    def family_lock(self, namespace: str, family: str) -> asyncio.Lock:
        return self.family_locks.setdefault((namespace, family), asyncio.Lock())

    def adapter_lock(self, uid: str) -> asyncio.Lock:
        return self.adapter_locks.setdefault(uid, asyncio.Lock())

    def created(self, namespace: str, name: str) -> None:
        """We created (or found) Job ``name``: it is in flight until the watch reports it."""
        self.recently_created[(namespace, name)] = time.monotonic()

    def seen_job(self, namespace: str, name: str) -> None:
        """The watch reported Job ``name`` (created, changed or deleted): it is no longer in flight. Called for
        every Job event, so a Job deleted before the next pass could see it in the index is re-created by that pass
        (waiting for the pass alone left such a Job "in flight" until RECENT_TTL ran out)."""
        self.recently_created.pop((namespace, name), None)

    def in_flight(self, jobs_index: Mapping[Any, Iterable[Any]]) -> list[tuple[str, str]]:
        """Created by us, not yet seen in the index (forgetting those the index has seen, or too old)."""
        now = time.monotonic()
        for key, at in list(self.recently_created.items()):
            if now - at > RECENT_TTL or jobs_index.get(key):
                self.recently_created.pop(key, None)
        return list(self.recently_created)

    def is_in_flight(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self.recently_created

    def forget(self, uid: str) -> None:
        """The object ``uid`` is gone: drop its remembered status, its lock and its last hand-off."""
        self.written.pop(uid, None)
        self.adapter_locks.pop(uid, None)
        self.handoffs.pop(uid, None)
