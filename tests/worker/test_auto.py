"""The ``auto`` strategy end to end on tiny real models (relora_worker/auto.py through the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from relora_worker.auto import better_start
from relora_worker.cli import build_parser, main
from relora_worker.readapt import ready_uri
from relora_worker.storage import verify_published
from relora_worker.synthetic import Scenario
from tests.worker.conftest import readapt_args


def run(scenario: Scenario, out: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, dict, dict]:
    code = main(readapt_args(scenario, out, *extra, strategy="auto"))
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return code, summary, json.loads((out / "result.json").read_text())


def test_auto_is_the_default_strategy() -> None:
    args = build_parser().parse_args(["readapt", "--output", "x"])
    assert args.strategy == "auto" and args.readiness == "wilson" and not args.improve_after_ready


def test_ready_at_the_transfer_point_stops_before_any_search(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, summary, record = run(scenario_cls, tmp_path / "out", capsys, "--threshold", "0.01", "--readiness", "point")
    assert code == 0 and summary["status"] == "ready"
    auto = record["auto"]
    assert record["time_to_readiness_s"] == 0.0 and record["readiness"]["first"]["phase"] == "transfer"
    assert [d["decision"] for d in auto["decisions"]] == ["ready at the transfer point", "no search"]
    assert record["search"]["probes"] == [] and record["finetune"]["steps"] == 0
    # what is published is the old adapter itself
    old = load_file(str(Path(scenario_cls.adapter_v1) / "adapter_model.safetensors"))
    new = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    lora = [k for k in old if "lora_" in k]
    assert lora and all(k in new and bool((new[k] == old[k]).all()) for k in lora)


def test_unreachable_threshold_caps_the_search_and_trains_from_the_better_measured_start(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, summary, record = run(
        scenario_cls, tmp_path / "out", capsys, "--threshold", "1.0", "--search-budget", "20", "--search-share", "0.02"
    )
    assert code == 3 and summary["status"] == "below-threshold" and record["time_to_readiness_s"] is None
    auto = record["auto"]
    search = next(p for p in auto["phases"] if p["phase"] == "search")
    # the cap is the stated share of the measured step time x the step budget (20 steps here)
    assert search["limit_s"] == pytest.approx(0.02 * auto["step_seconds"] * 20)
    assert 1 <= search["probes"] < 20 and search["stop_reason"] == "time limit"
    chosen, _ = better_start(auto["fused_quality"], auto["transfer_quality"], record["sizes"]["eval"])
    assert auto["ready_start"] == chosen
    assert any(d["decision"] == f"fine-tune from the {chosen} start" for d in auto["decisions"])
    phases = [p["phase"] for p in auto["phases"]]
    assert phases[:3] == ["transfer-check", "search", "fused-check"] and f"finetune-{chosen}" in phases
    # one clock: every trajectory point is later than the previous, the search's seconds come first
    clock = [p["seconds"] for p in record["finetune"]["trajectory"]]
    assert clock == sorted(clock) and clock[1] >= search["ended_s"] - 1e-9
    interval = record["quality_interval"]
    assert interval["low"] <= record["quality"] <= interval["high"] and interval["n"] == record["sizes"]["eval"]
    assert summary["quality_interval"] == [interval["low"], interval["high"]]


def test_improve_after_ready_publishes_the_first_version_then_a_final_that_never_regresses(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    code, summary, record = run(
        scenario_cls, out, capsys, "--threshold", "0.01", "--readiness", "point", "--improve-after-ready"
    )
    assert code == 0
    first_uri = ready_uri(str(out))
    manifest = verify_published(first_uri)
    assert {"adapter_model.safetensors", "result.json"} <= set(manifest["files"])
    first = json.loads((Path(first_uri) / "result.json").read_text())
    assert first["version"] == "first-ready" and first["time_to_readiness_s"] == 0.0 and first["phase"] == "transfer"
    # the record names the immutable version it was published as (what the operator serves), not the location
    assert first["location"] == first_uri and Path(first["adapter_uri"]).resolve() == Path(first_uri).resolve()
    assert record["ready_version"]["adapter_uri"] == first["adapter_uri"] == summary["ready_adapter_uri"]
    # after Ready, the whole search and relora's fine-tune ran
    auto = record["auto"]
    assert len(record["search"]["probes"]) == 6 and "improve-fused" in [p["phase"] for p in auto["phases"]]
    assert record["finetune"]["steps"] == 20
    # the served adapter is the better of the two, never the worse
    assert summary["quality"] == max(first["quality"], record["final_quality"])
    if first["quality"] > record["final_quality"]:
        assert summary["adapter_uri"] == first["adapter_uri"]
    else:
        assert Path(summary["adapter_uri"]).resolve() == Path(out).resolve()
    verify_published(str(out))


def test_the_fused_start_must_beat_the_old_adapter_beyond_the_evaluations_noise() -> None:
    # The demo's case: a capped search's start a little above a near-chance adapter on 50 rows is noise.
    assert better_start(0.30, 0.26, 50)[0] == "transfer"
    assert better_start(0.26, 0.26, 5000)[0] == "transfer"  # a tie: the old adapter
    assert better_start(0.25, 0.26, 5000)[0] == "transfer"
    # A clear edge wins, and the same edge on few rows does not.
    assert better_start(0.70, 0.55, 800)[0] == "fused"
    assert better_start(0.70, 0.55, 20)[0] == "transfer"
    # The margin shrinks as 1/sqrt(n): a 2-point edge is noise on 800 rows and real on 20,000.
    assert better_start(0.52, 0.50, 800)[0] == "transfer" and better_start(0.52, 0.50, 20_000)[0] == "fused"
    _, why = better_start(0.70, 0.55, 800)
    assert "800 rows" in why and "0.7000" in why and "0.5500" in why and "noise margin" in why


def test_the_work_cap_counts_tokens_not_seconds(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, _, record = run(
        scenario_cls, tmp_path / "out", capsys, "--threshold", "1.0", "--search-budget", "20", "--search-cap", "work"
    )
    assert code == 3
    auto = record["auto"]
    search = next(p for p in auto["phases"] if p["phase"] == "search")
    # a probe count fixed before the search (no time limit), spent in full: the same on every machine
    assert search["limit_s"] is None and search["cap_probes"] >= 1
    assert search["probes"] == min(20, search["cap_probes"]) and search["stop_reason"] == "budget"
    capped = next(d for d in auto["decisions"] if d["decision"] == "search capped")
    assert f"= {search['cap_probes']} probe(s)" in capped["why"]
