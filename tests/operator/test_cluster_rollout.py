"""Steering a rollout (spec.rollout) on the real control plane, with the fake worker: dry run → plan, paused →
no Jobs, resumed with maxConcurrent 1 → one Job at a time; a canary that fails halts the rollout with a
condition naming its failures, and once it passes the rest of the family follows."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from tests.operator.conftest import wait_equal
from tests.operator.factories import adapter_spec
from tests.operator.test_cluster_control_loop import FAKE, apply, get, jobs_by_component, release
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def labelled(kubectl: Any, namespace: str, name: str, labels: dict[str, str], **spec: Any) -> None:
    import yaml

    doc = {
        "apiVersion": "relora.dev/v1alpha1",
        "kind": "TaskAdapter",
        "metadata": {"name": name, "labels": labels},
        "spec": adapter_spec(**spec),
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


def release_with(kubectl: Any, namespace: str, version: str, rollout: dict[str, Any]) -> None:
    apply(
        kubectl,
        namespace,
        "BaseModelRelease",
        f"llama-{version}",
        {"family": "llama", "version": version, "modelUri": f"s3://models/llama/{version}/", "rollout": rollout},
    )


def patch_rollout(kubectl: Any, namespace: str, name: str, rollout: dict[str, Any]) -> None:
    body = json.dumps({"spec": {"rollout": rollout}})
    kubectl("patch", "-n", namespace, "basemodelrelease", name, "--type=merge", "-p", body)


def reasons(kubectl: Any, namespace: str) -> dict[str, str]:
    return {
        n: next((c["reason"] for c in a.get("status", {}).get("conditions", []) if c["type"] == "Ready"), "")
        for n, a in get(kubectl, namespace, "taskadapters").items()
    }


def release_status(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    return get(kubectl, namespace, "basemodelreleases")[name].get("status", {})


def test_dry_run_pause_resume_and_max_concurrent(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    operator_factory(namespace, RELORA_WORKER_COMMAND=FAKE, RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}")
    release(kubectl, namespace, "v1")
    names = ["a", "b", "c"]
    for name in names:
        apply(kubectl, namespace, "TaskAdapter", name, adapter_spec(strategy={"maxSteps": 1000}))
    wait_equal(lambda: set(reasons(kubectl, namespace).values()), {"TrainedOnRelease"}, 60)

    release_with(kubectl, namespace, "v2", {"dryRun": True})
    wait_equal(lambda: reasons(kubectl, namespace), dict.fromkeys(names, "DryRun"), 60)
    plan = wait_for(
        lambda: release_status(kubectl, namespace, "llama-v2").get("rollout", {}).get("plan"), 30, "the dry run's plan"
    )
    assert plan["total"] == 3 and [e["adapter"] for e in plan["adapters"]] == names
    assert plan["estimatedGpuHours"] == "unknown"  # no Job of the family has finished yet
    assert all(e["fromRelease"] == "v1" for e in plan["adapters"])
    assert release_status(kubectl, namespace, "llama-v2")["phase"] == "DryRun"
    assert jobs_by_component(kubectl, namespace) == {"projection": [], "adaptation": []}

    patch_rollout(kubectl, namespace, "llama-v2", {"dryRun": False, "paused": True})
    wait_equal(lambda: reasons(kubectl, namespace), dict.fromkeys(names, "RolloutPaused"), 60)
    wait_equal(lambda: release_status(kubectl, namespace, "llama-v2").get("phase"), "Paused", 30)
    # The passes that wrote these statuses admitted nothing: the pause holds every Job, projections included.
    assert jobs_by_component(kubectl, namespace) == {"projection": [], "adaptation": []}

    patch_rollout(kubectl, namespace, "llama-v2", {"paused": False, "maxConcurrent": 1})
    wait_equal(lambda: reasons(kubectl, namespace), dict.fromkeys(names, "Readapted"), 120)
    adapt = sorted(
        (
            j
            for j in json.loads(kubectl("get", "-n", namespace, "jobs", "-o", "json").stdout)["items"]
            if j["metadata"]["labels"]["app.kubernetes.io/component"] == "adaptation"
        ),
        key=lambda j: j["metadata"]["creationTimestamp"],
    )
    assert len(adapt) == 3
    for prev, nxt in itertools.pairwise(adapt):  # maxConcurrent 1: each after the previous one completed
        assert nxt["metadata"]["creationTimestamp"] >= prev["status"]["completionTime"]
    status = wait_for(
        lambda: (s := release_status(kubectl, namespace, "llama-v2")).get("phase") == "Complete" and s, 30, "Complete"
    )
    assert status["rollout"] == {"paused": False, "dryRun": False, "maxConcurrent": 1}


def test_canary_halts_on_failure_and_the_rest_follows_once_it_passes(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    operator_factory(namespace, RELORA_WORKER_COMMAND=FAKE, RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}")
    release(kubectl, namespace, "v1")
    canary = {"tier": "canary"}
    labelled(kubectl, namespace, "canary-good", canary)
    labelled(kubectl, namespace, "canary-picky", canary, quality={"threshold": 0.99})  # ends below threshold
    for name in ("main-a", "main-b"):
        labelled(kubectl, namespace, name, {"tier": "main"})
    wait_equal(lambda: set(reasons(kubectl, namespace).values()), {"TrainedOnRelease"}, 60)

    release_with(kubectl, namespace, "v2", {"canary": {"selector": canary}})
    halted = {
        "canary-good": "Readapted",
        "canary-picky": "BelowThreshold",
        "main-a": "CanaryFailed",
        "main-b": "CanaryFailed",
    }
    wait_equal(lambda: reasons(kubectl, namespace), halted, 120)
    status = wait_for(
        lambda: (s := release_status(kubectl, namespace, "llama-v2")).get("phase") == "Halted" and s, 30, "Halted"
    )
    gate = next(c for c in status["conditions"] if c["type"] == "CanaryPassed")
    assert gate["status"] == "False" and gate["reason"] == "CanaryFailed"
    assert "canary-picky (BelowThreshold)" in gate["message"]
    assert status["rollout"]["canary"]["failures"] == ["canary-picky (BelowThreshold)"]
    assert status["rollout"]["canary"]["members"] == ["canary-good", "canary-picky"]
    assert len(jobs_by_component(kubectl, namespace)["adaptation"]) == 2  # the canary's only
    main = get(kubectl, namespace, "taskadapters")["main-a"]["status"]
    assert main["readyRelease"] == "v1" and "canary-picky (BelowThreshold)" in main["message"]

    # Half of the canary is enough: the gate passes and the rest of the family is adapted.
    patch_rollout(kubectl, namespace, "llama-v2", {"canary": {"selector": canary, "successFraction": 0.5}})
    wait_equal(lambda: reasons(kubectl, namespace), {**halted, "main-a": "Readapted", "main-b": "Readapted"}, 120)
    status = release_status(kubectl, namespace, "llama-v2")
    gate = next(c for c in status["conditions"] if c["type"] == "CanaryPassed")
    assert gate["status"] == "True" and status["rollout"]["canary"]["state"] == "Passed"
    assert len(jobs_by_component(kubectl, namespace)["adaptation"]) == 4
    # status.releases: the v2 entry is current and served, the v1 (as given) entry kept; the switch has an Event.
    main = get(kubectl, namespace, "taskadapters")["main-a"]["status"]
    entries = [(e["release"], e["phase"], e.get("current"), e.get("served")) for e in main["releases"]]
    assert entries == [("v2", "Ready", True, True), ("v1", "Ready", None, None)]
    assert main["releases"][0]["threshold"] == 0.8 and main["releases"][0]["timeToReadiness"] == "1.5s"
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert any(e["reason"] == "CanaryFailed" and e["involvedObject"]["name"] == "llama-v2" for e in events)
    mine = [e for e in events if e["involvedObject"]["name"] == "main-a"]
    switched = [e["message"] for e in mine if "switched from" in e["message"]]
    assert switched[0].startswith("Ready: switched from s3://adapters/sentiment/ (release v1, as given) to file:///")


def test_a_result_outside_the_canary_is_served_only_once_the_gate_passes(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    operator_factory(namespace, RELORA_WORKER_COMMAND=FAKE, RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}")
    release(kubectl, namespace, "v1")
    canary = {"tier": "canary"}
    # Fake worker: a re-adaptation takes maxSteps milliseconds. "moved" leaves the canary while its Job runs;
    # "gatekeeper" keeps the gate pending well after that Job's end.
    labelled(kubectl, namespace, "moved", canary, strategy={"maxSteps": 10000})
    labelled(kubectl, namespace, "gatekeeper", canary, strategy={"maxSteps": 40000})
    wait_equal(lambda: set(reasons(kubectl, namespace).values()), {"TrainedOnRelease"}, 60)
    release_with(kubectl, namespace, "v2", {"canary": {"selector": canary}})
    wait_for(
        lambda: get(kubectl, namespace, "taskadapters")["moved"]["status"].get("phase") == "Adapting", 60, "Adapting"
    )
    kubectl("label", "-n", namespace, "taskadapter", "moved", "tier=main", "--overwrite")

    def moved() -> dict[str, Any]:
        return get(kubectl, namespace, "taskadapters")["moved"]["status"]

    # Its result is Ready for v2 but held: recorded in releases[], the v1 adapter still served.
    held = wait_for(lambda: (s := moved()).get("phase") == "Queued" and s, 60, "held by the canary")
    assert reasons(kubectl, namespace)["moved"] == "WaitingForCanary"
    assert held["served"]["release"] == "v1" and held["adapterUri"] == "s3://adapters/sentiment/"
    entry = held["releases"][0]
    assert (entry["release"], entry["phase"], entry.get("current"), entry.get("served")) == ("v2", "Ready", True, None)
    # The gate passes (the gatekeeper becomes Ready): served without another Job, with the switch said.
    wait_equal(lambda: reasons(kubectl, namespace), {"moved": "CanaryPassed", "gatekeeper": "Readapted"}, 120)
    promoted = moved()
    assert promoted["served"]["release"] == "v2" and promoted["adapterUri"] == entry["adapterUri"]
    assert promoted["releases"][0]["served"] is True
    assert len(jobs_by_component(kubectl, namespace)["adaptation"]) == 2
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    said = [e["message"] for e in events if e["involvedObject"]["name"] == "moved" and e["reason"] == "CanaryPassed"]
    assert said and said[0].startswith("Ready: switched from s3://adapters/sentiment/ (release v1, as given) to ")
