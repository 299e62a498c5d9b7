"""Many adapters per Job (spec.batching) on the real control plane, with the fake worker's readapt-batch
(contract-true: it reads the mounted plan and rewrites the batch record after each adapter).

A release with maxAdaptersPerJob 3 and four adapters: one batch Job of three (its plan in a ConfigMap owned by
the release) and one Job alone; each member's status from its own entry of the record (Ready, BelowThreshold,
BadInput isolated to its adapter); the operator killed (-9) while the batch runs creates no second Job.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.operator.conftest import wait_equal
from tests.operator.factories import adapter_spec
from tests.operator.test_cluster_control_loop import FAKE, apply, get, jobs_by_component, phases, ready, release
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def batched_release(kubectl: Any, namespace: str, version: str, per_job: int) -> None:
    spec = {
        "family": "llama",
        "version": version,
        "modelUri": f"s3://models/llama/{version}/",
        "batching": {"maxAdaptersPerJob": per_job},
    }
    apply(kubectl, namespace, "BaseModelRelease", f"llama-{version}", spec)


def job_bodies(kubectl: Any, namespace: str) -> dict[str, dict[str, Any]]:
    items = json.loads(kubectl("get", "-n", namespace, "jobs", "-o", "json").stdout)["items"]
    return {j["metadata"]["name"]: j for j in items}


def members(job: dict[str, Any]) -> list[str]:
    return sorted(json.loads(job["metadata"].get("annotations", {}).get("relora.dev/batch-members", "{}")).values())


def test_batch_job_maps_each_members_outcome_and_survives_a_restart(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    settings = {"RELORA_WORKER_COMMAND": FAKE, "RELORA_ARTIFACT_ROOT": f"file:///tmp/relora-{namespace}"}
    first = operator_factory(namespace, **settings)
    release(kubectl, namespace, "v1")
    slow = {"maxSteps": 1500}  # each adapter of the batch takes 1.5 s: the operator is killed meanwhile
    specs = {
        "a-good": adapter_spec(strategy=slow),
        "b-broken": adapter_spec(strategy=slow, task={"type": "seq-cls", "trainData": "s3://data/missing.jsonl"}),
        "c-picky": adapter_spec(strategy=slow, quality={"threshold": 0.99}),
        "d-good": adapter_spec(strategy=slow),
    }
    for name, spec in specs.items():
        apply(kubectl, namespace, "TaskAdapter", name, spec)
    wait_equal(lambda: set(phases(kubectl, namespace).values()), {"Ready"}, 60)

    batched_release(kubectl, namespace, "v2", per_job=3)
    batch = wait_for(
        lambda: next((j for j in job_bodies(kubectl, namespace).values() if members(j)), None), 60, "the batch Job"
    )
    first.kill()  # SIGKILL while the batch runs: the restarted operator must find it, not create another
    operator_factory(namespace, **settings)
    final = {"a-good": "Ready", "b-broken": "Failed", "c-picky": "Degraded", "d-good": "Ready"}
    wait_equal(lambda: phases(kubectl, namespace), final, 120)

    jobs = jobs_by_component(kubectl, namespace)
    assert len(jobs["projection"]) == 1 and len(jobs["adaptation"]) == 2  # ceil(4 / 3)
    bodies = job_bodies(kubectl, namespace)
    batched = members(batch)
    assert len(batched) == 3 and [n for n in jobs["adaptation"] if members(bodies[n])] == [batch["metadata"]["name"]]
    # The plan reached the pod from a ConfigMap named like the Job, owned by the release, mounted read-only.
    cm = json.loads(kubectl("get", "-n", namespace, "configmap", batch["metadata"]["name"], "-o", "json").stdout)
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "BaseModelRelease"
    plan = json.loads(cm["data"]["plan.json"])
    assert sorted(a["key"].split("/")[1] for a in plan["adapters"]) == batched
    mount = batch["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][-1]
    assert mount["readOnly"] is True and batch["spec"]["backoffLimit"] == 0

    adapters = get(kubectl, namespace, "taskadapters")
    for name in batched:
        assert adapters[name]["status"]["job"] == batch["metadata"]["name"]
    for name in ("a-good", "d-good"):
        st = adapters[name]["status"]
        assert st["readyRelease"] == "v2" and st["quality"] == 0.85 and ready(adapters[name])["status"] == "True"
        assert st["adapterUri"].startswith(f"file:///tmp/relora-{namespace}/adapters/{namespace}/{name}/v2/")
    broken = ready(adapters["b-broken"])
    assert broken["reason"] == "BadInput" and "s3://data/missing.jsonl: NoSuchKey" in broken["message"]
    assert adapters["b-broken"]["status"]["readyRelease"] == "v1"  # still serving the old adapter
    assert ready(adapters["c-picky"])["reason"] == "BelowThreshold"
    assert wait_for(
        lambda: get(kubectl, namespace, "basemodelreleases")["llama-v2"]["status"].get("phase") == "Complete",
        30,
        "release Complete",
    )


def test_a_batch_job_deleted_while_it_runs_leaves_each_member_a_job_of_its_own(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    """A running batch Job deleted by hand is not planned again under its name (nothing would bound how often):
    each member it left gets a Job of its own, and both end Ready."""
    operator_factory(namespace, RELORA_WORKER_COMMAND=FAKE, RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}")
    release(kubectl, namespace, "v1")
    slow = {"maxSteps": 20000}  # 20 s per adapter: the batch is deleted before it finishes its first
    names = ("a-one", "b-two")
    for name in names:
        apply(kubectl, namespace, "TaskAdapter", name, adapter_spec(strategy=slow))
    wait_equal(lambda: set(phases(kubectl, namespace).values()), {"Ready"}, 60)

    batched_release(kubectl, namespace, "v2", per_job=2)
    batch = wait_for(
        lambda: next((j for j in job_bodies(kubectl, namespace).values() if members(j)), None), 60, "the batch Job"
    )
    batch_name = batch["metadata"]["name"]

    def adapting_in_batch() -> bool:
        adapters = get(kubectl, namespace, "taskadapters")
        return all(
            adapters[n]["status"].get("job") == batch_name and adapters[n]["status"].get("phase") == "Adapting"
            for n in names
        )

    wait_for(adapting_in_batch, 60, "both members Adapting in the batch Job")
    kubectl("delete", "-n", namespace, "job", batch_name, "--wait=true")
    try:
        wait_equal(lambda: phases(kubectl, namespace), dict.fromkeys(names, "Ready"), 150)
    except AssertionError:
        statuses = {n: a.get("status") for n, a in get(kubectl, namespace, "taskadapters").items()}
        print(json.dumps({"statuses": statuses, "jobs": sorted(job_bodies(kubectl, namespace))}, indent=1))
        raise

    bodies = job_bodies(kubectl, namespace)
    assert not any(members(j) for j in bodies.values()), "the deleted batch was planned again"
    adapters = get(kubectl, namespace, "taskadapters")
    own = {adapters[n]["status"]["job"] for n in names}
    assert len(own) == 2 and own <= set(bodies) and all(adapters[n]["status"]["readyRelease"] == "v2" for n in names)
