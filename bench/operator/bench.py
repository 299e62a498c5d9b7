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
import math
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
import urllib.request
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


class Operator:
    """The operator under test: `python -m relora_operator` as a subprocess; peak RSS over every process run."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss_kb = 0
        self.starts = 0
        self._cpu_done = 0.0  # CPU seconds of the operator processes that ended (the sampler sees one total)
        self._cpu_last = 0.0

    def start(self) -> float:
        self._cpu_done += self._cpu_last
        self._cpu_last = 0.0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relora_operator"], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        self.starts += 1
        threading.Thread(target=self._watch_memory, args=(self.proc,), daemon=True).start()
        return time.monotonic()

    def _watch_memory(self, proc: subprocess.Popen[bytes]) -> None:
        while proc.poll() is None:
            try:
                text = Path(f"/proc/{proc.pid}/status").read_text()
                self.peak_rss_kb = max(self.peak_rss_kb, int(re.search(r"VmHWM:\s+(\d+)", text).group(1)))
            except (OSError, AttributeError):
                pass
            time.sleep(0.5)

    def cpu(self) -> float:
        """CPU seconds of every operator process so far (ended ones included, so windows span restarts)."""
        if self.proc is not None and self.proc.poll() is None:
            now = cpu_seconds(self.proc.pid)
            if now is not None:
                self._cpu_last = now
        return self._cpu_done + self._cpu_last

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.cpu()
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.cpu()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def metric(self, name: str) -> float | None:
        """One sample of the operator's /metrics (None while it does not answer or has no such sample)."""
        try:
            port = self.env["RELORA_METRICS_PORT"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return math.nan  # it answers, without such a metric (e.g. an operator from before it existed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=2000)
    parser.add_argument("--resync", type=float, default=5.0, help="RELORA_RESYNC_SECONDS of the operator")
    parser.add_argument("--timeout", type=float, default=900, help="seconds each phase may take at most")
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--phases",
        default="start,rollout,restart,idle-restart",
        help="comma-separated, in this order: start (operator started with N adapters present, none with a "
        "status), rollout (release v2), restart (release v3, the operator killed when --kill-at of the adapters "
        "are Ready, restarted once the Jobs it created have finished), idle-restart (restarted with nothing to do)",
    )
    parser.add_argument("--kill-at", type=float, default=0.5, help="restart phase: fraction Ready at the kill")
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
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    # SIGTERM (e.g. `timeout`) must still run the cleanup below: no orphaned operator or control plane.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from kubernetes import client, config, utils

    work = Path(tempfile.mkdtemp(prefix="relora-bench-"))
    BenchControlPlane.profiling = args.apiserver_pprof is not None
    plane = BenchControlPlane(binaries.bin_dir(), work / "plane").start()
    kubelet = None
    operator: Operator | None = None
    result: dict[str, Any] = {
        "adapters": n,
        "resync_seconds": args.resync,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_start": os.getloadavg(),
        "controller_manager_extra_flags": CM_EXTRA,
        "command": " ".join([".venv/bin/python", "bench/operator/bench.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "goals": {
            "start_first_status_s": 60,
            "restart_full_pass_s": 120,
            "rollout_s": 300,
            "writes_per_adapter": 6,
            "peak_rss_mb": 1000,
        },
    }
    ok = True
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
        result["seconds_to_create_adapters"] = round(time.monotonic() - t, 1)
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
        print(f"operator log: {work / 'operator.log'}", flush=True)
        operator = Operator(env, work / "operator.log")
        procs = {p.name: p.pid for p in plane.processes}
        me = os.getpid()
        sampler = CpuSampler(
            {
                **{name: (lambda pid=pid: cpu_seconds(pid)) for name, pid in procs.items()},
                "operator": operator.cpu,
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
        changes: list[float] = []  # monotonic time of every TaskAdapter change the bench saw (status writes)

        def keep_adapter(o: dict[str, Any]) -> tuple[Any, Any]:
            changes.append(time.monotonic())
            st = o.get("status") or {}
            return st.get("phase"), st.get("readyRelease")

        adapters = Watcher(observer, f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/taskadapters", keep_adapter).start()
        jobs = Watcher(
            observer,
            f"/apis/batch/v1/namespaces/{NS}/jobs?labelSelector={COMPONENT}%3Dadaptation",
            lambda o: (
                o["metadata"].get("labels", {}).get("relora.dev/release"),
                any(c.get("type") == "Complete" for c in (o.get("status") or {}).get("conditions") or []),
            ),
        ).start()
        adapters.synced.wait(120)
        jobs.synced.wait(120)
        ctx = Phase(n, args, rest, core, operator, adapters, jobs, changes, sampler, release)

        for phase in phases:
            print(f"--- phase {phase}", flush=True)
            result[phase] = {"start": ctx.start, "rollout": ctx.rollout, "restart": ctx.restart,
                             "idle-restart": ctx.idle_restart}[phase]()
            result[phase]["load_average_after"] = os.getloadavg()
            ok = ok and result[phase].get("done", False)
            print(json.dumps({phase: {k: v for k, v in result[phase].items() if k != "breakdown"}}), flush=True)
            if args.out:  # after every phase: a run stopped later keeps the phases it finished
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(result, indent=2) + "\n")
        adapters.stop()
        jobs.stop()
        sampler.stop()
        result["operator_peak_rss_mb"] = round(operator.peak_rss_kb / 1024, 1)
        print(json.dumps(result, indent=2))
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0 if ok else 1
    finally:
        if operator is not None:
            operator.stop()
        if kubelet is not None:
            kubelet.stop()
        plane.stop()


class Phase:
    """The phases of one run; each returns its measurements (seconds are from the phase's own origin)."""

    def __init__(
        self,
        n: int,
        args: argparse.Namespace,
        rest: Rest,
        core: Any,
        operator: Operator,
        adapters: Watcher,
        jobs: Watcher,
        changes: list[float],
        sampler: CpuSampler,
        release: Any,
    ) -> None:
        self.n, self.args, self.rest, self.core, self.operator = n, args, rest, core, operator
        self.adapters, self.jobs, self.changes, self.sampler, self.release = adapters, jobs, changes, sampler, release
        self.ready_at: dict[str, float] = {}  # adapter -> wall-clock epoch the bench first saw it Ready
        self.version = "v1"

    def _ready(self, version: str) -> int:
        hits = [
            name
            for name, (phase, release) in list(self.adapters.state.items())
            if phase == "Ready" and release == version
        ]
        for name in hits:
            self.ready_at.setdefault(name, time.time())
        return len(hits)

    def _wait_ready(self, version: str, t0: float, label: str) -> float | None:
        last_print = 0.0
        while time.monotonic() - t0 < self.args.timeout:
            ready = self._ready(version)
            if ready >= self.n:
                return round(time.monotonic() - t0, 1)
            if not self.operator.alive():
                raise SystemExit(f"the operator exited: see {self.operator.log_path}")
            if time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                jobs = sum(1 for r, _ in list(self.jobs.state.values()) if r == version)
                print(f"  {label} t={last_print - t0:.0f}s jobs={jobs} ready={ready}", flush=True)
            time.sleep(0.5)
        return None

    def _first_change_after(self, t0: float) -> float | None:
        later = [t for t in list(self.changes) if t >= t0]
        return round(min(later) - t0, 1) if later else None

    def _synced(self, t0: float) -> float | None:
        """Seconds from t0 until the operator's caches were listed (its own gauge), waiting up to 5 minutes."""
        while time.monotonic() - t0 < 300:
            value = self.operator.metric("relora_cache_synced_seconds")
            if value is not None and math.isnan(value):
                return None
            if value:
                return round(value, 1)
            time.sleep(0.5)
        return None

    def _writes(self, before: dict[Any, float], events_before: int) -> dict[str, Any]:
        after = _metrics(lambda p: _raw(self.rest, p))
        writes = {
            "taskadapter_status_patches": _delta(after, before, "taskadapters", ("PATCH", "UPDATE", "PUT")),
            "release_patches": _delta(after, before, "basemodelreleases", ("PATCH", "UPDATE", "PUT")),
            "job_creates": _delta(after, before, "jobs", ("POST", "CREATE")),
            "operator_events": _operator_events(self.rest) - events_before,
        }
        return {
            "api_writes": writes,
            "api_writes_per_adapter": round(sum(writes.values()) / self.n, 2),
            "api_requests": _request_counts(after, before),
        }

    def start(self) -> dict[str, Any]:
        """The operator starts with N TaskAdapters present (release v1, none has a status yet)."""
        before, events_before = _metrics(lambda p: _raw(self.rest, p)), _operator_events(self.rest)
        t0 = self.operator.start()
        done = self._wait_ready("v1", t0, "start")
        out = {
            "done": done is not None,
            "synced_s": self._synced(t0),
            "first_status_s": self._first_change_after(t0),
            "all_statuses_s": done,
            "cpu_seconds": self.sampler.window(t0, time.monotonic()),
            **self._writes(before, events_before),
        }
        time.sleep(2 * self.args.resync)  # let idle resyncs show they write nothing
        return out

    def rollout(self) -> dict[str, Any]:
        """Release v2: every adapter re-adapted (one Job each) until every status is Ready for v2."""
        return self._rollout("v2")

    def _rollout(self, version: str, kill_at: float | None = None) -> dict[str, Any]:
        before, events_before = _metrics(lambda p: _raw(self.rest, p)), _operator_events(self.rest)
        self.ready_at.clear()
        t0, origin = time.monotonic(), time.time()
        self.release(version)
        if self.args.apiserver_pprof is not None and version == "v2":

            def pprof() -> None:
                time.sleep(15)
                self.args.apiserver_pprof.write_bytes(
                    self.rest.session.get(self.rest.server + "/debug/pprof/profile?seconds=60", timeout=120).content
                )

            threading.Thread(target=pprof, daemon=True).start()
        out: dict[str, Any] = {}
        if kill_at is not None:
            self._kill_and_restart(version, t0, kill_at, out)
        jobs_created_s = None
        done = None
        last_print = 0.0
        while time.monotonic() - t0 < self.args.timeout:
            if jobs_created_s is None and sum(1 for r, _ in list(self.jobs.state.values()) if r == version) >= self.n:
                jobs_created_s = round(time.monotonic() - t0, 1)
                print(f"  all {self.n} Jobs created after {jobs_created_s:.1f}s", flush=True)
            ready = self._ready(version)
            if ready >= self.n:
                done = round(time.monotonic() - t0, 1)
                break
            if not self.operator.alive():
                raise SystemExit(f"the operator exited: see {self.operator.log_path}")
            if time.monotonic() - last_print > 10:
                last_print = time.monotonic()
                print(f"  t={last_print - t0:.0f}s jobs={len(self.jobs.state)} ready={ready}", flush=True)
            time.sleep(0.5)
        t_end = time.monotonic()
        self.sampler.sample()
        jobs_raw = _raw_json(self.rest, f"/apis/batch/v1/namespaces/{NS}/jobs")["items"]
        pods_raw = _raw_json(self.rest, f"/api/v1/namespaces/{NS}/pods")["items"]
        adaptation = [
            j
            for j in jobs_raw
            if j["metadata"].get("labels", {}).get(COMPONENT) == "adaptation"
            and j["metadata"]["labels"].get("relora.dev/release") == version
        ]
        names = {j["metadata"]["name"] for j in adaptation}
        pods = [p for p in pods_raw if p["metadata"].get("labels", {}).get(JOB_NAME) in names]
        out.update(
            {
                "done": done is not None,
                "seconds_until_all_jobs_created": jobs_created_s,
                "seconds_until_all_statuses_ready": done,
                "adaptation_jobs": len(adaptation),
                "duplicate_jobs": len(adaptation) - len({j["metadata"]["labels"].get("relora.dev/task-adapter")
                                                         for j in adaptation}),
                **self._writes(before, events_before),
                "breakdown": {
                    "cpu_seconds": self.sampler.window(out.get("restarted_at", t0), t_end),
                    "cpu_window": "from the restart" if "restarted_at" in out else "from the release",
                    "rollout_seconds": round(t_end - t0, 1),
                    "cores_used_per_20s": self.sampler.buckets(out.get("restarted_at", t0), t_end, 20.0),
                    "projection_job_seconds_after_release": {
                        j["metadata"]["name"]: {
                            "created": _since(j["metadata"].get("creationTimestamp"), origin),
                            "complete": _since((j.get("status") or {}).get("completionTime"), origin),
                        }
                        for j in jobs_raw
                        if j["metadata"].get("labels", {}).get(COMPONENT) == "projection"
                        and j["metadata"]["labels"].get("relora.dev/release") == version
                    },
                    "timeline_seconds_after_release": timeline(
                        origin, self.n, adaptation, pods, {k: v - origin for k, v in self.ready_at.items()}
                    ),
                },
            }
        )
        out.pop("restarted_at", None)
        time.sleep(2 * self.args.resync)
        return out

    def _kill_and_restart(self, version: str, t0: float, kill_at: float, out: dict[str, Any]) -> None:
        while self._ready(version) < kill_at * self.n:
            if time.monotonic() - t0 > self.args.timeout:
                raise SystemExit("restart phase: the rollout did not get to the kill point")
            time.sleep(0.2)
        self.operator.kill()  # SIGKILL: no cleanup
        killed = time.monotonic()
        ready_at_kill = self._ready(version)
        # While no operator runs, the Jobs it created finish: the restarted one finds them done, statuses stale.
        while time.monotonic() - killed < 120:
            mine = [done for r, done in list(self.jobs.state.values()) if r == version]
            if all(mine):
                break
            time.sleep(0.5)
        time.sleep(2)
        jobs = [done for r, done in list(self.jobs.state.values()) if r == version]
        t_r = self.operator.start()
        out.update(
            {
                "killed_after_s": round(killed - t0, 1),
                "ready_at_kill": ready_at_kill,
                "jobs_at_restart": len(jobs),
                "jobs_complete_at_restart": sum(jobs),
                "restarted_at": t_r,
            }
        )
        out["restart_synced_s"] = self._synced(t_r)
        first = None
        while first is None and time.monotonic() - t_r < self.args.timeout:
            first = self._first_change_after(t_r)
            time.sleep(0.2)
        out["restart_first_status_s"] = first
        # Every adapter whose Job was complete at the restart must be Ready: the pass over what is present.
        out["stale_statuses_at_restart"] = sum(jobs) - ready_at_kill
        out["restart_stale_statuses_written_s"] = self._wait_stale(version, t_r, sum(jobs))

    def _wait_stale(self, version: str, t_r: float, target: int) -> float | None:
        """Seconds after the restart until the adapters whose Jobs finished while no operator ran are Ready."""
        while time.monotonic() - t_r < self.args.timeout:
            if self._ready(version) >= target:
                return round(time.monotonic() - t_r, 1)
            time.sleep(0.5)
        return None

    def restart(self) -> dict[str, Any]:
        """Release v3; the operator is killed (SIGKILL) mid-rollout and restarted once its Jobs have finished."""
        return self._rollout("v3", kill_at=self.args.kill_at)

    def idle_restart(self) -> dict[str, Any]:
        """A restart with nothing to do: N adapters Ready, their Jobs and pods present."""
        self.operator.stop()
        before, events_before = _metrics(lambda p: _raw(self.rest, p)), _operator_events(self.rest)
        t0 = self.operator.start()
        synced = self._synced(t0)
        passed = None
        while time.monotonic() - t0 < self.args.timeout:
            if (self.operator.metric("relora_family_pass_seconds_count") or 0) >= 1:
                passed = round(time.monotonic() - t0, 1)
                break
            time.sleep(0.5)
        return {
            "done": passed is not None,
            "synced_s": synced,
            "first_full_pass_done_s": passed,
            "first_pass_seconds": self.operator.metric("relora_family_pass_seconds_sum"),
            "cpu_seconds": self.sampler.window(t0, time.monotonic()),
            **self._writes(before, events_before),
        }


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


def _operator_events(rest: Rest) -> int:
    """Events the operator posted (its own component name; kopf's for releases' handler errors)."""
    events = _raw_json(rest, f"/api/v1/namespaces/{NS}/events")["items"]
    mine = ("relora-operator", "kopf")
    return sum(
        1 for e in events if (e.get("source") or {}).get("component") in mine or e.get("reportingComponent") in mine
    )


if __name__ == "__main__":
    raise SystemExit(main())
