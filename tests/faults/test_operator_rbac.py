"""A Role missing one verb, on the real control plane: the operator runs under a ServiceAccount with the
chart's namespaced Role minus `create` on Jobs. The adapters say so (Ready=False, reason Forbidden, naming the
verb and the resource) and so does a Warning Event; with the verb granted again they proceed."""

# ruff: noqa: F811  (test parameters named like the imported fixtures, as pytest wants)
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import render
from tests.chart.cluster import token_kubeconfig
from tests.faults.operator_support import apply, cond, events, model_folder, release, settings, status
from tests.operator.conftest import operator_factory, relora_crds, s3_secret  # noqa: F401  (fixtures)
from tests.operator.factories import adapter_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster
SA = "relora-test-operator"


def _chart_role(tmp_path: Path, namespace: str) -> dict[str, Any]:
    """The chart's Role for a namespaced install watching ``namespace`` (helm template)."""
    docs = render(tmp_path, {"watchNamespaces": [namespace]}, namespace=namespace)
    return next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == namespace)


def _without(role: dict[str, Any], group: str, resource: str, verb: str) -> dict[str, Any]:
    role = copy.deepcopy(role)
    for rule in role["rules"]:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
    return role


def test_role_missing_create_jobs_is_a_condition_and_an_event(
    relora_crds: None,
    kubectl: Any,
    kubeconfig_path: Path,
    namespace: str,
    test_kubelet: Any,
    s3_secret: Any,
    operator_factory: Any,
    tmp_path: Path,
) -> None:
    role = _chart_role(tmp_path, namespace)
    name = role["metadata"]["name"]
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": namespace}],
    }
    kubectl("create", "serviceaccount", SA, "-n", namespace)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([_without(role, "batch", "jobs", "create"), binding]))
    as_sa = token_kubeconfig(kubectl, kubeconfig_path, SA, namespace, tmp_path / "sa.kubeconfig")
    operator_factory(namespace, KUBECONFIG=str(as_sa), **settings(namespace))

    release(kubectl, namespace, "v1", model_folder(tmp_path, "v1", "w1"))
    apply(kubectl, namespace, "TaskAdapter", "chat", adapter_spec(strategy={"name": "transfer-ft"}))
    wait_for(lambda: status(kubectl, namespace, "chat").get("phase") == "Ready", 60, "Ready as given (no Job needed)")
    release(kubectl, namespace, "v2", model_folder(tmp_path, "v2", "w2"))
    st = wait_for(
        lambda: (s := status(kubectl, namespace, "chat")) and cond(s).get("reason") == "Forbidden" and s,
        60,
        "chat Forbidden",
    )
    message = cond(st)["message"]
    assert cond(st)["status"] == "False" and "may not create jobs.batch" in message and namespace in message
    assert "grant verb 'create' on 'jobs.batch'" in message
    assert st["readyRelease"] == "v1"  # still serving what it had
    warning = wait_for(
        lambda: [e for e in events(kubectl, namespace, "chat") if e["reason"] == "Forbidden"], 30, "Forbidden Event"
    )
    assert warning[0]["type"] == "Warning" and "create jobs.batch" in warning[0]["message"]

    # The verb granted again (the chart's Role as it is): the next try creates the Job.
    kubectl("apply", "-f", "-", input=yaml.safe_dump(role))
    wait_for(lambda: status(kubectl, namespace, "chat").get("readyRelease") == "v2", 60, "Ready on v2 once allowed")
