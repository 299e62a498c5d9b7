"""The batch plan and record of ``relora readapt-batch`` (relora_contract.batch): the Job's exit code rule, the
plan's refusals by field name, and a record of another format refused — all without torch (the operator's side)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relora_contract.batch import BatchPlan, BatchRecord, batch_exit_code
from relora_contract.errors import ContractError
from relora_contract.exit_codes import ExitCode

OK, BAD, BELOW, STORAGE, INTERNAL = (
    ExitCode.OK,
    ExitCode.BAD_INPUT,
    ExitCode.BELOW_THRESHOLD,
    ExitCode.STORAGE,
    ExitCode.INTERNAL,
)


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([OK, OK, OK], OK),
        ([OK, BELOW], BELOW),
        ([OK, BAD, OK], BELOW),  # the others are published: not a bad-input Job
        ([BAD, BELOW], BELOW),
        ([BAD, BAD], BAD),  # nothing published
        ([OK, INTERNAL, BAD], INTERNAL),  # retryable wins
        ([INTERNAL, STORAGE, OK], STORAGE),
    ],
)
def test_the_jobs_exit_code_follows_the_documented_rule(codes: list[ExitCode], expected: ExitCode) -> None:
    assert batch_exit_code(codes) == expected


def test_the_exit_code_rule_is_in_the_worker_contract() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "worker-contract.md").read_text()
    assert "**Exit code of the Job** (`relora_contract.batch.batch_exit_code`)" in doc


PLAN = {
    "base_model": "s3://m/base",
    "result": "s3://r/batch.json",
    "adapters": [{"key": "ns/a", "adapter": "s3://a/a", "train_data": "s3://d/a.jsonl", "output": "s3://o/a"}],
}


def test_a_plan_reads_with_its_defaults() -> None:
    plan = BatchPlan.parse(PLAN)
    assert plan.format == "relora-batch-plan/v1" and plan.task == "seq-cls" and plan.adapters[0].options == {}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"adapters": [{**PLAN["adapters"][0], "ouput": "x"}]}, "adapters.0.ouput"),
        ({"adapters": []}, "adapters"),
        ({"options": {"new_release": "v3"}}, "options"),
        ({"format": "relora-batch-plan/v2"}, "relora-batch-plan/v2"),
        ({"adapters": [{**PLAN["adapters"][0], "threshold": "high"}]}, "adapters.0.threshold"),
    ],
    ids=["unknown field", "no adapters", "batch-wide option", "newer format", "wrong type"],
)
def test_a_wrong_plan_is_refused_naming_the_field(change: dict, named: str) -> None:
    with pytest.raises(ContractError, match="batch plan") as error:
        BatchPlan.parse({**PLAN, **change})
    assert named in str(error.value)


def test_a_record_of_another_format_is_refused() -> None:
    with pytest.raises(ContractError, match="relora-batch-result/v2"):
        BatchRecord.parse({"format": "relora-batch-result/v2", "plan_sha256": "0", "base_model": "x"})


def test_the_contract_imports_no_torch() -> None:
    code = "import sys, relora_contract.batch, relora_contract.summary; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
