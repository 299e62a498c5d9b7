"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

Started from the binaries hack/build-k8s.sh builds, with a fresh PKI (tests.support.certs), free ports and
every file in one session folder. `ControlPlane.start()` returns once /readyz answers and the controller
manager is healthy; `stop()` (also run at exit) kills all three process groups.
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.certs import CertPair, TestPKI
from tests.support.kubeconfig import write_kubeconfig
from tests.support.ports import LOOPBACK, free_port
from tests.support.procs import ManagedProcess, wait_until

SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of the range: the `kubernetes` Service
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

# What the suite needs from the controller manager, and nothing that expects real nodes (no node
# lifecycle, no scheduler-adjacent controllers): Jobs, ownership GC, namespace deletion, SA tokens, the
# kube-root-ca.crt ConfigMap, Deployments (the chart's operator Deployment) and RBAC role aggregation.
CONTROLLERS = (
    "job-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "deployment-controller",
    "replicaset-controller",
    "clusterrole-aggregation-controller",
    "ttl-after-finished-controller",
    "cronjob-controller",
    "resourcequota-controller",
)


def _https_ok(url: str, ctx: ssl.SSLContext) -> bool:
    with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
        return bool(resp.status == 200)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


@dataclass
class ControlPlane:
    """The processes and files of one control plane; `kubeconfig` is the admin (system:masters) one."""

    bin_dir: Path
    workdir: Path
    kubeconfig: Path = field(init=False)
    server: str = field(init=False)
    etcd_url: str = field(init=False)
    ca_cert: Path = field(init=False)
    admin_cert: CertPair = field(init=False)
    sa_keys: CertPair = field(init=False)
    processes: list[ManagedProcess] = field(default_factory=list, init=False)
    timings: dict[str, float] = field(default_factory=dict, init=False)

    def start(self) -> ControlPlane:
        t0 = time.monotonic()
        try:
            pki = TestPKI(self.workdir / "pki")
            self._start_etcd()
            self._start_apiserver(pki)
            self.timings["apiserver_ready_s"] = time.monotonic() - t0
            self._start_controller_manager(pki)
        except BaseException:
            self.stop()
            raise
        self.timings["control_plane_ready_s"] = time.monotonic() - t0
        return self

    def stop(self) -> None:
        # Reverse start order: the controller manager and apiserver go before the etcd they depend on.
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def check_alive(self) -> None:
        """Raise (with the log tail) if a component died mid-session."""
        for proc in self.processes:
            proc.check_alive()

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess(name, argv, self.workdir / "logs" / f"{name}.log", cwd=self.workdir)
        self.processes.append(proc)
        return proc

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://{LOOPBACK}:{client}"
        peer_url = f"http://{LOOPBACK}:{peer}"
        proc = self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=relora-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=relora-test={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",  # throwaway data: durability costs seconds per test on slow disks
                "--log-level=warn",
            ],
        )
        wait_until(lambda: _http_ok(f"{self.etcd_url}/health"), timeout=30, what="etcd /health", process=proc)

    def _start_apiserver(self, pki: TestPKI) -> None:
        port = free_port()
        self.server = f"https://{LOOPBACK}:{port}"
        serving = pki.issue_server(
            "apiserver",
            [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            [LOOPBACK, SERVICE_IP],
        )
        admin = self.admin_cert = pki.issue_client("admin", "relora-test-admin", ("system:masters",))
        self.sa_keys = pki.service_account_keys()
        self.ca_cert = pki.ca.cert
        proc = self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={pki.ca.cert}",
                # The front-proxy (aggregation) CA; no one holds a front-proxy-client cert, but without it
                # the controller manager logs an error every second about the missing bundle.
                f"--requestheader-client-ca-file={pki.ca.cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={self.sa_keys.cert}",
                f"--service-account-signing-key-file={self.sa_keys.key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--profiling=false",
                # The `kubernetes` Service's Endpoints would hold 127.0.0.1, which Endpoints validation
                # rejects (loopback); nothing in the tests dials the Service, so don't reconcile it.
                "--endpoint-reconciler-type=none",
                "--v=1",
            ],
        )
        self.kubeconfig = write_kubeconfig(
            self.workdir / "admin.kubeconfig",
            server=self.server,
            ca_cert=pki.ca.cert,
            client_cert=admin.cert,
            client_key=admin.key,
            user="relora-test-admin",
        )
        ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
        ctx.load_cert_chain(str(admin.cert), str(admin.key))
        wait_until(
            lambda: _https_ok(f"{self.server}/readyz", ctx),
            timeout=90,
            what="kube-apiserver /readyz",
            process=proc,
            interval=0.25,
        )

    def _start_controller_manager(self, pki: TestPKI) -> None:
        port = free_port()
        # Its own identity, bound by the bootstrap RBAC policy, as in a real cluster; each controller
        # then acts through its own ServiceAccount (--use-service-account-credentials), so RBAC gaps in
        # what a controller may do show up here as they would in production.
        client = pki.issue_client("kube-controller-manager", "system:kube-controller-manager")
        kubeconfig = write_kubeconfig(
            self.workdir / "controller-manager.kubeconfig",
            server=self.server,
            ca_cert=pki.ca.cert,
            client_cert=client.cert,
            client_key=client.key,
            user="system:kube-controller-manager",
        )
        proc = self._spawn(
            "kube-controller-manager",
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'controller-manager-certs'}",
                "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.sa_keys.key}",
                f"--root-ca-file={pki.ca.cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--profiling=false",
                "--v=1",
            ],
        )
        # /healthz is open to anonymous callers by default; TLS is self-signed by the controller manager.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        wait_until(
            lambda: _https_ok(f"https://{LOOPBACK}:{port}/healthz", insecure),
            timeout=60,
            what="kube-controller-manager /healthz",
            process=proc,
            interval=0.25,
        )
