"""kopf handlers: a few lines each, delegating to ``controller`` (watch events), ``reconcile`` (I/O) and the pure
modules.

Level-triggered: each BaseModelRelease has a kopf timer that, every RELORA_RESYNC_SECONDS, recomputes the desired
state of the release and of every TaskAdapter of its family, creates the missing Jobs and writes the statuses
that changed. What the passes read comes from the controller's watch-fed caches (one list+watch per kind), not
from kopf indices: kopf's index readiness costs the square of the object count at start-up (bench/operator).
kopf watches only the releases (few objects: their timers); TaskAdapters, Jobs and pods are watched by the
caches, whose events trigger the immediate reactions (see ``controller``).
(Per-adapter timers cost kopf ~0.45 MB each: 900 MB at 2000 adapters; see bench/operator.)
The operator stores nothing of its own: no change handlers, so kopf writes no progress annotations.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import time
from typing import Any

import kopf

from relora_operator import decisions, events, kube, metrics, reconcile, refusals, sharding, views
from relora_operator.conditions import now_iso
from relora_operator.controller import Controller, announce_created
from relora_operator.diffbase import LeanDiffBaseStorage
from relora_operator.models import GROUP, VERSION
from relora_operator.release_status import canary_event
from relora_operator.settings import Settings
from relora_operator.status import status_patch

SETTINGS = Settings.from_env()
RELEASES = (GROUP, VERSION, "basemodelreleases")
SHARDING = sharding.Sharding(
    SETTINGS.shards, namespace=SETTINGS.lease_namespace_or_default(), lease_seconds=SETTINGS.shard_lease_seconds
)
CONTROLLER = Controller(SETTINGS, SHARDING)
_stop_leases = asyncio.Event()
_lease_loop: list[asyncio.Task[None]] = []


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Job creates, status patches and S3 reads run in threads (asyncio.to_thread): size the pool for them.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(SETTINGS.api_workers + 8, thread_name_prefix="relora-api")
    )
    # Only used if a handler ever needs one (none does; see _timers_without_finalizers).
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    # kopf's own essence, minus a deep copy of every watched body that cost 15 % of the CPU.
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(prefix=GROUP)
    settings.execution.max_workers = SETTINGS.api_workers
    # CRDs are installed with the chart; not watching them saves a cluster-wide RBAC grant.
    settings.scanning.disabled = True
    settings.posting.level = logging.INFO
    metrics.COLLECTOR.adapters, metrics.COLLECTOR.jobs = CONTROLLER.adapters, CONTROLLER.jobs
    metrics.COLLECTOR.releases = CONTROLLER.releases
    metrics.COLLECTOR.releases = CONTROLLER.releases  # per-family series (family_metrics.py)
    metrics.start(SETTINGS.metrics_port)
    # The watches hold their connections for minutes: a pool of their own, one connection per watched kind.
    CONTROLLER.start(kube.new_api_client(2 * len(CONTROLLER.caches.kinds) * max(1, len(SETTINGS.namespaces))))
    if SHARDING.enabled:
        leases = sharding.LeaseClient(kube.api_client(SETTINGS.api_workers), SHARDING.namespace)
        _lease_loop.append(asyncio.create_task(sharding.run(SHARDING, leases, _stop_leases)))


@kopf.on.cleanup()
async def on_cleanup(**_: Any) -> None:
    _stop_leases.set()
    for task in _lease_loop:  # it hands the shards over now, rather than after their Leases expire
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
    CONTROLLER.stop()
    dropped = events.drop_pending()
    if dropped:
        logging.getLogger(__name__).warning("stopping: %d Event(s) not posted", dropped)


@kopf.timer(*RELEASES, interval=SETTINGS.resync_seconds, initial_delay=1.0)
async def on_release_tick(body: kopf.Body, status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    release = views.release_view(body)
    if not SHARDING.owns(release.namespace, release.family):
        return  # another replica's shard
    refused = await CONTROLLER.refused(release.namespace)
    if refused:  # the caches cannot see the family: say why on the release instead of waiting silently
        reconcile.report_refused(release, refused)
        new = refusals.forbidden_release_status(status, refused, release.generation, now_iso())
        patch.status.update(status_patch(status, new))
        return
    started = time.monotonic()
    with _errors("BaseModelRelease"):
        result = await CONTROLLER.release_pass(release)
    newest = decisions.newest_release(CONTROLLER.releases.get((release.namespace, release.family), ()))
    if newest is not None and newest.uid == release.uid:  # the full pass: Jobs and every member's status
        metrics.FAMILY_PASS_SECONDS.observe(time.monotonic() - started)
    announce_created(release.owner, result.created)
    reconcile.announce(release.owner, status, result.status)
    gate = canary_event(status, result.status)
    if gate is not None:
        events.post(release.owner, *gate)
    patch.status.update(status_patch(status, result.status))


@kopf.on.probe(id="indexed")
def on_probe(**_: Any) -> int:
    # The liveness endpoint reports how many TaskAdapters the caches hold.
    return CONTROLLER.caches.count("adapters")


def _ready(conditions: Any) -> dict[str, Any]:
    return next((dict(c) for c in conditions or [] if c.get("type") == "Ready"), {})


class _errors:
    """Counts a reconcile error and turns API/storage errors into a kopf retry with backoff."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> bool:
        if exc is None:
            return False
        metrics.RECONCILE_ERRORS.labels(self.kind).inc()
        if isinstance(exc, kopf.TemporaryError | kopf.PermanentError):
            return False
        raise kopf.TemporaryError(f"{type(exc).__name__}: {exc}", delay=5) from exc


def _timers_without_finalizers() -> None:
    """kopf puts a finalizer on every object that has a timer, to stop the timer before the object goes. Ours
    only read indices and patch status, and the Jobs go by owner references; a finalizer would only block the
    deletion of releases and adapters whenever the operator is not running (e.g. uninstalled before them), and
    cost two API writes per object. kopf has no public switch, so the registered handlers are adjusted."""
    spawning = getattr(kopf.get_default_registry(), "_spawning", None)
    handlers = getattr(spawning, "_handlers", None)
    if not isinstance(handlers, list):
        logging.getLogger(__name__).warning("kopf internals changed: timers keep their finalizer")
        return
    handlers[:] = [
        dataclasses.replace(h, requires_finalizer=False)
        if dataclasses.is_dataclass(h) and hasattr(h, "requires_finalizer")
        else h
        for h in handlers
    ]


_timers_without_finalizers()
