"""Per-family metrics: labelled by namespace, family and release, bounded whatever the number of families and
releases, parsed from the real Prometheus text exposition."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from relora_operator import views
from relora_operator.family_metrics import OTHER, FamilyCollector

from tests.operator.factories import adapter, job, release_body


def _ready(reason: str, status: str = "True") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason}


def _release(version: str, day: int, family: str = "llama", **status: Any) -> views.ReleaseView:
    body = release_body(version, family=family, created=f"2026-01-{day:02d}T00:00:00Z", status=status)
    return views.release_view(body)


def _scrape(collector: FamilyCollector) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        f.name: [(dict(s.labels), s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def _collector(max_families: int = 500) -> FamilyCollector:
    c = FamilyCollector(SimpleNamespace(), max_families)
    c.source.adapters = {
        ("team-a", "llama"): [
            adapter("a1", status={"phase": "Ready", "targetRelease": "v2", "conditions": [_ready("Readapted")]}),
            adapter("a2", status={"phase": "Degraded", "targetRelease": "v2",
                                  "conditions": [_ready("Degraded", "False")]}),
            adapter("a3", status={"phase": "Adapting", "targetRelease": "v2",
                                  "conditions": [_ready("StorageUnavailable", "False")]}),
        ],
        ("team-b", "qwen"): [adapter("b1", family="qwen", status={"phase": "Queued", "targetRelease": "r9"})],
    }
    c.source.releases = {
        ("team-a", "llama"): [
            _release("v1", 1, phase="Superseded"),
            _release("v2", 2, phase="RollingOut", startTime="2026-01-02T00:00:00Z",
                     adapters={"total": 3, "ready": 1, "degraded": 1, "failed": 0, "running": 1, "queued": 0},
                     conditions=[{"type": "StorageAvailable", "status": "False", "reason": "StorageUnavailable"}]),
        ],
    }
    c.source.jobs = {
        ("team-a", "j1"): [job("j1", state="Succeeded")],
        ("team-a", "j2"): [job("j2", state="Failed", failed=3)],
        ("team-a", "p1"): [job("p1", component="projection", state="Suspended")],
        ("team-a", "old"): [job("old", release="v1", state="Succeeded")],
        ("team-a", "gone"): [job("gone", release="v0", state="Failed", failed=1)],
    }
    return c


def test_series_are_labelled_by_namespace_family_and_release() -> None:
    m = _scrape(_collector())
    phases = {(s["namespace"], s["family"], s["release"], s["phase"]): v for s, v in m["relora_family_taskadapters"]}
    assert phases == {
        ("team-a", "llama", "v2", "Ready"): 1,
        ("team-a", "llama", "v2", "Degraded"): 1,
        ("team-a", "llama", "v2", "Adapting"): 1,
        ("team-b", "qwen", "r9", "Queued"): 1,
    }
    # Rollout series only for the newest release of a family, every state present (0 too: alerts compare them).
    rollout = {(s["release"], s["state"]): v for s, v in m["relora_release_adapters"]}
    assert rollout == {("v2", "ready"): 1, ("v2", "degraded"): 1, ("v2", "failed"): 0, ("v2", "running"): 1,
                       ("v2", "queued"): 0}
    assert m["relora_release_rollout_start_timestamp_seconds"] == [
        ({"namespace": "team-a", "family": "llama", "release": "v2"}, 1767312000.0)
    ]
    jobs = {(s["family"], s["component"], s["state"]): v for s, v in m["relora_family_jobs"]}
    assert jobs == {
        ("llama", "adaptation", "Succeeded"): 2,  # v2 and the superseded v1's Job
        ("llama", "adaptation", "Failed"): 1,
        ("llama", "projection", "Suspended"): 1,
        ("", "adaptation", "Failed"): 1,  # its release is gone
    }
    failures = {(s["family"], s["component"]): v for s, v in m["relora_family_job_pod_failures"]}
    assert failures[("llama", "adaptation")] == 3 and failures[("", "adaptation")] == 1
    storage = {(s["namespace"], s["family"], s["kind"]): v for s, v in m["relora_storage_unavailable"]}
    assert storage == {("team-a", "llama", "TaskAdapter"): 1, ("team-a", "llama", "BaseModelRelease"): 1}


def test_cardinality_is_bounded_by_max_families() -> None:
    """Beyond max_families the smallest families are summed into _other: no series per family or release."""
    c = _collector(max_families=1)
    m = _scrape(c)
    phases = {(s["namespace"], s["family"], s["release"], s["phase"]): v for s, v in m["relora_family_taskadapters"]}
    assert phases[(OTHER, OTHER, OTHER, "Queued")] == 1  # team-b/qwen (1 adapter) folded, llama (3) kept
    assert {k[:2] for k in phases} == {("team-a", "llama"), (OTHER, OTHER)}
    # A thousand families of one adapter each, ten releases each: the series count stays the same.
    many = FamilyCollector(SimpleNamespace(jobs={}), max_families=5)
    many.source.adapters = {
        (f"ns{i}", f"f{i}"): [adapter(f"a{i}", family=f"f{i}", status={"phase": "Ready", "targetRelease": f"v{i}"})]
        for i in range(1000)
    }
    many.source.releases = {
        (f"ns{i}", f"f{i}"): [_release(f"v{k}", k + 1, family=f"f{i}", phase="RollingOut") for k in range(10)]
        for i in range(1000)
    }
    sizes = {name: len(samples) for name, samples in _scrape(many).items()}
    assert sizes["relora_family_taskadapters"] == 6  # 5 families + _other, one phase each
    assert sizes["relora_release_adapters"] == 6 * 5  # newest release only, 5 states


def test_unwatched_collector_is_empty() -> None:
    assert all(samples == [] for samples in _scrape(FamilyCollector(SimpleNamespace(adapters=None))).values())
