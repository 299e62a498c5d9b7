"""A Role missing one verb, on the real control plane: the operator runs under a ServiceAccount with the
chart's namespaced Role minus one verb. What it may not do is said where someone looks — the adapter's Ready
condition (`create` Jobs), a Warning Event on the adapter (`patch` its status: no status can say it), the release's
Progressing/Degraded conditions and an Event (`list`/`watch` a kind its caches need) — naming the verb and the
resource to grant; with the verb granted again everything proceeds."""

# ruff: noqa: F811  (test parameters named like the imported fixtures, as pytest wants)
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import render
from tests.faults.operator_support import (
    apply,
    cond,
    events,
    get,
    model_folder,
    operator_under_role,
    release,
    status,
)
from tests.operator.conftest import operator_factory, relora_crds, s3_secret  # noqa: F401  (fixtures)
from tests.operator.factories import adapter_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def _chart_role(tmp_path: Path, namespace: str) -> dict[str, Any]:
    """The chart's Role for a namespaced install watching ``namespace`` (helm template)."""
    docs = render(tmp_path, {"watchNamespaces": [namespace]}, namespace=namespace)
    return next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == namespace)


def _without(role: dict[str, Any], group: str, resource: str, verb: str) -> dict[str, Any]:
    """``role`` with ``verb`` taken from ``resource`` alone (its rule's other resources keep every verb)."""
    role = copy.deepcopy(role)
    rules = []
    for rule in role["rules"]:
        if group in rule["apiGroups"] and resource in rule["resources"]:
            others = [r for r in rule["resources"] if r != resource]
            if others:
                rules.append({**rule, "resources": others})
            verbs = [v for v in rule["verbs"] if v != verb]
            if verbs:
                rules.append({**rule, "resources": [resource], "verbs": verbs})
        else:
            rules.append(rule)
    role["rules"] = rules
    return role


def _chat_under_role_without(
    group: str,
    resource: str,
    verb: str,
    kubectl: Any,
    kubeconfig_path: Path,
    namespace: str,
    operator_factory: Any,
    tmp_path: Path,
) -> dict[str, Any]:
    """The operator under a fresh ServiceAccount bound to the chart's Role minus ``verb`` on ``resource``, release
    v1 and the TaskAdapter `chat` applied; returns the chart's whole Role (to grant the verb again)."""
    role = _chart_role(tmp_path, namespace)
    operator_under_role(
        _without(role, group, resource, verb), kubectl, kubeconfig_path, namespace, operator_factory, tmp_path
    )
    release(kubectl, namespace, "v1", model_folder(tmp_path, "v1", "w1"))
    apply(kubectl, namespace, "TaskAdapter", "chat", adapter_spec(strategy={"name": "transfer-ft"}))
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
    role = _chat_under_role_without(
        "batch", "jobs", "create", kubectl, kubeconfig_path, namespace, operator_factory, tmp_path
    )
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


def test_role_missing_patch_on_status_is_an_event_on_the_adapter(
    relora_crds: None,
    kubectl: Any,
    kubeconfig_path: Path,
    namespace: str,
    test_kubelet: Any,
    s3_secret: Any,
    operator_factory: Any,
    tmp_path: Path,
) -> None:
    role = _chat_under_role_without(
        "relora.dev", "taskadapters/status", "patch", kubectl, kubeconfig_path, namespace, operator_factory, tmp_path
    )
    warning = wait_for(
        lambda: [e for e in events(kubectl, namespace, "chat") if e["reason"] == "Forbidden"], 60, "Forbidden Event"
    )
    message = warning[0]["message"]
    assert warning[0]["type"] == "Warning" and "may not patch taskadapters.relora.dev/status" in message
    assert namespace in message and "grant verb 'patch'" in message
    assert status(kubectl, namespace, "chat") == {}  # nothing could be written, and nothing pretends it was

    # Granted again: the status arrives (the adapter is Ready as given for v1).
    kubectl("apply", "-f", "-", input=yaml.safe_dump(role))
    wait_for(lambda: status(kubectl, namespace, "chat").get("phase") == "Ready", 90, "status written once allowed")


def test_role_missing_list_pods_is_a_release_condition_and_an_event(
    relora_crds: None,
    kubectl: Any,
    kubeconfig_path: Path,
    namespace: str,
    test_kubelet: Any,
    s3_secret: Any,
    operator_factory: Any,
    tmp_path: Path,
) -> None:
    role = _chat_under_role_without("", "pods", "list", kubectl, kubeconfig_path, namespace, operator_factory, tmp_path)

    def refused() -> dict[str, Any] | None:
        st = get(kubectl, namespace, "bmr").get("llama-v1", {}).get("status", {})
        return st if cond(st, "Degraded").get("reason") == "Forbidden" else None

    st = wait_for(refused, 60, "release Degraded, reason Forbidden")
    message = cond(st, "Degraded")["message"]
    assert "may not list pods in namespace " + namespace in message and "grant verb 'list' on 'pods'" in message
    assert cond(st, "Progressing")["status"] == "False" and cond(st, "Progressing")["reason"] == "Forbidden"
    warning = wait_for(
        lambda: [e for e in events(kubectl, namespace, "llama-v1") if e["reason"] == "Forbidden"], 30, "Forbidden Event"
    )
    assert warning[0]["type"] == "Warning" and "list pods" in warning[0]["message"]
    assert status(kubectl, namespace, "chat") == {}  # no pass ran on a partial view of the namespace

    # Granted again: the caches list pods, the pass runs and the release's conditions say so.
    kubectl("apply", "-f", "-", input=yaml.safe_dump(role))
    wait_for(lambda: status(kubectl, namespace, "chat").get("phase") == "Ready", 90, "adapter status once allowed")
    wait_for(
        lambda: (
            cond(get(kubectl, namespace, "bmr")["llama-v1"].get("status", {}), "Degraded").get("reason") != "Forbidden"
        ),
        60,
        "release no longer Forbidden",
    )
