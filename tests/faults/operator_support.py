"""Helpers of the operator's fault tests (tests/faults/test_operator_*.py): apply and read the custom
resources, wait for states, read conditions and Events. The operator runs with the contract-following fake
worker (tests/operator/fake_worker.py) unless a test says otherwise: these tests are about the operator."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
FAKE = f"{sys.executable} {ROOT / 'tests' / 'operator' / 'fake_worker.py'}"
SA = "relora-test-operator"  # the ServiceAccount the RBAC fault tests run the operator as


def settings(namespace: str, **extra: str) -> dict[str, str]:
    """Operator settings for a fault test: fake worker, file:// artifacts, quick resyncs and digest reads."""
    return {
        "RELORA_WORKER_COMMAND": FAKE,
        "RELORA_ARTIFACT_ROOT": f"file:///tmp/relora-{namespace}",
        "RELORA_MODEL_DIGEST_REFRESH_SECONDS": "1",
        **extra,
    }


def apply(kubectl: Any, namespace: str, kind: str, name: str, spec: dict[str, Any], check: bool = True) -> Any:
    doc = {"apiVersion": "relora.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    return kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc), check=check)


def release(kubectl: Any, namespace: str, version: str, model_uri: str, family: str = "llama") -> None:
    spec = {"family": family, "version": version, "modelUri": model_uri}
    apply(kubectl, namespace, "BaseModelRelease", f"{family}-{version}", spec)


def model_folder(root: Path, name: str, weights: str) -> str:
    """A model folder on file:// storage with a manifest (what the worker publishes); returns its URI."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "manifest.json").write_text(json.dumps({"files": {"model.safetensors": {"sha256": weights}}}))
    return f"file://{folder}/"


def get(kubectl: Any, namespace: str, kind: str) -> dict[str, dict[str, Any]]:
    items = json.loads(kubectl("get", "-n", namespace, kind, "-o", "json").stdout)["items"]
    return {i["metadata"]["name"]: i for i in items}


def status(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict(get(kubectl, namespace, "taskadapters").get(name, {}).get("status") or {})


def cond(obj_status: dict[str, Any], type_: str = "Ready") -> dict[str, Any]:
    return next((c for c in obj_status.get("conditions") or [] if c["type"] == type_), {})


def reasons(kubectl: Any, namespace: str) -> dict[str, str]:
    adapters = get(kubectl, namespace, "taskadapters")
    return {n: cond(a.get("status") or {}).get("reason", "") for n, a in adapters.items()}


def jobs(kubectl: Any, namespace: str, component: str = "adaptation") -> dict[str, dict[str, Any]]:
    return {
        n: j
        for n, j in get(kubectl, namespace, "jobs").items()
        if j["metadata"]["labels"].get("app.kubernetes.io/component") == component
    }


def events(kubectl: Any, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
    items = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    return [e for e in items if name is None or e.get("involvedObject", {}).get("name") == name]


def operator_under_role(
    role: dict[str, Any], kubectl: Any, kubeconfig_path: Path, namespace: str, operator_factory: Any, tmp_path: Path
) -> Any:
    """The operator (fault-test settings) under a fresh ServiceAccount bound to ``role`` (applied as given)."""
    from tests.chart.cluster import token_kubeconfig  # the chart tests' helper: only these tests need it

    name = role["metadata"]["name"]
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": namespace}],
    }
    kubectl("create", "serviceaccount", SA, "-n", namespace)
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    as_sa = token_kubeconfig(kubectl, kubeconfig_path, SA, namespace, tmp_path / "sa.kubeconfig")
    return operator_factory(namespace, KUBECONFIG=str(as_sa), **settings(namespace))
