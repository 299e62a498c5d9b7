"""Fleet economics of one base release (issue 15): base downloads, model loads and seconds, before and after.

    PYTHONPATH=. python -m bench.fleet.run --shape tiny --adapters 200 --batch 50 --before-subset 20 --out DIR

Builds a random-weight base of ``--shape`` (bench/scale/build.py) with N adapters, publishes them to a real S3
server on loopback (moto, started as the tests start it: tests/support/s3server.py) or, with ``--store local``,
leaves them as local paths (the GPU variant: the device has no S3 server), then re-adapts every adapter three
ways (bench/fleet/arms.py): ``solo-fresh`` (one process per adapter, each on a fresh node), ``solo-shared`` (one
process per adapter, the node's shared base cache) and ``batch`` (``readapt-batch``, ``--batch`` adapters per
process, the shared cache). The solo arms can run on the first ``--before-subset`` adapters only: their
counts per process are fixed (one download and one load each), and the totals for N are then extrapolated
and marked so. The base's bytes are counted twice: from the S3 server's access log and from the worker's own
counters (result.json ``base`` / the batch record's ``counters``); the bench fails if they disagree.

Writes ``fleet.json`` (after every arm) and ``fleet.log`` under ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.fleet.arms import readapt_options, run_batches, run_solo
from bench.fleet.scenario import Release, make_adapters, publish_local, publish_s3

MIB = 1024 * 1024


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def _batch_costs(batches: list[dict[str, Any]]) -> dict[str, float]:
    """A batch process's cost as fixed + adapters × steady: the first adapter pays the base's load (and the
    process its start and imports), every later one the restore. From the batches of at least 2 adapters."""
    multi = [b for b in batches if len(b["adapter_seconds"]) >= 2] or batches
    steady = [s for b in multi for s in b["adapter_seconds"][1:]] or [s for b in multi for s in b["adapter_seconds"]]
    per_adapter = _mean(steady)
    fixed = _mean([b["process_wall_s"] - len(b["adapter_seconds"]) * per_adapter for b in multi])
    return {"fixed_s_per_process": fixed, "seconds_per_adapter_in_batch": per_adapter}


def _summarise(arm: dict[str, Any], adapters: int) -> dict[str, Any]:
    """Means per adapter, and the arm's totals for all ``adapters`` (extrapolated if it ran on a subset)."""
    rows = arm["per_adapter"]
    summary = {
        "load_s_per_adapter": _mean([r["load_s"] for r in rows]),
        "adapt_s_per_adapter": _mean([r["adapt_s"] for r in rows]),
        "measured_adapters": arm["adapters"],
        "extrapolated": arm["adapters"] != adapters,
    }
    if "batches" in arm:
        summary.update(_batch_costs(arm["batches"]))
        summary["process_cpu_s_per_adapter"] = sum(b["process_cpu_s"] for b in arm["batches"]) / arm["adapters"]
        # the base's load from its files, once per batch, and the pristine copy each later adapter gets instead
        summary["base_load_s_per_process"] = _mean(arm["load_s_per_batch"])
        summary["base_restore_s_per_adapter"] = sum(arm["restore_s_per_batch"]) / max(arm["restores"], 1)
    else:
        summary["process_wall_s_per_adapter"] = _mean([r["process_wall_s"] for r in rows])
        summary["process_cpu_s_per_adapter"] = _mean([r["process_cpu_s"] for r in rows])
        summary["base_load_s_per_process"] = _mean([r["base"]["seconds"]["load"] for r in rows])
    processes = arm.get("batches", rows)  # a solo row is its process; a batch's counters are its process's
    summary["base_fetch_s_per_process"] = _mean(
        [p.get("counters", p.get("base", {}))["seconds"]["fetch"] for p in processes]
    )
    scale = adapters / arm["adapters"]
    summary["wall_s_for_all"] = arm["wall_s"] * scale
    return summary


def release_seconds(arms: dict[str, Any], adapters: int, batch: int) -> dict[str, float]:
    """Process-seconds (on a GPU: GPU-seconds a Job holds) for a release of ``adapters`` at ``batch`` per Job."""
    out: dict[str, float] = {}
    for name in ("solo-fresh", "solo-shared"):
        if name in arms:
            out[name] = adapters * arms[name]["summary"]["process_wall_s_per_adapter"]
    if "batch" in arms:
        s = arms["batch"]["summary"]
        out["batch"] = (
            math.ceil(adapters / batch) * s["fixed_s_per_process"] + adapters * s["seconds_per_adapter_in_batch"]
        )
    for name in ("solo-fresh", "solo-shared"):
        if name in out and "batch" in out:
            out[f"saved_vs_{name}"] = out[name] - out["batch"]
    return out


class Store:
    """Where the release lives and the worker writes: the S3 server (with its access log) or local paths."""

    def __init__(self, kind: str, work: Path) -> None:
        self.kind = kind
        self.work = work
        self.server: Any = None
        self.access: Any = None
        self._stop: Any = None
        if kind == "s3":
            from bench.fleet.s3log import AccessLog
            from tests.support.s3server import start_s3_server  # the tests' own start code: a real server

            self.server, proc = start_s3_server(work / "s3", bucket="fleet")
            self._stop = proc.stop
            self.client = self.server.client()
            self.access = AccessLog(self.server.log_path, self.server.bucket)
            os.environ.update(self.server.env)
            for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
                os.environ.pop(name, None)

    def publish(self, base: Path, adapters: list[Path], data: dict[str, Path]) -> Release:
        if self.kind == "local":
            return publish_local(base, adapters, data)
        largest = max(p.stat().st_size for p in base.rglob("*") if p.is_file())
        # Whole-object GETs only, so that the server's log gives exact bytes (see s3log).
        os.environ["RELORA_S3_MULTIPART_THRESHOLD_MB"] = str(max(64, largest // MIB + 1))
        return publish_s3(self.client, self.server.bucket, base, adapters, data)

    @property
    def out_root(self) -> str:
        return f"s3://{self.server.bucket}/out" if self.kind == "s3" else str(self.work / "out")

    def read(self, uri: str) -> bytes:
        if uri.startswith("s3://"):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        return Path(uri).read_bytes()

    def put(self, uri: str, data: bytes) -> None:
        if uri.startswith("s3://"):
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            self.client.put_object(Bucket=bucket, Key=key, Body=data)
        else:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            Path(uri).write_bytes(data)

    def close(self) -> None:
        if self._stop is not None:
            self._stop()


def _run_arm(
    name: str, args: argparse.Namespace, store: Store, release: Release, log: Path, deadline: float
) -> dict[str, Any]:
    nodes = store.work / "nodes"
    options = readapt_options(args.steps, args.strategy, args.device)
    subset = list(range(min(args.before_subset or args.adapters, args.adapters)))
    if store.access is not None:
        store.access.mark()
    if name == "solo-fresh":

        def fresh(index: int) -> str:
            shutil.rmtree(nodes / f"fresh-{index - 1}", ignore_errors=True)  # the previous node is gone
            return str(nodes / f"fresh-{index}")

        arm = run_solo(release, subset, store.out_root, options, fresh, store.read, log, deadline)
        shutil.rmtree(nodes / f"fresh-{subset[-1]}", ignore_errors=True)
    elif name == "solo-shared":
        node = {i: str(nodes / f"solo-{n % args.nodes}") for n, i in enumerate(subset)}
        arm = run_solo(release, subset, store.out_root, options, node.__getitem__, store.read, log, deadline)
    else:
        indices = list(range(args.adapters))
        arm = run_batches(
            release,
            indices,
            args.batch,
            store.out_root,
            options,
            lambda n: str(nodes / f"batch-{n % args.nodes}"),
            store.put,
            store.read,
            log,
        )
    arm["nodes"] = arm["processes"] if name == "solo-fresh" else min(args.nodes, arm["processes"])
    if store.access is not None:
        assert release.base_prefix is not None and release.base_files is not None
        served = store.access.since_mark(release.base_prefix, release.base_files)
        arm["server"] = {
            "base_downloads": served.downloads,
            "base_object_gets": served.object_gets,
            "base_bytes": served.bytes,
            "other_requests": served.other,
        }
        if served.bytes != arm["worker_base_bytes"]:
            raise RuntimeError(
                f"{name}: the server served {served.bytes} base bytes, the worker counted {arm['worker_base_bytes']}"
            )
    arm["summary"] = _summarise(arm, args.adapters)
    return arm


def _table(result: dict[str, Any]) -> str:
    lines = [
        "| arm | processes (measured) | nodes | base downloads (server) | base bytes (server = worker) | "
        "model loads | restores | wall s (measured) | CPU s / adapter | load s / adapter | adapt s / adapter |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, arm in result["arms"].items():
        server = arm.get("server", {})
        s = arm["summary"]
        lines.append(
            f"| {name} | {arm['processes']} ({arm['adapters']} adapters) | {arm['nodes']} | "
            f"{server.get('base_downloads', '—')} | "
            f"{server.get('base_bytes', '—')} | {arm['model_loads']} | {arm['restores']} | {arm['wall_s']:.1f} | "
            f"{s['process_cpu_s_per_adapter']:.2f} | "
            f"{s['load_s_per_adapter']:.3f} | {s['adapt_s_per_adapter']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", help="a shape of bench/scale/build.py (tiny, qwen2.5-1.5b, …)")
    parser.add_argument("--adapters", type=int, default=200, help="N: adapters of the release")
    parser.add_argument("--batch", type=int, default=50, help="B: adapters per readapt-batch process")
    parser.add_argument("--before-subset", type=int, default=0, help="run the solo arms on this many (0: all N)")
    parser.add_argument("--arms", default="solo-fresh,solo-shared,batch")
    parser.add_argument("--nodes", type=int, default=1, help="nodes the shared-cache arms spread processes over")
    parser.add_argument("--store", choices=["s3", "local"], default="s3")
    parser.add_argument("--device", default="cpu", help="readapt's --device (cpu, cuda, auto)")
    parser.add_argument("--strategy", default="transfer-ft", help="readapt's strategy (transfer-ft: no projection)")
    parser.add_argument("--steps", type=int, default=2, help="readapt's --max-steps per adapter")
    parser.add_argument("--train-rows", type=int, default=64)
    parser.add_argument("--eval-rows", type=int, default=16)
    parser.add_argument("--val-rows", type=int, default=16)
    parser.add_argument("--words", type=int, default=12, help="prompt words (tokens) of the task's rows")
    parser.add_argument("--release-adapters", type=int, default=200, help="R: the release the seconds scale to")
    parser.add_argument("--release-batch", type=int, default=0, help="adapters per Job at R (0: --batch)")
    parser.add_argument(
        "--time-limit", type=float, default=0, help="seconds: the solo arms start no process that would end later"
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default=None, help="scratch folder (default: OUT/work; removed at the end)")
    parser.add_argument("--summarise", action="store_true", help="recompute OUT/fleet.json's summaries, no run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.summarise:
        _finish(json.loads((out / "fleet.json").read_text()), out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out / "work"
    log = out / "fleet.log"
    result: dict[str, Any] = {
        "command": " ".join(sys.argv if argv is None else ["bench.fleet.run", *argv]),
        "args": vars(args),
        "arms": {},
    }

    import torch

    from bench.scale.build import build

    started = time.perf_counter()
    deadline = started + args.time_limit if args.time_limit else math.inf
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    built = build(args.shape, work / "models", device, args.train_rows, args.eval_rows, args.val_rows, args.words)
    adapters = make_adapters(Path(built.adapter_v1), work / "adapters", args.adapters)
    data = {"train": Path(built.train), "val": Path(built.val), "eval": Path(built.eval)}
    store = Store(args.store, work)
    try:
        release = store.publish(Path(built.base_v2), adapters, data)
        result["setup_s"] = time.perf_counter() - started
        result["base_bytes"] = sum(p.stat().st_size for p in Path(built.base_v2).rglob("*") if p.is_file())
        result["weight_bytes"] = built.weight_bytes
        for name in args.arms.split(","):
            result["arms"][name] = _run_arm(name, args, store, release, log, deadline)
            print(f"{name}: {json.dumps(result['arms'][name]['summary'])}", flush=True)
            (out / "fleet.json").write_text(json.dumps(result, indent=2))  # partial results survive a time-out
    finally:
        store.close()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    _finish(result, out)
    return 0


def goals(name: str, arm: dict[str, Any], adapters: int, batch: int, nodes: int) -> dict[str, Any]:
    """Issue 15's goals for a release of ``adapters`` at ``batch`` per Job on ``nodes`` nodes: at most one base
    download per node and at most ⌈adapters / batch⌉ model loads. A solo arm measured on a subset scales by
    its per-process counts (one load each; on fresh nodes one download each, on shared ones one per node)."""
    scale = adapters / arm["adapters"]
    out: dict[str, Any] = {"max_loads": math.ceil(adapters / batch), "loads": round(arm["model_loads"] * scale)}
    out["loads_met"] = out["loads"] <= out["max_loads"]
    downloads = arm.get("server", {}).get("base_downloads")
    if downloads is not None:
        out["downloads"] = round(downloads * scale) if name == "solo-fresh" else downloads
        out["downloads_per_node"] = out["downloads"] / nodes
        out["downloads_met"] = out["downloads"] <= nodes
    return out


def _finish(result: dict[str, Any], out: Path) -> None:
    """Summaries, goals and the release's process-seconds from the raw arms; fleet.json; the table."""
    args = result["args"]
    for name, arm in result["arms"].items():
        arm["summary"] = _summarise(arm, args["adapters"])
        arm["goals"] = goals(name, arm, args["adapters"], args["batch"], args["nodes"])
    batch = args["release_batch"] or args["batch"]
    result["release"] = {
        "adapters": args["release_adapters"],
        "batch": batch,
        "process_seconds": release_seconds(result["arms"], args["release_adapters"], batch),
    }
    (out / "fleet.json").write_text(json.dumps(result, indent=2))
    print(_table(result))
    print(json.dumps({name: arm["goals"] for name, arm in result["arms"].items()}))
    print(json.dumps(result["release"], indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
