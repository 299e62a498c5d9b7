"""A follow-up experiment on CPU (no GPU time was left): does a warm start need a gentler first stage?

In the GPU runs every start built from the old adapter (relora, relora-noreg, transfer-ft) lost 1–3 points in
the first 10 steps at η1 = 5e-4 and then hovered below threshold (b) until the cosine decay began. This runs
the MiniLM / 4-section scenario at a much smaller scale (CPU: 40 release steps, 300-step old adapter, 400
evaluation rows) and compares η1 = 5e-4 (the paper's) with 1e-4 for ``relora`` and ``transfer-ft``, and
η1 = 5e-4 with a 20-step warm-up for ``relora`` (one seed), reporting steps to threshold (b), which do not
depend on the hardware.

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
    parser.add_argument("--steps", type=int, default=160)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = TaskSpec("debian4", SUBSET4, eval_rows=400, old_adapter_steps=300, readapt_steps=args.steps,
                    stage1_steps=args.steps // 3, eval_every=10)
    profile = replace(PROFILES["gpu"], name="cpu-warmstart", seeds=(0,), encoder_tasks=(spec,), release_steps=40,
                      release_batch=32, release_seconds=1e9, corpus_lines=4_000, search_budget=8, val_size=128)
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
    variants = [("relora", 5e-4, 0), ("transfer-ft", 5e-4, 0), ("relora", 1e-4, 0), ("transfer-ft", 1e-4, 0),
                ("relora", 5e-4, 20)]
    for strategy, lr, warmup in variants:
        extra = {"warmup_steps": warmup} if warmup else {}
        record = runner.readapt(strategy, 0, f"{strategy}-lr={lr:g}-warmup={warmup}__s0", lr=lr, **extra)
        quality = {p["step"]: p["quality"] for p in record["finetune"]["trajectory"]}
        rows.append({"strategy": strategy, "lr": lr, "warmup_steps": warmup, "start": record["initial_quality"],
                     "at_step": {s: quality.get(s) for s in (10, 20, 40, 80)}, "final": record["quality"],
                     "step_b": report.crossing(record, runner.old["quality_on_v1"])[1]})
        _log(json.dumps(rows[-1]))
    (out / "warmstart_lr.json").write_text(json.dumps({"threshold_b": runner.old["quality_on_v1"], "rows": rows,
                                                       "seconds": time.perf_counter() - started, **meta}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
