"""Ready early, improve after (issue 17): the operator serves the worker's first ready version while its Job
trains on, then the better final one (with an Event), and never takes a Ready adapter away."""

from __future__ import annotations

import json
from pathlib import Path

from relora_operator import improve, storage
from relora_operator.builders.jobs import readapt_args
from relora_operator.conditions import ready_reason
from relora_operator.decisions import plan_adapter
from relora_operator.models import TaskAdapterSpec
from relora_operator.outcome import Observed
from relora_operator.settings import Settings
from relora_operator.status import adapter_status, transition_event

from relora_contract.result import ResultRecord
from tests.operator.factories import adapter, adapter_spec, job, releases, worker_summary

S = Settings.from_env({})
NOW = "2026-01-02T00:20:00Z"
FAM = releases("v1", "v2")


def early(output: str) -> ResultRecord:
    return ResultRecord.parse(first_version(output))


def first_version(output: str) -> dict:
    return {"version": "first-ready", "status": "ready", "strategy": "auto", "quality": 0.86, "threshold": 0.85,
            "quality_interval": {"low": 0.84, "high": 0.88}, "time_to_readiness_s": 1.5,
            "readiness_rule": "the one-sided 80 % Wilson lower bound of the metric >= threshold",
            "adapter_uri": improve.ready_uri(output), "result_uri": improve.ready_uri(output) + "/result.json"}


def test_the_spec_defaults_to_auto_improving_after_ready_and_the_worker_is_told() -> None:
    spec = TaskAdapterSpec.model_validate(adapter_spec())
    assert spec.strategy.name == "auto" and spec.strategy.improve_after_ready
    a = adapter()
    plan = plan_adapter(a, FAM, S)
    assert plan.projection is not None, "auto may choose the fused start: it gets the projected delta"
    args = readapt_args(spec, plan.adaptation)
    assert "--strategy=auto" in args and "--improve-after-ready" in args
    assert not any(x.startswith("--improve-max-steps") for x in args)
    capped = TaskAdapterSpec.model_validate(adapter_spec(strategy={"improveMaxSteps": 50}))
    assert "--improve-max-steps=50" in readapt_args(capped, plan.adaptation)
    off = TaskAdapterSpec.model_validate(adapter_spec(strategy={"improveAfterReady": False}))
    assert "--improve-after-ready" not in readapt_args(off, plan.adaptation)


def test_ready_at_the_first_version_then_improved_with_an_event() -> None:
    a = adapter()
    plan = plan_adapter(a, FAM, S)
    name, output = plan.adaptation.job_name, plan.adaptation.output_uri
    proj = job(plan.projection.job_name, state="Succeeded")

    # The Job runs, the worker has published its first ready version: Ready, still progressing.
    status, out = adapter_status(a, plan, Observed(job=job(name), projection=proj, early=early(output)), NOW)
    assert out.ready and status["phase"] == "Ready" and ready_reason(status) == improve.IMPROVING
    assert status["served"]["adapterUri"] == improve.ready_uri(output) == status["adapterUri"]
    assert status["readyRelease"] == "v2" and status["quality"] == 0.86 and status["timeToReadinessSeconds"] == 1.5
    assert next(c for c in status["conditions"] if c["type"] == "Progressing")["status"] == "True"
    assert transition_event(a.status, status)[1] == improve.IMPROVING
    assert improve.is_improving(status)

    # The Job succeeds with a better final version: it replaces the first one, and the Event says so.
    final = {"status": "ready", "exit_code": 0, "quality": 0.9, "threshold": 0.85, "adapter_uri": output,
             "result_uri": output + "/result.json", "strategy": "auto", "time_to_readiness_s": 1.5}
    running = adapter(status=status)
    new, out = adapter_status(running, plan, Observed(job=job(name, state="Succeeded"), projection=proj,
                                                      summary=worker_summary(**final)), NOW)
    assert out.ready and ready_reason(new) == improve.IMPROVED
    assert new["served"]["adapterUri"] == output and new["quality"] == 0.9
    kind, reason, message = transition_event(status, new)
    assert (kind, reason) == ("Normal", improve.IMPROVED) and "0.86 -> 0.9" in message
    assert not improve.is_improving(new) and new["releases"][0]["phase"] == "Ready"


def test_a_failed_improvement_keeps_the_first_version_served() -> None:
    a = adapter()
    plan = plan_adapter(a, FAM, S)
    name, output = plan.adaptation.job_name, plan.adaptation.output_uri
    proj = job(plan.projection.job_name, state="Succeeded")
    status, _ = adapter_status(a, plan, Observed(job=job(name), projection=proj, early=early(output)), NOW)
    failed = {"status": "error", "exit_code": 1, "error": "CUDA error: an illegal memory access"}
    seen = Observed(job=job(name, state="Failed", failed=3), projection=proj, summary=worker_summary(**failed))
    new, out = adapter_status(adapter(status=status), plan, seen, NOW)
    assert out.ready and new["phase"] == "Ready" and ready_reason(new) == improve.KEPT
    assert new["served"]["adapterUri"] == improve.ready_uri(output), "never regress: the first version stays"
    assert "illegal memory access" in new["message"]


def test_the_first_version_is_read_from_storage_beside_the_output(tmp_path: Path) -> None:
    output = f"file://{tmp_path}/out"
    assert improve.read_early(output) is None  # nothing yet: not Ready
    folder = tmp_path / "out-ready"
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps({**first_version(output), "version": "final"}))
    assert improve.read_early(output) is None, "only a first-ready record counts"
    (folder / "result.json").write_text(json.dumps(first_version(output)))
    assert improve.read_early(output).quality == 0.86


def test_the_real_worker_accepts_the_auto_command_line() -> None:
    import pytest

    cli = pytest.importorskip("relora_worker.cli", reason="the worker (torch) is not installed")
    a = adapter(strategy={"improveMaxSteps": 40})
    plan = plan_adapter(a, FAM, S)
    ns = cli.build_parser().parse_args(readapt_args(a.spec, plan.adaptation))
    assert ns.strategy == "auto" and ns.improve_after_ready and ns.improve_max_steps == 40
    assert ns.projection == plan.adaptation.projection_uri


def test_the_first_version_is_found_behind_a_publishing_pointer(tmp_path: Path) -> None:
    # S3 layout (README, "Publishing layout"): <output>-ready/manifest.json names the immutable version.
    output = f"file://{tmp_path}/out"
    version = tmp_path / "out-ready" / "versions" / "v0001"
    version.mkdir(parents=True)
    (version / "result.json").write_text(json.dumps(first_version(output)))
    pointer = {"format": storage.POINTER_FORMAT, "current": "versions/v0001/", "version": "v0001"}
    (tmp_path / "out-ready" / "manifest.json").write_text(json.dumps(pointer))
    assert improve.read_early(output).quality == 0.86
    (tmp_path / "out-ready" / "manifest.json").write_text(json.dumps({**pointer, "current": "../../etc/"}))
    assert improve.read_early(output) is None, "a pointer outside the folder is not followed"


def test_a_finished_jobs_result_is_found_behind_the_publishing_pointer(tmp_path: Path) -> None:
    # The fallback when a pod's termination summary is gone reads result.json the same way (S3 layout).
    output = f"file://{tmp_path}/out"
    version = tmp_path / "out" / "versions" / "20261203T000000Z-0"
    version.mkdir(parents=True)
    (version / "result.json").write_text(json.dumps({"status": "ready", "quality": 0.9}))
    pointer = {"format": storage.POINTER_FORMAT, "current": "versions/20261203T000000Z-0/"}
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(pointer))
    settings = Settings.from_env()
    assert storage.read_published_result(output, settings) == {"status": "ready", "quality": 0.9}
    (tmp_path / "out" / "manifest.json").write_text(json.dumps({**pointer, "format": "something-else"}))
    assert storage.read_published_result(output, settings) is None
