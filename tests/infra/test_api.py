"""The test API server is a real one: CRD schemas and printer columns, the status subresource, RBAC."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.k8s_helpers import apply, get_json
from tests.support.cli import CliRunner, CommandFailed
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def _crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                },
                                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                            },
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def widget_group(kubectl: CliRunner) -> Iterator[str]:
    """A CRD with printer columns and a status subresource, in a group unique to this session."""
    group = f"w{uuid.uuid4().hex[:6]}.smoke.relora.test"
    apply(kubectl, _crd(group))
    kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=60s")
    yield group
    kubectl("delete", f"crd/widgets.{group}", "--wait=false")


def _widget(group: str, name: str, size: int) -> dict[str, Any]:
    return {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": size}}


def test_crd_printer_columns_and_schema(kubectl: CliRunner, widget_group: str, namespace: str) -> None:
    apply(kubectl, _widget(widget_group, "w1", 3), namespace=namespace)
    kubectl(
        "patch",
        f"widgets.{widget_group}",
        "w1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Ready"}}',
    )
    out = kubectl("get", f"widgets.{widget_group}", "-n", namespace).stdout.splitlines()
    # Declared columns replace the defaults (only NAME stays).
    assert out[0].split() == ["NAME", "SIZE", "PHASE"]
    assert out[1].split()[:3] == ["w1", "3", "Ready"]
    # The schema is enforced by the server: size must be >= 1.
    with pytest.raises(CommandFailed, match=r"spec.size"):
        apply(kubectl, _widget(widget_group, "bad", 0), namespace=namespace)


def test_status_subresource_separates_spec_and_status(
    kubectl: CliRunner, k8s_api: Any, widget_group: str, namespace: str
) -> None:
    from kubernetes import client

    objs = client.CustomObjectsApi(k8s_api)
    apply(kubectl, _widget(widget_group, "w2", 1), namespace=namespace)
    # Through the status subresource: the status is kept, a spec change in the same write is dropped.
    objs.patch_namespaced_custom_object_status(
        widget_group,
        "v1",
        namespace,
        "widgets",
        "w2",
        {"spec": {"size": 99}, "status": {"phase": "Done"}},
        _content_type="application/merge-patch+json",
    )
    # Through the main resource: the spec change is kept, the status change is dropped.
    objs.patch_namespaced_custom_object(
        widget_group,
        "v1",
        namespace,
        "widgets",
        "w2",
        {"spec": {"size": 2}, "status": {"phase": "Hacked"}},
        _content_type="application/merge-patch+json",
    )
    obj = get_json(kubectl, f"widgets.{widget_group}", "w2", "-n", namespace)
    assert obj["spec"] == {"size": 2}
    assert obj["status"] == {"phase": "Done"}


def test_rbac_restricted_service_account(kubectl: CliRunner, namespace: str, tmp_path: Path) -> None:
    apply(
        kubectl,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "limited"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read-cm"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "read-cm"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-cm"},
            "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": namespace}],
        },
        namespace=namespace,
    )
    # A token from the TokenRequest API, in a kubeconfig of its own (no admin certificate in it).
    token = kubectl("create", "token", "limited", "-n", namespace, "--duration=10m").stdout.strip()
    admin = yaml.safe_load(kubectl("config", "view", "--raw", "--minify").stdout)
    sa_config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "limited", "user": {"token": token}}],
        "contexts": [{"name": "limited", "context": {"cluster": admin["clusters"][0]["name"], "user": "limited"}}],
        "current-context": "limited",
    }
    path = tmp_path / "limited.kubeconfig"
    path.write_text(yaml.safe_dump(sa_config))
    as_sa = CliRunner(kubectl.binary, [f"--kubeconfig={path}"])
    assert as_sa("get", "configmaps", "-n", namespace).returncode == 0
    refused = as_sa("get", "secrets", "-n", namespace, check=False)
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()
    assert f"system:serviceaccount:{namespace}:limited" in refused.stderr
    denied_write = as_sa("create", "configmap", "x", "-n", namespace, check=False)
    assert "forbidden" in denied_write.stderr.lower()
    # Granting it makes the same call pass: the refusal came from RBAC, not from a broken token.
    apply(
        kubectl,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read-cm"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list"]}],
        },
        namespace=namespace,
    )
    wait_for(
        lambda: as_sa("get", "secrets", "-n", namespace, check=False).returncode == 0,
        timeout=10,
        what="RBAC grant to take effect",
    )
