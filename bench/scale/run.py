"""The worker at LLM scale (issue 14): project-delta + readapt through the CLI on random-weight real shapes.

    PYTHONPATH=. python -m bench.scale.run --shapes qwen2.5-0.5b,qwen2.5-1.5b,llama-3-8b --out DIR

For each shape: build v1, v2, an old adapter and a 16-label task on the device (bench/scale/build.py), run
``relora project-delta`` and ``relora readapt`` (``relora`` from the projection, then ``transfer-ft``, the same
steps) as subprocesses, read their result.json, and run bench/scale/micro.py (load, one probe, the three
likelihood-accuracy implementations, training MFU at seq 512 × batch 8) in a fresh process. Writes
``<shape>.json`` per shape and ``summary.json`` under ``--out`` and prints a table. ``--shapes tiny --device cpu``
is the CPU smoke test's path (tests/bench/test_scale_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bench.scale.build import TARGETS, build


def _cli(args: list[str], log: Path) -> tuple[float, dict[str, Any]]:
    """Runs ``python -m relora_worker ARGS --json``; returns (wall seconds, its JSON summary)."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "relora_worker", *args, "--json", "--progress", "off"],
        capture_output=True, text=True, env=env, check=False,
    )
    seconds = time.perf_counter() - started
    with log.open("a") as handle:
        handle.write(f"$ relora {' '.join(args)}\n{done.stderr[-4000:]}\n")
    lines = [line for line in done.stdout.strip().splitlines() if line.startswith("{")]
    if done.returncode not in (0, 3) or not lines:
        raise RuntimeError(f"relora {args[0]} exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, json.loads(lines[-1])


def _readapt(built: Any, projection: Path, out: Path, strategy: str, args: argparse.Namespace, log: Path) -> dict:
    command = [
        "readapt", "--base-model", built.base_v2, "--adapter", built.adapter_v1, "--projection", str(projection),
        "--train-data", built.train, "--val-data", built.val, "--eval-data", built.eval, "--task", "causal-lm",
        "--strategy", strategy, "--threshold", "1.0", "--max-steps", str(args.steps),
        "--stage1-steps", str(min(100, args.steps // 3)), "--device", args.device, "--output", str(out),
        *args.readapt_extra.split(),
    ]
    wall, summary = _cli(command, log)
    record = json.loads(Path(summary["result_uri"]).read_text())
    record["bench_wall_seconds"] = wall
    return record


def _phase_split(record: dict) -> dict[str, Any]:
    """Per-phase seconds, the (search + evaluation) share of end to end, and the run's MFU-relevant numbers."""
    seconds = record["seconds"]
    tuned = record["finetune"]
    e2e = seconds["end_to_end"]
    probes = record["search"]["probes"] if record.get("search") else []
    evals = tuned.get("eval_points", [])
    return {
        "seconds": seconds,
        "search_plus_eval_share": (seconds["search"] + seconds["evaluation"]) / e2e,
        "evaluations": len(evals),
        "eval_seconds_each": [round(p["seconds"], 3) for p in evals],
        "probe_seconds": [round(p["seconds"], 3) for p in probes],
        "step_seconds": seconds["finetune"] / max(tuned["steps"], 1),
        "steps": tuned["steps"],
        "memory": record.get("memory"),
    }


def run_shape(shape: str, args: argparse.Namespace, work: Path, out: Path, log: Path) -> dict[str, Any]:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device)
    root = work / shape
    built = build(shape, root, device, args.train_rows, args.eval_rows, args.val_rows, args.words)
    torch.cuda.empty_cache() if device.type == "cuda" else None
    record: dict[str, Any] = {"shape": shape, "build": asdict(built)}

    projection = root / "projection"
    wall, summary = _cli(
        ["project-delta", "--old-model", built.base_v1, "--new-model", built.base_v2, "--target-modules",
         ",".join(TARGETS), "--rank", "16", "--device", args.device, "--output", str(projection)],
        log,
    )
    meta = json.loads((projection / "projection.json").read_text())
    record["project_delta"] = {"wall_seconds": wall, "seconds": summary["seconds"], "svd": meta["svd"],
                               "modules": summary["modules"]}
    (out / f"{shape}.json").write_text(json.dumps(record, indent=2))

    micro_out = work / f"{shape}-micro.json"
    command = [
        sys.executable, "-m", "bench.scale.micro", "--base", built.base_v2, "--adapter", built.adapter_v1,
        "--projection", str(projection), "--data-dir", str(root), "--out", str(micro_out), "--device", args.device,
        "--batch", str(args.mfu_batch), "--seq", str(args.mfu_seq), "--steps", str(args.mfu_steps),
    ]
    if args.checkpointing:
        command.append("--checkpointing")
    if shape in args.compile.split(","):
        command.append("--compile")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n{done.stderr[-4000:]}\n")
    record["micro"] = (
        json.loads(micro_out.read_text()) if done.returncode == 0 else {"error": done.stderr[-2000:]}
    )
    (out / f"{shape}.json").write_text(json.dumps(record, indent=2))
    runs = {}
    for strategy in args.strategies.split(","):
        runs[strategy] = _phase_split(_readapt(built, projection, root / f"out-{strategy}", strategy, args, log))
        runs[strategy]["wall_seconds"] = runs[strategy]["seconds"]["end_to_end"]
        record["readapt"] = runs
        (out / f"{shape}.json").write_text(json.dumps(record, indent=2))  # partial results survive a time-out
    record["readapt"] = runs
    if "relora" in runs and "transfer-ft" in runs:
        record["relora_over_transfer_ft_e2e"] = (
            runs["relora"]["seconds"]["end_to_end"] / runs["transfer-ft"]["seconds"]["end_to_end"]
        )

    (out / f"{shape}.json").write_text(json.dumps(record, indent=2))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)  # an 8B pair is 32 GB of disk
    return record


def _row(record: dict[str, Any]) -> str:
    micro = record.get("micro", {})
    relora = record.get("readapt", {}).get("relora", {})
    train = micro.get("train", {})
    return (
        f"{record['shape']:<14} load {micro.get('load', {}).get('seconds', float('nan')):6.2f} s | "
        f"project {record['project_delta']['wall_seconds']:6.1f} s | "
        f"probe {micro.get('probe_seconds', float('nan')):6.3f} s | "
        f"eval {micro.get('quality_seconds', float('nan')):6.3f} s | "
        f"step {train.get('step_seconds', float('nan')):6.3f} s MFU {train.get('mfu', float('nan')):.2f} | "
        f"relora/tft {record.get('relora_over_transfer_ft_e2e', float('nan')):.2f} | "
        f"(search+eval)/e2e {relora.get('search_plus_eval_share', float('nan')):.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="qwen2.5-0.5b,qwen2.5-1.5b,llama-3-8b")
    parser.add_argument("--out", required=True, help="folder for <shape>.json, summary.json and the log")
    parser.add_argument("--work", default=None, help="scratch folder for models (default: OUT/work)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--strategies", default="relora,transfer-ft")
    parser.add_argument("--steps", type=int, default=300, help="readapt's max steps (the default budget)")
    parser.add_argument("--train-rows", type=int, default=4096)
    parser.add_argument("--eval-rows", type=int, default=512)
    parser.add_argument("--val-rows", type=int, default=512)
    parser.add_argument("--words", type=int, default=100, help="prompt words (tokens) of the task's rows")
    parser.add_argument("--mfu-batch", type=int, default=8)
    parser.add_argument("--mfu-seq", type=int, default=512)
    parser.add_argument("--mfu-steps", type=int, default=10)
    parser.add_argument("--checkpointing", action="store_true", help="micro: also train with checkpointing on")
    parser.add_argument("--compile", default="", help="comma-separated shapes whose micro run also compiles")
    parser.add_argument("--readapt-extra", default="", help="extra readapt flags (space-separated)")
    parser.add_argument("--keep", action="store_true", help="keep the built models")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else out / "work"
    log = out / "scale.log"
    summary: dict[str, Any] = {"command": " ".join(sys.argv), "shapes": {}}
    for shape in args.shapes.split(","):
        started = time.perf_counter()
        try:
            record = run_shape(shape, args, work, out, log)
        except Exception as error:  # one shape's failure is recorded; the others still run
            summary["shapes"][shape] = {"error": f"{type(error).__name__}: {error}"[:3000]}
            print(f"{shape}: FAILED {error}"[:3000], flush=True)
            continue
        summary["shapes"][shape] = {"row": _row(record), "bench_seconds": time.perf_counter() - started}
        print(_row(record), flush=True)
    summary["peak_host_rss_children_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0 if all("error" not in s for s in summary["shapes"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
