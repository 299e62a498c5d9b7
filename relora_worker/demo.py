"""``relora demo``: the whole story on one machine, CPU is enough.

1. Build a tiny base model v1, a release v2 (continued training), an old adapter trained on v1, and data.
2. Measure the old adapter on v1: the threshold is that quality less a tolerance (default 0.05: a team accepts
   a small regression, not a large one).
3. Compute Π_r(ΔΘ) once (shared by every strategy, as the operator shares it per release).
4. Run every strategy from the same inputs and seeds; print a table; write a PNG of quality vs time.

Nothing is tuned to flatter ReLoRA: the numbers are whatever ran.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from relora_contract.result import ResultRecord
from relora_worker.config import (
    AutoConfig,
    FinetuneConfig,
    ProjectionConfig,
    ReadaptConfig,
    SearchConfig,
    TaskConfig,
)
from relora_worker.evaluate import run_evaluate
from relora_worker.plotting import plot_trajectories
from relora_worker.project import compute_projection
from relora_worker.readapt import ReadaptInputs, run_readapt
from relora_worker.storage import publish_folder
from relora_worker.synthetic import build_scenario

DEFAULT_TOLERANCE = 0.05  # the regression a team accepts; the threshold is the old quality on v1 less this


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "—" if value is None else pattern.format(value)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_verdict(results: dict[str, dict]) -> str:
    """What the run decided: the same on every machine (``relora_worker.determinism``), no clock in it."""
    header = ("strategy", "ready", "at step", "start quality", "final quality", "α*, β*")
    rows = []
    for strategy, r in results.items():
        ready = ResultRecord.view(r).time_to_readiness_s is not None
        coefficients = f"{r['alpha']:.2f}, {r['beta']:.2f}" if r["alpha"] is not None else "—"
        step = str(r.get("ready_step")) if ready and r.get("ready_step") is not None else "—"
        start, final = f"{r['initial_quality']:.3f}", f"{r['quality']:.3f}"
        rows.append((strategy, "yes" if ready else "no", step, start, final, coefficients))
    return _table(header, rows)


def format_timings(results: dict[str, dict]) -> str:
    """Where the seconds went on this machine (differs between machines; the verdict does not)."""
    header = ("strategy", "ready after s", "search s (probes/fit/acq)", "fine-tune s", "evaluation s")
    rows = []
    for strategy, r in results.items():
        search, seconds = r["search"], r["seconds"]
        split = (
            f"{seconds['search']:.2f} ({search['probe_seconds']:.2f}/{search['fit_seconds']:.2f}/"
            f"{search['acquisition_seconds']:.2f})"
            if search
            else "—"
        )
        rows.append(
            (
                strategy,
                _fmt(ResultRecord.view(r).time_to_readiness_s),
                split,
                _fmt(seconds["finetune"]),
                _fmt(seconds["evaluation"]),
            )
        )
    return _table(header, rows)


def threshold_line(old_quality: float, tolerance: float, threshold: float) -> str:
    """The line under the tables that says where the threshold came from (part of the README's block)."""
    return f"threshold = old adapter's quality on v1 ({old_quality:.4f}) - {tolerance} = {threshold}"


def format_table(results: dict[str, dict]) -> str:
    """Both tables, as ``relora demo`` prints them."""
    return format_verdict(results) + "\n\n" + format_timings(results)


def run_demo(
    out: Path,
    task: str,
    strategies: list[str],
    max_steps: int,
    seed: int,
    device: str,
    quiet: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
) -> dict:
    """Runs the demo into ``out``; returns paths and a per-strategy summary."""
    say = (lambda *_: None) if quiet else print
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    say(f"[1/4] building a tiny {task} scenario in {out}/scenario (base v1, release v2, old adapter, data)")
    scenario = build_scenario(out / "scenario", task=task, seed=seed)

    task_config = TaskConfig(task=task, threshold=1.0, val_size=256, eval_size=400, split_seed=seed)
    old = run_evaluate(scenario.base_v1, scenario.adapter_v1, scenario.eval, task_config, device)
    on_v2 = run_evaluate(scenario.base_v2, scenario.adapter_v1, scenario.eval, task_config, device)
    threshold = round(old["quality"] - tolerance, 4)
    say(
        f"[2/4] old adapter: {old['quality']:.3f} on v1, {on_v2['quality']:.3f} on v2 -> threshold {threshold} "
        f"(v1 quality - {tolerance})"
    )

    say("[3/4] computing the shared projection Π_r(ΔΘ)")
    projection = compute_projection(
        Path(scenario.base_v1),
        Path(scenario.base_v2),
        scenario.target_modules,
        ProjectionConfig(rank=8, device=device),
        ("v1", "v2"),
    )
    projection_dir = out / "projection"
    with tempfile.TemporaryDirectory() as tmp:
        projection.save(Path(tmp))
        publish_folder(Path(tmp), str(projection_dir), {"kind": "projection"})

    config = ReadaptConfig(
        task=replace(task_config, threshold=threshold),
        device=device,
        search=SearchConfig(budget=20, seed=seed),
        # auto's search cap in tokens, not seconds: the same probes, hence the same table, on every machine
        auto=AutoConfig(search_cap="work"),
        finetune=FinetuneConfig(
            max_steps=max_steps,
            stage1_steps=max_steps // 3,
            lr=2e-3,
            lr_min=1e-5,
            eval_every=10,
            batch_size=32,
            seed=seed,
        ),
    )
    results: dict[str, dict] = {}
    say(f"[4/4] re-adapting with {len(strategies)} strategies, {max_steps} steps each")
    for strategy in strategies:
        inputs = ReadaptInputs(
            base_model=scenario.base_v2,
            adapter=scenario.adapter_v1,
            output=str(out / "adapters" / strategy),
            train_data=scenario.train,
            eval_data=scenario.eval,
            projection=str(projection_dir),
            old_release="v1",
            new_release="v2",
        )
        results[strategy] = run_readapt(inputs, replace(config, strategy=strategy))
        say(
            f"      {strategy}: quality {results[strategy]['quality']:.3f}, "
            f"ready after {_fmt(ResultRecord.view(results[strategy]).time_to_readiness_s)} s"
        )
    plot = out / "quality_vs_time.png"
    plot_trajectories(results, threshold, plot, f"relora demo ({task}): quality on v2 vs wall-clock time")
    verdict, table = format_verdict(results), format_table(results)
    verdict_block = verdict + "\n" + threshold_line(old["quality"], tolerance, threshold)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    say("")
    say(verdict)
    say(threshold_line(old["quality"], tolerance, threshold))
    say("\nseconds on this machine (they differ between machines; the table above does not):")
    say(format_timings(results))
    say(f"\nplot: {plot}; raw results: {out}/results.json")
    say(f"demo took {time.perf_counter() - started:.1f} s")
    return {
        "out": str(out),
        "plot": str(plot),
        "threshold": threshold,
        "table": table,
        "verdict": verdict_block,
        "rows": {
            s: ResultRecord.view(r).model_dump(include={"quality", "time_to_readiness_s"}) for s, r in results.items()
        },
    }
