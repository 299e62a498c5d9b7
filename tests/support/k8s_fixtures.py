"""pytest fixtures for Kubernetes: the cluster, clients bound to it, a namespace per test, the test kubelet.

Session fixtures: control_plane (Cluster), kubeconfig_path, k8s_api, kubectl, helm, test_kubelet.
Function fixture: namespace (a fresh namespace, deleted after the test).
With RELORA_TEST_KUBECONFIG set, the fixtures use that cluster instead of starting one (realcluster.py).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support import binaries
from tests.support.cli import CliRunner, helm_runner, kubectl_runner
from tests.support.controlplane import ControlPlane
from tests.support.kubelet import TestKubelet
from tests.support.realcluster import MARK_ANNOTATION, MARK_NAMESPACE, refusal
from tests.support.rest import Rest


@dataclass
class Cluster:
    """The cluster the session tests against: ours on loopback (`local` set) or a real one."""

    kubeconfig: Path
    local: ControlPlane | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def is_real(self) -> bool:
        return self.local is None


class PodLogs(Protocol):
    """What tests may rely on from `test_kubelet`, on both the test kubelet and a real cluster."""

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str: ...


class ClusterPodLogs:
    """`test_kubelet` on a real cluster: the cluster's kubelets run the pods; logs come from the API."""

    node_name = None

    def __init__(self, kubectl: CliRunner) -> None:
        self._kubectl = kubectl

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        args = ["logs", "-n", namespace, pod] + ([f"-c={container}"] if container else ["--all-containers"])
        return self._kubectl(*args).stdout


def _marked(kubeconfig: Path) -> bool:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    # The kubernetes package ships no annotations for its config helpers.
    with config.new_client_from_config(config_file=str(kubeconfig)) as api:  # type: ignore[no-untyped-call]
        try:
            ns = client.CoreV1Api(api).read_namespace(MARK_NAMESPACE)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        annotations = (ns.metadata.annotations if ns.metadata else None) or {}
        return annotations.get(MARK_ANNOTATION) == "true"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    real = os.environ.get("RELORA_TEST_KUBECONFIG")
    if real:
        path = Path(real).expanduser()
        reason = refusal(path, lambda: _marked(path))
        if reason:
            pytest.exit(reason, returncode=3)
        yield Cluster(kubeconfig=path)
        return
    t0 = time.monotonic()
    bin_dir = binaries.bin_dir()
    t_bins = time.monotonic() - t0
    plane = ControlPlane(bin_dir, tmp_path_factory.mktemp("control-plane")).start()
    try:
        yield Cluster(kubeconfig=plane.kubeconfig, local=plane, timings={"binaries_s": t_bins, **plane.timings})
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubeconfig_path(control_plane: Cluster) -> Path:
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def k8s_api(kubeconfig_path: Path) -> Iterator[Any]:
    """A `kubernetes.client.ApiClient` (admin) bound to the cluster.

    Note: the generated client's PATCH default content type is JSON Patch; pass
    `_content_type="application/merge-patch+json"` when patching with a dict.
    """
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(kubeconfig_path))  # type: ignore[no-untyped-call]
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def kubectl(kubeconfig_path: Path) -> CliRunner:
    return kubectl_runner(binaries.tool("kubectl"), kubeconfig_path)


@pytest.fixture(scope="session")
def helm(kubeconfig_path: Path, tmp_path_factory: pytest.TempPathFactory) -> CliRunner:
    return helm_runner(binaries.tool("helm"), kubeconfig_path, tmp_path_factory.mktemp("helm-home"))


def _namespace_name(node_name: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].strip("-")
    return f"t-{base}-{uuid.uuid4().hex[:5]}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, k8s_api: Any) -> Iterator[str]:
    """A fresh namespace for this test (its `default` ServiceAccount already exists); deleted afterwards."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(k8s_api)
    name = _namespace_name(request.node.name)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"relora.test/ephemeral": "true"}))
    )
    # Pods are refused until the ServiceAccount controller created `default`; wait so tests need not.
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except ApiException as err:
            if err.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield name
    finally:
        # Not waiting for the namespace controller: the next test gets its own namespace anyway.
        try:
            core.delete_namespace(name)
        except ApiException as err:
            if err.status != 404:
                raise


@pytest.fixture(scope="session")
def test_kubelet(
    control_plane: Cluster, kubectl: CliRunner, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PodLogs]:
    """Runs the cluster's pods as local processes (see kubelet.py). On a real cluster: its own kubelets."""
    plane = control_plane.local
    if plane is None:
        yield ClusterPodLogs(kubectl)
        return
    admin = plane.admin_cert
    rest = Rest(plane.server, str(plane.ca_cert), cert=(str(admin.cert), str(admin.key)))
    kubelet = TestKubelet(rest, tmp_path_factory.mktemp("kubelet"), plane.server, str(plane.ca_cert)).start()
    try:
        yield kubelet
    finally:
        kubelet.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """When a cluster test fails, attach the tail of every control-plane component's log to the report."""
    report = yield
    if report.failed and isinstance(item, pytest.Function) and "control_plane" in item.fixturenames:
        cluster = item.funcargs.get("control_plane")
        if isinstance(cluster, Cluster) and cluster.local is not None:
            for proc in cluster.local.processes:
                state = "running" if proc.alive() else f"EXITED {proc.popen.returncode}"
                report.sections.append((f"{proc.name} log tail ({state}, {proc.log_path})", proc.tail(3000)))
    return report
