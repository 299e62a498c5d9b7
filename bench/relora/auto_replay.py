"""What ``auto`` would have done on runs that predate it: a replay on recorded relora and transfer-ft runs.

    PYTHONPATH=. python -m bench.relora.auto_replay --runs DIR [DIR ...] --out bench/results/relora/auto-replay

An estimate, not a measurement (the GPU runs of the ``auto`` arm are that): for each seed it replays
relora_worker/auto.py's decisions with the worker's readiness rule on the recorded trajectories of the same
seed, timing the capped search by relora's recorded probes (each probe's seconds, the GP fit and acquisition
spread over the BO probes) and the step by transfer-ft's measured seconds per step. The one thing a replay
cannot know is the quality of a start the capped search stops at when it has not reached the full search's
best probe; it is therefore given as two bounds:

* **optimistic**: the capped search finds the full search's start (its recorded step-0 quality);
* **pessimistic**: it finds nothing better than the old adapter, so ``auto`` fine-tunes from the transfer
  start (transfer-ft's recorded crossing, after the capped search and the step timing).

Final quality: relora's (``auto``'s improvement phase is relora's run), or the ready phase's if higher.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from bench.relora.report import crossing, median_inf
from relora_worker.config import AutoConfig, ReadinessConfig
from relora_worker.readiness import Readiness


def capped_probes(record: dict, limit: float) -> int:
    """How many of relora's recorded probes a search capped at ``limit`` seconds would have run."""
    search = record["search"]
    probes = search["probes"]
    bo = [p for p in probes if p["source"] == "ei"]
    overhead = (search["fit_seconds"] + search["acquisition_seconds"]) / max(len(bo), 1)
    spent, count = 0.0, 0
    for index, probe in enumerate(probes):
        if index > 0 and spent >= limit:
            break
        spent += probe["seconds"] + (overhead if probe["source"] == "ei" else 0.0)
        count += 1
    return count


def replay(relora: dict, transfer_ft: dict, threshold: float, share: float) -> dict:
    n = relora["sizes"]["eval"]
    rule = ReadinessConfig()
    ft = transfer_ft["finetune"]
    step_s = ft["train_seconds"] / max(ft["steps"], 1)
    steps = relora["config"]["finetune"]["max_steps"]
    limit = share * step_s * steps
    probes = relora["search"]["probes"]
    count = capped_probes(relora, limit)
    losses = [p["loss"] if p["loss"] is not None else math.inf for p in probes]
    full_best = min(range(len(losses)), key=losses.__getitem__)
    search_s = sum(p["seconds"] for p in probes[:count]) + (relora["search"]["fit_seconds"] + relora["search"][
        "acquisition_seconds"]) * max(0, count - 4) / max(len(probes) - 4, 1)
    q_t, q_f = ft["trajectory"][0]["quality"], relora["initial_quality"]
    tf_ttr = crossing(transfer_ft, threshold)[0]
    relora_ttr = crossing(relora, threshold)[0]
    after_search = None if relora_ttr is None else relora_ttr - relora["seconds"]["search"]
    head = search_s + step_s
    passes = Readiness(rule, threshold, n).passes
    out: dict = {"seed": relora["seed"], "limit_s": limit, "probes": count, "of": len(probes),
                 "found_full_best": full_best < count, "transfer": q_t, "fused": q_f}
    if passes(q_t):
        out["optimistic"] = out["pessimistic"] = 0.0
        out["start"] = "transfer (ready at 0)"
        return out
    pessimistic = None if tf_ttr is None else head + tf_ttr
    if passes(q_f):
        optimistic, start = head, "fused (ready at the search's end)"
    elif q_f >= q_t:
        optimistic, start = (None if after_search is None else head + after_search), "fused"
    else:
        optimistic, start = pessimistic, "transfer"
    out.update(optimistic=optimistic, pessimistic=optimistic if full_best < count else pessimistic, start=start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    share = AutoConfig().search_share
    groups: dict[str, dict] = defaultdict(lambda: {"setup": None, "arms": defaultdict(dict)})
    for folder in args.runs:
        for path in sorted(Path(folder).glob("*.json")):
            record = json.loads(path.read_text())
            key = f"{record['scenario']}/{record['task_name']}"
            if path.stem.endswith("__setup"):
                groups[key]["setup"] = record
            elif record.get("arm") in ("relora", "transfer-ft", "transfer-ft-lr1e-4"):
                groups[key]["arms"][record["arm"]][record["seed"]] = record
    result, lines = {}, ["# auto replayed on recorded runs (an estimate; see bench/relora/auto_replay.py)", "",
                         "| scenario | seeds | best transfer-ft t(b) s | auto t(b) s optimistic | pessimistic | "
                         "ratio (optimistic / pessimistic) | capped search probes | ready start |",
                         "|---|---|---|---|---|---|---|---|"]
    for key, group in sorted(groups.items()):
        arms, setup = group["arms"], group["setup"]
        if setup is None or not arms.get("relora") or not arms.get("transfer-ft"):
            continue
        tau = setup["threshold_b"]
        best = min((a for a in arms if a.startswith("transfer-ft")),
                   key=lambda a: median_inf([crossing(r, tau)[0] for r in arms[a].values()]))
        baseline = [crossing(r, tau)[0] for r in arms[best].values()]
        seeds = sorted(set(arms["relora"]) & set(arms["transfer-ft"]))
        rows = [replay(arms["relora"][s], arms["transfer-ft"][s], tau, share) for s in seeds]
        opt, pes = median_inf([r["optimistic"] for r in rows]), median_inf([r["pessimistic"] for r in rows])
        base = median_inf(baseline)

        def ratio(value: float, base: float = base) -> str:
            if math.isinf(value) and math.isinf(base):
                return "n/a"
            return f"{base / value:.2f}×" if value else "∞"

        def sec(value: float) -> str:
            return "never" if math.isinf(value) else f"{value:.2f}"

        result[key] = {"best_transfer_ft": best, "baseline_t_b": baseline, "replays": rows,
                       "median_optimistic": opt, "median_pessimistic": pes, "median_baseline": base}
        lines.append(f"| {key} | {len(seeds)} | {sec(base)} ({best}, reached "
                     f"{sum(b is not None for b in baseline)}/{len(baseline)}) | {sec(opt)} | {sec(pes)} | "
                     f"{ratio(opt)} / {ratio(pes)} | "
                     f"{statistics.median(r['probes'] for r in rows):g} of {rows[0]['of']} | "
                     f"{', '.join(sorted({r['start'] for r in rows}))} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(result, indent=1, default=str))
    (out / "replay.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
