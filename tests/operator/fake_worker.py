"""A stand-in for the `relora` CLI that honours its contract (exit codes, termination summary) instantly.

For tests of the operator's control loop and for the benchmark, where the real worker's minutes of CPU would
only measure the worker. Behaviour is steered by the inputs: a data URI containing "missing" is bad input
(exit 2), a threshold above 0.95 ends below threshold (exit 3), a data URI containing "nosummary" succeeds
with a summary that lacks the numbers (the operator must read result.json), and a re-adaptation takes
--max-steps milliseconds (so a test can keep Jobs running while it kills the operator or deletes the Job).

``readapt-batch --plan FILE`` runs each adapter of the plan by the same rules (its ``max_steps`` option in
milliseconds), writes its marker ``adapter.txt`` under its (file://) output and rewrites the batch record
(relora_contract.batch's format) at the plan's ``result`` after each one, like the real worker; an adapter whose
data URI contains "killbatch" makes the process kill itself (SIGKILL) when its turn comes, as a node loss would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--termination-message-path")
    parser.add_argument("--output", default="")
    parser.add_argument("--train-data", default="")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--strategy", default="relora")
    parser.add_argument("--max-steps", type=int, default=0)
    parser.add_argument("--plan", default="")
    args, _ = parser.parse_known_args(argv)
    if args.command == "readapt":
        time.sleep(args.max_steps / 1000)
    if args.command == "readapt-batch":
        code, summary = _batch(args.plan)
    elif args.command == "project-delta":
        code, summary = (
            0,
            {
                "command": "project-delta",
                "status": "ok",
                "exit_code": 0,
                "projection_uri": args.output,
                "modules": 2,
                "seconds": 0.0,
                "error": None,
            },
        )
    elif "missing" in args.train_data:
        code, summary = (
            2,
            {
                "command": "readapt",
                "status": "error",
                "exit_code": 2,
                "error": f"cannot read {args.train_data}: NoSuchKey",
            },
        )
    else:
        code, summary = _readapt(args.threshold, args.strategy, args.output)
    if "nosummary" in args.train_data:
        summary = {k: summary[k] for k in ("command", "status", "exit_code")}
    if args.termination_message_path:
        with open(args.termination_message_path, "w") as fh:
            fh.write(json.dumps(summary))
    print(json.dumps(summary))
    return code


def _readapt(threshold: float, strategy: str, output: str) -> tuple[int, dict[str, Any]]:
    below = threshold > 0.95
    quality = 0.9 if below else round(min(1.0, threshold + 0.05), 4)
    code = 3 if below else 0
    return code, {
        "command": "readapt",
        "status": "below-threshold" if below else "ready",
        "exit_code": code,
        "strategy": strategy,
        "quality": quality,
        "threshold": threshold,
        "time_to_readiness_s": None if below else 1.5,
        "alpha": 0.4,
        "beta": 1.6,
        "adapter_uri": output,
        "result_uri": output + "result.json",
        "error": None,
    }


def _write(uri: str, text: str) -> None:
    path = Path(urlparse(uri).path if uri.startswith("file://") else uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # whole or not at all, like the real worker's record


def _batch(plan_path: str) -> tuple[int, dict[str, Any]]:
    data = Path(plan_path).read_bytes()
    plan = json.loads(data)
    keys = [a["key"] for a in plan["adapters"]]
    record: dict[str, Any] = {
        "format": "relora-batch-result/v1",
        "plan_sha256": hashlib.sha256(data).hexdigest(),
        "base_model": plan["base_model"],
        "adapters": [],
        "pending": list(keys),
        "done": False,
        "exit_code": None,
    }
    _write(plan["result"], json.dumps(record))
    for item in plan["adapters"]:
        if "killbatch" in item["train_data"]:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(int(item["options"].get("max_steps") or 0) / 1000)
        if "missing" in item["train_data"]:
            outcome = {"exit_code": 2, "status": "error", "error": f"cannot read {item['train_data']}: NoSuchKey"}
        else:
            code, summary = _readapt(item.get("threshold") or 0.8, item["options"].get("strategy", ""), item["output"])
            outcome = {k: summary[k] for k in ("status", "quality", "threshold", "adapter_uri", "error")}
            outcome["exit_code"] = code
            _write(item["output"] + "adapter.txt", item["key"])
        record["adapters"].append({"key": item["key"], "output": item["output"], "seconds": 0.01, **outcome})
        record["pending"].remove(item["key"])
        codes = [a["exit_code"] for a in record["adapters"]]
        if not record["pending"]:
            record["done"] = True
            record["exit_code"] = 0 if not any(codes) else 2 if all(c == 2 for c in codes) else 3
        _write(plan["result"], json.dumps(record))
    status = {0: "ready", 3: "below-threshold"}.get(record["exit_code"], "error")
    summary = {"command": "readapt-batch", "status": status, "exit_code": record["exit_code"], "error": None}
    return record["exit_code"], {**summary, "batch_uri": plan["result"], "adapter_codes": codes}


if __name__ == "__main__":
    sys.exit(main())
