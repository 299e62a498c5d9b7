"""The real Job controller and garbage collector work with the test kubelet's pods."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.k8s_helpers import apply, condition, get_json
from tests.support.cli import CliRunner
from tests.support.k8s_fixtures import PodLogs
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def _job(name: str, code: str, *, backoff_limit: int = 0, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "python:3.12-slim", "command": ["python", "-c", code]}],
                }
            },
            **spec,
        },
    }


def _pods(kubectl: CliRunner, namespace: str, job: str) -> list[dict[str, Any]]:
    return list(get_json(kubectl, "pods", "-n", namespace, "-l", f"job-name={job}")["items"])


def test_job_completes(kubectl: CliRunner, namespace: str, test_kubelet: PodLogs) -> None:
    apply(kubectl, _job("ok", "print('hello from the job')"), namespace=namespace)
    wait_for(
        lambda: condition(get_json(kubectl, "job", "ok", "-n", namespace), "Complete"),
        timeout=60,
        what="Job ok to complete",
    )
    (pod,) = _pods(kubectl, namespace, "ok")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert "hello from the job" in test_kubelet.logs(namespace, pod["metadata"]["name"])


def test_failing_job_fails_after_backoff_limit(kubectl: CliRunner, namespace: str, test_kubelet: PodLogs) -> None:
    # backoffLimit 1 = two pods; the controller waits ~10 s (its fixed base backoff) before the second.
    apply(kubectl, _job("bad", "import sys; sys.exit(1)", backoff_limit=1), namespace=namespace)
    failed = wait_for(
        lambda: condition(get_json(kubectl, "job", "bad", "-n", namespace), "Failed"),
        timeout=90,
        what="Job bad to fail",
    )
    assert failed["reason"] == "BackoffLimitExceeded"
    job = get_json(kubectl, "job", "bad", "-n", namespace)
    assert job["status"]["failed"] == 2
    codes = [
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for p in _pods(kubectl, namespace, "bad")
    ]
    assert codes == [1, 1]


def test_deleting_the_owner_garbage_collects_its_job(kubectl: CliRunner, namespace: str) -> None:
    apply(kubectl, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}, namespace=namespace)
    owner = get_json(kubectl, "configmap", "owner", "-n", namespace)
    job = _job("owned", "print(1)", suspend=True)  # suspended: no pods needed to prove ownership GC
    job["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    ]
    apply(kubectl, job, namespace=namespace)
    kubectl("delete", "configmap", "owner", "-n", namespace, "--cascade=background")
    wait_for(
        lambda: kubectl("get", "job", "owned", "-n", namespace, check=False).returncode != 0,
        timeout=60,
        what="the garbage collector to delete the owned Job",
    )


def test_job_active_deadline_kills_its_pod(kubectl: CliRunner, namespace: str, test_kubelet: PodLogs) -> None:
    apply(kubectl, _job("slow", "import time; time.sleep(600)", activeDeadlineSeconds=2), namespace=namespace)
    failed = wait_for(
        lambda: condition(get_json(kubectl, "job", "slow", "-n", namespace), "Failed"),
        timeout=60,
        what="Job slow to hit its deadline",
    )
    assert failed["reason"] == "DeadlineExceeded"
    # The controller deletes the running pod; the kubelet kills the process and finalizes the deletion.
    wait_for(lambda: not _pods(kubectl, namespace, "slow"), timeout=30, what="the slow Job's pod to go away")


def test_pod_failure_policy_on_exit_code(kubectl: CliRunner, namespace: str, test_kubelet: PodLogs) -> None:
    job = _job("policy", "import sys; sys.exit(42)", backoff_limit=5)
    job["spec"]["podFailurePolicy"] = {
        "rules": [{"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}}]
    }
    apply(kubectl, job, namespace=namespace)
    failed = wait_for(
        lambda: condition(get_json(kubectl, "job", "policy", "-n", namespace), "Failed"),
        timeout=60,
        what="Job policy to fail by its pod failure policy",
    )
    assert failed["reason"] == "PodFailurePolicy"
    assert get_json(kubectl, "job", "policy", "-n", namespace)["status"]["failed"] == 1  # no retries
