"""Benchmark of the operator's control loop: N TaskAdapters and one new release on the test control plane.

Worker pods "finish at once" with a contract-true termination summary, so the run measures the operator (and the
control plane), not the worker. How they finish (--pods):

* instant (default): the test kubelet's opt-in instant mode. It binds each pod and writes its final status in
  one pods/status write: container terminated, exit code 0, termination message = SUMMARY, exactly what
  FAKE_WORKER would write (see fake_worker(); a pod whose command is not FAKE_WORKER fails with 127). No process,
  no thread per pod. The Job controller and the operator see the same objects as with a real kubelet.
* process: the test kubelet's default, as in the tests: a thread per pod and a forked `sh` running FAKE_WORKER.
  With 2000 pods on 2 cores, the forked processes used ~49 CPU-ms per pod and the kubelet's threads ~54 more:
  this, not the operator, is what made the first 2000-adapter result take 408 s (see README.md).

Measured:

* time from applying release v2 until every re-adaptation Job exists, and until every TaskAdapter's status says
  Ready for v2 (observed through watches, not by listing thousands of objects every second);
* API writes per adapter during that rollout: status patches of TaskAdapters and the release, Job creates
  (apiserver_request_total deltas, only the operator writes these) and the operator's Events (kopf's);
* the operator process's peak resident memory (VmHWM);
* `breakdown`: CPU seconds of each process during the rollout (/proc, sampled every second) and cores used per
  20 s, every client's API requests by verb and resource, and a timeline from the objects' own timestamps
  (1 s resolution): when the first/p50/p90/all adaptation Jobs were created, their pods created, started,
  Succeeded, the Jobs Complete and the adapters Ready.

Usage: .venv/bin/python bench/operator/bench.py --adapters 2000 --pods instant --out bench/operator/results/run.json
The controller-manager runs with --kube-api-qps/--kube-api-burst raised (its default of 20 QPS would make the
Job controller, not the operator, the bottleneck of 2000 Jobs); everything else is the test control plane.
--apiserver-pprof FILE also writes a 60 s Go CPU profile of the API server (diagnosis only).
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
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from rollout_profile import CpuSampler, Watcher, cpu_seconds, timeline  # noqa: E402

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
COMPONENT, JOB_NAME = "app.kubernetes.io/component", "batch.kubernetes.io/job-name"
CM_EXTRA = ["--kube-api-qps=400", "--kube-api-burst=800", "--concurrent-job-syncs=20"]


def fake_worker(pod: dict[str, Any], container: dict[str, Any]) -> tuple[int, str]:
    """What FAKE_WORKER does, for the test kubelet's instant mode: exit 0 with SUMMARY as termination message.
    Only for containers that run FAKE_WORKER (the operator took it from RELORA_WORKER_COMMAND)."""
    command = list(container.get("command") or [])
    if command != shlex.split(FAKE_WORKER):
        return 127, f"bench: unexpected command {command!r} in pod {pod['metadata']['name']}"
    return 0, SUMMARY


class BenchControlPlane(ControlPlane):
    profiling = False  # --apiserver-pprof: serve /debug/pprof on the API server

    def _spawn(self, name: str, argv: list[str]) -> Any:
        if name == "kube-controller-manager":
            argv = [*argv, *CM_EXTRA]
        if name == "kube-apiserver" and self.profiling:
            argv = [a for a in argv if not a.startswith("--profiling")] + ["--profiling=true"]
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
    parser.add_argument(
        "--pods",
        choices=("instant", "process"),
        default="instant",
        help="instant: the test kubelet completes each worker pod in one status write, with the summary FAKE_WORKER "
        "would write; process: it forks FAKE_WORKER as a local process per pod (a thread and a fork per pod)",
    )
    parser.add_argument(
        "--apiserver-pprof",
        type=Path,
        help="diagnosis: write a 60 s Go CPU profile of the API server, from 15 s after the release, to this file",
    )
    args = parser.parse_args()
    n = args.adapters
    # SIGTERM (e.g. `timeout`) must still run the cleanup below: no orphaned operator or control plane.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from kubernetes import client, config, utils

    work = Path(tempfile.mkdtemp(prefix="relora-bench-"))
    BenchControlPlane.profiling = args.apiserver_pprof is not None
    plane = BenchControlPlane(binaries.bin_dir(), work / "plane").start()
    kubelet = None
    operator = None
    try:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        api.configuration.connection_pool_maxsize = 32
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        rest = Rest(plane.server, str(plane.ca_cert), cert=(str(plane.admin_cert.cert), str(plane.admin_cert.key)))
        kubelet = TestKubelet(
            rest,
            work / "kubelet",
            plane.server,
            str(plane.ca_cert),
            instant=fake_worker if args.pods == "instant" else None,
        ).start()
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
        procs = {p.name: p.pid for p in plane.processes}
        me = os.getpid()
        sampler = CpuSampler(
            {
                **{name: (lambda pid=pid: cpu_seconds(pid)) for name, pid in procs.items()},
                "operator": lambda: cpu_seconds(operator.pid),
                "bench process (test kubelet, watches)": lambda: cpu_seconds(me),
                "bench main thread": lambda: cpu_seconds(me, me),
                "kubelet watch thread": lambda: cpu_seconds(me, kubelet._thread.native_id),
                "pod processes (reaped children of bench)": lambda: cpu_seconds(me, children=True),
            },
            top_level=[
                *procs,
                "operator",
                "bench process (test kubelet, watches)",
                "pod processes (reaped children of bench)",
            ],
        ).start()

        # The bench observes through watches (own connection), not by listing thousands of objects every second.
        observer = Rest(plane.server, str(plane.ca_cert), cert=(str(plane.admin_cert.cert), str(plane.admin_cert.key)))
        adapters = Watcher(
            observer,
            f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/taskadapters",
            lambda o: (
                (o.get("status") or {}).get("phase"),
                (o.get("status") or {}).get("readyRelease"),
            ),
        ).start()
        jobs = Watcher(
            observer,
            f"/apis/batch/v1/namespaces/{NS}/jobs?labelSelector={COMPONENT}%3Dadaptation",
            lambda o: o["metadata"]["name"],
        ).start()
        ready_at: dict[str, float] = {}  # adapter -> wall-clock epoch the bench first saw it Ready on v2

        def count(pred: Any) -> int:
            hits = [name for name, (phase, release) in list(adapters.state.items()) if pred(phase, release)]
            for name in hits:
                ready_at.setdefault(name, time.time())
            return len(hits)

        t = time.monotonic()
        while count(lambda phase, _release: phase == "Ready") < n:
            if operator.poll() is not None:
                raise SystemExit(f"the operator exited: see {work / 'operator.log'}")
            time.sleep(0.5)
        startup_s = time.monotonic() - t
        print(f"operator up, {n} adapters Ready as given on v1 after {startup_s:.1f}s", flush=True)
        time.sleep(2 * args.resync)  # let idle resyncs show they write nothing
        before = _metrics(lambda p: _raw(rest, p))
        kopf_events_before = _kopf_events(core)

        ready_at.clear()
        t0, origin = time.monotonic(), time.time()
        release("v2")
        if args.apiserver_pprof is not None:

            def pprof() -> None:
                time.sleep(15)
                args.apiserver_pprof.write_bytes(
                    rest.session.get(rest.server + "/debug/pprof/profile?seconds=60", timeout=120).content
                )

            threading.Thread(target=pprof, daemon=True).start()
        jobs_created_s = done_s = None
        last_print = 0.0
        while time.monotonic() - t0 < args.timeout:
            if jobs_created_s is None and len(jobs.state) >= n:
                jobs_created_s = time.monotonic() - t0
                print(f"all {n} Jobs created after {jobs_created_s:.1f}s", flush=True)
            ready = count(lambda phase, release: phase == "Ready" and release == "v2")
            if ready >= n:
                done_s = time.monotonic() - t0
                break
            if time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                print(f"  t={last_print - t0:.0f}s jobs={len(jobs.state)} ready={ready}", flush=True)
            time.sleep(0.5)
        adapters.stop()
        jobs.stop()
        t_end = time.monotonic()
        after = _metrics(lambda p: _raw(rest, p))
        sampler.sample()
        sampler.stop()
        jobs_raw = _raw_json(rest, f"/apis/batch/v1/namespaces/{NS}/jobs")["items"]
        pods_raw = _raw_json(rest, f"/api/v1/namespaces/{NS}/pods")["items"]
        adaptation = [j for j in jobs_raw if j["metadata"].get("labels", {}).get(COMPONENT) == "adaptation"]
        adaptation_names = {j["metadata"]["name"] for j in adaptation}
        pods_adapt = [p for p in pods_raw if p["metadata"].get("labels", {}).get(JOB_NAME) in adaptation_names]
        breakdown = {
            "cpu_seconds_during_rollout": sampler.window(t0, t_end),
            "rollout_seconds": round(t_end - t0, 1),
            "api_requests_during_rollout": _request_counts(after, before),
            "cores_used_per_20s": sampler.buckets(t0, t_end, 20.0),
            "projection_job_seconds_after_release": {
                j["metadata"]["name"]: {
                    "created": _since(j["metadata"].get("creationTimestamp"), origin),
                    "complete": _since((j.get("status") or {}).get("completionTime"), origin),
                }
                for j in jobs_raw
                if j["metadata"].get("labels", {}).get(COMPONENT) == "projection"
            },
            "timeline_seconds_after_release": timeline(
                origin, n, adaptation, pods_adapt, {k: v - origin for k, v in ready_at.items()}
            ),
        }
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
            "breakdown": breakdown,
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


def _since(stamp: str | None, origin: float) -> float | None:
    if not stamp:
        return None
    return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - origin, 1)


def _request_counts(after: dict[Any, float], before: dict[Any, float]) -> dict[str, int]:
    """Every client's API requests during the rollout, by resource/subresource and verb, most first."""
    counts = {
        f"{verb} {res}{'/' + sub if sub else ''}": int(v - before.get((res, sub, verb), 0.0))
        for (res, sub, verb), v in after.items()
    }
    return dict(sorted(((k, v) for k, v in counts.items() if v > 0), key=lambda kv: -kv[1]))


def _raw_json(rest: Rest, path: str) -> dict[str, Any]:
    resp = rest.session.get(rest.server + path, timeout=120)
    resp.raise_for_status()
    return dict(resp.json())


def _kopf_events(core: Any) -> int:
    events = core.list_namespaced_event(NS).items
    return sum(1 for e in events if (e.source and e.source.component == "kopf") or e.reporting_component == "kopf")


if __name__ == "__main__":
    raise SystemExit(main())
