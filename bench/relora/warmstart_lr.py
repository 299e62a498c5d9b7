"""Follow-up: does a warm start need a gentler first stage than the paper's constant η1 = 5e-4?

In the GPU runs every start built from the old adapter (relora, relora-noreg, transfer-ft) lost 1–3 points in
the first 10 steps at η1 = 5e-4 and then hovered below threshold (b) until the cosine decay began. This runs
the MiniLM / 4-section scenario (as ``--profile gpu2``) and compares, on the same v2, old adapter and seeds:
relora and transfer-ft at η1 = 5e-4 (the paper's) and 1e-4, and relora at η1 = 5e-4 with a 20-step linear
warm-up (``FinetuneConfig.warmup_steps``). Reported: quality at steps 0/10/20/40/80, steps and seconds to
threshold (b), final quality.

    PYTHONPATH=. python3 -m bench.relora.warmstart_lr --scale gpu --out /tmp/res --archive $OUT/warm.tar.gz
    PYTHONPATH=. python -m bench.relora.warmstart_lr --scale tiny --out /tmp/warm-smoke   # code path, CPU
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
from bench.relora.common import PROFILES, RunArchive
from bench.relora.run import TaskRunner, _log, find_minilm

VARIANTS = (("relora", 5e-4, 0), ("transfer-ft", 5e-4, 0), ("relora", 5e-4, 20), ("relora", 1e-4, 0),
            ("transfer-ft", 1e-4, 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=("gpu", "tiny"), default="gpu")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--archive")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = PROFILES["gpu2"] if args.scale == "gpu" else PROFILES["cpu"]
    profile = replace(base, seeds=tuple(range(args.seeds)))
    spec = profile.encoder_tasks[0]
    out = Path(args.out)
    archive = RunArchive(out / "runs", Path(args.archive) if args.archive else None)
    work = Path(tempfile.mkdtemp(prefix="relora-warm-"))
    model_dir = None if profile.tiny_models else find_minilm(None)
    built = bases.build_encoder_bases(profile, work / "encoder", model_dir, device, _log)
    from relora_worker.readapt import library_versions

    meta = {"profile": profile.name, "command": "python -m bench.relora.warmstart_lr " + " ".join(argv or []),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "versions": library_versions(), "bases": {k: v for k, v in built.items() if k not in ("v1", "v2")}}
    runner = TaskRunner("encoder-warmstart", "seq-cls", spec, profile, built, work, archive, device, meta)
    threshold = runner.old["quality_on_v1"]
    rows = []
    for seed in profile.seeds:
        for strategy, lr, warmup in VARIANTS:
            extra = {"warmup_steps": warmup} if warmup else {}
            record = runner.readapt(strategy, seed, f"{strategy}-lr={lr:g}-warmup={warmup}__s{seed}", lr=lr, **extra)
            quality = {p["step"]: p["quality"] for p in record["finetune"]["trajectory"]}
            t_b, step_b = report.crossing(record, threshold)
            rows.append({"strategy": strategy, "lr": lr, "warmup_steps": warmup, "seed": seed,
                         "at_step": {s: quality.get(s) for s in (0, 10, 20, 40, 80)}, "final": record["quality"],
                         "t_b": t_b, "step_b": step_b, "search_s": record["seconds"]["search"],
                         "ms_per_step": 1000 * record["finetune"]["train_seconds"]
                         / max(record["finetune"]["steps"], 1)})
    (out / "warmstart_lr.json").write_text(json.dumps({"threshold_b": threshold, "rows": rows,
                                                       "seconds": time.perf_counter() - started, **meta}, indent=1))
    lines = [f"threshold (b) = {threshold:.4f}; device {meta['device']}",
             "| strategy | η1 | warm-up | seed | q@0 | q@10 | q@20 | q@40 | q@80 | final | step (b) | t(b) s | "
             "ms/step |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        q = " | ".join("—" if v is None else f"{100 * v:.1f}" for v in r["at_step"].values())
        lines.append(f"| {r['strategy']} | {r['lr']:g} | {r['warmup_steps']} | {r['seed']} | {q} | "
                     f"{100 * r['final']:.1f} | {r['step_b'] if r['step_b'] is not None else 'never'} | "
                     f"{'never' if r['t_b'] is None else round(r['t_b'], 2)} | {r['ms_per_step']:.1f} |")
    (out / "warmstart_lr.md").write_text("\n".join(lines) + "\n")
    archive.flush()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
