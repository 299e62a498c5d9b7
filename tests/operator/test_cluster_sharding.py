"""Two operator replicas split the work by shard (a Lease each) on the real control plane; one is killed
mid-rollout and the other takes its shard over: every adapter ends Ready, no Job is created twice."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from relora_operator.sharding import shard_of

from tests.operator.factories import adapter_spec
from tests.operator.test_cluster_control_loop import apply, get
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster
FAKE = f"{sys.executable} {Path(__file__).with_name('fake_worker.py')}"
SHARDS = 2
LEASE_SECONDS = 3


def _families(namespace: str) -> dict[int, str]:
    """One family per shard (the hash includes the namespace, which is random)."""
    out: dict[int, str] = {}
    for i in range(100):
        out.setdefault(shard_of(namespace, f"fam{i}", SHARDS), f"fam{i}")
        if len(out) == SHARDS:
            return out
    raise AssertionError("no family for every shard")


def _holders(kubectl: Any, namespace: str) -> dict[int, str]:
    leases = json.loads(kubectl("get", "leases", "-n", namespace, "-l", "relora.dev/lease=shard", "-o", "json").stdout)
    return {
        int(lease["metadata"]["name"].rsplit("-", 1)[1]): lease["spec"].get("holderIdentity") or ""
        for lease in leases["items"]
    }


def _phases(kubectl: Any, namespace: str) -> dict[str, tuple[str, str]]:
    return {
        name: ((a.get("status") or {}).get("phase", ""), (a.get("status") or {}).get("readyRelease", ""))
        for name, a in get(kubectl, namespace, "taskadapters").items()
    }


def _jobs(kubectl: Any, namespace: str) -> list[dict[str, Any]]:
    return list(json.loads(kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)["items"])


def test_a_killed_replicas_shard_is_taken_over_without_duplicate_jobs(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    settings = {
        "RELORA_WORKER_COMMAND": FAKE,
        "RELORA_ARTIFACT_ROOT": f"file:///tmp/relora-{namespace}",
        "RELORA_SHARDS": str(SHARDS),
        "RELORA_SHARD_LEASE_SECONDS": str(LEASE_SECONDS),
        "RELORA_LEASE_NAMESPACE": namespace,
    }
    replicas = {name: operator_factory(namespace, POD_NAME=name, **settings) for name in ("replica-a", "replica-b")}
    # Both start at once; the first may take both shards, then gives one up when it sees the other replica.
    holders = wait_for(
        lambda: (h := _holders(kubectl, namespace)) and len(h) == SHARDS and set(h.values()) == set(replicas) and h,
        60,
        "one shard per replica",
    )
    families = _families(namespace)
    adapters = {f"{fam}-{i}": fam for fam in families.values() for i in range(2)}
    for fam in families.values():
        apply(
            kubectl,
            namespace,
            "BaseModelRelease",
            f"{fam}-v1",
            {"family": fam, "version": "v1", "modelUri": f"s3://models/{fam}/v1/"},
        )
    for name, fam in adapters.items():  # each re-adaptation runs 8 s
        apply(kubectl, namespace, "TaskAdapter", name, adapter_spec(family=fam, strategy={"maxSteps": 8000}))
    wait_for(lambda: set(_phases(kubectl, namespace).values()) == {("Ready", "v1")}, 60, "every adapter Ready on v1")

    victim_shard = 1
    victim = holders[victim_shard]
    survivor = next(r for r in replicas if r != victim)
    victim_family = families[victim_shard]
    for fam in families.values():
        apply(
            kubectl,
            namespace,
            "BaseModelRelease",
            f"{fam}-v2",
            {"family": fam, "version": "v2", "modelUri": f"s3://models/{fam}/v2/"},
        )
    # The victim's family has its Jobs (created by the victim, the only replica acting on that shard) ...
    wait_for(
        lambda: sum(
            1
            for j in _jobs(kubectl, namespace)
            if j["metadata"]["labels"].get("app.kubernetes.io/component") == "adaptation"
            and j["metadata"]["labels"].get("relora.dev/family") == victim_family
        )
        == 2,
        60,
        "the victim's adaptation Jobs",
    )
    replicas[victim].kill()  # ... and dies (SIGKILL: its Leases stay until they expire)
    wait_for(lambda: _holders(kubectl, namespace).get(victim_shard) == survivor, 30, "the survivor holds the shard")
    wait_for(
        lambda: set(_phases(kubectl, namespace).values()) == {("Ready", "v2")}, 90, "every adapter Ready on v2"
    )

    jobs = _jobs(kubectl, namespace)
    by_component: dict[str, list[str]] = {"projection": [], "adaptation": []}
    for job in jobs:
        labels = job["metadata"]["labels"]
        by_component[labels["app.kubernetes.io/component"]].append(labels.get("relora.dev/task-adapter", ""))
    # One projection per family and release (v1 needs none: the adapters were trained on it); one adaptation
    # per adapter: the takeover found the victim's Jobs and created none again.
    assert len(by_component["projection"]) == len(families)
    assert sorted(by_component["adaptation"]) == sorted(adapters)
    # The victim's adapters were finished by the survivor (their Readapted Events come from it).
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    readapted = {
        e["involvedObject"]["name"]: e.get("reportingInstance")
        for e in events
        if e.get("reason") == "Readapted" and e["involvedObject"]["kind"] == "TaskAdapter"
    }
    assert {name: readapted.get(name) for name, fam in adapters.items() if fam == victim_family} == {
        name: survivor for name, fam in adapters.items() if fam == victim_family
    }
    status = {n: a["status"] for n, a in get(kubectl, namespace, "taskadapters").items()}
    assert all(st["job"] in {j["metadata"]["name"] for j in jobs} for st in status.values())
