"""The three ways a release reaches N adapters, each run as the cluster would run it (one process per Job).

* ``solo-fresh``: before issue 15 — one ``relora readapt`` process per adapter, each on a fresh node (its own
  empty base cache), so each downloads and loads the base;
* ``solo-shared``: one process per adapter with its node's shared base cache (one download per node, N loads);
* ``batch``: ``relora readapt-batch`` with B adapters per plan, its node's shared cache (one download per node,
  one load per batch).

Processes are spread round-robin over ``--nodes`` nodes (one cache folder each) and run one after another.

Each process is timed from spawn to exit (what a Job holds its GPU for, less scheduling and image pull); the
worker's own numbers come from each adapter's result.json (``seconds``, ``base``) or the batch record.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.fleet.scenario import Release
from tests.support.procs import _die_with_parent  # a bench killed by its time limit leaves no worker running

Reader = Callable[[str], bytes]  # reads a URI the worker wrote (result.json, the batch record)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _worker(args: list[str], env: dict[str, str], log: Path) -> tuple[float, float, dict[str, Any]]:
    """Runs ``python -m relora_worker ARGS --json``; (wall seconds, CPU seconds, its summary). Exit 0 or 3
    (below threshold) is a finished run; anything else stops the bench with the worker's stderr. CPU seconds
    (user + system of the process) are what a shared machine's load does not inflate."""
    cpu = _cpu_seconds()
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "relora_worker", *args, "--json", "--progress", "off"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        check=False,
        preexec_fn=_die_with_parent,
    )
    wall = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    with log.open("a") as handle:
        handle.write(f"$ relora {' '.join(args)}  # exit {done.returncode}, {wall:.1f} s\n{done.stderr[-3000:]}\n")
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    if done.returncode not in (0, 3) or not lines:
        raise RuntimeError(f"relora {args[0]} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, cpu, json.loads(lines[-1])


def readapt_options(steps: int, strategy: str, device: str) -> dict[str, Any]:
    """The readapt options of every adapter (underscored, as a plan carries them)."""
    return {
        "strategy": strategy,
        "max_steps": steps,
        "eval_every": steps,
        "threshold": 1.0,  # never reached: every adapter trains its full (short) budget
        "device": device,
    }


def _flags(options: dict[str, Any]) -> list[str]:
    return [part for k, v in options.items() for part in (f"--{k.replace('_', '-')}", str(v))]


def _adapter_row(record: dict[str, Any], wall: float | None, cpu: float | None) -> dict[str, Any]:
    seconds = record["seconds"]
    return {
        "process_wall_s": wall,
        "process_cpu_s": cpu,
        "load_s": seconds["load"],  # fetch + load (or restore) of the base, the adapter, the data
        "adapt_s": seconds["readapt"],  # search + training + evaluation
        "end_to_end_s": seconds["end_to_end"],
        "base": record["base"],
    }


def run_solo(
    release: Release,
    indices: list[int],
    out_root: str,
    options: dict[str, Any],
    cache: Callable[[int], str | None],
    read: Reader,
    log: Path,
    deadline: float = math.inf,
) -> dict[str, Any]:
    """One ``relora readapt`` process per adapter; ``cache(i)`` is adapter i's RELORA_BASE_CACHE_DIR. No process
    starts that would, at the last one's duration, end after ``deadline`` (``time.perf_counter()``): the arm
    then reports the adapters it measured (at least one)."""
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for index in indices:
        if rows and time.perf_counter() + rows[-1]["process_wall_s"] > deadline:
            break
        folder = cache(index)
        env = {"RELORA_BASE_CACHE_DIR": folder or ""}
        args = [
            "readapt",
            "--base-model",
            release.base,
            "--adapter",
            release.adapters[index],
            "--train-data",
            release.train,
            "--val-data",
            release.val,
            "--eval-data",
            release.eval,
            "--task",
            "causal-lm",
            "--output",
            f"{out_root}/solo/{index:04d}",
            *_flags(options),
        ]
        wall, cpu, summary = _worker(args, env, log)
        rows.append(_adapter_row(json.loads(read(summary["result_uri"])), wall, cpu))
    wall = time.perf_counter() - started
    return {
        "processes": len(rows),
        "adapters": len(rows),
        "wall_s": wall,
        "model_loads": sum(r["base"]["model_loads"] for r in rows),
        "restores": sum(r["base"]["restores"] for r in rows),
        "worker_base_bytes": sum(r["base"]["base_bytes_downloaded"] for r in rows),
        "per_adapter": rows,
    }


def run_batches(
    release: Release,
    indices: list[int],
    batch: int,
    out_root: str,
    options: dict[str, Any],
    cache: Callable[[int], str],
    put: Callable[[str, bytes], None],
    read: Reader,
    log: Path,
) -> dict[str, Any]:
    """``relora readapt-batch`` over ``indices`` in plans of ``batch`` adapters, one process each; ``cache(n)``
    is batch n's RELORA_BASE_CACHE_DIR (its node's)."""
    batches: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for first in range(0, len(indices), batch):
        chunk = indices[first : first + batch]
        number = first // batch
        plan = {
            "format": "relora-batch-plan/v1",
            "base_model": release.base,
            "task": "causal-lm",
            "options": options,
            "result": f"{out_root}/batch/record-{number:03d}.json",
            "adapters": [
                {
                    "key": f"adapter-{i:04d}",
                    "adapter": release.adapters[i],
                    "train_data": release.train,
                    "val_data": release.val,
                    "eval_data": release.eval,
                    "output": f"{out_root}/batch/{i:04d}",
                }
                for i in chunk
            ],
        }
        plan_uri = f"{out_root}/plans/{number:03d}.json"
        put(plan_uri, json.dumps(plan).encode())
        env = {"RELORA_BASE_CACHE_DIR": cache(number)}
        wall, cpu, summary = _worker(["readapt-batch", "--plan", plan_uri], env, log)
        record = json.loads(read(plan["result"]))
        if not record["done"] or any(a["error"] for a in record["adapters"]):
            raise RuntimeError(f"batch {number} did not finish every adapter: {json.dumps(record)[:2000]}")
        adapter_seconds = [a["seconds"] for a in record["adapters"]]
        rows.extend(_adapter_row(json.loads(read(a["result_uri"])), None, None) for a in record["adapters"])
        batches.append(
            {
                "adapters": len(chunk),
                "process_wall_s": wall,
                "process_cpu_s": cpu,
                "adapter_seconds": adapter_seconds,
                "fixed_s": wall - sum(adapter_seconds),  # start, imports, first fetch/load: paid once per Job
                "counters": record["counters"],
                "summary_model_loads": summary.get("model_loads"),
            }
        )
    wall = time.perf_counter() - started
    return {
        "processes": len(batches),
        "adapters": len(indices),
        "batch_size": batch,
        "wall_s": wall,
        "model_loads": sum(b["counters"]["model_loads"] for b in batches),
        "restores": sum(b["counters"]["restores"] for b in batches),
        "worker_base_bytes": sum(b["counters"]["base_bytes_downloaded"] for b in batches),
        "load_s_per_batch": [b["counters"]["seconds"].get("load", 0.0) for b in batches],
        "restore_s_per_batch": [b["counters"]["seconds"].get("restore", 0.0) for b in batches],
        "batches": batches,
        "per_adapter": rows,
    }
