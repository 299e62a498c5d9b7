"""The process: kopf runs it (start-up, clean-up, the liveness probe); the work is ours.

Level-triggered: every BaseModelRelease gets a tick (``ticker``) every RELORA_RESYNC_SECONDS that recomputes the
desired state of the release and of every TaskAdapter of its family, creates the missing Jobs and writes the
statuses that changed. What the passes read comes from the controller's watch-fed caches (one list+watch per
kind), not from kopf indices: kopf's index readiness costs the square of the object count at start-up
(bench/operator). The caches' events trigger the immediate reactions (see ``controller``).
kopf registers no resource handler: no timers (a kopf timer puts a finalizer on its object, with no public
switch to avoid it), no change handlers (kopf writes no progress annotations), so the operator puts nothing on
the objects it watches and uses no private kopf API.

What the process holds (the ``OperatorState``, the controller, the ticker) is made at start-up and kept in kopf's
operator memo, which kopf hands to the start-up, clean-up and probe handlers; the passes get it explicitly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import time
from typing import Any

import kopf

from relora_operator import decisions, kube, metrics, reconcile, refusals, sharding, views
from relora_operator.conditions import now_iso
from relora_operator.controller import Controller, announce_created
from relora_operator.release_status import canary_event
from relora_operator.settings import Settings
from relora_operator.state import OperatorState
from relora_operator.status import status_patch
from relora_operator.ticker import Ticker

SETTINGS = Settings.from_env()


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Kept first: clean-up and the probe find them even if a later step of the start-up fails.
    memo.state = state = OperatorState()
    shards = sharding.Sharding(
        SETTINGS.shards, namespace=SETTINGS.lease_namespace_or_default(), lease_seconds=SETTINGS.shard_lease_seconds
    )
    memo.controller = controller = Controller(SETTINGS, shards, state)
    memo.ticker = ticker = Ticker(
        lambda: controller.caches.views("releases"),
        lambda r: r.uid,
        functools.partial(release_tick, controller),
        SETTINGS.resync_seconds,
    )
    # Job creates, status patches and S3 reads run in threads (asyncio.to_thread): size the pool for them.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(SETTINGS.api_workers + 8, thread_name_prefix="relora-api")
    )
    # CRDs are installed with the chart; not watching them saves a cluster-wide RBAC grant.
    settings.scanning.disabled = True
    metrics.COLLECTOR.adapters, metrics.COLLECTOR.jobs = controller.adapters, controller.jobs
    metrics.COLLECTOR.releases = controller.releases  # per-family series (family_metrics.py)
    metrics.start(SETTINGS.metrics_port)
    # The watches hold their connections for minutes: a pool of their own, one connection per watched kind.
    controller.start(kube.new_api_client(2 * len(controller.caches.kinds) * max(1, len(SETTINGS.namespaces))))
    controller.spawn(ticker.run())
    if shards.enabled:
        leases = sharding.LeaseClient(kube.api_client(SETTINGS.api_workers), shards.namespace)
        state.lease_tasks.append(asyncio.create_task(sharding.run(shards, leases, state.stop_leases)))


@kopf.on.cleanup()
async def on_cleanup(memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState | None = memo.get("state")
    if state is None:  # the start-up never ran
        return
    state.stop_leases.set()
    for task in state.lease_tasks:  # it hands the shards over now, rather than after their Leases expire
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
    memo.ticker.stop()
    memo.controller.stop()
    dropped = state.events.drop_pending()
    if dropped:
        logging.getLogger(__name__).warning("stopping: %d Event(s) not posted", dropped)


@kopf.on.probe(id="indexed")
def on_probe(memo: kopf.Memo, **_: Any) -> int:
    # The liveness endpoint reports how many TaskAdapters the caches hold (none before the start-up made them).
    controller: Controller | None = memo.get("controller")
    return controller.caches.count("adapters") if controller is not None else 0


async def release_tick(controller: Controller, release: views.ReleaseView) -> None:
    """One release's periodic pass: its family's Jobs and statuses, then the release's own status."""
    if not controller.sharding.owns(release.namespace, release.family):
        return  # another replica's shard
    status = dict(reconcile.freshest_status(controller.state, release))
    refused = await controller.refused(release.namespace)
    if refused:  # the caches cannot see the family: say why on the release instead of waiting silently
        reconcile.report_refused(controller.state, release, refused)
        new = refusals.forbidden_release_status(status, refused, release.generation, now_iso())
        await _write_status(controller.state, release, status, new)
        return
    started = time.monotonic()
    try:
        result = await controller.release_pass(release)
    except Exception:
        metrics.RECONCILE_ERRORS.labels("BaseModelRelease").inc()
        raise  # the ticker logs it; the next tick retries
    family = controller.releases.get((release.namespace, release.family), ())
    if decisions.is_newest(release, family):  # the full pass: Jobs and every member's status
        metrics.FAMILY_PASS_SECONDS.observe(time.monotonic() - started)
    announce_created(controller.state, release.owner, result.created)
    reconcile.announce(controller.state, release.owner, status, result.status)
    gate = canary_event(status, result.status)
    if gate is not None:
        controller.state.events.post(release.owner, *gate)
    await _write_status(controller.state, release, status, result.status)


async def _write_status(
    state: OperatorState, release: views.ReleaseView, old: dict[str, Any], new: dict[str, Any]
) -> None:
    patch = status_patch(old, new)
    if patch:
        await reconcile.write_status(state, "basemodelreleases", release, new, patch, SETTINGS)
