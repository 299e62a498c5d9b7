"""A stand-in for the `relora` CLI that honours its contract (exit codes, termination summary) instantly.

For tests of the operator's control loop and for the benchmark, where the real worker's minutes of CPU would
only measure the worker. Behaviour is steered by the inputs: a data URI containing "missing" is bad input
(exit 2), a threshold above 0.95 ends below threshold (exit 3), a data URI containing "nosummary" succeeds
with a summary that lacks the numbers (the operator must read result.json), and a re-adaptation takes
--max-steps milliseconds (so a test can keep Jobs running while it kills the operator or deletes the Job).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--termination-message-path")
    parser.add_argument("--output", default="")
    parser.add_argument("--train-data", default="")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--strategy", default="relora")
    parser.add_argument("--max-steps", type=int, default=0)
    args, _ = parser.parse_known_args(argv)
    if args.command == "readapt":
        time.sleep(args.max_steps / 1000)
    if args.command == "project-delta":
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
        below = args.threshold > 0.95
        quality = 0.9 if below else round(min(1.0, args.threshold + 0.05), 4)
        code = 3 if below else 0
        summary = {
            "command": "readapt",
            "status": "below-threshold" if below else "ready",
            "exit_code": code,
            "strategy": args.strategy,
            "quality": quality,
            "threshold": args.threshold,
            "time_to_readiness_s": None if below else 1.5,
            "alpha": 0.4,
            "beta": 1.6,
            "adapter_uri": args.output,
            "result_uri": args.output + "result.json",
            "error": None,
        }
    if "nosummary" in args.train_data:
        summary = {k: summary[k] for k in ("command", "status", "exit_code")}
    if args.termination_message_path:
        with open(args.termination_message_path, "w") as fh:
            fh.write(json.dumps(summary))
    print(json.dumps(summary))
    return code


if __name__ == "__main__":
    sys.exit(main())
