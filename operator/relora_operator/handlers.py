"""kopf handlers: a few lines each, delegating to ``reconcile`` (I/O) and the pure modules.

Level-triggered: each BaseModelRelease has a timer that, every RELORA_RESYNC_SECONDS, recomputes the desired
state of the release and of every TaskAdapter of its family from kopf's in-memory indices (built from watch
streams, so rebuilt after a restart), creates the missing Jobs and writes the statuses that changed. A
TaskAdapter's own watch events trigger the same computation for it alone, for an immediate reaction; so does
the end of its adaptation Job, and the end of a projection Job starts its release's pass at once (its
adaptation Jobs wait for it), instead of one resync later.
(Per-adapter timers cost kopf ~0.45 MB each: 900 MB at 2000 adapters; see bench/operator.)
The operator stores nothing of its own: no change handlers, so kopf writes no progress annotations.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
from typing import Any

import kopf

from relora_operator import decisions, metrics, naming, reconcile, views
from relora_operator.diffbase import LeanDiffBaseStorage
from relora_operator.models import GROUP, VERSION
from relora_operator.settings import Settings
from relora_operator.status import status_patch

SETTINGS = Settings.from_env()
MANAGED = {naming.LABEL_MANAGED: naming.MANAGED_BY}
RELEASES = (GROUP, VERSION, "basemodelreleases")
ADAPTERS = (GROUP, VERSION, "taskadapters")


@kopf.on.startup()
async def on_startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Job creates, status patches and S3 reads run in threads (asyncio.to_thread): size the pool for them.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(SETTINGS.api_workers, thread_name_prefix="relora-api")
    )
    # Only used if a handler ever needs one (none does; see _timers_without_finalizers).
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    # kopf's own essence, minus a deep copy of every watched body (pods, Jobs) that cost 15 % of the CPU.
    settings.persistence.diffbase_storage = LeanDiffBaseStorage(prefix=GROUP)
    settings.execution.max_workers = SETTINGS.api_workers
    # CRDs are installed with the chart; not watching them saves a cluster-wide RBAC grant.
    settings.scanning.disabled = True
    settings.posting.level = logging.INFO
    metrics.start(SETTINGS.metrics_port)


@kopf.index(*RELEASES)
async def releases_idx(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, Any]:
    view = views.release_view(body)
    return {(namespace, view.family): view}


@kopf.index(*ADAPTERS)
async def adapters_idx(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, Any]:
    view = views.cached_adapter_view(body)
    return {(namespace, view.family): view}


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def jobs_idx(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): views.job_view(body)}


@kopf.index(*ADAPTERS)
async def adapters_by_name(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): views.cached_adapter_view(body)}


@kopf.index("", "v1", "pods", labels=MANAGED)
async def pods_idx(body: kopf.Body, namespace: str, **_: Any) -> dict[Any, Any]:
    pod = views.pod_view(body)
    return {(namespace, pod.job): pod}


@kopf.timer(*RELEASES, interval=SETTINGS.resync_seconds, initial_delay=1.0)
async def on_release_tick(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    releases_idx: kopf.Index,
    adapters_idx: kopf.Index,
    jobs_idx: kopf.Index,
    pods_idx: kopf.Index,
    **_: Any,
) -> None:
    metrics.COLLECTOR.adapters, metrics.COLLECTOR.jobs = adapters_idx, jobs_idx
    metrics.COLLECTOR.releases = releases_idx
    release = views.release_view(body)
    with _errors("BaseModelRelease"):
        result = await reconcile.release_pass(release, releases_idx, adapters_idx, jobs_idx, pods_idx, SETTINGS)
    _announce_created(body, result.created)
    reconcile.announce(body, status, result.status)
    patch.status.update(status_patch(status, result.status))


def _announce_created(body: Any, created: list[str]) -> None:
    if created:
        kopf.info(
            body,
            reason="JobsCreated",
            message=f"created {len(created)} Job(s): " + ", ".join(created[:5]) + (" ..." if len(created) > 5 else ""),
        )


def _job_finished(body: kopf.Body, **_: Any) -> bool:
    return views.job_view(body).finished


# Finished Jobs whose follow-up already ran (a finished Job still gets events, e.g. when its pods go).
_followed_up: set[str] = set()


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED, when=_job_finished)
async def on_job_finished(
    type: str,
    body: kopf.Body,
    uid: str,
    namespace: str,
    releases_idx: kopf.Index,
    adapters_idx: kopf.Index,
    adapters_by_name: kopf.Index,
    jobs_idx: kopf.Index,
    pods_idx: kopf.Index,
    **_: Any,
) -> None:
    # Edge-triggered follow-up of a finished Job; the release timer's resync remains the level-triggered
    # safety net for everything this skips (e.g. a pod not yet in the index).
    if type == "DELETED":
        _followed_up.discard(uid)
        return
    if uid in _followed_up:
        return
    job = views.job_view(body)
    labels = body.get("metadata", {}).get("labels") or {}
    if job.component == "projection":
        _followed_up.add(uid)
        family_label = labels.get(naming.LABEL_FAMILY, "")
        for (ns, family), family_releases in list(releases_idx.items()):
            if ns != namespace or naming.label_value(family) != family_label:
                continue
            newest = decisions.newest_release(list(family_releases))
            if newest is None:
                continue
            with _errors("BaseModelRelease"):
                result = await reconcile.release_pass(newest, releases_idx, adapters_idx, jobs_idx, pods_idx, SETTINGS)
            _announce_created(dict(newest.owner), result.created)  # the release's status: at its next tick
    elif job.component == "adaptation":
        adapter = reconcile.first(adapters_by_name, (namespace, job.adapter))
        if adapter is None or not reconcile.has_finished_pod(pods_idx, namespace, job.name):
            return  # the resync will see it
        _followed_up.add(uid)
        with _errors("TaskAdapter"):
            await reconcile.sync_adapters([adapter], releases_idx, jobs_idx, pods_idx, SETTINGS)


@kopf.on.event(*ADAPTERS)
async def on_adapter_event(
    type: str,
    body: kopf.Body,
    uid: str,
    releases_idx: kopf.Index,
    jobs_idx: kopf.Index,
    pods_idx: kopf.Index,
    **_: Any,
) -> None:
    # Immediate reaction to a new or edited adapter (the release timer resyncs them all periodically).
    if type == "DELETED":
        views.forget_adapter(uid)
        reconcile.forget(uid)
        return
    with _errors("TaskAdapter"):
        await reconcile.sync_adapters([views.cached_adapter_view(body)], releases_idx, jobs_idx, pods_idx, SETTINGS)


@kopf.on.probe(id="indexed")
def on_probe(adapters_idx: kopf.Index, jobs_idx: kopf.Index, **_: Any) -> int:
    # The liveness endpoint reports this; it also hands the live indices to the metrics collector.
    metrics.COLLECTOR.adapters, metrics.COLLECTOR.jobs = adapters_idx, jobs_idx
    return len(adapters_idx)


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
