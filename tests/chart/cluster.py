"""Helpers of the chart's cluster tests: install the chart into the test control plane so that the test
kubelet runs the operator's Deployment (its pod gets the chart's ServiceAccount token), and act as that
ServiceAccount with a token from the TokenRequest API."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.chart.chartlib import CHART, ROOT
from tests.support.cli import CliRunner
from tests.support.ports import free_port

CRD_NAMES = ("basemodelreleases.relora.dev", "taskadapters.relora.dev")
# The operator's tests' stand-in for the `relora` CLI (same contract, instant; docs/worker-contract.md).
FAKE_WORKER = ROOT / "tests" / "operator" / "fake_worker.py"


def chart_values(**overrides: Any) -> dict[str, Any]:
    """Values for the test control plane: the test kubelet runs every pod as a local process on loopback, so
    ports must be free and the worker is the fake one (real models take minutes). GPUs stay at the chart's
    default (1): the test node advertises nvidia.com/gpu, so worker pods are built as on a GPU cluster."""
    values: dict[str, Any] = {
        "worker": {
            "command": f"python {FAKE_WORKER}",
            "cpu": "100m",
            "memory": "1Gi",
        },
        "resyncSeconds": 1,
        "metrics": {"port": free_port()},
        "health": {"port": free_port()},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return values


def adopt_crds(kubectl: CliRunner, release: str, namespace: str) -> None:
    """Lets `helm install` take over CRDs created earlier (by `kubectl apply -f crds/` or an uninstalled release):
    Helm adopts an existing object that carries its ownership label and annotations."""
    for crd in CRD_NAMES:
        if kubectl("get", "crd", crd, check=False).returncode != 0:
            continue
        kubectl("label", "crd", crd, "app.kubernetes.io/managed-by=Helm", "--overwrite")
        kubectl(
            "annotate",
            "crd",
            crd,
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
            "--overwrite",
        )


@contextmanager
def extra_namespace(kubectl: CliRunner, prefix: str) -> Iterator[str]:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    kubectl("create", "namespace", name)
    try:
        deadline = time.monotonic() + 30
        while kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
            assert time.monotonic() < deadline, f"no default ServiceAccount in {name}"
            time.sleep(0.2)
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@contextmanager
def installed(
    helm: CliRunner, kubectl: CliRunner, release: str, namespace: str, values: dict[str, Any], tmp: Path
) -> Iterator[str]:
    """`helm install --wait` (the operator's pod runs and is Ready); uninstalls afterwards. Yields helm's output."""
    path = tmp / f"{release}-values.yaml"
    path.write_text(yaml.safe_dump(values))
    if values.get("crds", {}).get("enabled", True):
        adopt_crds(kubectl, release, namespace)
    out = helm("install", release, str(CHART), "-n", namespace, "-f", str(path), "--wait", "--timeout=120s").stdout
    try:
        yield out
    finally:
        helm("uninstall", release, "-n", namespace, "--wait", "--timeout=60s", check=False)


def operator_pod(kubectl: CliRunner, release: str, namespace: str) -> str:
    pods = json.loads(
        kubectl("get", "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}", "-o", "json").stdout
    )["items"]
    running = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
    assert len(running) == 1, [(p["metadata"]["name"], p["status"].get("phase")) for p in pods]
    return running[0]


def token_kubeconfig(kubectl: CliRunner, admin_kubeconfig: Path, sa: str, namespace: str, out: Path) -> Path:
    """A kubeconfig that authenticates as ServiceAccount `namespace/sa` with a token from the TokenRequest API
    (`kubectl create token`), for the same cluster as the admin kubeconfig."""
    token = kubectl("create", "token", sa, "-n", namespace, "--duration=10m").stdout.strip()
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": sa, "context": {"cluster": cluster["name"], "user": sa, "namespace": namespace}}],
        "current-context": sa,
    }
    out.write_text(yaml.safe_dump(config))
    out.chmod(0o600)
    return out


def can_i(kubectl_as: CliRunner, verb: str, resource: str, namespace: str | None) -> bool:
    """SelfSubjectAccessReview through `kubectl auth can-i` (exit 0 yes, 1 no); `resource` may be `res/sub`."""
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    # `kubectl auth can-i VERB RES/NAME` reads a name after the slash: subresources go in --subresource.
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    result = kubectl_as("auth", "can-i", verb, resource, *scope, *extra, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


def ensure_crds(kubectl: CliRunner) -> None:
    """The CRDs, installed from crds/ unless present (e.g. kept from a chart install)."""
    if any(kubectl("get", "crd", c, check=False).returncode != 0 for c in CRD_NAMES):
        kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in CRD_NAMES))
