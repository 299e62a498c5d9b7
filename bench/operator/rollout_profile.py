"""Where the benchmark's time goes: per-process CPU seconds sampled from /proc, and a timeline of the rollout.

`CpuSampler` reads utime+stime of each named process (and, for the bench process itself, of chosen threads and
of its reaped children) once a second. `timeline` turns the objects' own timestamps (1 s resolution) into
"seconds after the release when p50/p90/all of them reached this stage".
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(path: str) -> list[str] | None:
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, tid: int | None = None, children: bool = False) -> float | None:
    """utime+stime of a process (or one of its threads); with `children`, of its reaped children only."""
    fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat")
    if fields is None:
        return None
    # fields[0] is the state (field 3): utime/stime are fields 14/15, cutime/cstime 16/17.
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / TICK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in parts[:8]]
    return (sum(values) - values[3] - values[4]) / TICK  # minus idle and iowait


class CpuSampler:
    """Samples the CPU seconds of `sources` (name -> zero-argument callable) every `interval` seconds."""

    def __init__(
        self, sources: Mapping[str, Callable[[], float | None]], top_level: Iterable[str], interval: float = 1.0
    ) -> None:
        self.sources = dict(sources)
        self.top_level = set(top_level)  # disjoint processes, whose sum is compared with the machine's
        self.sources.setdefault("machine (all processes)", machine_busy_seconds)
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> tuple[float, dict[str, float]]:
        values: dict[str, float] = {}
        for name, read in self.sources.items():
            try:
                value = read()
            except (OSError, ValueError):
                value = None
            if value is not None:
                values[name] = value
        entry = (time.monotonic(), values)
        self.samples.append(entry)
        return entry

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each source used between the samples nearest to monotonic times `start` and `end`."""
        if not self.samples:
            return {}
        a = min(self.samples, key=lambda s: abs(s[0] - start))[1]
        b = min(self.samples, key=lambda s: abs(s[0] - end))[1]
        used = {k: round(b[k] - a[k], 1) for k in b if k in a}
        machine = used.get("machine (all processes)")
        if machine is not None:  # what the named processes do not explain: other processes, kernel, softirq
            named = sum(v for k, v in used.items() if k in self.top_level)
            used["rest of the machine"] = round(machine - named, 1)
        return used

    def buckets(self, start: float, end: float, width: float) -> list[dict[str, Any]]:
        """Cores used by each source in consecutive windows of `width` seconds from `start` to `end`."""
        out = []
        t = start
        while t < end - 1e-6:
            u = min(t + width, end)
            used = self.window(t, u)
            span = max(u - t, 1e-6)
            out.append({"from_s": round(t - start), **{k: round(v / span, 2) for k, v in used.items()}})
            t = u
        return out


def _seconds(stamp: str | None, origin: float) -> float | None:
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - origin


def _quantiles(values: Iterable[float | None], expected: int) -> dict[str, Any]:
    seen = sorted(v for v in values if v is not None)
    if not seen:
        return {"count": 0}

    def at(q: float) -> float:
        return round(seen[min(len(seen) - 1, int(q * expected) - 1 if q < 1 else len(seen) - 1)], 1)

    out: dict[str, Any] = {"count": len(seen), "first_s": round(seen[0], 1)}
    for name, q in (("p50_s", 0.5), ("p90_s", 0.9)):
        if len(seen) >= int(q * expected):
            out[name] = at(q)
    if len(seen) >= expected:
        out["all_s"] = round(seen[-1], 1)
    return out


def timeline(
    origin: float,
    expected: int,
    jobs: list[Mapping[str, Any]],
    pods: list[Mapping[str, Any]],
    ready_at: Mapping[str, float],
) -> dict[str, Any]:
    """Seconds after `origin` (wall-clock epoch of the release) at which the first, p50, p90 and all of the
    `expected` adaptation Jobs/pods/adapters reached each stage. API timestamps have 1 s resolution; pod
    times are the kubelet's own clock (same host)."""

    def finished(pod: Mapping[str, Any]) -> str | None:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            if terminated.get("finishedAt"):
                return str(terminated["finishedAt"])
        return None

    def pod_phase_time(pod: Mapping[str, Any]) -> str | None:
        phase = (pod.get("status") or {}).get("phase")
        return finished(pod) if phase == "Succeeded" else None

    return {
        "jobs_created": _quantiles((_seconds(j["metadata"].get("creationTimestamp"), origin) for j in jobs), expected),
        "pods_created": _quantiles((_seconds(p["metadata"].get("creationTimestamp"), origin) for p in pods), expected),
        "pods_started_by_kubelet": _quantiles(
            (_seconds((p.get("status") or {}).get("startTime"), origin) for p in pods), expected
        ),
        "pods_succeeded": _quantiles((_seconds(pod_phase_time(p), origin) for p in pods), expected),
        "jobs_complete": _quantiles(
            (_seconds((j.get("status") or {}).get("completionTime"), origin) for j in jobs), expected
        ),
        "adapters_ready_seen_by_bench": _quantiles(ready_at.values(), expected),
    }


class Watcher:
    """Keeps `keep(object)` of every object of one collection current from a watch (list, then watch from its
    resourceVersion; relist on any error). Much cheaper for the API server than listing thousands of objects
    every few seconds, and it sees each change when it happens."""

    def __init__(self, rest: Any, path: str, keep: Callable[[Mapping[str, Any]], Any]) -> None:
        self.rest, self.path, self.keep = rest, path, keep
        self.state: dict[str, Any] = {}
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.rest.get(self.path)
                self.state = {o["metadata"]["name"]: self.keep(o) for o in listing.get("items") or []}
                self.synced.set()
                rv = listing["metadata"]["resourceVersion"]
                while not self._stop.is_set():
                    for event in self.rest.watch(self.path, rv, timeout_s=60):
                        if event["type"] == "ERROR":
                            raise RuntimeError(f"watch error: {event['object']}")
                        obj = event["object"]
                        rv = obj["metadata"]["resourceVersion"]
                        if event["type"] == "DELETED":
                            self.state.pop(obj["metadata"]["name"], None)
                        else:
                            self.state[obj["metadata"]["name"]] = self.keep(obj)
            except Exception:  # connection reset, 410 Gone: relist
                time.sleep(0.5)
