"""The worker across the GPUs of one node (issue 18): project-delta and readapt through ``relora launch``.

    PYTHONPATH=. python -m bench.scale.multi_gpu --shape llama-3-70b --nproc 4 --shard-base always --out DIR
    PYTHONPATH=. python -m bench.scale.multi_gpu --shape llama-3-8b --nproc 1,2 --shard-base never --out DIR

Builds the shape layer by layer (bench/scale/stream_build.py: a 70B pair never exists whole, in memory or on
disk), then for each world size N in ``--nproc`` runs ``python -m relora_worker.launch --nproc-per-node N``
with ``project-delta`` (each rank a share of the modules) and ``readapt`` (``--shard-base``: FSDP2 over the
frozen base, or a replica per rank), and reads rank 0's result.json. Per N it records load, project-delta,
probe, evaluation and step seconds, training throughput (rows/s), MFU over all N GPUs (the FLOP count of
bench/scale/README.md, from the config: no model is built here), and peak device memory per rank as a share of
the GPU's. ``summary.json`` states each of the issue's goals met or missed. ``--shape tiny --device cpu`` is the
CPU smoke test (gloo ranks; tests/bench/test_multi_gpu_smoke.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bench.scale.build import SHAPES, TARGETS
from bench.scale.stream_build import build_streaming

PEAK_BF16_FLOPS = 989.4e12  # H200 dense bf16 (datasheet), as bench/scale/README.md's MFU
GOALS = {"peak_memory_share": 0.90, "mfu": 0.40, "project_delta_seconds": 180.0, "scaling_8b_2_over_1": 1.7}


def _launch(nproc: int, args: list[str], log: Path) -> tuple[float, dict[str, Any]]:
    """``python -m relora_worker.launch --nproc-per-node N ARGS --json``: (wall seconds, rank 0's summary)."""
    command = [sys.executable, "-m", "relora_worker.launch", "--nproc-per-node", str(nproc), *args,
               "--json", "--progress", "off"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - started
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}  # exit {done.returncode}, {seconds:.1f} s\n{done.stderr[-6000:]}\n")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode not in (0, 3) or not lines:  # 3: below the (unreachable) threshold, a finished run
        raise RuntimeError(f"{args[0]} on {nproc} processes exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, json.loads(lines[-1])


def step_flops(spec: dict[str, Any], rows: int, tokens_per_row: float, lora_rank: int = 16) -> float:
    """FLOPs of one training step over ``rows`` rows (bench/scale/README.md's count, from the config alone):
    the frozen linear layers forward and their activation gradients, causal attention, the output layer at
    the 2 scored positions per row, and the LoRA factors' full training cost."""
    hidden, inter, layers = spec["hidden_size"], spec["intermediate_size"], spec["num_hidden_layers"]
    kv = hidden // spec["num_attention_heads"] * spec["num_key_value_heads"]
    frozen = layers * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter)
    lora = layers * lora_rank * (2 * (hidden + hidden) + 2 * (hidden + kv))
    tokens = rows * tokens_per_row
    forward = 2 * frozen * tokens + 2 * layers * tokens_per_row * tokens * hidden
    head = 2 * 2 * hidden * spec["vocab_size"] * rows * 2
    return 2 * forward + head + 6 * lora * tokens


def _device_bytes(device: str) -> int | None:
    return torch.cuda.get_device_properties(0).total_memory if device != "cpu" and torch.cuda.is_available() else None


def run_world(nproc: int, built: Any, args: argparse.Namespace, root: Path, log: Path) -> dict[str, Any]:
    """project-delta and readapt on ``nproc`` processes; the numbers the issue's goals are stated in."""
    projection = root / f"projection-{nproc}"
    wall, summary = _launch(nproc, ["project-delta", "--old-model", built.base_v1, "--new-model", built.base_v2,
                                    "--target-modules", ",".join(TARGETS), "--rank", "16", "--device", args.device,
                                    "--output", str(projection)], log)  # fmt: skip
    record: dict[str, Any] = {"processes": nproc}
    record["project_delta"] = {"wall_seconds": wall, "seconds": summary["seconds"]}
    out = root / f"out-{nproc}"
    command = [
        "readapt", "--base-model", built.base_v2, "--adapter", built.adapter_v1, "--projection", str(projection),
        "--train-data", built.train, "--val-data", built.val, "--eval-data", built.eval, "--task", "causal-lm",
        "--strategy", args.strategy, "--threshold", "1.0", "--max-steps", str(args.steps),
        "--stage1-steps", str(min(100, args.steps // 3)), "--batch-size", str(args.batch_size),
        "--device", args.device, "--output", str(out), *args.readapt_extra.split(),
    ]  # fmt: skip
    if args.shard_base:
        command += ["--shard-base", args.shard_base]
    wall, summary = _launch(nproc, command, log)
    result = json.loads(Path(summary["result_uri"]).read_text())
    seconds, tuned = result["seconds"], result["finetune"]
    step = seconds["finetune"] / max(tuned["steps"], 1)
    flops = step_flops(built.config, args.batch_size, args.words + 3)
    total = _device_bytes(args.device)
    memory = result.get("memory") or {}
    peaks = result.get("world", {}).get("peak_device_allocated_bytes") or [memory.get("peak_device_allocated_bytes")]
    record["readapt"] = {
        "wall_seconds": wall,
        "seconds": seconds,
        "world": result.get("world"),
        "steps": tuned["steps"],
        "step_seconds": step,
        "rows_per_second": args.batch_size / step,
        "mfu": flops / (step * nproc * PEAK_BF16_FLOPS),
        "probe_seconds": [p["seconds"] for p in (result.get("search") or {}).get("probes", [])],
        "eval_seconds": [p["seconds"] for p in tuned.get("eval_points", [])],
        "memory": memory,
        "peak_device_bytes_per_rank": peaks,
        "peak_memory_share": None if total is None or None in peaks else max(peaks) / total,
    }
    return record


def _goals(shape: str, worlds: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Each goal of issue 18 that these runs measure: its value and whether it is met (None: not measured)."""
    goals: dict[str, Any] = {}
    many = [w for n, w in worlds.items() if n > 1 and "error" not in w]
    if shape == "llama-3-70b" and many:
        share = max((w["readapt"]["peak_memory_share"] or 0.0) for w in many)
        goals["peak_memory_share"] = {"value": share, "goal": GOALS["peak_memory_share"], "met": share <= 0.90}
        mfu = max(w["readapt"]["mfu"] for w in many)
        goals["mfu"] = {"value": mfu, "goal": GOALS["mfu"], "met": mfu >= GOALS["mfu"]}
        delta = min(w["project_delta"]["wall_seconds"] for w in many)
        goals["project_delta_seconds"] = {"value": delta, "goal": 180.0, "met": delta <= 180.0}
    one, two = worlds.get(1), worlds.get(2)
    if shape == "llama-3-8b" and one and two and "error" not in one and "error" not in two:
        ratio = two["readapt"]["rows_per_second"] / one["readapt"]["rows_per_second"]
        goals["scaling_8b_2_over_1"] = {"value": ratio, "goal": 1.7, "met": ratio >= 1.7}
    return goals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-3-70b", choices=sorted(SHAPES))
    parser.add_argument("--nproc", default="2", help="comma-separated world sizes, e.g. 1,2 (one GPU per rank)")
    parser.add_argument("--shard-base", default=None, choices=["never", "always", "auto"],
                        help="readapt's --shard-base (default: readapt's own default)")
    parser.add_argument("--strategy", default="relora")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-rows", type=int, default=2048)
    parser.add_argument("--eval-rows", type=int, default=256)
    parser.add_argument("--val-rows", type=int, default=256)
    parser.add_argument("--words", type=int, default=100, help="prompt words (tokens) of the task's rows")
    parser.add_argument("--layers", type=int, default=None,
                        help="the shape's widths with this many decoder layers (a 70B's layers on one GPU's disk)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--readapt-extra", default="", help="extra readapt flags (space-separated)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default=None, help="scratch folder for the models (default: OUT/work)")
    parser.add_argument("--keep", action="store_true", help="keep the built models")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = (Path(args.work) if args.work else out / "work") / args.shape
    log = out / "multi_gpu.log"
    name = args.shape if args.layers is None else f"{args.shape}-{args.layers}-layers"
    build_device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    built = build_streaming(args.shape, root, build_device, args.train_rows, args.eval_rows, args.val_rows, args.words,
                            layers=args.layers)
    record: dict[str, Any] = {"command": " ".join(sys.argv), "shape": args.shape, "layers": args.layers,
                              "build": asdict(built),
                              "build_seconds": time.perf_counter() - started, "worlds": {}}  # fmt: skip
    for nproc in (int(n) for n in args.nproc.split(",")):
        try:
            record["worlds"][nproc] = run_world(nproc, built, args, root, log)
        except Exception as error:  # one world's failure is recorded; the others still run
            record["worlds"][nproc] = {"error": f"{type(error).__name__}: {error}"[:3000]}
        (out / f"{name}.json").write_text(json.dumps(record, indent=2))  # partial results survive a time-out
        print(json.dumps({nproc: record["worlds"][nproc]}, default=str)[:2000], flush=True)
    record["goals"] = _goals(args.shape, record["worlds"]) if args.layers is None else {}  # goals: whole shapes
    (out / f"{name}.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record["goals"], indent=2), flush=True)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if all("error" not in w for w in record["worlds"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
