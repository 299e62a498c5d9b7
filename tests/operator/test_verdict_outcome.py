"""The finished Job's status comes from one channel, its termination summary (relora_contract.verdict): a unit
test per verdict; result.json fills numbers (or stands in for the summary of a succeeded Job whose pod is
gone), never overrules it; without a summary the status still says why (the Job's words, how its pod ended)."""

from __future__ import annotations

import dataclasses

from relora_operator import views
from relora_operator.decisions import plan_adapter
from relora_operator.outcome import Observed, needs_result
from relora_operator.settings import Settings
from relora_operator.status import adapter_status

from relora_contract.exit_codes import ExitCode
from tests.operator.factories import adapter, job, releases, worker_result, worker_summary

S = Settings.from_env({})
NOW = "2026-01-02T00:20:00Z"
READY = {"status": "ready", "exit_code": 0, "quality": 0.91, "threshold": 0.8, "adapter_uri": "s3://out/new/"}


def _end(state: str, **seen: object):  # type: ignore[no-untyped-def]
    """The status and outcome of the adapter whose adaptation Job ended in ``state`` with what ``seen`` says."""
    a = adapter()
    plan = plan_adapter(a, releases("v1", "v2"), S)
    assert plan.adaptation is not None and plan.projection is not None
    ended = job(plan.adaptation.job_name, state=state, failed=0 if state == "Succeeded" else 3, message="backoff")
    proj = job(plan.projection.job_name, component="projection", state="Succeeded")
    return adapter_status(a, plan, Observed(job=ended, projection=proj, **seen), NOW)  # type: ignore[arg-type]


def test_ready_serves_what_the_summary_names() -> None:
    status, out = _end("Succeeded", summary=worker_summary(**READY))
    assert (out.phase, out.reason, out.ready) == ("Ready", "Readapted", True)
    assert status["served"]["adapterUri"] == "s3://out/new/" and status["quality"] == 0.91


def test_below_threshold_is_degraded_and_keeps_serving_the_old_adapter() -> None:
    summary = worker_summary(**{**READY, "status": "below-threshold", "exit_code": 3, "quality": 0.7})
    status, out = _end("Failed", summary=summary)
    assert (out.phase, out.reason, out.degraded) == ("Degraded", "BelowThreshold", True)
    assert "quality 0.7 stayed below the threshold 0.8" in out.message
    assert status["adapterUri"] != "s3://out/new/" and "served" not in status  # the adapter as given serves


def test_bad_input_fails_with_the_workers_words() -> None:
    summary = worker_summary(status="error", exit_code=2, error="cannot read s3://data/t.jsonl: NoSuchKey")
    _, out = _end("Failed", summary=summary)
    assert (out.phase, out.reason) == ("Failed", "BadInput") and "s3://data/t.jsonl" in out.message


def test_a_retryable_failure_after_the_retries_fails_with_its_code_and_words() -> None:
    summary = worker_summary(status="error", exit_code=int(ExitCode.STORAGE), error="storage timed out")
    _, out = _end("Failed", summary=summary)
    assert (out.phase, out.reason) == ("Failed", "JobFailed")
    assert "3 attempt(s)" in out.message and "exit code 4" in out.message and "storage timed out" in out.message


def test_unknown_verdict_says_why_from_the_job_and_the_pod() -> None:
    _, out = _end("Failed", pod_end="OOMKilled, exit code 137")
    assert (out.phase, out.reason) == ("Failed", "JobFailed")
    assert "left no summary" in out.message and "OOMKilled" in out.message and "backoff" in out.message
    a = adapter()
    plan = plan_adapter(a, releases("v1", "v2"), S)
    assert plan.adaptation is not None
    late = dataclasses.replace(job(plan.adaptation.job_name, state="Failed"), reason="DeadlineExceeded")
    _, out = adapter_status(a, plan, Observed(job=late), NOW)
    assert out.reason == "DeadlineExceeded"


def test_result_json_never_overrules_the_summary() -> None:
    # A result.json saying ready does not turn a summary's below-threshold into Ready, nor a Job that
    # failed without a summary into Ready.
    ready_record = worker_result(quality=0.95, threshold=0.8, adapter_uri="s3://out/new/")
    below = worker_summary(status="below-threshold", exit_code=3, threshold=0.8)
    _, out = _end("Failed", summary=below, result=ready_record)
    assert out.reason == "BelowThreshold"
    _, out = _end("Failed", result=ready_record, pod_end="Error, exit code 1")
    assert out.reason == "JobFailed" and not out.ready


def test_numbers_and_a_gone_pods_summary_come_from_result_json() -> None:
    record = worker_result(quality=0.93, threshold=0.8, adapter_uri="s3://out/new/")
    # An older worker's summary: the verdict, no numbers.
    status, out = _end("Succeeded", summary=worker_summary(status="ready", exit_code=0), result=record)
    assert out.reason == "Readapted" and status["quality"] == 0.93
    # The pod (and its summary) gone after the Job succeeded: the same record, made from result.json.
    status, out = _end("Succeeded", result=record)
    assert out.reason == "Readapted" and status["served"]["adapterUri"] == "s3://out/new/"
    # ... and without a result.json either: nothing says what was published, so nothing new is served.
    status, out = _end("Succeeded")
    assert (out.phase, out.reason, out.ready) == ("Failed", "JobFailed", False) and "no result.json" in out.message
    assert "served" not in status


def test_result_json_is_read_only_when_it_has_something_to_add() -> None:
    done, failed = job("j", state="Succeeded"), job("j", state="Failed")
    assert needs_result(done, None) and needs_result(done, worker_summary(status="ready", exit_code=0))
    assert not needs_result(done, worker_summary(**READY))
    assert not needs_result(failed, None)  # killed before writing a summary: nothing was published
    assert not needs_result(failed, worker_summary(status="error", exit_code=2, error="bad"))


def test_the_pod_says_how_it_ended() -> None:
    body = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"batch.kubernetes.io/job-name": "j"}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}],
        },
    }
    assert views.pod_view(body).ended == "OOMKilled, exit code 137"
