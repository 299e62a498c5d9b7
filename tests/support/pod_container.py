"""One container of a test-kubelet pod: a local process, its log, termination message and API state."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import sys
from pathlib import Path

from tests.support.pod_env import PodSpecError, expand
from tests.support.pod_files import PathMap, image_roots
from tests.support.procs import ManagedProcess
from tests.support.rest import Obj

MAX_MESSAGE = 4096  # the API's limit for a termination message
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048  # what the kubelet takes from the log for FallbackToLogsOnError
DEFAULT_TERMINATION_PATH = "/dev/termination-log"

# Host variables a pod process keeps (the rest of pytest's environment, e.g. AWS_* from monkeypatch,
# must not leak into pods: a real pod only sees what its spec gives it).
PASSTHROUGH = (
    "LANG",
    "LC_ALL",
    "TZ",
    "PYTHONPATH",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TORCH_HOME",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "SSL_CERT_FILE",
)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _program(argv0: str) -> str:
    """`python`/`python3` means this interpreter (the venv's), so pods see the project's packages."""
    if Path(argv0).name in ("python", "python3") or argv0 == sys.executable:
        return sys.executable
    return argv0


class Container:
    """Runs one container spec (possibly several times: restarts) as a local process group."""

    def __init__(
        self,
        pod: Obj,
        spec: Obj,
        pod_dir: Path,
        env: dict[str, str],
        paths: dict[str, str],
        kubeconfig: Path | None,
    ) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.dir = pod_dir / "containers" / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = pod_dir / f"{self.name}.log"
        self.term_file = self.dir / "termination-log"
        self.restarts = 0
        self.proc: ManagedProcess | None = None
        self._start_error = ""  # set when the process could not be started; poll() reports it once
        self.started_at = ""
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        mapping = dict(paths)
        mapping[spec.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH] = str(self.term_file)
        self.paths = PathMap(mapping, image_roots())
        self.argv = self._argv(env)
        self.env = self._env(pod, env, mapping, kubeconfig)
        workdir = spec.get("workingDir")
        rewritten = self.paths.rewrite(workdir) if workdir else ""
        self.cwd = Path(rewritten) if rewritten and rewritten != workdir else self.dir

    def _argv(self, env: dict[str, str]) -> list[str]:
        command = list(self.spec.get("command") or [])
        if not command:
            raise PodSpecError(
                f"container {self.name!r} has no command: the test kubelet cannot run an image's entrypoint"
            )
        argv = [self.paths.rewrite(expand(a, env)) for a in command + list(self.spec.get("args") or [])]
        argv[0] = _program(argv[0])
        return argv

    def _env(self, pod: Obj, env: dict[str, str], mapping: dict[str, str], kubeconfig: Path | None) -> dict[str, str]:
        base = {k: os.environ[k] for k in PASSTHROUGH if k in os.environ}
        venv_bin = str(Path(sys.executable).parent)  # console scripts (relora, ...) first on PATH
        base["PATH"] = f"{venv_bin}:{os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin')}"
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        base.update(HOME=str(home), TMPDIR=str(home), PYTHONUNBUFFERED="1", HOSTNAME=pod["metadata"]["name"])
        if kubeconfig is not None:
            base["KUBECONFIG"] = str(kubeconfig)
        base.update({k: self.paths.rewrite(v) for k, v in env.items()})
        base["TEST_KUBELET_PATH_MAP"] = json.dumps(mapping)
        base["TEST_KUBELET_TERMINATION_MESSAGE_PATH"] = str(self.term_file)
        return base

    def start(self) -> None:
        self.term_file.write_text("")
        with self.log_path.open("ab") as log:  # restarts append, separated by a marker line
            if self.restarts:
                log.write(f"--- restart {self.restarts} ---\n".encode())
        self.started_at = now()
        exe = shutil.which(self.argv[0], path=self.env["PATH"]) if "/" not in self.argv[0] else self.argv[0]
        try:
            if exe is None:
                raise FileNotFoundError(f'executable file not found in $PATH: "{self.argv[0]}"')
            self.proc = ManagedProcess(
                f"pod-container {self.name}", [exe, *self.argv[1:]], self.log_path, env=self.env, cwd=self.cwd
            )
        except OSError as err:
            # What the runtime reports when it cannot start the process: exit code 128, reason StartError.
            self._start_error = str(err)
            return
        self.state = {"running": {"startedAt": self.started_at}}

    def poll(self) -> int | None:
        """The exit code once the process ended (128+signal when killed), else None; updates state."""
        if self._start_error:
            state = self._terminated(128)
            state.update(reason="StartError", message=self._start_error)
            self.state = {"terminated": state}
            self._start_error = ""
            return 128
        if self.proc is None:
            return None
        code = self.proc.popen.poll()
        if code is None:
            return None
        exit_code = 128 - code if code < 0 else code
        self.proc.stop(timeout=1)  # reap helpers it left in its group, close the log
        self.proc = None
        self.state = {"terminated": self._terminated(exit_code)}
        return exit_code

    def kill(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after `grace_s` (the pod's deletion grace period)."""
        if self.proc is None:
            return
        self.proc.stop(timeout=grace_s)
        code = self.proc.popen.returncode
        self.proc = None
        exit_code = 128 + signal.SIGKILL if code is None else (128 - code if code < 0 else code)
        self.state = {"terminated": self._terminated(exit_code)}

    def restart(self) -> None:
        self.last_state = self.state
        self.restarts += 1
        self.start()

    def _terminated(self, exit_code: int) -> Obj:
        message = self.term_file.read_bytes()[:MAX_MESSAGE].decode("utf-8", errors="replace")
        policy = self.spec.get("terminationMessagePolicy") or "File"
        if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
            lines = self.log_path.read_bytes().splitlines()[-FALLBACK_LINES:]
            message = b"\n".join(lines)[-FALLBACK_BYTES:].decode("utf-8", errors="replace")
        state: Obj = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": self.started_at or now(),
            "finishedAt": now(),
            "containerID": f"testkubelet://{self.name}-{self.restarts}",
        }
        if message:
            state["message"] = message
        return state

    def status(self, init: bool) -> Obj:
        """containerStatuses[] entry."""
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "containerID": f"testkubelet://{self.name}-{self.restarts}",
            "ready": running and not init,
            "started": running,
            "restartCount": self.restarts,
            "state": self.state,
            "lastState": self.last_state,
        }
