"""The process: kopf runs it (start-up, clean-up, the liveness probe); the work is ours.

Level-triggered: every BaseModelRelease gets a tick (``ticker``) every RELORA_RESYNC_SECONDS that recomputes the
desired state of the release and of every TaskAdapter of its family, creates the missing Jobs and writes the
statuses that changed. What the passes read comes from the controller's watch-fed caches (one list+watch per
kind), not from kopf indices: kopf's index readiness costs the square of the object count at start-up
(bench/operator). The caches' events trigger the immediate reactions (see ``controller``).
kopf registers no resource handler: no timers (a kopf timer puts a finalizer on its object, with no public
switch to avoid it), no change handlers (kopf writes no progress annotations), so the operator puts nothing on
the objects it watches and uses no private kopf API.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from typing import Any

import kopf

from relora_operator import decisions, events, kube, metrics, reconcile, refusals, sharding, views
from relora_operator.conditions import now_iso
from relora_operator.controller import Controller, announce_created
from relora_operator.release_status import canary_event
from relora_operator.settings import Settings
from relora_operator.status import status_patch
from relora_operator.ticker import Ticker

SETTINGS = Settings.from_env()
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
    # CRDs are installed with the chart; not watching them saves a cluster-wide RBAC grant.
    settings.scanning.disabled = True
    metrics.COLLECTOR.adapters, metrics.COLLECTOR.jobs = CONTROLLER.adapters, CONTROLLER.jobs
    metrics.COLLECTOR.releases = CONTROLLER.releases  # per-family series (family_metrics.py)
    metrics.start(SETTINGS.metrics_port)
    # The watches hold their connections for minutes: a pool of their own, one connection per watched kind.
    CONTROLLER.start(kube.new_api_client(2 * len(CONTROLLER.caches.kinds) * max(1, len(SETTINGS.namespaces))))
    CONTROLLER.spawn(TICKER.run())
    if SHARDING.enabled:
        leases = sharding.LeaseClient(kube.api_client(SETTINGS.api_workers), SHARDING.namespace)
        _lease_loop.append(asyncio.create_task(sharding.run(SHARDING, leases, _stop_leases)))


@kopf.on.cleanup()
async def on_cleanup(**_: Any) -> None:
    _stop_leases.set()
    for task in _lease_loop:  # it hands the shards over now, rather than after their Leases expire
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
    TICKER.stop()
    CONTROLLER.stop()
    dropped = events.drop_pending()
    if dropped:
        logging.getLogger(__name__).warning("stopping: %d Event(s) not posted", dropped)


@kopf.on.probe(id="indexed")
def on_probe(**_: Any) -> int:
    # The liveness endpoint reports how many TaskAdapters the caches hold.
    return CONTROLLER.caches.count("adapters")


async def release_tick(release: views.ReleaseView) -> None:
    """One release's periodic pass: its family's Jobs and statuses, then the release's own status."""
    if not SHARDING.owns(release.namespace, release.family):
        return  # another replica's shard
    status = dict(reconcile.freshest_status(release))
    refused = await CONTROLLER.refused(release.namespace)
    if refused:  # the caches cannot see the family: say why on the release instead of waiting silently
        reconcile.report_refused(release, refused)
        new = refusals.forbidden_release_status(status, refused, release.generation, now_iso())
        await _write_status(release, status, new)
        return
    started = time.monotonic()
    try:
        result = await CONTROLLER.release_pass(release)
    except Exception:
        metrics.RECONCILE_ERRORS.labels("BaseModelRelease").inc()
        raise  # the ticker logs it; the next tick retries
    newest = decisions.newest_release(CONTROLLER.releases.get((release.namespace, release.family), ()))
    if newest is not None and newest.uid == release.uid:  # the full pass: Jobs and every member's status
        metrics.FAMILY_PASS_SECONDS.observe(time.monotonic() - started)
    announce_created(release.owner, result.created)
    reconcile.announce(release.owner, status, result.status)
    gate = canary_event(status, result.status)
    if gate is not None:
        events.post(release.owner, *gate)
    await _write_status(release, status, result.status)


TICKER = Ticker(lambda: CONTROLLER.caches.views("releases"), lambda r: r.uid, release_tick, SETTINGS.resync_seconds)


async def _write_status(release: views.ReleaseView, old: dict[str, Any], new: dict[str, Any]) -> None:
    patch = status_patch(old, new)
    if patch:
        await reconcile.write_status("basemodelreleases", release, new, patch, SETTINGS)
