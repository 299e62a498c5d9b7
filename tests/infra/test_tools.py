"""The control plane starts within its budget, and the helm runner installs a chart into it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.infra.k8s_helpers import get_json
from tests.support.cli import CliRunner
from tests.support.k8s_fixtures import Cluster, PodLogs

pytestmark = pytest.mark.cluster

WARM_START_BUDGET_S = 30.0


def test_control_plane_warm_start_budget(control_plane: Cluster) -> None:
    if control_plane.local is None:
        pytest.skip("a real cluster was not started by the tests")
    # binaries_s is the (no-op) build check; a cold build would have made this test meaningless.
    started = control_plane.timings["control_plane_ready_s"]
    print(f"control plane timings: {control_plane.timings}")
    assert started <= WARM_START_BUDGET_S, control_plane.timings


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-app
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: app
          image: python:3.12-slim
          command: ["python", "-c", "import time; print('serving', flush=True); time.sleep(3600)"]
"""


def test_helm_installs_a_chart(
    helm: CliRunner, kubectl: CliRunner, namespace: str, tmp_path: Path, test_kubelet: PodLogs
) -> None:
    chart = tmp_path / "smoke"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(yaml.safe_dump({"apiVersion": "v2", "name": "smoke", "version": "0.1.0"}))
    (chart / "values.yaml").write_text(yaml.safe_dump({"greeting": "hello"}))
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )
    (chart / "templates" / "deployment.yaml").write_text(DEPLOYMENT)
    helm("lint", str(chart))
    # --wait: the Deployment controller -> ReplicaSet -> pod -> test kubelet -> Ready -> Available.
    helm("install", "smoke", str(chart), "-n", namespace, "--set", "greeting=hi", "--wait", "--timeout=90s")
    assert get_json(kubectl, "configmap", "smoke-cm", "-n", namespace)["data"] == {"greeting": "hi"}
    assert get_json(kubectl, "deployment", "smoke-app", "-n", namespace)["status"]["availableReplicas"] == 1
    helm("uninstall", "smoke", "-n", namespace, "--wait", "--timeout=60s")
