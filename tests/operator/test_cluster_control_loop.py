"""The operator's control loop on the real control plane, with the fake worker (instant, contract-true).

Release v1 + adapters, then v2: one shared projection, a Job per adapter, statuses Ready / Degraded / Failed,
the release's aggregate, Events, and restart safety (kill -9 mid-rollout: no duplicate Job, no lost result).
"""

from __future__ import annotations

import itertools
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operator.conftest import wait_equal
from tests.operator.factories import adapter_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster
FAKE = f"{sys.executable} {Path(__file__).with_name('fake_worker.py')}"


def apply(kubectl: Any, namespace: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    doc = {"apiVersion": "relora.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


def release(kubectl: Any, namespace: str, version: str) -> None:
    apply(
        kubectl,
        namespace,
        "BaseModelRelease",
        f"llama-{version}",
        {"family": "llama", "version": version, "modelUri": f"s3://models/llama/{version}/"},
    )


def get(kubectl: Any, namespace: str, kind: str) -> dict[str, dict[str, Any]]:
    items = json.loads(kubectl("get", "-n", namespace, kind, "-o", "json").stdout)["items"]
    return {i["metadata"]["name"]: i for i in items}


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})


def phases(kubectl: Any, namespace: str) -> dict[str, str]:
    return {n: a.get("status", {}).get("phase", "") for n, a in get(kubectl, namespace, "taskadapters").items()}


def test_rollout_with_outcomes(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    operator_factory(namespace, RELORA_WORKER_COMMAND=FAKE, RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}")
    release(kubectl, namespace, "v1")
    apply(kubectl, namespace, "TaskAdapter", "sentiment", adapter_spec())
    apply(
        kubectl,
        namespace,
        "TaskAdapter",
        "topic",
        adapter_spec(adapterUri="s3://adapters/topic/", priority=5),
    )
    apply(kubectl, namespace, "TaskAdapter", "picky", adapter_spec(quality={"threshold": 0.99}))
    apply(
        kubectl,
        namespace,
        "TaskAdapter",
        "broken",
        adapter_spec(task={"type": "seq-cls", "trainData": "s3://data/missing.jsonl"}),
    )
    wait_equal(lambda: set(phases(kubectl, namespace).values()), {"Ready"}, 60)
    assert {ready(a)["reason"] for a in get(kubectl, namespace, "taskadapters").values()} == {"TrainedOnRelease"}

    release(kubectl, namespace, "v2")
    final = {"sentiment": "Ready", "topic": "Ready", "picky": "Degraded", "broken": "Failed"}
    wait_equal(lambda: phases(kubectl, namespace), final, 120)
    adapters = get(kubectl, namespace, "taskadapters")
    for name in ("sentiment", "topic"):
        st = adapters[name]["status"]
        assert st["readyRelease"] == "v2" and st["quality"] >= adapters[name]["spec"]["quality"]["threshold"]
        assert st["adapterUri"].startswith(f"file:///tmp/relora-{namespace}/adapters/{namespace}/{name}/v2/")
        assert ready(adapters[name])["status"] == "True"
    picky = adapters["picky"]["status"]
    assert ready(adapters["picky"])["reason"] == "BelowThreshold"
    assert picky["adapterUri"] == "s3://adapters/sentiment/" and picky["readyRelease"] == "v1"
    broken = adapters["broken"]
    assert ready(broken)["reason"] == "BadInput" and "s3://data/missing.jsonl" in ready(broken)["message"]

    jobs = json.loads(kubectl("get", "-n", namespace, "jobs", "-o", "json").stdout)["items"]
    components = [j["metadata"]["labels"]["app.kubernetes.io/component"] for j in jobs]
    assert components.count("projection") == 1 and components.count("adaptation") == 4
    owners = {j["metadata"]["ownerReferences"][0]["kind"] for j in jobs}
    assert owners == {"BaseModelRelease", "TaskAdapter"}

    rel = wait_for(
        lambda: (
            (r := get(kubectl, namespace, "basemodelreleases")["llama-v2"])["status"].get("phase") == "Complete" and r
        ),
        30,
        "release Complete",
    )
    assert rel["status"]["adapters"] == {
        "total": 4,
        "ready": 2,
        "degraded": 1,
        "failed": 1,
        "running": 0,
        "queued": 0,
    }
    assert rel["status"]["supersedes"] == "v1" and rel["status"]["rolloutDurationSeconds"] >= 0
    table = kubectl("get", "-n", namespace, "taskadapters").stdout
    assert "BelowThreshold" in table and "Readapted" in table
    events = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "Readapted" in events and "BelowThreshold" in events and "JobsCreated" in events


def test_priority_and_concurrency_limit(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    operator_factory(
        namespace,
        RELORA_WORKER_COMMAND=FAKE,
        RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}",
        RELORA_MAX_CONCURRENT_JOBS="1",
        RELORA_WORKER_ENV_SLEEP="1",
    )
    release(kubectl, namespace, "v1")
    for name, prio in (("low", 0), ("high", 10), ("mid", 5)):
        apply(kubectl, namespace, "TaskAdapter", name, adapter_spec(priority=prio))
    release(kubectl, namespace, "v2")
    # Ready *for v2*: right after v2 is applied every adapter is still Ready for v1 (as given).
    wait_equal(
        lambda: {
            (a.get("status", {}).get("readyRelease"), a.get("status", {}).get("phase"))
            for a in get(kubectl, namespace, "taskadapters").values()
        },
        {("v2", "Ready")},
        120,
    )
    jobs = json.loads(kubectl("get", "-n", namespace, "jobs", "-o", "json").stdout)["items"]
    adapt = sorted(
        (j for j in jobs if j["metadata"]["labels"]["app.kubernetes.io/component"] == "adaptation"),
        key=lambda j: j["metadata"]["creationTimestamp"],
    )
    order = [j["metadata"]["labels"]["relora.dev/task-adapter"] for j in adapt]
    assert order == ["high", "mid", "low"]
    # Never more than one at a time: each Job was created after the previous one completed.
    for prev, nxt in itertools.pairwise(adapt):
        assert nxt["metadata"]["creationTimestamp"] >= prev["status"]["completionTime"]


def jobs_by_component(kubectl: Any, namespace: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"projection": [], "adaptation": []}
    for j in json.loads(kubectl("get", "-n", namespace, "jobs", "-o", "json").stdout)["items"]:
        out[j["metadata"]["labels"]["app.kubernetes.io/component"]].append(j["metadata"]["name"])
    return out


def test_operator_killed_mid_rollout_finishes_without_duplicates(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    settings = {"RELORA_WORKER_COMMAND": FAKE, "RELORA_ARTIFACT_ROOT": f"file:///tmp/relora-{namespace}"}
    first = operator_factory(namespace, **settings)
    release(kubectl, namespace, "v1")
    names = [f"task-{i}" for i in range(4)]
    for name in names:  # each re-adaptation runs 6 s
        apply(kubectl, namespace, "TaskAdapter", name, adapter_spec(strategy={"maxSteps": 6000}))
    wait_equal(lambda: set(phases(kubectl, namespace).values()), {"Ready"}, 60)
    release(kubectl, namespace, "v2")
    wait_for(lambda: len(jobs_by_component(kubectl, namespace)["adaptation"]) == 4, 60, "4 adaptation Jobs")
    first.kill()  # SIGKILL: no cleanup, Jobs keep running and finish while no operator watches
    wait_for(lambda: succeeded_adaptations(kubectl, namespace) == 4, 90, "the 4 Jobs to finish, no operator running")
    operator_factory(namespace, **settings)
    wait_equal(lambda: phases(kubectl, namespace), dict.fromkeys(names, "Ready"), 90)
    jobs = jobs_by_component(kubectl, namespace)
    assert len(jobs["projection"]) == 1 and len(jobs["adaptation"]) == 4
    for adapter in get(kubectl, namespace, "taskadapters").values():
        st = adapter["status"]
        assert st["job"] in jobs["adaptation"] and st["readyRelease"] == "v2" and st["quality"] >= 0.8
        assert [h["release"] for h in st["releases"] if h.get("job")] == ["v2"]
    assert "finalizers" not in get(kubectl, namespace, "taskadapters")["task-0"]["metadata"]


def succeeded_adaptations(kubectl: Any, namespace: str) -> int:
    jobs = kubectl("get", "-n", namespace, "jobs", "-l", "app.kubernetes.io/component=adaptation", "-o", "json")
    return sum(1 for j in json.loads(jobs.stdout)["items"] if j.get("status", {}).get("succeeded"))


def test_rollback_serves_the_earlier_adapter_again_without_a_job(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    op = operator_factory(namespace, RELORA_WORKER_COMMAND=FAKE, RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}")
    release(kubectl, namespace, "v1")
    apply(kubectl, namespace, "TaskAdapter", "chat", adapter_spec())  # trained on v1
    release(kubectl, namespace, "v2")

    def status() -> dict[str, Any]:
        return get(kubectl, namespace, "taskadapters")["chat"].get("status", {})

    wait_for(lambda: status().get("readyRelease") == "v2" and status().get("phase") == "Ready", 60, "ready on v2")
    on_v2 = status()["adapterUri"]
    release(kubectl, namespace, "v3")
    wait_for(lambda: status().get("readyRelease") == "v3" and status().get("phase") == "Ready", 60, "ready on v3")
    assert len(jobs_by_component(kubectl, namespace)["adaptation"]) == 2
    kubectl("delete", "-n", namespace, "basemodelrelease", "llama-v3", "--timeout=30s")
    wait_for(lambda: status().get("readyRelease") == "v2", 60, "back on v2")
    adapter = get(kubectl, namespace, "taskadapters")["chat"]
    assert ready(adapter)["reason"] == "RestoredFromHistory" and adapter["status"]["adapterUri"] == on_v2
    op.wait_resyncs()  # a resync later: still no new Job, still the same adapter
    assert len(jobs_by_component(kubectl, namespace)["adaptation"]) == 2
    assert get(kubectl, namespace, "taskadapters")["chat"]["status"]["adapterUri"] == on_v2


def test_spec_change_readapts_and_delete_cleans_up(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    op = operator_factory(namespace, RELORA_WORKER_COMMAND=FAKE, RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}")
    release(kubectl, namespace, "v1")
    release(kubectl, namespace, "v2")
    apply(kubectl, namespace, "TaskAdapter", "late", adapter_spec())  # created against an older release
    wait_equal(lambda: phases(kubectl, namespace), {"late": "Ready"}, 60)
    first_job = get(kubectl, namespace, "taskadapters")["late"]["status"]["job"]
    apply(kubectl, namespace, "TaskAdapter", "late", adapter_spec(quality={"threshold": 0.9}))
    wait_for(
        lambda: (
            (st := get(kubectl, namespace, "taskadapters")["late"]["status"]).get("job") != first_job
            and st.get("phase") == "Ready"
            and st.get("observedGeneration") == 2
        ),
        60,
        "re-adapted after edit",
    )
    st = get(kubectl, namespace, "taskadapters")["late"]["status"]
    # One entry per release: the re-adaptation after the edit replaced the first one's.
    assert st["quality"] >= 0.9 and [(e["release"], e["job"]) for e in st["releases"]] == [("v2", st["job"])]
    # Scheduling-only edits do not re-run it.
    apply(kubectl, namespace, "TaskAdapter", "late", adapter_spec(quality={"threshold": 0.9}, priority=9))
    # The operator saw the edit (its status says so), then a resync planned with it: still no new Job.
    wait_equal(lambda: get(kubectl, namespace, "taskadapters")["late"]["status"].get("observedGeneration"), 3, 60)
    op.wait_resyncs()
    assert len(jobs_by_component(kubectl, namespace)["adaptation"]) == 2
    kubectl("delete", "-n", namespace, "taskadapter", "late", "--timeout=30s")
    wait_equal(lambda: jobs_by_component(kubectl, namespace)["adaptation"], [], 60)


def test_kueue_queue_metrics_and_liveness(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    op = operator_factory(
        namespace,
        RELORA_WORKER_COMMAND=FAKE,
        RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}",
        RELORA_MAX_CONCURRENT_JOBS="1",
    )
    release(kubectl, namespace, "v1")
    # Two queued adapters: Kueue's quota, not the operator's limit of 1, decides; both Jobs exist at once.
    for name in ("queued-a", "queued-b"):
        apply(kubectl, namespace, "TaskAdapter", name, adapter_spec(queueName="gpu-queue"))
    release(kubectl, namespace, "v2")
    wait_equal(
        lambda: {n: ready(a).get("reason") for n, a in get(kubectl, namespace, "taskadapters").items()},
        {"queued-a": "QueuedInKueue", "queued-b": "QueuedInKueue"},
        60,
    )
    jobs = json.loads(
        kubectl("get", "-n", namespace, "jobs", "-l", "app.kubernetes.io/component=adaptation", "-o", "json").stdout
    )["items"]
    assert len(jobs) == 2
    for job in jobs:
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
        # Kueue admits a workload by un-suspending its Job; do what it would.
        kubectl(
            "patch", "-n", namespace, "job", job["metadata"]["name"], "--type=merge", "-p", '{"spec":{"suspend":false}}'
        )
    wait_equal(lambda: set(phases(kubectl, namespace).values()), {"Ready"}, 60)

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{op.env['RELORA_METRICS_PORT']}/metrics", timeout=10)
    text = metrics.read().decode()
    assert 'relora_taskadapters{phase="Ready",ready="True"} 2.0' in text
    assert 'relora_jobs_created_total{component="adaptation"} 2.0' in text
    assert "relora_time_to_readiness_seconds_count 2.0" in text
    assert 'relora_jobs{component="adaptation",state="Succeeded"} 2.0' in text
    health = urllib.request.urlopen(f"http://127.0.0.1:{op.env['RELORA_LIVENESS_PORT']}/healthz", timeout=10)
    assert health.status == 200
    # Structured logs: every line of the operator's log is a JSON object.
    lines = [line for line in op.tail(100_000).splitlines() if line.strip()]
    assert lines and all(json.loads(line)["level"] for line in lines)
