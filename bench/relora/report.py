"""Tables, plots and goal checks from the benchmark's run records (post-processing only; no training).

    PYTHONPATH=. python -m bench.relora.report --runs bench/results/relora/runs --out bench/results/relora

Thresholds are applied to the recorded trajectories (quality on D_eval every k steps, readiness clock = search
+ training seconds, evaluation excluded):

* (a) the paper's: a level every training strategy reaches — the lowest best-quality over every training
  strategy and seed of the task;
* (b) no regression: the old adapter's quality on the old base v1 (same D_eval).

Time-to-readiness is the clock at which the worker's readiness rule (relora_worker/readiness.py; by default
the one-sided 80 % Wilson lower bound at 2 consecutive evaluations, ``--readiness point
--readiness-consecutive 1`` gives the first evaluation at or above the threshold, the rule of runs 1–3)
decides readiness on the trajectory: the same rule the worker and the operator apply, so a time here is one a
user would see.

Censoring (issue 17): a seed that never reaches a threshold is not dropped. Every time is reported with
"reached k/n"; comparisons use the **median over seeds with "never" counted as +∞** (so an arm that reached
it in 1 of 3 seeds has a median of "never" and cannot be chosen as the best baseline by that one seed), and a
ratio against an arm whose median is "never" is reported as such, not computed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from bench.relora.common import ARMS, TRAINED
from relora_worker.config import ReadinessConfig
from relora_worker.readiness import describe, first_ready

RULE = ReadinessConfig()  # set by main() from --readiness*; the worker's default rule

COLORS = {"auto": "black", "relora": "tab:red", "relora-noreg": "tab:orange", "transfer": "tab:gray",
          "transfer-ft": "tab:blue", "scratch": "tab:green", "random-init": "tab:purple", "relora-lr1e-4": "darkred",
          "transfer-ft-lr1e-4": "navy"}
ARM_ORDER = [arm.label for arm in ARMS]


def crossing(record: dict, threshold: float) -> tuple[float | None, int | None]:
    """(seconds, step) at which the readiness rule decides ``threshold`` is reached on the record's trajectory."""
    points = [(p["seconds"], p["step"], p["quality"]) for p in record["finetune"]["trajectory"]]
    return first_ready(points, threshold, record["sizes"]["eval"], RULE)


def median_inf(values: list[float | None]) -> float:
    """The median over seeds with "never" (None) as +∞: the censoring-aware comparison statistic."""
    if not values:
        return math.inf
    return statistics.median([math.inf if v is None else v for v in values])


def _reached(values: list[float | None]) -> str:
    return f"{sum(v is not None for v in values)}/{len(values)}"


def _censored_ratio(baseline: list[float | None], arm: list[float | None]) -> float | None:
    """median(baseline) / median(arm), both with never = +∞; None when both are never (no comparison)."""
    b, a = median_inf(baseline), median_inf(arm)
    if math.isinf(a) and math.isinf(b):
        return None
    if math.isinf(a):
        return 0.0
    if math.isinf(b):
        return math.inf
    return b / a if a > 0 else math.inf


def _stats(values: list[float | None]) -> tuple[float | None, float | None, int]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None, 0
    mean = statistics.fmean(present)
    spread = statistics.stdev(present) if len(present) > 1 else 0.0
    return mean, spread, len(present)


def _fmt(values: list[float | None], scale: float = 1.0, digits: int = 2) -> str:
    mean, spread, n = _stats([None if v is None else v * scale for v in values])
    if mean is None:
        return "never"
    text = f"{mean:.{digits}f} ± {spread:.{digits}f}"
    return text if n == len(values) else f"{text} ({n}/{len(values)})"


def load(runs: Path) -> dict[tuple[str, str], dict]:
    groups: dict[tuple[str, str], dict] = defaultdict(lambda: {"setup": None, "main": defaultdict(list),
                                                               "extra": {}})
    for path in sorted(runs.glob("*.json")):
        record = json.loads(path.read_text())
        key = (record["scenario"], record["task_name"])
        if path.stem.endswith("__setup"):
            groups[key]["setup"] = record
        elif record.get("arm"):
            groups[key]["main"][record["arm"]].append(record)
        elif record.get("overrides"):
            groups[key]["extra"][record["tag"]] = record
        else:  # records of runs before arms existed: one arm per strategy, no overrides
            groups[key]["main"][record["strategy"]].append(record)
    for group in groups.values():
        for records in group["main"].values():
            records.sort(key=lambda r: r["seed"])
    return dict(groups)


def analyse(group: dict) -> dict:
    setup, main = group["setup"], group["main"]
    bests = [max(p["quality"] for p in r["finetune"]["trajectory"]) for records in main.values() for r in records
             if r["strategy"] in TRAINED]
    threshold_a = min(bests) if bests else None
    threshold_b = setup["threshold_b"]
    rows = {}
    for arm in arm_order(main):
        records = main[arm]
        t_a = [crossing(r, threshold_a)[0] for r in records]
        t_b = [crossing(r, threshold_b)[0] for r in records]
        search = [r["seconds"]["search"] for r in records]
        rows[arm] = {
            "strategy": records[0]["strategy"],
            "lr": records[0]["config"]["finetune"]["lr"],
            "seeds": [r["seed"] for r in records],
            "initial": [r["initial_quality"] for r in records],
            "final": [r["quality"] for r in records],
            "best": [r["best_quality"] for r in records],
            "t_a": t_a, "t_b": t_b,
            "step_a": [crossing(r, threshold_a)[1] for r in records],
            "step_b": [crossing(r, threshold_b)[1] for r in records],
            "ms_per_step": [1000 * r["finetune"]["train_seconds"] / r["finetune"]["steps"] if r["finetune"]["steps"]
                            else None for r in records],
            "t_b_after_search": [None if t is None else t - s for t, s in zip(t_b, search, strict=True)],
            "search": search,
            "probes": [r["search"]["probe_seconds"] if r["search"] else None for r in records],
            "fit": [r["search"]["fit_seconds"] if r["search"] else None for r in records],
            "acquisition": [r["search"]["acquisition_seconds"] if r["search"] else None for r in records],
            "n_probes": [len(r["search"]["probes"]) if r["search"] else None for r in records],
            "train": [r["finetune"]["train_seconds"] for r in records],
            "budget_clock": [r["finetune"]["trajectory"][-1]["seconds"] for r in records],
            "end_to_end": [r["seconds"]["end_to_end"] for r in records],
            "alpha": [r["alpha"] for r in records], "beta": [r["beta"] for r in records],
            # auto: the search seconds spent before Ready was at stake (the capped search), per seed
            "search_before_ready": [sum(ph["ended_s"] - ph["started_s"] for ph in (r.get("auto") or {}).get(
                "phases", []) if ph["phase"] == "search") if r.get("auto") else None for r in records],
        }
    return {"threshold_a": threshold_a, "threshold_b": threshold_b, "rows": rows}


def arm_order(main: dict) -> list[str]:
    """The arms present, in the benchmark's order (unknown labels last, sorted)."""
    return [a for a in ARM_ORDER if main.get(a)] + sorted(a for a in main if a not in ARM_ORDER and main[a])


def _ratio(numerator: list[float | None], denominator: list[float | None]) -> float | None:
    a = _stats(numerator)[0]
    b = _stats(denominator)[0]
    if a is None or b is None or b <= 0:
        return None
    return a / b


def goals(analysis: dict) -> list[tuple[str, str, bool | None]]:
    """Issue 6's four goals for every ``relora`` arm and issue 17's for ``auto``; each against the best
    ``transfer-ft`` arm (the one with the lowest censored median time to (b); the one ending highest for final
    quality)."""
    rows = analysis["rows"]
    out: list[tuple[str, str, bool | None]] = []
    baselines = {arm: row for arm, row in rows.items() if row["strategy"] == "transfer-ft"}
    soonest = min(baselines, key=lambda a: median_inf(baselines[a]["t_b"])) if baselines else None
    for arm, r in rows.items():
        if r["strategy"] not in ("relora", "auto"):
            continue
        if soonest is not None:
            ratio = _censored_ratio(baselines[soonest]["t_b"], r["t_b"])
            target = 1.5 if r["strategy"] == "relora" else 1.0
            text = ("n/a (neither reaches (b) in most seeds)" if ratio is None else f"{ratio:.2f}×") + \
                f" (median, never = ∞; reached {_reached(r['t_b'])} vs {_reached(baselines[soonest]['t_b'])})"
            out.append((f"{arm} reaches (b) ≥{target:g}× as soon as transfer-ft (best: {soonest})", text,
                        None if ratio is None else ratio >= target))
            highest = max(baselines, key=lambda a: statistics.fmean(baselines[a]["final"]))
            gap = (statistics.fmean(r["final"]) - statistics.fmean(baselines[highest]["final"])) * 100
            if r["strategy"] == "relora":
                out.append((f"{arm} final quality ≥ transfer-ft + 1 point (best: {highest})", f"{gap:+.2f} points",
                            gap >= 1.0))
        if r["strategy"] == "auto" and "relora" in rows:
            gap = (statistics.fmean(r["final"]) - statistics.fmean(rows["relora"]["final"])) * 100
            out.append((f"{arm} final quality ≥ relora − 0.2 points", f"{gap:+.2f} points", gap >= -0.2))
        if "scratch" in rows and r["strategy"] == "relora":
            ratio = _ratio(rows["scratch"]["t_a"], r["t_a"])
            out.append((f"{arm} reaches (a) ≥10× sooner than scratch", "n/a" if ratio is None else f"{ratio:.1f}×",
                        None if ratio is None else ratio >= 10))
        share = statistics.fmean(s / e for s, e in zip(r["search"], r["budget_clock"], strict=True)) * 100
        share_e2e = statistics.fmean(s / e for s, e in zip(r["search"], r["end_to_end"], strict=True)) * 100
        if r["strategy"] == "auto":
            before = statistics.fmean(s / e for s, e in zip(r["search_before_ready"], r["end_to_end"], strict=True))
            out.append((f"{arm} search ≤5 % of end-to-end",
                        f"{100 * before:.1f} % before Ready (the capped search); {share_e2e:.1f} % with the search "
                        "finished after Ready", 100 * before <= 5))
        else:
            out.append((f"{arm} search ≤10 % of end-to-end",
                        f"{share:.1f} % of search+training, {share_e2e:.1f} % of the worker's end-to-end (load, "
                        "eval, publish included)", share <= 10))
    return out


def auto_vs_relora(summary: dict) -> tuple[list[str], dict]:
    """Issue 17's table: per scenario, the best transfer-ft, relora and auto side by side (censored medians),
    and the cross-scenario goal (auto ≥ 1.5× faster than transfer-ft in the median scenario)."""
    lines = ["## auto and relora side by side (issue 17)", "",
             "Times are censored medians over seeds (never = ∞) with reached k/n; ratio = best transfer-ft's "
             "median t(b) / the arm's (≥ 1 is as soon or sooner). Final = mean final accuracy.", "",
             "| scenario | best transfer-ft t(b) s | relora t(b) s | auto t(b) s | relora ratio | auto ratio | "
             "relora final % | auto final % | auto search before Ready % of e2e | auto ready start |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ratios = {}

    def med(values: list[float | None]) -> str:
        m = median_inf(values)
        return ("never" if math.isinf(m) else f"{m:.2f}") + f" ({_reached(values)})"

    for key, entry in summary.items():
        rows = entry["rows"]
        if "auto" not in rows:
            continue
        baselines = {a: r for a, r in rows.items() if r["strategy"] == "transfer-ft"}
        if not baselines:
            continue
        best = min(baselines, key=lambda a: median_inf(baselines[a]["t_b"]))
        auto = rows["auto"]
        relora = rows.get("relora")
        auto_ratio = _censored_ratio(baselines[best]["t_b"], auto["t_b"])
        relora_ratio = _censored_ratio(baselines[best]["t_b"], relora["t_b"]) if relora else None
        ratios[key] = auto_ratio
        share = statistics.fmean(s / e for s, e in zip(auto["search_before_ready"], auto["end_to_end"], strict=True))

        def ratio_text(value: float | None) -> str:
            return "n/a" if value is None else ("∞" if math.isinf(value) else f"{value:.2f}×")

        lines.append(
            f"| {key} | {med(baselines[best]['t_b'])} ({best}) | {med(relora['t_b']) if relora else '—'} | "
            f"{med(auto['t_b'])} | {ratio_text(relora_ratio)} | {ratio_text(auto_ratio)} | "
            f"{_fmt(relora['final'], 100) if relora else '—'} | {_fmt(auto['final'], 100)} | {100 * share:.1f} | "
            f"{', '.join(entry.get('auto_starts', []))} |")
    known = [r for r in ratios.values() if r is not None]
    median_ratio = statistics.median(known) if known else None
    lines += ["", f"Median scenario: auto {('n/a' if median_ratio is None else f'{median_ratio:.2f}×')} as soon as the "
              "best transfer-ft (goal ≥ 1.5×); every scenario ≥ 1.0×: "
              f"{'yes' if known and min(known) >= 1.0 else 'no'} "
              f"({', '.join(f'{k}: ' + ('n/a' if v is None else f'{v:.2f}×') for k, v in ratios.items())}).", ""]
    return lines, {"ratios": ratios, "median_ratio": median_ratio}


def search_efficiency(group: dict) -> dict | None:
    grid = next((r for tag, r in group["extra"].items() if tag.startswith("relora-grid")), None)
    bo = next((r for r in group["main"].get("relora", []) if r["seed"] == (grid or {}).get("seed")), None)
    if grid is None or bo is None:
        return None

    def running_best(record: dict) -> list[float]:
        best, out = math.inf, []
        for probe in record["search"]["probes"]:
            loss = probe["loss"] if probe["loss"] is not None else math.inf
            best = min(best, loss)
            out.append(best)
        return out

    bo_curve, grid_curve = running_best(bo), running_best(grid)
    target = grid_curve[-1]
    reached = next((i + 1 for i, v in enumerate(bo_curve) if v <= target + 0.01 * abs(target)), None)
    return {"bo_probes": len(bo_curve), "grid_probes": len(grid_curve), "bo_best_loss": bo_curve[-1],
            "grid_best_loss": target, "bo_probes_to_within_1pct_of_grid": reached,
            "bo_search_seconds": bo["seconds"]["search"], "grid_search_seconds": grid["seconds"]["search"],
            "bo_alpha_beta": (bo["alpha"], bo["beta"]), "grid_alpha_beta": (grid["alpha"], grid["beta"]),
            "bo_start": bo["initial_quality"], "grid_start": grid["initial_quality"],
            "bo_final": bo["quality"], "grid_final": grid["quality"], "bo_curve": bo_curve, "grid_curve": grid_curve}


def lambda_table(group: dict, analysis: dict) -> list[dict]:
    default = next((r for r in group["main"].get("relora", []) if r["seed"] == 0), None)
    records = ([("1e-3", "1e-4", default)] if default else []) + [
        (f"{r['overrides']['lambda1']:g}", f"{r['overrides']['lambda2']:g}", r)
        for tag, r in sorted(group["extra"].items()) if "lambda1" in r.get("overrides", {})]
    out = []
    for l1, l2, r in records:
        t_a, step_a = crossing(r, analysis["threshold_a"])
        t_b, step_b = crossing(r, analysis["threshold_b"])
        out.append({"lambda1": l1, "lambda2": l2, "final": r["quality"], "t_a": t_a, "step_a": step_a, "t_b": t_b,
                    "step_b": step_b})
    return out


def plot(group: dict, analysis: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(13, 4.6), dpi=110)
    horizon = max(p["seconds"] for rs in group["main"].values() for r in rs for p in r["finetune"]["trajectory"])
    zoom = None
    for axis, limit in zip(axes, (None, "zoom"), strict=True):
        for arm in arm_order(group["main"]):
            for i, record in enumerate(group["main"][arm]):
                points = record["finetune"]["trajectory"]
                xs, ys = [p["seconds"] for p in points], [p["quality"] for p in points]
                style = "o" if len(points) == 1 else ("--" if record.get("overrides", {}).get("lr") else "-")
                axis.plot(xs, ys, style, color=COLORS.get(arm, "black"), alpha=0.9 if i == 0 else 0.45,
                          linewidth=1.5 if i == 0 else 0.9, markersize=4, label=arm if i == 0 else None)
        axis.axhline(analysis["threshold_a"], color="black", linestyle=":", linewidth=1,
                     label=f"(a) all reach {analysis['threshold_a']:.3f}")
        axis.axhline(analysis["threshold_b"], color="black", linestyle="--", linewidth=1,
                     label=f"(b) old adapter on v1 {analysis['threshold_b']:.3f}")
        axis.set_xlabel("seconds since re-adaptation started (search included, evaluation excluded)")
        axis.set_ylabel("accuracy on D_eval (base v2)")
        axis.grid(alpha=0.3)
        if limit == "zoom":
            reached = [t for row in analysis["rows"].values() for t in row["t_b"] if t is not None]
            zoom = max(min(horizon, 2.5 * max(reached)) if reached else horizon * 0.3, 1e-3)
            axis.set_xlim(-0.02 * zoom, zoom)
            low = min(analysis["threshold_a"], analysis["threshold_b"]) - 0.15
            axis.set_ylim(max(0.0, low), None)
            axis.set_title("zoom: the first seconds")
        else:
            axis.set_title(title)
            axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def markdown(key: tuple[str, str], group: dict, analysis: dict, plot_name: str) -> str:
    setup = group["setup"]
    rows = analysis["rows"]
    old = setup["old_adapter"]
    bases = setup["bases"]
    lines = [f"## {key[0]} / {key[1]}", ""]
    lines.append(f"Command: `{setup['command']}` (profile `{setup['profile']}`); device **{setup['device']}**; "
                 f"versions {json.dumps(setup['versions'])}.")
    lines.append("")
    lines.append(f"Task: {setup['task']} over {len(setup['labels'])} Debian sections; splits {setup['sizes']}. "
                 f"Old adapter: LoRA r=16 (α=32) on {old['lora']['target_modules']} + head, "
                 f"{old['steps']} steps on v1: **{old['quality_on_v1']:.4f}** on v1, **{old['quality_on_v2']:.4f}** "
                 f"on v2 as is. Release: {json.dumps(bases.get('release', {}).get('method'))} on "
                 f"{bases.get('release', {}).get('update_source')}, {bases.get('release', {}).get('steps')} steps"
                 + (f", v1→v2 embedding cosine {bases['v1_v2_cosine']:.3f}" if "v1_v2_cosine" in bases else "") + ".")
    lines.append("")
    lines.append(f"Thresholds: (a) = {analysis['threshold_a']:.4f} (lowest best-quality of any training run), "
                 f"(b) = {analysis['threshold_b']:.4f} (old adapter on v1). Mean ± s.d. over seeds "
                 f"{rows[next(iter(rows))]['seeds']}; times are readiness-clock seconds (search + training).")
    lines.append("")
    lines.append("| arm | η1 | start acc % | final acc % | best acc % | t(a) s | t(b) s | t(b) − search s | "
                 "step (a) | step (b) | search s | probes / fit / acq s (probes) | train s | ms/step | end-to-end s | "
                 "α*, β* |")
    lines.append("|" + "---|" * 16)
    for arm, row in rows.items():
        split = "—" if row["probes"][0] is None else (
            f"{_fmt(row['probes'])} / {_fmt(row['fit'])} / {_fmt(row['acquisition'])} ({row['n_probes']})")
        coeffs = "—" if row["alpha"][0] is None else ", ".join(
            f"({a:.2f}, {b:.2f})" for a, b in zip(row["alpha"], row["beta"], strict=True))
        lines.append(
            f"| {arm} | {row['lr']:g} | {_fmt(row['initial'], 100)} | {_fmt(row['final'], 100)} | "
            f"{_fmt(row['best'], 100)} | "
            f"{_fmt(row['t_a'])} | {_fmt(row['t_b'])} | {_fmt(row['t_b_after_search'])} | "
            f"{_fmt(row['step_a'], digits=0)} | {_fmt(row['step_b'], digits=0)} | {_fmt(row['search'])} | "
            f"{split} | {_fmt(row['train'])} | {_fmt(row['ms_per_step'], digits=1)} | {_fmt(row['end_to_end'])} | "
            f"{coeffs} |")
    lines.append("")
    lines.append("t(b) − search: the same crossing with the search's seconds taken out (what the start alone buys). "
                 "Step (a)/(b): the training step of the crossing (evaluation every "
                 f"{setup['spec']['eval_every']} steps). End-to-end = the worker's whole `run_readapt` (load, "
                 "search, training, periodic evaluation, publish). A value with (k/n) was reached by k of n seeds.")
    lines.append("")
    goal_rows = goals(analysis)
    if goal_rows:
        lines.append("| goal (issue 6) | measured | met |")
        lines.append("|---|---|---|")
        for name, value, met in goal_rows:
            lines.append(f"| {name} | {value} | {'—' if met is None else ('yes' if met else 'no')} |")
        lines.append("")
    if "relora" in rows and "transfer" in rows:
        transfer_by_seed = dict(zip(rows["transfer"]["seeds"], rows["transfer"]["final"], strict=True))
        gaps = [(a - transfer_by_seed[seed]) * 100 for seed, a in zip(rows["relora"]["seeds"],
                                                                        rows["relora"]["initial"], strict=True)
                if seed in transfer_by_seed]
        lines.append(f"Fused start at step 0 vs `transfer`: {_fmt(rows['relora']['initial'], 100)} % vs "
                     f"{_fmt(rows['transfer']['final'], 100)} % (difference {_fmt(gaps)} points).")
        lines.append("")
    efficiency = search_efficiency(group)
    if efficiency:
        lines.append(f"Search vs grid (seed {group['extra'][next(t for t in group['extra'] if 'grid' in t)]['seed']}):"
                     f" BO {efficiency['bo_probes']} probes in {efficiency['bo_search_seconds']:.2f} s, best val loss "
                     f"{efficiency['bo_best_loss']:.4f} at (α, β) = ({efficiency['bo_alpha_beta'][0]:.2f}, "
                     f"{efficiency['bo_alpha_beta'][1]:.2f}); grid {efficiency['grid_probes']} probes in "
                     f"{efficiency['grid_search_seconds']:.2f} s, best {efficiency['grid_best_loss']:.4f} at "
                     f"({efficiency['grid_alpha_beta'][0]:.2f}, {efficiency['grid_alpha_beta'][1]:.2f}); "
                     f"BO came within 1 % of the grid's best after "
                     f"{efficiency['bo_probes_to_within_1pct_of_grid']} probes. Start "
                     f"accuracy BO {efficiency['bo_start']:.4f} vs grid {efficiency['grid_start']:.4f}; final "
                     f"{efficiency['bo_final']:.4f} vs {efficiency['grid_final']:.4f}.")
        lines.append("")
    lambdas = lambda_table(group, analysis)
    if len(lambdas) > 1:
        lines.append("λ sensitivity (relora, seed 0; paper Table IX):")
        lines.append("")
        lines.append("| λ1 | λ2 | final acc % | t(a) s (step) | t(b) s (step) |")
        lines.append("|---|---|---|---|---|")
        for row in lambdas:
            t_a = "never" if row["t_a"] is None else f"{row['t_a']:.2f} ({row['step_a']})"
            t_b = "never" if row["t_b"] is None else f"{row['t_b']:.2f} ({row['step_b']})"
            lines.append(f"| {row['lambda1']} | {row['lambda2']} | {row['final'] * 100:.2f} | {t_a} | {t_b} |")
        lines.append("")
    lines.append(f"![quality vs time]({plot_name})")
    lines.append("")
    return "\n".join(lines)


def compact(key: tuple[str, str], analysis: dict) -> str:
    out = [f"{key[0]}/{key[1]}: (a)={analysis['threshold_a']:.4f} (b)={analysis['threshold_b']:.4f}",
           f"  {'arm':<19}{'start':>7}{'final':>7}{'t(a)':>8}{'t(b)':>8}{'tb-srch':>8}{'search':>7}{'train':>7}"]
    for arm, row in analysis["rows"].items():
        def m(values: list, scale: float = 1.0) -> str:
            mean, _, n = _stats([None if v is None else v * scale for v in values])
            return "never" if mean is None else (f"{mean:.2f}" + ("*" if n < len(values) else ""))
        out.append(f"  {arm:<19}{m(row['initial'], 100):>7}{m(row['final'], 100):>7}{m(row['t_a']):>8}"
                   f"{m(row['t_b']):>8}{m(row['t_b_after_search']):>8}{m(row['search']):>7}{m(row['train']):>7}")
    for name, value, met in goals(analysis):
        out.append(f"  goal: {name}: {value} -> {'—' if met is None else ('met' if met else 'MISSED')}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tables and plots from the ReLoRA benchmark's run records.")
    parser.add_argument("--runs", required=True)
    parser.add_argument("--out", required=True)
    default = ReadinessConfig()
    parser.add_argument("--readiness", choices=("wilson", "point"), default=default.method,
                        help="readiness test per evaluation (default: the worker's)")
    parser.add_argument("--readiness-confidence", type=float, default=default.confidence)
    parser.add_argument("--readiness-consecutive", type=int, default=default.consecutive)
    args = parser.parse_args(argv)
    global RULE  # one report per process; every helper reads the rule
    RULE = ReadinessConfig(method=args.readiness, confidence=args.readiness_confidence,
                           consecutive=args.readiness_consecutive)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    sections = []
    for key, group in sorted(load(Path(args.runs)).items()):
        if group["setup"] is None or not group["main"]:
            continue
        analysis = analyse(group)
        plot_name = f"quality_vs_time_{key[0]}_{key[1]}.png"
        plot(group, analysis, out / plot_name, f"{key[0]} / {key[1]}: accuracy on v2 vs wall-clock")
        sections.append(markdown(key, group, analysis, plot_name))
        summary[f"{key[0]}/{key[1]}"] = {**analysis, "goals": goals(analysis),
                                         "search_vs_grid": search_efficiency(group),
                                         "lambda": lambda_table(group, analysis),
                                         "auto_starts": [f"{r['auto']['ready_start']}→{r['auto']['final_start']}"
                                                         for r in group["main"].get("auto", []) if r.get("auto")]}
        print(compact(key, analysis))
    side, cross = auto_vs_relora(summary)
    summary["auto_vs_transfer_ft"] = {**cross, "readiness_rule": RULE.__dict__}
    header = (f"# ReLoRA benchmark results\n\nReadiness rule: {describe(RULE)} (relora_worker/readiness.py); "
              "times are censored (never = ∞ in medians, reached k/n shown).\n\n")
    (out / "results.md").write_text(header + "\n".join(side) + "\n" + "\n".join(sections))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
