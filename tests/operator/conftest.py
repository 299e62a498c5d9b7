"""Fixtures of the operator's tests. Unit tests need none; cluster tests (marked `cluster`) get the CRDs
installed once per session and can run the operator as a subprocess against the test control plane."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The histogram of the newest release's periodic pass (handlers.release_tick): its count goes up once per pass.
PASSES = "relora_family_pass_seconds_count"
CRDS = ("basemodelreleases.relora.dev", "taskadapters.relora.dev")


@pytest.fixture(scope="session")
def relora_crds(kubectl: Any) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{c}" for c in CRDS))


@pytest.fixture
def s3_secret(namespace: str, k8s_api: Any) -> dict[str, str]:
    """The S3 Secret the worker pods read (RELORA_S3_SECRET's default name); dummy values for fake workers,
    tests with the real worker use `s3_server_secret`."""
    return _secret(k8s_api, namespace, {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})


def _secret(k8s_api: Any, namespace: str, data: dict[str, str]) -> dict[str, str]:
    from kubernetes import client

    client.CoreV1Api(k8s_api).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="relora-s3"), string_data=data)
    )
    return data


class OperatorProcess:
    """`python -m relora_operator` in a subprocess, logging to a file; kill() simulates a crash."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relora_operator"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, n: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def metric(self, name: str) -> float | None:
        """The unlabelled sample ``name`` of the operator's /metrics; None while it does not answer or lacks it."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.env['RELORA_METRICS_PORT']}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}
        return samples.get(name)

    def wait_resyncs(self, count: int = 2, timeout: float = 60) -> None:
        """Waits until ``count`` more periodic passes of a newest release (they create the missing Jobs and
        write every adapter's status) have ended than had when called. With two, one of them started after the
        call: a test asserting that a resync changes nothing waits for this, a positive signal, not a sleep."""
        from tests.support.waiting import wait_for

        # A one-item list: a count of 0.0 is an answer too.
        start = wait_for(lambda: [v] if (v := self.metric(PASSES)) is not None else None, timeout, "/metrics")[0]
        wait_for(lambda: (self.metric(PASSES) or 0) >= start + count, timeout, f"{count} resync passes after {start}")


@pytest.fixture
def operator_factory(
    kubeconfig_path: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    """Starts operators for one namespace; stops them at the end and shows their log when the test failed."""
    from tests.support.ports import free_port

    started: list[OperatorProcess] = []

    def start(namespace: str, **settings: str) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig_path),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)]),
            "RELORA_NAMESPACES": namespace,
            "RELORA_RESYNC_SECONDS": "1",
            "RELORA_METRICS_PORT": str(free_port()),
            "RELORA_LIVENESS_PORT": str(free_port()),
            "RELORA_WORKER_COMMAND": f"{sys.executable} -m relora_worker",
            "RELORA_DEFAULT_GPUS": "0",
            "RELORA_PROJECTION_GPUS": "0",
            "RELORA_WORKER_CPU": "100m",
            "RELORA_WORKER_MEMORY": "1Gi",
            "RELORA_LOG_LEVEL": "INFO",
        }
        env.update(settings)
        op = OperatorProcess(env, tmp_path / f"operator-{len(started)}.log").start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    report = getattr(request.node, "rep_call", None)
    if report is None or report.failed:
        for op in started:
            sys.stderr.write(f"\n--- operator log {op.log_path} ---\n{op.tail()}\n")


def wait_equal(get: Callable[[], Any], expected: Any, timeout: float, interval: float = 0.5) -> Any:
    """Polls ``get()`` until it returns ``expected``; the error shows the last value."""
    deadline = time.monotonic() + timeout
    last = get()
    while last != expected and time.monotonic() < deadline:
        time.sleep(interval)
        last = get()
    assert last == expected, f"after {timeout}s: {last!r} != {expected!r}"
    return last
