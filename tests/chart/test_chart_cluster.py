"""The chart in the test control plane: `helm install`, then the operator's Deployment, run by the test kubelet
with the chart's ServiceAccount token, takes the examples through a full release rollout (proof that the
chart's RBAC is enough), and that ServiceAccount cannot do what it must not (SelfSubjectAccessReview and real
calls with a TokenRequest token). Also `helm upgrade` and `helm uninstall` (CRDs and resources are kept)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import CHART, ROOT
from tests.chart.cluster import (
    CRD_NAMES,
    can_i,
    chart_values,
    extra_namespace,
    installed,
    operator_pod,
    token_kubeconfig,
)
from tests.support.cli import CliRunner, kubectl_runner
from tests.support.k8s_fixtures import Cluster
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster
EXAMPLES = ROOT / "examples"
ADAPTERS = {"sentiment": "taskadapter-classifier.yaml", "text-to-sql": "taskadapter-causal-lm.yaml"}


@pytest.fixture(autouse=True)
def _local_only(control_plane: Cluster) -> None:
    if control_plane.is_real:
        pytest.skip("runs the operator's Deployment as a local process: needs the test kubelet, not a real cluster")


def _get(kubectl: CliRunner, namespace: str, kind: str) -> dict[str, dict[str, Any]]:
    items = json.loads(kubectl("get", kind, "-n", namespace, "-o", "json").stdout)["items"]
    return {i["metadata"]["name"]: i for i in items}


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"), {})


def _adapters_at(kubectl: CliRunner, namespace: str, release: str) -> dict[str, str] | None:
    adapters = _get(kubectl, namespace, "taskadapters")
    states = {n: f"{a.get('status', {}).get('readyRelease')}/{_ready(a).get('status')}" for n, a in adapters.items()}
    return states if set(states) == set(ADAPTERS) and set(states.values()) == {f"{release}/True"} else None


def _rollout(kubectl: CliRunner, namespace: str, s3_server: Any, operator_log: Callable[[], str]) -> None:
    """The examples' journey: Secret, release v1 + two adapters (Ready as given), release v2 (re-adapted).
    A timeout shows the operator's errors (its pod's log) and the adapters' messages."""
    kubectl("create", "secret", "generic", "relora-s3", "-n", namespace, *_literals(s3_server))
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "basemodelrelease-v1.yaml"))
    for file in ADAPTERS.values():
        kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / file))
    wait_for(lambda: _adapters_at(kubectl, namespace, "v1"), 60, "adapters Ready for v1 (trained on it)")
    kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / "basemodelrelease-v2.yaml"))
    try:
        wait_for(lambda: _adapters_at(kubectl, namespace, "v2"), 120, "adapters re-adapted to v2")
    except AssertionError as exc:
        errors = [line[:1500] for line in operator_log().splitlines() if '"ERROR"' in line or "Error" in line]
        messages = {n: a.get("status", {}).get("message") for n, a in _get(kubectl, namespace, "taskadapters").items()}
        raise AssertionError(
            f"{exc}\nadapters: {messages}\noperator errors (last 5):\n" + "\n".join(errors[-5:])
        ) from exc
    release = wait_for(
        lambda: (
            (r := _get(kubectl, namespace, "basemodelreleases")["llama-3.1-8b-v2"])["status"].get("phase") == "Complete"
            and r
        ),
        60,
        "release v2 Complete",
    )
    assert release["status"]["adapters"]["ready"] == 2 and release["status"]["adapters"]["total"] == 2
    jobs = _get(kubectl, namespace, "jobs")
    components = sorted(j["metadata"]["labels"]["app.kubernetes.io/component"] for j in jobs.values())
    # The classifier (strategy relora) needs the shared projection; the causal-LM one (transfer-ft) does not.
    assert components == ["adaptation", "adaptation", "projection"]
    for job in jobs.values():
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {
            "name": "AWS_ACCESS_KEY_ID",
            # Optional: without the Secret the default AWS credential chain applies (test_chart_cloud_identity).
            "valueFrom": {"secretKeyRef": {"name": "relora-s3", "key": "AWS_ACCESS_KEY_ID", "optional": True}},
        } in env
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert {"JobsCreated", "Readapted"} <= {e["reason"] for e in events}


def _literals(s3_server: Any) -> list[str]:
    return [f"--from-literal={k}={v}" for k, v in s3_server.secret_data().items()]


def _operator_log(test_kubelet: Any, kubectl: CliRunner, release: str, namespace: str) -> str:
    return str(test_kubelet.logs(namespace, operator_pod(kubectl, release, namespace)))


def _no_permission_errors(test_kubelet: Any, kubectl: CliRunner, release: str, namespace: str) -> str:
    log = _operator_log(test_kubelet, kubectl, release, namespace)
    assert "Initial authentication has finished" in log, log[-3000:]  # kopf logged in with the pod token
    for word in ("Forbidden", "forbidden", " 403", "Unauthorized"):
        assert word not in log, f"operator log has {word!r}:\n{log[-5000:]}"
    return log


def _endpoints_answer(values: dict[str, Any]) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{values['health']['port']}/healthz", timeout=5) as rsp:
        assert rsp.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{values['metrics']['port']}/metrics", timeout=5) as rsp:
        text = rsp.read().decode()
    assert "relora_taskadapters" in text and "relora_jobs_created_total" in text


def test_cluster_wide_install_rollout_upgrade_uninstall(
    helm: CliRunner,
    kubectl: CliRunner,
    kubeconfig_path: Path,
    namespace: str,
    test_kubelet: Any,
    s3_server: Any,
    tmp_path: Path,
) -> None:
    release = "relora"
    values = chart_values(artifactRoot=s3_server.uri("relora"))
    with extra_namespace(kubectl, "relora-system") as system:
        # The operator reads result.json from S3 with the Secret of its own namespace.
        kubectl("create", "secret", "generic", "relora-s3", "-n", system, *_literals(s3_server))
        with installed(helm, kubectl, release, system, values, tmp_path) as out:
            assert "kubectl rollout status deployment/relora-relora-operator" in out  # NOTES.txt
            assert "It watches every namespace." in out
            for crd in CRD_NAMES:
                meta = json.loads(kubectl("get", "crd", crd, "-o", "json").stdout)["metadata"]
                assert meta["annotations"]["helm.sh/resource-policy"] == "keep"
                assert meta["annotations"]["meta.helm.sh/release-name"] == release
            kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in CRD_NAMES))

            _rollout(kubectl, namespace, s3_server, lambda: _operator_log(test_kubelet, kubectl, release, system))
            _no_permission_errors(test_kubelet, kubectl, release, system)
            _endpoints_answer(values)

            # What the chart's ServiceAccount may and may not do, as that ServiceAccount.
            as_sa = kubectl_runner(
                kubectl.binary,
                token_kubeconfig(
                    kubectl, kubeconfig_path, "relora-relora-operator", system, tmp_path / "sa.kubeconfig"
                ),
            )
            assert "system:serviceaccount:" + system + ":relora-relora-operator" in as_sa("auth", "whoami").stdout
            for verb, resource in (
                ("list", "taskadapters.relora.dev"),
                ("patch", "taskadapters.relora.dev/status"),
                ("patch", "basemodelreleases.relora.dev/status"),
                ("create", "jobs.batch"),
                ("watch", "pods"),
                ("create", "events"),
                ("update", "taskadapters.relora.dev/finalizers"),  # blockOwnerDeletion on hardened clusters
            ):
                assert can_i(as_sa, verb, resource, None), f"{verb} {resource}"
            for verb, resource, ns in (
                ("get", "secrets", namespace),
                ("get", "secrets", system),
                ("list", "secrets", None),
                ("delete", "jobs.batch", namespace),
                ("update", "jobs.batch", namespace),
                ("create", "pods", namespace),
                ("delete", "taskadapters.relora.dev", namespace),
                ("create", "clusterroles.rbac.authorization.k8s.io", None),
                ("create", "rolebindings.rbac.authorization.k8s.io", namespace),
                ("update", "customresourcedefinitions.apiextensions.k8s.io", None),
                ("patch", "deployments.apps", system),
                ("create", "serviceaccounts/token", system),
                ("update", "taskadapters.relora.dev/status", namespace),  # patch only
                ("create", "pods/exec", namespace),
                ("get", "pods/log", namespace),
            ):
                assert not can_i(as_sa, verb, resource, ns), f"{verb} {resource} in {ns}"
            denied = as_sa("get", "secret", "relora-s3", "-n", namespace, check=False)
            assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
            denied = as_sa("create", "clusterrole", "escalate", "--verb=get", "--resource=secrets", check=False)
            assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr

            # helm upgrade with a newer chart whose CRD changed: Helm updates the CRD in place (it would not
            # with CRDs in the chart's crds/ folder); the operator pod is replaced (Recreate), all stays Ready.
            newer = tmp_path / "relora-operator"
            shutil.copytree(CHART, newer)
            crd_file = newer / "files" / "crds" / "taskadapters.relora.dev.yaml"
            crd = yaml.safe_load(crd_file.read_text())
            columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            columns.append({"name": "Upgraded", "type": "string", "jsonPath": ".spec.family", "priority": 1})
            crd_file.write_text(yaml.safe_dump(crd))
            upgraded = {**values, "logging": {"format": "text", "level": "DEBUG"}}
            path = tmp_path / "upgrade.yaml"
            path.write_text(json.dumps(upgraded))
            helm("upgrade", release, str(newer), "-n", system, "-f", str(path), "--wait", "--timeout=120s")
            live = json.loads(kubectl("get", "crd", CRD_NAMES[1], "-o", "json").stdout)
            assert "Upgraded" in [c["name"] for c in live["spec"]["versions"][0]["additionalPrinterColumns"]]
            dep = json.loads(kubectl("get", "deployment", "relora-relora-operator", "-n", system, "-o", "json").stdout)
            env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["RELORA_LOG_FORMAT"] == "text" and dep["status"].get("availableReplicas") == 1
            assert _adapters_at(kubectl, namespace, "v2")
            # ... and back to this chart (its CRDs, as the rest of the session expects them).
            helm("upgrade", release, str(CHART), "-n", system, "-f", str(path), "--wait", "--timeout=120s")
            live = json.loads(kubectl("get", "crd", CRD_NAMES[1], "-o", "json").stdout)
            assert "Upgraded" not in [c["name"] for c in live["spec"]["versions"][0]["additionalPrinterColumns"]]
        # helm uninstall (the context manager's exit): the CRDs and every release and adapter stay.
        for crd in CRD_NAMES:
            assert kubectl("get", "crd", crd, check=False).returncode == 0, f"{crd} deleted by helm uninstall"
        assert set(_get(kubectl, namespace, "taskadapters")) == set(ADAPTERS)
        assert kubectl("get", "clusterrole", "relora-relora-operator", check=False).returncode != 0


def test_namespaced_install_rollout_and_isolation(
    helm: CliRunner,
    kubectl: CliRunner,
    kubeconfig_path: Path,
    namespace: str,
    test_kubelet: Any,
    s3_server: Any,
    tmp_path: Path,
) -> None:
    release = "ops"
    with extra_namespace(kubectl, "relora-ops") as system, extra_namespace(kubectl, "other-team") as other:
        # CRDs from a previous install (or `kubectl apply -f crds/`); this release leaves them alone.
        if kubectl("get", "crd", CRD_NAMES[0], check=False).returncode != 0:
            kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in CRD_NAMES))
        values = chart_values(watchNamespaces=[namespace], crds={"enabled": False}, artifactRoot=s3_server.uri("ops"))
        with installed(helm, kubectl, release, system, values, tmp_path) as out:
            assert f"It watches the namespaces: {namespace}." in out
            assert kubectl("get", "clusterrole", "ops-relora-operator", check=False).returncode != 0
            _rollout(kubectl, namespace, s3_server, lambda: _operator_log(test_kubelet, kubectl, release, system))
            # No S3 Secret in the operator's namespace: it runs anyway (the keys are optional).
            _no_permission_errors(test_kubelet, kubectl, release, system)

            # The other team's namespace is not touched: a release there gets no status and no Jobs.
            kubectl("apply", "-n", other, "-f", str(EXAMPLES / "basemodelrelease-v1.yaml"))
            as_sa = kubectl_runner(
                kubectl.binary,
                token_kubeconfig(kubectl, kubeconfig_path, "ops-relora-operator", system, tmp_path / "ops.kubeconfig"),
            )
            assert can_i(as_sa, "create", "jobs.batch", namespace)
            assert can_i(as_sa, "patch", "taskadapters.relora.dev/status", namespace)
            for verb, resource, ns in (
                ("list", "jobs.batch", other),
                ("create", "jobs.batch", other),
                ("list", "taskadapters.relora.dev", other),
                ("list", "taskadapters.relora.dev", None),
                ("watch", "pods", None),
                ("create", "events", other),
                ("get", "secrets", namespace),
                ("list", "secrets", system),
                ("create", "clusterroles.rbac.authorization.k8s.io", None),
                ("create", "roles.rbac.authorization.k8s.io", namespace),
            ):
                assert not can_i(as_sa, verb, resource, ns), f"{verb} {resource} in {ns}"
            for argv in (
                ("get", "jobs", "-n", other),
                ("get", "basemodelreleases", "-n", other),
                ("get", "secrets", "-n", namespace),
            ):
                denied = as_sa(*argv, check=False)
                assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), (argv, denied.stderr)
            rel = _get(kubectl, other, "basemodelreleases")["llama-3.1-8b-v1"]
            assert not rel.get("status") and not rel["metadata"].get("finalizers"), rel
