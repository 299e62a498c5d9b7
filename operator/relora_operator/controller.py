"""What the operator does between its caches' watch events and the reconcile passes.

* Each kind is watched once (``cache``); the reconcile reads the caches' indices.
* A TaskAdapter created or edited (a new generation), an adaptation Job that finished, or its pod's final
  status: the adapter is queued for a sync. The queue coalesces: an adapter queued twice is synced once, and
  the queue is drained in batches (one ``reconcile.sync_adapters`` per batch).
* A projection Job that finished starts its family's release pass at once.
* Periodically (RELORA_RESYNC_SECONDS): families without any release get their adapters' statuses (families
  with one are resynced by their newest release's tick, see ``handlers`` and ``ticker``).
* Sharding (``sharding``): everything above is done only for the families of the shards this replica holds;
  when it acquires a shard, the shard's families get a pass at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from relora_operator import batching, decisions, metrics, naming, reconcile, views
from relora_operator.cache import Caches, Keys, Kind
from relora_operator.models import GROUP, VERSION
from relora_operator.settings import Settings
from relora_operator.sharding import Sharding, shard_of
from relora_operator.state import OperatorState

logger = logging.getLogger(__name__)
MANAGED = f"{naming.LABEL_MANAGED}={naming.MANAGED_BY}"
KINDS = {
    "releases": Kind(
        "releases",
        f"{GROUP}/{VERSION}",
        "basemodelreleases",
        views.release_view,
        {"releases": lambda r: (r.namespace, r.family)},
    ),
    "adapters": Kind(
        "adapters",
        f"{GROUP}/{VERSION}",
        "taskadapters",
        views.adapter_view,
        {"adapters": lambda a: (a.namespace, a.family), "adapters_by_name": lambda a: (a.namespace, a.name)},
    ),
    "jobs": Kind(
        "jobs",
        "batch/v1",
        "jobs",
        views.job_view,
        # A batch Job is found by its members' own Job names too (batching.JobIndex).
        {"jobs": lambda j: (j.namespace, j.name), "batch_members": lambda j: Keys(batching.member_keys(j))},
        MANAGED,
    ),
    "pods": Kind("pods", "v1", "pods", views.pod_view, {"pods": lambda p: (p.namespace, p.job)}, MANAGED),
}


class Coalescer:
    """A set of keys to process, drained in batches by one task; a key added twice before its turn runs once."""

    def __init__(self, handle: Callable[[list[Hashable]], Awaitable[None]]) -> None:
        self.handle = handle
        self.pending: dict[Hashable, None] = {}
        self._wake = asyncio.Event()

    def add(self, key: Hashable) -> None:
        self.pending[key] = None
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self.pending = list(self.pending), {}
            if batch:
                try:
                    await self.handle(batch)
                except Exception:  # the next event or resync retries; this loop must not die
                    metrics.RECONCILE_ERRORS.labels("TaskAdapter").inc()
                    logger.exception("sync of %d adapter(s) failed", len(batch))


class Controller:
    def __init__(self, settings: Settings, sharding: Sharding, state: OperatorState) -> None:
        self.settings, self.sharding, self.state = settings, sharding, state
        self.caches = Caches(KINDS)
        self.adapter_queue = Coalescer(self._sync_adapters)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.caches.listen("adapters", self.on_adapter)
        self.caches.listen("jobs", self.on_job)
        self.caches.listen("pods", self.on_pod)
        sharding.on_acquired = self.on_shard_acquired
        self.synced_after: float | None = None

    # --- the indices, as the reconcile code reads them ---

    @property
    def releases(self) -> Any:
        return self.caches["releases"]

    @property
    def adapters(self) -> Any:
        return self.caches["adapters"]

    @property
    def jobs(self) -> Any:
        return batching.JobIndex(self.caches["jobs"], self.caches["batch_members"])

    @property
    def pods(self) -> Any:
        return self.caches["pods"]

    def start(self, api: Any) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self.caches.start(self.settings.namespaces, api, loop)
        self.spawn(self.adapter_queue.run())
        self.spawn(self._resync_loop(started))

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_synced(self) -> None:
        await self.caches.wait_synced()

    async def refused(self, namespace: str) -> list[str]:
        """Why the operator may not list/watch what a pass in ``namespace`` reads (empty: it may), once every
        kind has been listed or refused."""
        await self.caches.wait_settled()
        return self.caches.refusals(namespace)

    def stop(self) -> None:
        self.caches.stop()
        for task in list(self._tasks):
            task.cancel()

    # --- watch events (on the event loop, after the first listing) ---

    def on_adapter(self, kind: str, old: views.AdapterView | None, new: views.AdapterView | None) -> None:
        action = decisions.adapter_event(old, new)
        if action == "forget" and old is not None:
            self.state.forget(old.uid)
        elif action == "sync" and new is not None and self.sharding.owns(new.namespace, new.family):
            self.adapter_queue.add((new.namespace, new.name))

    def on_job(self, kind: str, old: views.JobView | None, new: views.JobView | None) -> None:
        if (seen := new or old) is not None:
            self.state.seen_job(seen.namespace, seen.name)
            for own_job, _ in seen.members:  # a batch was in flight under each member's own Job name
                self.state.seen_job(seen.namespace, own_job)
        if new is None and old is not None and old.members:
            self.state.batches.forget(old.namespace, old.name)
        action = decisions.job_event(old, new)
        if new is None or action is None:
            return
        if action == "family":
            for family in self._families_of_release(new.namespace, new.release):
                if self.sharding.owns(new.namespace, family):
                    self.spawn(self.family_pass(new.namespace, family))
        elif new.members:  # a batch Job's end: its record, not its pod, says how each member ended
            self._queue_job_adapters(new)
        elif reconcile.has_finished_pod(self.pods, new.namespace, new.name):
            self._queue_adapter(new.namespace, new.adapter)

    def on_pod(self, kind: str, old: views.PodView | None, new: views.PodView | None) -> None:
        if new is None or not decisions.pod_just_ended(old, new):
            return
        job = reconcile.first(self.jobs, (new.namespace, new.job))
        if job is not None and job.finished and job.component == naming.COMPONENT_ADAPTATION:
            self._queue_job_adapters(job)

    def _queue_job_adapters(self, job: views.JobView) -> None:
        for adapter in batching.member_names(job) if job.members else [job.adapter]:
            self._queue_adapter(job.namespace, adapter)

    def on_shard_acquired(self, shard: int) -> None:
        families = {key for key in [*self.adapters, *self.releases]}
        for namespace, family in families:
            if shard_of(namespace, family, self.sharding.shards) == shard:
                self.spawn(self.family_pass(namespace, family))

    def _queue_adapter(self, namespace: str, name: str) -> None:
        adapter = reconcile.first(self.caches["adapters_by_name"], (namespace, name))
        if adapter is not None and self.sharding.owns(namespace, adapter.family):
            self.adapter_queue.add((namespace, name))

    def _families_of_release(self, namespace: str, version: str) -> set[str]:
        # A projection Job is labelled with its release's version (families may share version names: then
        # every such family gets a pass, which is harmless).
        return {
            family
            for (ns, family), releases in self.releases.items()
            if ns == namespace and any(r.version == version for r in releases)
        }

    # --- passes ---

    async def _sync_adapters(self, keys: list[Hashable]) -> None:
        await self.wait_synced()
        members = [a for key in keys if (a := reconcile.first(self.caches["adapters_by_name"], key)) is not None]
        members = [a for a in members if self.sharding.owns(a.namespace, a.family)]
        if members:
            await reconcile.sync_adapters(
                self.state, members, self.releases, self.jobs, self.pods, self.settings, family=self.adapters
            )

    async def release_pass(self, release: views.ReleaseView) -> reconcile.ReleaseResult:
        await self.wait_synced()
        return await reconcile.release_pass(
            self.state, release, self.releases, self.adapters, self.jobs, self.pods, self.settings
        )

    async def family_pass(self, namespace: str, family: str) -> None:
        """The newest release's pass (Jobs, every member's status), or, without a release, the members' statuses.
        The release's own status is written by its timer."""
        try:
            newest = decisions.newest_release(self.releases.get((namespace, family), ()))
            if newest is not None:
                result = await self.release_pass(newest)
                announce_created(self.state, newest.owner, result.created)
            else:
                await self.wait_synced()
                members = list(self.adapters.get((namespace, family), ()))
                await reconcile.sync_adapters(
                    self.state, members, self.releases, self.jobs, self.pods, self.settings, family=self.adapters
                )
        except Exception:  # the next resync retries
            metrics.RECONCILE_ERRORS.labels("BaseModelRelease").inc()
            logger.exception("pass of family %s/%s failed", namespace, family)

    async def _resync_loop(self, started: float) -> None:
        await self.wait_synced()
        self.synced_after = time.monotonic() - started
        metrics.CACHE_SYNCED_SECONDS.set(self.synced_after)
        adapters, jobs = self.caches.count("adapters"), self.caches.count("jobs")
        logger.info("caches synced after %.1fs: %d adapters, %d Jobs", self.synced_after, adapters, jobs)
        while True:
            without_release = [key for key in list(self.adapters) if not self.releases.get(key)]
            for namespace, family in without_release:
                if self.sharding.owns(namespace, family):
                    await self.family_pass(namespace, family)
            await asyncio.sleep(self.settings.resync_seconds)


def announce_created(state: OperatorState, owner: Any, created: list[str]) -> None:
    if created:
        shown = ", ".join(created[:5]) + (" ..." if len(created) > 5 else "")
        state.events.post(owner, "Normal", "JobsCreated", f"created {len(created)} Job(s): {shown}")
