"""How often each readiness rule declares Ready too early, and how late it is otherwise, by resampling the
benchmark's own quality trajectories (issue 17). CPU only; minutes.

    PYTHONPATH=. python -m bench.relora.readiness_tradeoff --runs DIR [DIR ...] --out bench/results/relora/readiness

The model of a measured trajectory, per run record (every training arm of every committed scenario):

* the adapter's true quality at evaluation t is p_t, estimated by the centred moving average of the recorded
  trajectory over ``--window`` evaluations (3);
* one run of the resampling draws the evaluation set afresh: a shared offset δ ~ N(0, p(1−p)/n) (n the
  evaluation rows — the same rows are re-used at every evaluation, so their sampling error persists), and at
  every evaluation a fluctuation ε_t ~ N(0, s²), s the record's residual standard deviation around its moving
  average (what the optimiser's noise adds from one evaluation to the next);
* the measured quality is q_t = p_t + δ + ε_t; each rule decides on q_1, q_2, …

A decision is a **false Ready** when p_t < τ at the evaluation that decided (the adapter is not, in truth,
at the threshold); the table also counts those more than half a point below. Its **delay** is the decision's
clock minus the first clock with p_t ≥ τ (the oracle's time-to-readiness). **Missed** counts runs whose p
reaches τ but the rule never decides. τ is each task's threshold (b), the old adapter's quality on v1.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from pathlib import Path

from relora_contract import strategies
from relora_worker.config import ReadinessConfig
from relora_worker.readiness import Readiness

RULES = {
    f"{'point' if c is None else f'wilson {c:.0%}'}, k={k}": ReadinessConfig(
        method="point" if c is None else "wilson", confidence=c or 0.8, consecutive=k)
    for c in (None, 0.7, 0.8, 0.9) for k in (1, 2, 3)
}
TOLERANCE = 0.005  # "far" below: more than half a point under the threshold in truth
TRAINED = strategies.TRAINED  # the contract's (relora_contract)


def moving_average(values: list[float], window: int) -> list[float]:
    half = window // 2
    return [statistics.fmean(values[max(0, i - half) : i + half + 1]) for i in range(len(values))]


def load(folders: list[Path]) -> list[dict]:
    """Every training run with its trajectory, evaluation size and threshold (b)."""
    runs = []
    for folder in folders:
        setups = {}
        records = []
        for path in sorted(folder.glob("*.json")):
            record = json.loads(path.read_text())
            if path.stem.endswith("__setup"):
                setups[(record["scenario"], record["task_name"])] = record
            elif record.get("strategy") in TRAINED and record.get("arm") is not None:
                records.append(record)
        for record in records:
            setup = setups.get((record["scenario"], record["task_name"]))
            if setup is None:
                continue
            points = record["finetune"]["trajectory"]
            runs.append({"group": f"{record['scenario']}/{record['task_name']}", "arm": record["arm"],
                         "seed": record["seed"], "n": record["sizes"]["eval"], "threshold": setup["threshold_b"],
                         "seconds": [p["seconds"] for p in points], "quality": [p["quality"] for p in points]})
    return runs


def simulate(runs: list[dict], resamples: int, window: int, seed: int) -> dict[str, dict]:
    rng = random.Random(seed)
    out: dict[str, dict] = {}
    for name, rule in RULES.items():
        decided = false_ready = far_below = missed = truly_ready = 0
        delays: list[float] = []
        per_group: dict[str, list[int]] = {}
        for run in runs:
            truth = moving_average(run["quality"], window)
            residual = [q - t for q, t in zip(run["quality"], truth, strict=True)]
            s = statistics.pstdev(residual) if len(residual) > 1 else 0.0
            tau, n = run["threshold"], run["n"]
            oracle = next((sec for sec, p in zip(run["seconds"], truth, strict=True) if p >= tau), None)
            p_bar = min(max(statistics.fmean(truth), 1e-3), 1 - 1e-3)
            for _ in range(resamples):
                offset = rng.gauss(0.0, math.sqrt(p_bar * (1 - p_bar) / n))
                tracker = Readiness(rule, tau, n)
                at = None
                for index, (sec, p) in enumerate(zip(run["seconds"], truth, strict=True)):
                    q = min(max(p + offset + rng.gauss(0.0, s), 0.0), 1.0)
                    if tracker.observe(q, sec, index):
                        at = (sec, p)
                        break
                truly_ready += oracle is not None
                if at is None:
                    missed += oracle is not None
                    continue
                decided += 1
                wrong = at[1] < tau
                false_ready += wrong
                far_below += at[1] < tau - TOLERANCE
                counts = per_group.setdefault(run["group"], [0, 0])
                counts[0] += 1
                counts[1] += wrong
                if oracle is not None and not wrong:
                    delays.append(at[0] - oracle)
        out[name] = {
            "rule": {"method": rule.method, "confidence": rule.confidence, "consecutive": rule.consecutive},
            "decisions": decided,
            "false_ready_rate": false_ready / decided if decided else None,
            "false_ready_by_more_than_tolerance_rate": far_below / decided if decided else None,
            "missed_rate": missed / truly_ready if truly_ready else None,
            "median_delay_s": statistics.median(delays) if delays else None,
            "mean_delay_s": statistics.fmean(delays) if delays else None,
            "false_ready_rate_by_task": {g: c[1] / c[0] for g, c in sorted(per_group.items()) if c[0]},
        }
    return out


def markdown(result: dict, command: str, runs: int, resamples: int) -> str:
    lines = ["# Readiness rules: false Ready against delay (resampled benchmark trajectories)", "",
             f"Command: `{command}`; {runs} recorded training runs × {resamples} resamples each; model and "
             "definitions in `bench/relora/readiness_tradeoff.py`.", "",
             "| rule | false Ready (of decisions) | … by > 0.5 point | missed (truly ready, never decided) | "
             "median delay s | mean delay s |", "|---|---|---|---|---|---|"]
    for name, r in result.items():
        def pct(v: float | None) -> str:
            return "—" if v is None else f"{100 * v:.1f} %"

        def sec(v: float | None) -> str:
            return "—" if v is None else f"{v:.2f}"

        lines.append(f"| {name} | {pct(r['false_ready_rate'])} | "
                     f"{pct(r['false_ready_by_more_than_tolerance_rate'])} | {pct(r['missed_rate'])} | "
                     f"{sec(r['median_delay_s'])} | {sec(r['mean_delay_s'])} |")
    lines += ["", "False Ready by task (share of decisions):", ""]
    groups = sorted({g for r in result.values() for g in r["false_ready_rate_by_task"]})
    lines.append("| rule | " + " | ".join(groups) + " |")
    lines.append("|---|" + "---|" * len(groups))
    for name, r in result.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{100 * r['false_ready_rate_by_task'].get(g, 0):.1f} %" for g in groups) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="folders of run records (*.json)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    runs = load([Path(x) for x in args.runs])
    result = simulate(runs, args.resamples, args.window, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.relora.readiness_tradeoff " + " ".join(argv if argv is not None else [])
    (out / "tradeoff.json").write_text(json.dumps({"command": command, "runs": len(runs),
                                                   "resamples": args.resamples, "window": args.window,
                                                   "rules": result}, indent=1))
    (out / "tradeoff.md").write_text(markdown(result, command, len(runs), args.resamples))
    print((out / "tradeoff.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
