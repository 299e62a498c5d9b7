"""``relora demo``: the whole story on one machine, CPU is enough.

1. Build a tiny base model v1, a release v2 (continued training), an old adapter trained on v1, and data.
2. Measure the old adapter on v1: the no-regression threshold the new adapter must reach on v2.
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

from relora_worker.config import FinetuneConfig, ProjectionConfig, ReadaptConfig, SearchConfig, TaskConfig
from relora_worker.evaluate import run_evaluate
from relora_worker.plotting import plot_trajectories
from relora_worker.project import compute_projection
from relora_worker.readapt import ReadaptInputs, run_readapt
from relora_worker.storage import publish_folder
from relora_worker.synthetic import build_scenario


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "—" if value is None else pattern.format(value)


def format_table(results: dict[str, dict]) -> str:
    header = ("strategy", "ready after s", "final quality", "start quality", "search s (probes/fit/acq)", "α*, β*")
    rows = [header]
    for strategy, r in results.items():
        search = r["search"]
        split = (
            (
                f"{r['seconds']['search']:.2f} ({search['probe_seconds']:.2f}/{search['fit_seconds']:.2f}/"
                f"{search['acquisition_seconds']:.2f})"
            )
            if search
            else "—"
        )
        coefficients = f"{r['alpha']:.2f}, {r['beta']:.2f}" if r["alpha"] is not None else "—"
        rows.append(
            (
                strategy,
                _fmt(r["time_to_readiness_s"]),
                f"{r['quality']:.3f}",
                f"{r['initial_quality']:.3f}",
                split,
                coefficients,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_demo(
    out: Path, task: str, strategies: list[str], max_steps: int, seed: int, device: str, quiet: bool = False
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
    threshold = round(old["quality"], 4)
    say(f"[2/4] old adapter: {old['quality']:.3f} on v1, {on_v2['quality']:.3f} on v2 -> threshold {threshold}")

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
            f"ready after {_fmt(results[strategy]['time_to_readiness_s'])} s"
        )
    plot = out / "quality_vs_time.png"
    plot_trajectories(results, threshold, plot, f"relora demo ({task}): quality on v2 vs wall-clock time")
    table = format_table(results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    say("")
    say(table)
    say(f"\nthreshold = old adapter's quality on v1 ({threshold}); plot: {plot}; raw results: {out}/results.json")
    say(f"demo took {time.perf_counter() - started:.1f} s")
    return {
        "out": str(out),
        "plot": str(plot),
        "threshold": threshold,
        "table": table,
        "rows": {
            s: {"quality": r["quality"], "time_to_readiness_s": r["time_to_readiness_s"]} for s, r in results.items()
        },
    }
