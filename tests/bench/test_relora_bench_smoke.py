"""CPU smoke test of the ReLoRA benchmark's whole code path (bench/relora): tiny config-built models, real data.

It checks that every stage runs and that the records, tables and plots are written, not what the numbers are
(those come from the GPU run committed under bench/results/relora/).
"""

from __future__ import annotations

import json
import tarfile

from bench.relora import report, run
from bench.relora.common import ARMS, AUTO_ARMS

# Every arm runs the same code path (run_readapt with its strategy, which the worker tests cover one by one);
# the smoke keeps the arms the report's goals compare, so that the whole path stays well inside its timeout.
SMOKE_ARMS = ("relora", "transfer-ft", "scratch", "relora-lr1e-4", "transfer-ft-lr1e-4", "auto")


def test_relora_bench_cpu_smoke(tmp_path):
    out = tmp_path / "results"
    archive = tmp_path / "runs.tar.gz"
    assert run.main(["--scenario", "all", "--profile", "cpu", "--out", str(out), "--archive", str(archive),
                     "--work", str(tmp_path / "work"), "--device", "cpu", "--arms", ",".join(SMOKE_ARMS)]) == 0
    arms = [arm for arm in ARMS if arm.label in SMOKE_ARMS]

    records = {p.stem: json.loads(p.read_text()) for p in (out / "runs").glob("*.json")}
    for scenario in ("encoder", "causal-lm"):
        assert f"{scenario}__debian4__setup" in records
        for arm in arms:
            record = records[f"{scenario}__debian4__{arm.label}__s0"]
            assert record["strategy"] == arm.strategy and record["arm"] == arm.label
            assert record["config"]["finetune"]["lr"] == (arm.lr or 5e-4), "the arm's η1 reached the worker"
            assert record["finetune"]["trajectory"], "every run has a quality trajectory"
            assert (record["search"] is not None) == (arm.strategy in ("relora", "relora-noreg", "auto"))
            assert record["readiness"]["rule"]["method"] == "wilson", "the worker's readiness rule is recorded"
        grid = records[f"{scenario}__debian4__relora-grid__s0"]
        assert grid["config"]["search"]["method"] == "grid"
        assert any("lambda1" in r.get("overrides", {}) for r in records.values() if r.get("scenario") == scenario)
        assert (out / f"quality_vs_time_{scenario}_debian4.png").stat().st_size > 0

    # the second release: the same v1, released on the npm corpus, main task only, no ablations
    npm_setup = records["encoder-npm__debian4__setup"]
    assert npm_setup["bases"]["release"]["update_source"].startswith("corpus-npm")
    assert records["encoder__debian4__setup"]["bases"]["release"]["update_source"].startswith("corpus-pypi")
    assert not any(r.get("tag", "").startswith("relora-grid") for r in records.values()
                   if r.get("scenario") == "encoder-npm")

    # issue 17: auto runs with the task's real threshold (b) and improves after Ready; its decisions are recorded
    for scenario in ("encoder", "causal-lm"):
        setup, auto = records[f"{scenario}__debian4__setup"], records[f"{scenario}__debian4__auto__s0"]
        assert auto["threshold"] == setup["threshold_b"] and auto["config"]["improve_after_ready"]
        assert auto["auto"]["decisions"] and auto["auto"]["phases"][0]["phase"] == "transfer-check"
        assert auto["quality_interval"]["low"] <= auto["quality"] <= auto["quality_interval"]["high"]
    # the new scenario: a full-parameter release and the npm-vs-PyPI task (its own arms unless --arms is given)
    full = records["encoder-full__ecosystem__setup"]
    assert "full-parameter" in full["bases"]["release"]["method"] and set(full["labels"]) == {"npm", "pypi"}
    assert {r["arm"] for r in records.values() if r.get("scenario") == "encoder-full" and r.get("arm")} >= {
        arm.label for arm in AUTO_ARMS}

    summary = json.loads((out / "summary.json").read_text())
    for key in ("encoder/debian4", "causal-lm/debian4"):
        assert set(summary[key]["rows"]) == set(SMOKE_ARMS)
        # every relora arm is checked against the goals
        assert {name.split(" ")[0] for name, _, _ in summary[key]["goals"]} == {"relora", "relora-lr1e-4", "auto"}
        assert summary[key]["threshold_a"] is not None and summary[key]["threshold_b"] is not None
    results = (out / "results.md").read_text()
    assert "## encoder / debian4" in results and "## auto and relora side by side (issue 17)" in results
    assert "encoder-full/ecosystem" in summary["auto_vs_transfer_ft"]["ratios"]
    with tarfile.open(archive) as tar:
        assert any(name.endswith("encoder__debian4__relora__s0.json") for name in tar.getnames())

    # the report is re-runnable on the records alone (how committed results are regenerated)
    again = tmp_path / "again"
    assert report.main(["--runs", str(out / "runs"), "--out", str(again)]) == 0
    assert (again / "results.md").read_text() == (out / "results.md").read_text()
