"""A follow-up experiment on CPU (no GPU time was left): does a warm start need a lower first-stage LR?

In the GPU runs every start built from the old adapter (relora, relora-noreg, transfer-ft) lost 1–3 points in
the first 10 steps at η1 = 5e-4 and then hovered below threshold (b) until the cosine decay began. This runs
the MiniLM / 4-section scenario at a smaller release (CPU) and compares η1 = 5e-4 (the paper's) with 1e-4 for
``relora`` and ``transfer-ft`` (one seed), reporting steps to threshold (b), which do not depend on the
hardware.

    PYTHONPATH=. python -m bench.relora.warmstart_lr --out bench/results/relora/cpu-warmstart-lr
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.relora import bases, report
from bench.relora.common import PROFILES, SUBSET4, RunArchive, TaskSpec
from bench.relora.run import TaskRunner, _log, find_minilm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=240)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = TaskSpec("debian4", SUBSET4, eval_rows=600, old_adapter_steps=400, readapt_steps=args.steps,
                    stage1_steps=args.steps // 3, eval_every=20)
    profile = replace(PROFILES["gpu"], name="cpu-warmstart", seeds=(0,), encoder_tasks=(spec,), release_steps=150,
                      release_batch=64, release_seconds=1e9, corpus_lines=20_000, search_budget=12, val_size=256)
    out = Path(args.out)
    archive = RunArchive(out / "runs", None)
    work = Path(tempfile.mkdtemp(prefix="relora-warm-"))
    built = bases.build_encoder_bases(profile, work / "encoder", find_minilm(None), device, _log)
    from relora_worker.readapt import library_versions

    meta = {"profile": profile.name, "command": "python -m bench.relora.warmstart_lr " + " ".join(argv or []),
            "device": str(device), "versions": library_versions(), "bases": {k: v for k, v in built.items()
                                                                             if k not in ("v1", "v2")}}
    runner = TaskRunner("encoder-cpu", "seq-cls", spec, profile, built, work, archive, device, meta)
    rows = []
    for strategy in ("relora", "transfer-ft"):
        for lr in (5e-4, 1e-4):
            record = runner.readapt(strategy, 0, f"{strategy}-lr={lr:g}__s0", lr=lr)
            step_b = report.crossing(record, runner.old["quality_on_v1"])[1]
            rows.append({"strategy": strategy, "lr": lr, "start": record["initial_quality"],
                         "after_10_or_20_steps": record["finetune"]["trajectory"][1]["quality"],
                         "final": record["quality"], "step_b": step_b})
            _log(json.dumps(rows[-1]))
    (out / "warmstart_lr.json").write_text(json.dumps({"threshold_b": runner.old["quality_on_v1"], "rows": rows,
                                                       "seconds": time.perf_counter() - started, **meta}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
