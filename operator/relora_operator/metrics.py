"""Prometheus metrics. Gauges are computed at scrape time from the operator's watch-fed caches (no extra work in
the reconcile loop); counters and the histogram are updated where the events happen."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from relora_operator.conditions import get
from relora_operator.family_metrics import FamilyCollector
from relora_operator.settings import Settings

RECONCILE_ERRORS = Counter("relora_reconcile_errors_total", "Reconcile errors by resource kind.", ["kind"])
JOBS_CREATED = Counter("relora_jobs_created_total", "Jobs created by the operator.", ["component"])
TIME_TO_READINESS = Histogram(
    "relora_time_to_readiness_seconds",
    "Time to readiness of successful re-adaptations (worker-measured).",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400),
)

CACHE_SYNCED_SECONDS = Gauge(
    "relora_cache_synced_seconds", "Seconds from the operator's start until every watched kind was listed."
)
FAMILY_PASS_SECONDS = Histogram(
    "relora_family_pass_seconds",
    "Duration of a full pass over a family by its newest release's timer (Jobs and every member's status).",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)


class IndexCollector(Collector):
    """adapters by phase / Ready condition, Jobs by state; reads the live cache indices it is given."""

    def __init__(self) -> None:
        self.adapters: Mapping[Any, Iterable[Any]] | None = None
        self.jobs: Mapping[Any, Iterable[Any]] | None = None
        self.releases: Mapping[Any, Iterable[Any]] | None = None  # read by FAMILIES

    def collect(self) -> Iterable[GaugeMetricFamily]:
        by_phase = GaugeMetricFamily(
            "relora_taskadapters", "TaskAdapters by phase and Ready condition.", labels=["phase", "ready"]
        )
        tally: Tally[tuple[str, str]] = Tally()
        for store in list((self.adapters or {}).values()):
            for adapter in list(store):
                ready = (get(adapter.status.get("conditions"), "Ready") or {}).get("status", "Unknown")
                tally[(adapter.status.get("phase") or "Pending", ready)] += 1
        for (phase, ready), n in sorted(tally.items()):
            by_phase.add_metric([phase, ready], n)
        yield by_phase
        jobs = GaugeMetricFamily(
            "relora_jobs",
            "Worker Jobs by component and state (Running, Suspended = queued in Kueue, Succeeded, Failed).",
            labels=["component", "state"],
        )
        jt: Tally[tuple[str, str]] = Tally()
        for store in list((self.jobs or {}).values()):
            for job in list(store):
                jt[(job.component, job.state)] += 1
        for (component, state), n in sorted(jt.items()):
            jobs.add_metric([component, state], n)
        yield jobs
        queued = GaugeMetricFamily(
            "relora_adaptations_waiting", "TaskAdapters waiting for a slot or a projection (not yet a Job)."
        )
        queued.add_metric([], sum(n for (phase, _), n in tally.items() if phase in ("Queued", "WaitingForProjection")))
        yield queued


COLLECTOR = IndexCollector()
# Per-family series (namespace, family, release), bounded by RELORA_METRICS_MAX_FAMILIES (family_metrics.py).
FAMILIES = FamilyCollector(COLLECTOR)
_started = False


def start(port: int) -> None:
    global _started
    if _started or port <= 0:
        return
    REGISTRY.register(COLLECTOR)
    FAMILIES.max_families = Settings.from_env().metrics_max_families
    REGISTRY.register(FAMILIES)
    start_http_server(port)
    _started = True
