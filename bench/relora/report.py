"""Tables, plots and goal checks from the benchmark's run records (post-processing only; no training).

    PYTHONPATH=. python -m bench.relora.report --runs bench/results/relora/runs --out bench/results/relora

Thresholds are applied to the recorded trajectories (quality on D_eval every k steps, readiness clock = search
+ training seconds, evaluation excluded):

* (a) the paper's: a level every training strategy reaches — the lowest best-quality over every training
  strategy and seed of the task;
* (b) no regression: the old adapter's quality on the old base v1 (same D_eval).

Time-to-readiness is the clock at the first evaluation at or above the threshold (None if never).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from bench.relora.common import ARMS, TRAINED

COLORS = {"relora": "tab:red", "relora-noreg": "tab:orange", "transfer": "tab:gray", "transfer-ft": "tab:blue",
          "scratch": "tab:green", "random-init": "tab:purple", "relora-lr1e-4": "darkred",
          "transfer-ft-lr1e-4": "navy"}
ARM_ORDER = [arm.label for arm in ARMS]


def crossing(record: dict, threshold: float) -> tuple[float | None, int | None]:
    for point in record["finetune"]["trajectory"]:
        if point["quality"] >= threshold - 1e-12:
            return point["seconds"], point["step"]
    return None, None


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
    """The issue's four goals for every ``relora`` arm; each is compared with the best ``transfer-ft`` arm (the
    one reaching (b) soonest on average, and separately the one ending highest)."""
    rows = analysis["rows"]
    out: list[tuple[str, str, bool | None]] = []
    baselines = {arm: row for arm, row in rows.items() if row["strategy"] == "transfer-ft"}
    for arm, r in rows.items():
        if r["strategy"] != "relora":
            continue
        if baselines:
            soonest = min(baselines, key=lambda a: _stats(baselines[a]["t_b"])[0] or math.inf)
            ratio = _ratio(baselines[soonest]["t_b"], r["t_b"])
            out.append((f"{arm} reaches (b) ≥1.5× sooner than transfer-ft (best: {soonest})",
                        "n/a (one never reaches (b))" if ratio is None else f"{ratio:.2f}×",
                        None if ratio is None else ratio >= 1.5))
            highest = max(baselines, key=lambda a: statistics.fmean(baselines[a]["final"]))
            gap = (statistics.fmean(r["final"]) - statistics.fmean(baselines[highest]["final"])) * 100
            out.append((f"{arm} final quality ≥ transfer-ft + 1 point (best: {highest})", f"{gap:+.2f} points",
                        gap >= 1.0))
        if "scratch" in rows:
            ratio = _ratio(rows["scratch"]["t_a"], r["t_a"])
            out.append((f"{arm} reaches (a) ≥10× sooner than scratch", "n/a" if ratio is None else f"{ratio:.1f}×",
                        None if ratio is None else ratio >= 10))
        share = statistics.fmean(s / e for s, e in zip(r["search"], r["budget_clock"], strict=True)) * 100
        share_e2e = statistics.fmean(s / e for s, e in zip(r["search"], r["end_to_end"], strict=True)) * 100
        out.append((f"{arm} search ≤10 % of end-to-end",
                    f"{share:.1f} % of search+training, {share_e2e:.1f} % of the worker's end-to-end (load, eval, "
                    "publish included)", share <= 10))
    return out


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
    args = parser.parse_args(argv)
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
                                         "lambda": lambda_table(group, analysis)}
        print(compact(key, analysis))
    (out / "results.md").write_text("# ReLoRA benchmark results\n\n" + "\n".join(sections))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
