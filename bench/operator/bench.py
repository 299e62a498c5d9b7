"""Benchmark of the operator's control loop: N TaskAdapters and one new release on the test control plane.

Jobs run a trivial command that writes a contract-true termination summary and exits 0 at once, so the run
measures the operator (and the control plane), not the worker. Measured:

* time from applying release v2 until every re-adaptation Job exists, and until every TaskAdapter's status says
  Ready for v2;
* API writes per adapter during that rollout: status patches of TaskAdapters and the release, Job creates
  (apiserver_request_total deltas, only the operator writes these) and the operator's Events (kopf's);
* the operator process's peak resident memory (VmHWM).

Usage: .venv/bin/python bench/operator/bench.py --adapters 2000 --out bench/operator/results/run.json
The controller-manager runs with --kube-api-qps/--kube-api-burst raised (its default of 20 QPS would make the
Job controller, not the operator, the bottleneck of 2000 Jobs); everything else is the test control plane.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.support import binaries  # noqa: E402
from tests.support.controlplane import ControlPlane  # noqa: E402
from tests.support.kubelet import TestKubelet  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.rest import Rest  # noqa: E402

NS = "bench"
GROUP, VERSION = "relora.dev", "v1alpha1"
SUMMARY = (
    '{"command":"readapt","status":"ready","exit_code":0,"quality":0.9,"threshold":0.8,'
    '"time_to_readiness_s":0.1,"alpha":0.4,"beta":1.6}'
)
# The last argument the operator passes is the termination-message path: write the summary there.
FAKE_WORKER = shlex.join(["sh", "-c", f"for a; do t=$a; done; printf %s '{SUMMARY}' > \"$t\"", "fake-worker"])
CM_EXTRA = ["--kube-api-qps=400", "--kube-api-burst=800", "--concurrent-job-syncs=20"]


class BenchControlPlane(ControlPlane):
    def _spawn(self, name: str, argv: list[str]) -> Any:
        if name == "kube-controller-manager":
            argv = [*argv, *CM_EXTRA]
        return super()._spawn(name, argv)


def _metrics(rest_get: Any) -> dict[tuple[str, str, str], float]:
    out: dict[tuple[str, str, str], float] = {}
    for line in rest_get("/metrics").splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        key = (labels.get("resource", ""), labels.get("subresource", ""), labels.get("verb", ""))
        out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _delta(after: dict[Any, float], before: dict[Any, float], resource: str, verbs: tuple[str, ...]) -> int:
    return int(sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == resource and k[2] in verbs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=2000)
    parser.add_argument("--resync", type=float, default=5.0, help="RELORA_RESYNC_SECONDS of the operator")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    n = args.adapters
    # SIGTERM (e.g. `timeout`) must still run the cleanup below: no orphaned operator or control plane.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from kubernetes import client, config, utils

    work = Path(tempfile.mkdtemp(prefix="relora-bench-"))
    plane = BenchControlPlane(binaries.bin_dir(), work / "plane").start()
    kubelet = None
    operator = None
    try:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        api.configuration.connection_pool_maxsize = 32
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        rest = Rest(plane.server, str(plane.ca_cert), cert=(str(plane.admin_cert.cert), str(plane.admin_cert.key)))
        kubelet = TestKubelet(rest, work / "kubelet", plane.server, str(plane.ca_cert)).start()
        for crd in sorted((ROOT / "crds").glob("*.yaml")):
            utils.create_from_yaml(api, str(crd))
        time.sleep(2)  # CRDs established
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
        while True:
            try:
                core.read_namespaced_service_account("default", NS)
                break
            except client.ApiException:
                time.sleep(0.1)
        core.create_namespaced_secret(
            NS,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="relora-s3"),
                string_data={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
            ),
        )

        def release(version: str) -> None:
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                NS,
                "basemodelreleases",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "BaseModelRelease",
                    "metadata": {"name": f"llama-{version}"},
                    "spec": {"family": "llama", "version": version, "modelUri": f"s3://models/llama/{version}/"},
                },
            )

        def adapter(i: int) -> None:
            custom.create_namespaced_custom_object(
                GROUP,
                VERSION,
                NS,
                "taskadapters",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "TaskAdapter",
                    "metadata": {"name": f"task-{i:05d}"},
                    "spec": {
                        "family": "llama",
                        "adapterUri": f"s3://adapters/task-{i}/",
                        "trainedOnRelease": "v1",
                        "targetModules": ["q_proj", "v_proj"],
                        "rank": 16,
                        "task": {"type": "seq-cls", "trainData": f"s3://data/task-{i}/train.jsonl"},
                        "quality": {"threshold": 0.8},
                        "priority": i % 3,
                    },
                },
            )

        release("v1")
        t = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(adapter, range(n)))
        print(f"created {n} TaskAdapters in {time.monotonic() - t:.1f}s", flush=True)

        env = {
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)]),
            "RELORA_NAMESPACES": NS,
            "RELORA_RESYNC_SECONDS": str(args.resync),
            "RELORA_MAX_CONCURRENT_JOBS": str(n + 10),
            "RELORA_MAX_CONCURRENT_JOBS_PER_RELEASE": str(n + 10),
            "RELORA_WORKER_COMMAND": FAKE_WORKER,
            "RELORA_ARTIFACT_ROOT": f"file://{work}/artifacts",
            "RELORA_DEFAULT_GPUS": "0",
            "RELORA_PROJECTION_GPUS": "0",
            "RELORA_WORKER_CPU": "10m",
            "RELORA_WORKER_MEMORY": "64Mi",
            "RELORA_METRICS_PORT": str(free_port()),
            "RELORA_LIVENESS_PORT": str(free_port()),
            "RELORA_LOG_LEVEL": "WARNING",
        }
        log = (work / "operator.log").open("wb")
        print(f"operator log: {work / 'operator.log'}", flush=True)
        operator = subprocess.Popen(
            [sys.executable, "-m", "relora_operator"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        peak = {"rss": 0}

        def watch_memory() -> None:
            while operator.poll() is None:
                try:
                    text = Path(f"/proc/{operator.pid}/status").read_text()
                    peak["rss"] = max(peak["rss"], int(re.search(r"VmHWM:\s+(\d+)", text).group(1)))
                except (OSError, AttributeError):
                    pass
                time.sleep(0.5)

        threading.Thread(target=watch_memory, daemon=True).start()

        def list_adapters() -> list[dict[str, Any]]:
            for attempt in range(5):  # a loaded API server may time a big list out: retry
                try:
                    return custom.list_namespaced_custom_object(
                        GROUP, VERSION, NS, "taskadapters", _request_timeout=120
                    )["items"]
                except (client.ApiException, OSError) as exc:
                    print(f"  list failed ({exc.__class__.__name__}), retrying", flush=True)
                    time.sleep(2 * (attempt + 1))
            raise SystemExit("cannot list TaskAdapters")

        def count(pred: Any) -> int:
            return sum(1 for a in list_adapters() if pred(a.get("status") or {}))

        t = time.monotonic()
        while count(lambda s: s.get("phase") == "Ready") < n:
            if operator.poll() is not None:
                raise SystemExit(f"the operator exited: see {work / 'operator.log'}")
            time.sleep(1)
        startup_s = time.monotonic() - t
        print(f"operator up, {n} adapters Ready as given on v1 after {startup_s:.1f}s", flush=True)
        time.sleep(2 * args.resync)  # let idle resyncs show they write nothing
        before = _metrics(lambda p: _raw(rest, p))
        kopf_events_before = _kopf_events(core)

        t0 = time.monotonic()
        release("v2")
        batch = client.BatchV1Api(api)
        jobs_created_s = done_s = None
        while time.monotonic() - t0 < args.timeout:
            if jobs_created_s is None:
                jobs = batch.list_namespaced_job(NS, label_selector="app.kubernetes.io/component=adaptation")
                if len(jobs.items) >= n:
                    jobs_created_s = time.monotonic() - t0
                    print(f"all {n} Jobs created after {jobs_created_s:.1f}s", flush=True)
            ready = count(lambda s: s.get("phase") == "Ready" and s.get("readyRelease") == "v2")
            if ready >= n:
                done_s = time.monotonic() - t0
                break
            print(f"  t={time.monotonic() - t0:.0f}s ready={ready}", flush=True)
            time.sleep(2)
        after = _metrics(lambda p: _raw(rest, p))
        writes = {
            "taskadapter_status_patches": _delta(after, before, "taskadapters", ("PATCH", "UPDATE", "PUT")),
            "release_patches": _delta(after, before, "basemodelreleases", ("PATCH", "UPDATE", "PUT")),
            "job_creates": _delta(after, before, "jobs", ("POST", "CREATE")),
            "operator_events": _kopf_events(core) - kopf_events_before,
        }
        total = sum(writes.values())
        result = {
            "adapters": n,
            "resync_seconds": args.resync,
            "seconds_until_all_jobs_created": jobs_created_s,
            "seconds_until_all_statuses_ready": done_s,
            "api_writes": writes,
            "api_writes_per_adapter": round(total / n, 2),
            "operator_peak_rss_mb": round(peak["rss"] / 1024, 1),
            "operator_startup_with_all_adapters_s": round(startup_s, 1),
            "goals": {"seconds": 120, "writes_per_adapter": 10, "peak_rss_mb": 300},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "controller_manager_extra_flags": CM_EXTRA,
            "command": " ".join([".venv/bin/python", "bench/operator/bench.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        print(json.dumps(result, indent=2))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0 if done_s is not None else 1
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                operator.kill()
        if kubelet is not None:
            kubelet.stop()
        plane.stop()


def _raw(rest: Rest, path: str) -> str:
    resp = rest.session.get(rest.server + path, timeout=30)
    resp.raise_for_status()
    return resp.text


def _kopf_events(core: Any) -> int:
    events = core.list_namespaced_event(NS).items
    return sum(1 for e in events if (e.source and e.source.component == "kopf") or e.reporting_component == "kopf")


if __name__ == "__main__":
    raise SystemExit(main())
