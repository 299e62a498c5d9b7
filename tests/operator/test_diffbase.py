"""The lean diff-base storage builds exactly kopf's essence, without copying status and metadata first."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest
from relora_operator.diffbase import LeanDiffBaseStorage, slim_body
from relora_operator.models import GROUP


def _pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "task-1-abc",
            "namespace": "ns",
            "uid": "u-1",
            "resourceVersion": "42",
            "labels": {"relora.dev/managed-by": "relora-operator", "job-name": "task-1"},
            "annotations": {
                "note": "kept",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                f"{GROUP}/last-handled-configuration": '{"spec": {}}',
            },
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "task-1", "uid": "j-1"}],
            "finalizers": ["batch.kubernetes.io/job-tracking"],
            "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"containers": [{"name": "worker", "command": ["sh", "-c", "true"]}], "restartPolicy": "Never"},
        "status": {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"exitCode": 0}}}]},
    }


def _replicaset() -> dict[str, Any]:  # the one kind whose storage key depends on ownerReferences
    body = _pod()
    body["kind"] = "ReplicaSet"
    body["metadata"]["ownerReferences"] = [{"kind": "Deployment", "name": "d", "uid": "d-1"}]
    body["metadata"]["annotations"][f"{GROUP}/last-handled-configuration-ofDRS"] = "{}"
    return body


def _bare() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}}


@pytest.mark.parametrize("make", [_pod, _replicaset, _bare])
@pytest.mark.parametrize("extra", [None, [], ["status.phase"], ["metadata.finalizers"]])
def test_same_essence_as_kopf(make: Any, extra: Any) -> None:
    raw = make()
    kopf_essence = kopf.AnnotationsDiffBaseStorage(prefix=GROUP).build(
        body=kopf.Body(copy.deepcopy(raw)), extra_fields=extra
    )
    lean_essence = LeanDiffBaseStorage(prefix=GROUP).build(body=kopf.Body(raw), extra_fields=extra)
    assert lean_essence == kopf_essence


def test_essence_is_a_copy() -> None:
    raw = _pod()
    essence = LeanDiffBaseStorage(prefix=GROUP).build(body=kopf.Body(raw))
    raw["spec"]["containers"][0]["name"] = "changed"
    raw["metadata"]["labels"]["job-name"] = "changed"
    assert essence["spec"]["containers"][0]["name"] == "worker"
    assert essence["metadata"]["labels"]["job-name"] == "task-1"


def test_slim_body_drops_status_and_bulky_metadata() -> None:
    slim = slim_body(_pod())
    assert "status" not in slim
    assert set(slim["metadata"]) == {"labels", "annotations", "ownerReferences"}
    assert slim["spec"] == _pod()["spec"]
