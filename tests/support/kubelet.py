"""The test kubelet: one fake Node whose pods run as local processes (see pod_worker.py).

There is no kube-scheduler in the test control plane, so the kubelet also binds every unscheduled pod to
its node (pods/binding, like the scheduler would). It then runs pods bound to its node, reports their status,
kills their processes when they are deleted and finalizes the deletion. Logs stay readable after the pod
is gone via `logs(namespace, pod)`.

Opt-in, for benchmarks of thousands of pods that "finish at once" (bench/operator): `instant=` runs no
process. `instant(pod, container)` returns the (exit code, termination message) of each container, and the pod
goes from bound to Succeeded (every exit code 0) or Failed in one pods/status write (restartPolicy is not
honoured: no restarts), from a small thread pool instead of one thread and one forked process per pod. The
tests never use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from requests.adapters import HTTPAdapter

from tests.support.pod_container import now
from tests.support.pod_worker import PodWorker
from tests.support.rest import ApiError, Obj, Rest

log = logging.getLogger("test-kubelet")
NODE_NAME = "relora-test-node"
# Generous but finite: the fake node accepts whatever the tests schedule, GPUs included.
CAPACITY = {
    "cpu": "32",
    "memory": "128Gi",
    "pods": "250",
    "ephemeral-storage": "500Gi",
    "nvidia.com/gpu": "8",
}
# instant mode: (pod, container spec) -> (exit code, termination message)
InstantResult = Callable[[Obj, Obj], tuple[int, str]]
INSTANT_WORKERS = 8


class TestKubelet:
    __test__ = False  # not a pytest test class

    def __init__(
        self,
        rest: Rest,
        workdir: Path,
        server: str,
        ca_file: str,
        node_name: str = NODE_NAME,
        *,
        instant: InstantResult | None = None,
    ) -> None:
        self.rest, self.workdir, self.server, self.ca_file = rest, workdir, server, ca_file
        self.node_name = node_name
        self.instant = instant
        self._pool: ThreadPoolExecutor | None = None
        self._instant_seen: set[tuple[str, str]] = set()  # ("bind" | "run", pod uid) handed to the pool
        if instant is not None:
            self._pool = ThreadPoolExecutor(INSTANT_WORKERS, thread_name_prefix="test-kubelet-instant")
            # A kept-alive connection per pool thread (requests keeps 10 per host, and reconnects beyond that).
            rest.session.mount("https://", HTTPAdapter(pool_maxsize=INSTANT_WORKERS + 4))
        self._workers: dict[str, PodWorker] = {}  # by pod uid
        self._pod_dirs: dict[tuple[str, str], Path] = {}  # newest pod of that namespace/name
        self._finalized: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="test-kubelet", daemon=True)
        self.errors: list[str] = []  # unexpected watch errors, for debugging a flaky session

    # --- public API --------------------------------------------------------------------------------------
    def start(self) -> TestKubelet:
        self._register_node()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.request_stop(0)
        for worker in workers:
            worker.join(timeout=10)

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """stdout+stderr of the newest pod `namespace/pod` (one container, or all with headers)."""
        pod_dir = self._pod_dirs.get((namespace, pod))
        if pod_dir is None:
            raise KeyError(f"the test kubelet never ran pod {namespace}/{pod}")
        if container is not None:
            return (pod_dir / f"{container}.log").read_text(errors="replace")
        files = sorted(pod_dir.glob("*.log"))
        if len(files) == 1:
            return files[0].read_text(errors="replace")
        return "".join(f"==> {f.stem} <==\n{f.read_text(errors='replace')}" for f in files)

    # --- node --------------------------------------------------------------------------------------------
    def _register_node(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "relora.test/kubelet": "true",
        }
        if self.rest.get_or_none(f"/api/v1/nodes/{self.node_name}") is None:
            self.rest.create(
                "/api/v1/nodes",
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name, "labels": labels}},
            )
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        def cond(kind: str, status: str, reason: str) -> Obj:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }

        status = {
            "capacity": CAPACITY,
            "allocatable": CAPACITY,
            "conditions": [
                cond("Ready", "True", "KubeletReady"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "nodeInfo": {
                "kubeletVersion": "test-kubelet",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "local-process://1",
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": "",
                "osImage": "",
            },
        }
        self.rest.merge_patch(f"/api/v1/nodes/{self.node_name}/status", {"status": status})

    # --- watch loop --------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                listing = self.rest.get("/api/v1/pods")
                for pod in listing.get("items") or []:
                    self._handle("ADDED", pod)
                rv = listing["metadata"]["resourceVersion"]
                while not self._stopping.is_set():
                    for event in self.rest.watch("/api/v1/pods", rv, timeout_s=10):
                        if event["type"] == "ERROR":
                            raise RuntimeError(f"watch error: {event['object']}")  # e.g. 410 Gone: relist
                        rv = event["object"]["metadata"]["resourceVersion"]
                        self._handle(event["type"], event["object"])
                        if self._stopping.is_set():
                            return
            except Exception as err:  # connection reset, 410 Gone, API restarting: relist
                if self._stopping.is_set():
                    return
                self.errors.append(repr(err))
                log.debug("test kubelet relists after %r", err)
                time.sleep(0.2)

    def _handle(self, kind: str, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        with self._lock:
            worker = self._workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.gone = True
                worker.request_stop(0)
            return
        node = spec.get("nodeName")
        if not node:
            if not meta.get("deletionTimestamp") and not spec.get("schedulingGates"):
                if self._pool is not None:
                    self._submit(("bind", uid), self._bind, pod)
                else:
                    self._bind(pod)
            return
        if node != self.node_name:
            return
        if meta.get("deletionTimestamp"):
            if worker is not None and worker.is_alive():
                worker.request_stop(float(meta.get("deletionGracePeriodSeconds") or 0))
            elif uid not in self._finalized:
                self._finalized.add(uid)  # nothing runs any more: let the API server drop the object
                self.rest.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", grace_seconds=0)
            return
        phase = (pod.get("status") or {}).get("phase")
        if worker is None and phase not in ("Succeeded", "Failed"):
            if self._pool is not None:
                self._submit(("run", uid), self._complete_at_once, pod)
            else:
                self._start_worker(pod)

    # --- instant mode ------------------------------------------------------------------------------------
    def _submit(self, key: tuple[str, str], fn: Callable[[Obj], None], pod: Obj) -> None:
        with self._lock:
            if key in self._instant_seen:
                return  # the pool has it already (a later event of the same pod)
            self._instant_seen.add(key)
        assert self._pool is not None
        self._pool.submit(self._guarded, fn, pod)

    def _guarded(self, fn: Callable[[Obj], None], pod: Obj) -> None:
        try:
            fn(pod)
        except Exception as err:  # keep the pool alive; the error is kept for debugging like the watch's
            self.errors.append(repr(err))
            log.exception("test kubelet (instant) failed on pod %s", pod["metadata"]["name"])

    def _complete_at_once(self, pod: Obj) -> None:
        """Writes the pod's final status: every container (init containers first) terminated with what
        `instant` says, phase Succeeded when all exited 0, else Failed."""
        instant = self.instant
        assert instant is not None
        meta, spec = pod["metadata"], pod["spec"]
        stamp = now()

        def terminated(container: Obj) -> tuple[int, Obj]:
            code, message = instant(pod, container)
            state: Obj = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": stamp,
                "finishedAt": stamp,
                "containerID": f"testkubelet://{container['name']}-0",
            }
            if message:
                state["message"] = message[:4096]
            status = {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": "",
                "containerID": state["containerID"],
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {"terminated": state},
                "lastState": {},
            }
            return code, status

        init = [terminated(c) for c in spec.get("initContainers") or []]
        main = [terminated(c) for c in spec.get("containers") or []]
        ok = all(code == 0 for code, _ in init + main)

        def cond(kind: str, value: bool) -> Obj:
            return {"type": kind, "status": "True" if value else "False", "lastTransitionTime": stamp}

        status: Obj = {
            "phase": "Succeeded" if ok else "Failed",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": stamp,
            "conditions": [
                cond("PodScheduled", True),
                cond("Initialized", True),
                cond("ContainersReady", False),
                cond("Ready", False),
            ],
            "containerStatuses": [s for _, s in main],
            "initContainerStatuses": [s for _, s in init],
        }
        try:
            self.rest.merge_patch(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status", {"status": status}
            )
        except ApiError as err:
            if err.status != 404:  # deleted meanwhile: nothing to report
                raise

    def _bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.rest.create(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body)
        except ApiError as err:
            if err.status not in (404, 409):  # gone, or bound meanwhile: both fine
                raise

    def _start_worker(self, pod: Obj) -> None:
        meta = pod["metadata"]
        pod_dir = self.workdir / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        pod_dir.mkdir(parents=True, exist_ok=True)
        worker = PodWorker(self.rest, pod, pod_dir, self.server, self.ca_file)
        with self._lock:
            self._workers[meta["uid"]] = worker
            self._pod_dirs[(meta["namespace"], meta["name"])] = pod_dir
        worker.start()
