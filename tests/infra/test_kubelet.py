"""The test kubelet gives pods their environment, volumes and termination message, and kills on delete."""

from __future__ import annotations

import base64
import json
import textwrap
from typing import Any

import pytest

from tests.infra.k8s_helpers import apply, get_json
from tests.support.cli import CliRunner
from tests.support.k8s_fixtures import PodLogs
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

SCRIPT = textwrap.dedent(
    """
    import json, os
    open("/work/out.txt", "w").write(os.environ["FROM_SECRET"] + "/" + os.environ["FROM_CM"])
    print("prefixed:", os.environ["S3_AWS_ACCESS_KEY_ID"], "expanded:", os.environ["GREETING"])
    with open("/dev/termination-log", "w") as f:
        json.dump({"read_back": open("/work/out.txt").read(), "config": open("/etc/app/mode").read()}, f)
    """
)


def _pod(name: str, command: list[str], **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "unused", "command": command, **container}],
        },
    }


def test_pod_env_volumes_and_termination_message(kubectl: CliRunner, namespace: str, test_kubelet: PodLogs) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "data": {
            "token": base64.b64encode(b"s3cr3t").decode(),
            "AWS_ACCESS_KEY_ID": base64.b64encode(b"AKIA-TEST").decode(),
        },
    }
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"mode": "fast"}}
    pod = _pod(
        "envpod",
        ["python", "-c", SCRIPT],
        env=[
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "GREETING", "value": "hi-$(FROM_CM)"},
        ],
        envFrom=[{"secretRef": {"name": "creds"}, "prefix": "S3_"}],
        volumeMounts=[{"name": "work", "mountPath": "/work"}, {"name": "cfg", "mountPath": "/etc/app"}],
    )
    pod["spec"]["volumes"] = [{"name": "work", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}]
    apply(kubectl, secret, config, pod, namespace=namespace)
    done = wait_for(lambda: _terminal(kubectl, namespace, "envpod"), timeout=60, what="envpod to finish")
    logs = test_kubelet.logs(namespace, "envpod")
    assert done["status"]["phase"] == "Succeeded", logs
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert json.loads(terminated["message"]) == {"read_back": "s3cr3t/fast", "config": "fast"}
    assert "prefixed: AKIA-TEST expanded: hi-fast" in logs


def test_fallback_to_logs_on_error(kubectl: CliRunner, namespace: str, test_kubelet: PodLogs) -> None:
    pod = _pod(
        "crash",
        ["python", "-c", "import sys; print('boom: bad input'); sys.exit(2)"],
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    apply(kubectl, pod, namespace=namespace)
    done = wait_for(lambda: _terminal(kubectl, namespace, "crash"), timeout=60, what="crash to finish")
    assert done["status"]["phase"] == "Failed"
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 2
    assert "boom: bad input" in terminated["message"]


def test_unknown_executable_is_a_start_error(kubectl: CliRunner, namespace: str, test_kubelet: PodLogs) -> None:
    apply(kubectl, _pod("nobin", ["no-such-binary-relora", "--help"]), namespace=namespace)
    done = wait_for(lambda: _terminal(kubectl, namespace, "nobin"), timeout=60, what="nobin to finish")
    assert done["status"]["phase"] == "Failed"
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128, "StartError")
    assert "no-such-binary-relora" in terminated["message"]


def test_deleting_a_pod_kills_its_process(kubectl: CliRunner, namespace: str, test_kubelet: PodLogs) -> None:
    apply(
        kubectl,
        _pod("sleeper", ["python", "-c", "import time; print('up', flush=True); time.sleep(600)"]),
        namespace=namespace,
    )
    wait_for(
        lambda: get_json(kubectl, "pod", "sleeper", "-n", namespace)["status"].get("phase") == "Running",
        timeout=60,
        what="sleeper to run",
    )
    wait_for(lambda: "up" in test_kubelet.logs(namespace, "sleeper"), timeout=30, what="sleeper's output")
    # Default grace period (30 s): the pod must still go away quickly, because SIGTERM ends the process.
    kubectl("delete", "pod", "sleeper", "-n", namespace, "--wait=true", "--timeout=20s")


IN_CLUSTER = textwrap.dedent(
    """
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    config.load_kube_config()  # $KUBECONFIG from the test kubelet: the pod's ServiceAccount token
    core = client.CoreV1Api()
    print("configmaps:", len(core.list_namespaced_config_map(NS).items))
    try:
        core.list_namespaced_secret(NS)
        print("secrets: allowed")
    except ApiException as err:
        print("secrets:", err.status)
    """
)


def test_pod_runs_with_its_service_account(kubectl: CliRunner, namespace: str, test_kubelet: PodLogs) -> None:
    apply(
        kubectl,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
        namespace=namespace,
    )
    pod = _pod("sa", ["python", "-c", IN_CLUSTER.replace("NS", repr(namespace))])
    pod["spec"]["serviceAccountName"] = "reader"
    apply(kubectl, pod, namespace=namespace)
    done = wait_for(lambda: _terminal(kubectl, namespace, "sa"), timeout=60, what="pod sa to finish")
    logs = test_kubelet.logs(namespace, "sa")
    assert done["status"]["phase"] == "Succeeded", logs
    assert "configmaps:" in logs and "secrets: 403" in logs


def _terminal(kubectl: CliRunner, namespace: str, name: str) -> dict[str, Any] | None:
    pod = get_json(kubectl, "pod", name, "-n", namespace)
    return pod if pod["status"].get("phase") in ("Succeeded", "Failed") else None
