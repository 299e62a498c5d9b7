"""Per-family metrics, labelled ``namespace``, ``family`` and (for rollouts) ``release``, computed at scrape
time from the operator's caches (nothing is tracked in the reconcile loop).

Cardinality is bounded by construction, whatever the history: only the *newest* release of each family has
rollout series (older releases drop out when superseded), the other labels take a fixed set of values (phase,
state, component, kind), and at most ``max_families`` (namespace, family) pairs get series of their own (those
with the most TaskAdapters); the rest are summed into ``namespace="_other", family="_other"``. Per family that
is at most 7 (adapter phases) + 5 (rollout states) + 1 (rollout start) + 8 (Job component x state) + 2 (storage)
= 23 series. docs/operator.md ("Metrics") lists them; the chart's PrometheusRule and dashboard use them.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from relora_operator import naming

OTHER = "_other"
ADAPTER_PHASES = ("Pending", "WaitingForProjection", "Queued", "Adapting", "Ready", "Degraded", "Failed")
ROLLOUT_STATES = ("ready", "degraded", "failed", "running", "queued")  # a release's status.adapters counters
JOB_STATES = ("Running", "Suspended", "Succeeded", "Failed")
STORAGE_DOWN = "StorageUnavailable"
Key = tuple[str, str]  # (namespace, family)


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _timestamp(text: str | None) -> float | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp() if text else None
    except ValueError:
        return None


class FamilyCollector(Collector):
    """Reads, at each scrape, the live cache indices of ``source`` (metrics.COLLECTOR, which the operator's
    start-up hands its caches): ``adapters`` and ``releases`` by (namespace, family), ``jobs`` by name. An index
    not handed over yet (None) yields no series."""

    def __init__(self, source: Any, max_families: int = 500) -> None:
        self.source, self.max_families = source, max_families

    def _items(self, name: str) -> list[tuple[Any, list[Any]]]:
        index: Mapping[Any, Iterable[Any]] | None = getattr(self.source, name, None)
        return [(key, list(views)) for key, views in list((index or {}).items())]

    def _keep(self, adapters: list[tuple[Any, list[Any]]], releases: list[tuple[Any, list[Any]]]) -> set[Key]:
        sizes: Tally[Key] = Tally({key: len(views) for key, views in adapters})
        for key, _ in releases:
            sizes.setdefault(key, 0)
        ranked = sorted(sizes, key=lambda k: (-sizes[k], k))  # stable: most adapters first, then by name
        return set(ranked[: max(0, self.max_families)])

    def collect(self) -> Iterable[GaugeMetricFamily]:
        adapters, releases, jobs = self._items("adapters"), self._items("releases"), self._items("jobs")
        keep = self._keep(adapters, releases)

        def label(key: Key) -> Key:
            return key if key in keep else (OTHER, OTHER)

        storage: Tally[tuple[str, str, str]] = Tally()
        phases = _adapter_phases(adapters, label, storage)
        rollout, started, family_of = _rollouts(releases, label, storage)
        by_state, pod_failures = _job_states(jobs, family_of)
        yield _gauge(
            "relora_family_taskadapters",
            "TaskAdapters by namespace, family, target release and phase.",
            ["namespace", "family", "release", "phase"],
            phases,
        )
        yield _gauge(
            "relora_release_adapters",
            "The newest release of each family: its TaskAdapters by rollout state (status.adapters).",
            ["namespace", "family", "release", "state"],
            rollout,
        )
        yield _gauge(
            "relora_release_rollout_start_timestamp_seconds",
            "When the rollout of the newest release of each family started (status.startTime), Unix seconds.",
            ["namespace", "family", "release"],
            started,
        )
        yield _gauge(
            "relora_family_jobs",
            "Worker Jobs by namespace, family, component and state (Suspended = queued in Kueue).",
            ["namespace", "family", "component", "state"],
            by_state,
        )
        yield _gauge(
            "relora_family_job_pod_failures",
            "Failed pods (retries included) of the worker Jobs that exist, by namespace, family and component.",
            ["namespace", "family", "component"],
            pod_failures,
        )
        yield _gauge(
            "relora_storage_unavailable",
            "Resources whose storage cannot be read: TaskAdapters (Ready reason StorageUnavailable) and "
            "BaseModelReleases (StorageAvailable=False), by namespace and family.",
            ["namespace", "family", "kind"],
            storage,
        )


Label = Callable[[Key], Key]


def _adapter_phases(
    adapters: list[tuple[Any, list[Any]]], label: Label, storage: Tally[tuple[str, str, str]]
) -> Tally[tuple[str, str, str, str]]:
    """TaskAdapters by (namespace, family, target release, phase); counts those whose storage is down into
    ``storage``. Families folded into _other get no release label (that would bring the cardinality back)."""
    phases: Tally[tuple[str, str, str, str]] = Tally()
    for key, views in adapters:
        ns, family = label(key)
        for adapter in views:
            status = adapter.status or {}
            release = OTHER if ns == OTHER else str(status.get("targetRelease") or "")
            phases[(ns, family, release, status.get("phase") or "Pending")] += 1
            if _condition(status, "Ready").get("reason") == STORAGE_DOWN:
                storage[(ns, family, "TaskAdapter")] += 1
    return phases


def _rollouts(
    releases: list[tuple[Any, list[Any]]], label: Label, storage: Tally[tuple[str, str, str]]
) -> tuple[Tally[tuple[str, str, str, str]], dict[tuple[str, str, str], float], dict[tuple[str, str], Key]]:
    """The rollout of each family's newest release (its status.adapters counters and start time; a superseded
    or not yet reconciled one has none), releases whose storage is down (into ``storage``), and which family a
    Job's release label belongs to (Jobs carry the release's version, not its family)."""
    rollout: Tally[tuple[str, str, str, str]] = Tally()
    started: dict[tuple[str, str, str], float] = {}
    # (namespace, release label value of a Job) -> its (namespace, family) labels
    family_of: dict[tuple[str, str], Key] = {}
    for key, views in releases:
        ns, family = label(key)
        for release in views:
            family_of[(release.namespace, naming.label_value(release.version))] = (ns, family)
            status = release.status or {}
            if _condition(status, "StorageAvailable").get("status") == "False":
                storage[(ns, family, "BaseModelRelease")] += 1
        newest = max(views, key=lambda r: r.order, default=None)
        if newest is None or (newest.status or {}).get("phase") in (None, "Superseded"):
            continue
        name = OTHER if ns == OTHER else newest.version
        counts = (newest.status or {}).get("adapters") or {}
        for state in ROLLOUT_STATES:
            rollout[(ns, family, name, state)] += int(counts.get(state) or 0)
        start = _timestamp((newest.status or {}).get("startTime"))
        if start is not None and ns != OTHER:
            started[(ns, family, name)] = start
    return rollout, started, family_of


def _job_states(
    jobs: list[tuple[Any, list[Any]]], family_of: Mapping[tuple[str, str], Key]
) -> tuple[Tally[tuple[str, str, str, str]], Tally[tuple[str, str, str]]]:
    """Worker Jobs by (namespace, family, component, state), and their failed pods by component."""
    by_state: Tally[tuple[str, str, str, str]] = Tally()
    pod_failures: Tally[tuple[str, str, str]] = Tally()
    for _, views in jobs:
        for job in views:
            # A Job whose release is gone has family "" (it goes with its owner, by garbage collection).
            ns, family = family_of.get((job.namespace, job.release), (job.namespace, ""))
            by_state[(ns, family, job.component, job.state)] += 1
            pod_failures[(ns, family, job.component)] += int(job.failed or 0)
    return by_state, pod_failures


def _gauge(name: str, doc: str, labels: list[str], values: Mapping[tuple[Any, ...], float]) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        gauge.add_metric([str(k) for k in key], value)
    return gauge
