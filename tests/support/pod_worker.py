"""The life of one pod on the test kubelet, in its own thread: volumes, containers, status, deletion.

Phases follow the kubelet's rules closely enough for the Job controller: init containers one after another,
then all containers together; restartPolicy Never/OnFailure/Always decides restarts; the pod ends
Succeeded when every container exited 0 and Failed otherwise; spec.activeDeadlineSeconds fails it with
reason DeadlineExceeded. Every change is written through the pods/status subresource.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path

from tests.support.pod_container import Container, now
from tests.support.pod_env import ConfigError, PodSpecError, SourceCache, container_env
from tests.support.pod_files import PodVolumes
from tests.support.rest import ApiError, Obj, Rest

log = logging.getLogger("test-kubelet")
POLL_S = 0.05
MAX_RESTART_DELAY_S = 10.0  # the real kubelet backs off up to 5 min; tests want to see restarts quickly


class PodWorker(threading.Thread):
    def __init__(self, rest: Rest, pod: Obj, pod_dir: Path, server: str, ca_file: str) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod {meta['namespace']}/{meta['name']}", daemon=True)
        self.rest, self.pod, self.dir = rest, pod, pod_dir
        self.server, self.ca_file = server, ca_file
        self.path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        self.policy: str = pod["spec"].get("restartPolicy") or "Always"
        self._stop_grace: float | None = None
        self._stop_event = threading.Event()
        self.init: list[Container] = []
        self.main: list[Container] = []
        self.phase = "Pending"
        self.start_time = now()
        self._t0 = time.monotonic()  # for spec.activeDeadlineSeconds
        self.gone = False  # the pod object no longer exists

    def request_stop(self, grace_s: float) -> None:
        """The pod is being deleted: kill its processes after `grace_s` and finalize the deletion."""
        self._stop_grace = grace_s if self._stop_grace is None else min(grace_s, self._stop_grace)
        self._stop_event.set()

    # --- main loop ---------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception:  # never let a kubelet bug pass silently: fail the pod with the traceback
            log.exception("pod worker crashed")
            self._finish("Failed", "TestKubeletError", traceback.format_exc()[-1000:])
        finally:
            for c in self.init + self.main:
                c.kill(0)
            if self._stop_event.is_set() and not self.gone:
                self.rest.delete(self.path, grace_seconds=0)  # as the kubelet does once containers stopped

    def _run(self) -> None:
        self._report(conditions_ready=False)
        if not self._prepare():
            return
        for container in self.init:
            if not self._run_init(container):
                return
        for container in self.main:
            container.start()
        self.phase = "Running"
        self._report(conditions_ready=True)
        self._supervise()

    def _prepare(self) -> bool:
        """Volumes and container processes' specs; retries config errors until they resolve or deletion."""
        spec = self.pod["spec"]
        while True:
            try:
                sources = SourceCache(self.rest, self.pod["metadata"]["namespace"])
                volumes = PodVolumes(self.dir, self.pod, self.rest, sources, self.server, self.ca_file)
                volumes.prepare()

                self.init = [self._container(c, sources, volumes) for c in spec.get("initContainers") or []]
                self.main = [self._container(c, sources, volumes) for c in spec.get("containers") or []]
                return True
            except PodSpecError as err:
                self._finish("Failed", "TestKubeletUnsupported", str(err))
                return False
            except ConfigError as err:
                self._report_waiting("CreateContainerConfigError", str(err))
                if self._stop_event.wait(1.0):
                    return False

    def _container(self, spec: Obj, sources: SourceCache, volumes: PodVolumes) -> Container:
        env = container_env(self.pod, spec, sources)
        return Container(self.pod, spec, self.dir, env, volumes.container_paths(spec), volumes.kubeconfig)

    def _run_init(self, container: Container) -> bool:
        container.start()
        self._report(conditions_ready=False)
        while True:
            if self._deleted_or_deadline():
                return False
            code = container.poll()
            if code == 0:
                self._report(conditions_ready=False)
                return True
            if code is not None:
                if self.policy == "Never":
                    self._finish("Failed", "", "")
                    return False
                self._backoff_restart(container)
            time.sleep(POLL_S)

    def _supervise(self) -> None:
        while True:
            if self._deleted_or_deadline():
                return
            changed = False
            for c in self.main:
                code = c.poll()
                if code is None:
                    continue
                changed = True
                if self.policy == "Always" or (self.policy == "OnFailure" and code != 0):
                    self._backoff_restart(c)
            if all("terminated" in c.state for c in self.main):
                failed = any(c.state["terminated"]["exitCode"] != 0 for c in self.main)
                self._finish("Failed" if failed else "Succeeded", "", "")
                return
            if changed:
                self._report(conditions_ready=all("running" in c.state for c in self.main))
            time.sleep(POLL_S)

    def _backoff_restart(self, container: Container) -> None:
        self._report(conditions_ready=False)  # shows the terminated state (and exit code) before restarting
        delay = min(MAX_RESTART_DELAY_S, 0.5 * 2**container.restarts)
        if not self._stop_event.wait(delay):
            container.restart()
            self._report(conditions_ready=False)

    def _deleted_or_deadline(self) -> bool:
        if self._stop_event.is_set():
            grace = self._stop_grace or 0.0
            for c in self.init + self.main:
                c.kill(grace)
            self._report(conditions_ready=False)
            return True
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        if deadline is not None and time.monotonic() - self._t0 > float(deadline):
            for c in self.init + self.main:
                c.kill(0)
            self._finish("Failed", "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
            return True
        return False

    # --- status ------------------------------------------------------------------------------------------
    def _finish(self, phase: str, reason: str, message: str) -> None:
        self.phase = phase
        self._report(conditions_ready=False, reason=reason, message=message)

    def _report_waiting(self, reason: str, message: str) -> None:
        for c in self.init + self.main:
            c.state = {"waiting": {"reason": reason, "message": message}}
        self._report(conditions_ready=False, waiting=(reason, message))

    def _report(
        self,
        *,
        conditions_ready: bool,
        reason: str = "",
        message: str = "",
        waiting: tuple[str, str] | None = None,
    ) -> None:
        spec = self.pod["spec"]
        initialized = all("terminated" in c.state and c.state["terminated"]["exitCode"] == 0 for c in self.init)
        if not self.main and not self.init:  # not prepared yet: report every container as being created
            statuses = _placeholder(spec.get("containers") or [], waiting)
            init_statuses = _placeholder(spec.get("initContainers") or [], waiting)
        else:
            statuses = [c.status(init=False) for c in self.main]
            init_statuses = [c.status(init=True) for c in self.init]

        def cond(kind: str, ok: bool) -> Obj:
            return {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now()}

        ready = conditions_ready and self.phase == "Running"
        status: Obj = {
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": [
                cond("PodScheduled", True),
                cond("Initialized", initialized),
                cond("ContainersReady", ready),
                cond("Ready", ready),
            ],
            "containerStatuses": statuses,
            "initContainerStatuses": init_statuses,
            "reason": reason or None,
            "message": message or None,
        }
        try:
            self.rest.merge_patch(self.path + "/status", {"status": status})
        except ApiError as err:
            if err.status == 404:
                self.gone = True
                self._stop_event.set()
            else:
                raise


def _placeholder(containers: list[Obj], waiting: tuple[str, str] | None) -> list[Obj]:
    reason, message = waiting or ("ContainerCreating", "")
    state: Obj = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
    return [
        {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": False,
            "started": False,
            "restartCount": 0,
            "state": state,
            "lastState": {},
        }
        for c in containers
    ]
