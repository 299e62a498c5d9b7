"""One rule from a termination summary to the run's verdict (relora_contract.verdict), and the exit code the
Job's podFailurePolicy keys on agrees with it: the codes that fail a Job at once are exactly the final verdicts."""

from __future__ import annotations

import pytest

from relora_contract.exit_codes import FINAL, ExitCode
from relora_contract.result import ResultRecord
from relora_contract.summary import Command, TerminationSummary
from relora_contract.verdict import Verdict, verdict_of


def _published(status: str) -> TerminationSummary:
    record = ResultRecord.parse({"status": status, "strategy": "relora", "quality": 0.9, "threshold": 0.8})
    return TerminationSummary.readapt(record, record.verdict_code)


def test_a_ready_run_is_ready_and_so_is_a_finished_projection() -> None:
    assert verdict_of(_published("ready")) == Verdict.READY
    done = TerminationSummary(command=Command.PROJECT_DELTA, status="ok", exit_code=ExitCode.OK, modules=2)
    assert verdict_of(done) == Verdict.READY


def test_below_threshold_is_its_own_final_verdict() -> None:
    verdict = verdict_of(_published("below-threshold"))
    assert verdict == Verdict.BELOW_THRESHOLD and verdict.final


def test_bad_input_is_final() -> None:
    verdict = verdict_of(TerminationSummary.failed("readapt", "cannot read s3://d/t.jsonl", ExitCode.BAD_INPUT))
    assert verdict == Verdict.BAD_INPUT and verdict.final


@pytest.mark.parametrize("code", [ExitCode.INTERNAL, ExitCode.STORAGE, ExitCode.TERMINATED, ExitCode.INTERRUPTED])
def test_failures_another_attempt_may_fix_are_retryable(code: ExitCode) -> None:
    reason = "Terminated" if code in (ExitCode.TERMINATED, ExitCode.INTERRUPTED) else None
    verdict = verdict_of(TerminationSummary.failed("readapt", "x", code, reason))
    assert verdict == Verdict.RETRYABLE and not verdict.final


def test_no_summary_is_unknown() -> None:
    assert verdict_of(None) == Verdict.UNKNOWN and not Verdict.UNKNOWN.final


def test_the_status_decides_not_a_disagreeing_exit_code() -> None:
    # The summary's status says what was published; an exit code that says otherwise does not change it.
    odd = _published("below-threshold").model_copy(update={"exit_code": ExitCode.OK})
    assert verdict_of(odd) == Verdict.BELOW_THRESHOLD


@pytest.mark.parametrize("code", list(ExitCode), ids=lambda c: c.name)
def test_the_exit_codes_the_job_fails_at_once_on_are_the_final_verdicts(code: ExitCode) -> None:
    """The worker exits with its summary's exit_code: a code is in exit_codes.FINAL (the podFailurePolicy's
    FailJob) exactly when the verdict of a summary carrying it is final."""
    if code in (ExitCode.OK, ExitCode.BELOW_THRESHOLD):
        summary = _published("ready" if code == ExitCode.OK else "below-threshold")
    else:
        summary = TerminationSummary.failed("readapt", "x", code)
    assert summary.exit_code == code
    assert verdict_of(summary).final == (code in FINAL)
