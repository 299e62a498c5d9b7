"""The termination summary and result.json as the contract defines them (relora_contract.summary/result): what
the worker writes is what the operator reads, today's summaries (no schema_version) still read, a newer one is
refused with a message that says so, the 4 KiB limit holds, and docs/worker-contract.md lists every key."""

from __future__ import annotations

import json
import logging
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel
from relora_operator.views import parse_result, parse_summary

from relora_contract.errors import ContractError
from relora_contract.exit_codes import ExitCode
from relora_contract.result import ResultRecord, RunStatus
from relora_contract.summary import LIMIT, SCHEMA_VERSION, TerminationSummary, outcome, parse_message

ROOT = Path(__file__).resolve().parents[2]
# A summary as workers wrote it before schema_version existed (docs/worker-contract.md, session 5).
TODAYS = (
    '{"command":"readapt","status":"ready","exit_code":0,"strategy":"relora","quality":0.91,"threshold":0.8,'
    '"time_to_readiness_s":12.3,"alpha":0.4,"beta":1.6,"adapter_uri":"s3://o/versions/1/",'
    '"result_uri":"s3://o/versions/1/result.json","quality_interval":[0.88,0.93],"ready_adapter_uri":null,'
    '"final_quality":0.91,"vllm_compatible":true,"eval_data_sha256":"9c5d","error":null}'
)


def test_a_summary_from_before_schema_version_still_reads() -> None:
    summary = parse_message("some log line\n" + TODAYS + "\n")  # FallbackToLogsOnError: the last JSON line
    assert summary is not None and summary.schema_version == 1
    assert (summary.status, summary.exit_code, summary.quality) == (RunStatus.READY, ExitCode.OK, 0.91)
    assert summary.quality_interval == (0.88, 0.93) and summary.vllm_compatible is True
    terminated = '{"command":"readapt","status":"terminated","reason":"Terminated","exit_code":143,"error":"x"}'
    assert parse_message(terminated) == TerminationSummary.failed("readapt", "x", ExitCode.TERMINATED, "Terminated")


def test_a_newer_summary_is_refused_by_name_and_the_operator_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    newer = json.dumps({**json.loads(TODAYS), "schema_version": SCHEMA_VERSION + 1})
    with pytest.raises(ContractError, match=f"schema_version {SCHEMA_VERSION + 1} is newer"):
        parse_message(newer)
    with caplog.at_level(logging.WARNING):
        assert parse_summary(newer, "job-x-abc") is None  # never a crash: result.json and the exit code decide
    assert "job-x-abc" in caplog.text and "schema_version 2" in caplog.text
    with pytest.raises(ContractError, match="exit_code: Input should be 0, 1, 2, 3, 4, 130 or 143"):
        parse_message('{"command":"readapt","status":"error","exit_code":7}')
    assert parse_message("no summary, only a log line") is None and parse_message(None) is None


def test_a_long_error_is_cut_so_the_line_stays_under_the_limit() -> None:
    text = TerminationSummary.failed("readapt", "é" * 5000, ExitCode.BAD_INPUT).encode()
    assert len(text.encode()) <= LIMIT and "\n" not in text
    back = parse_message(text)
    assert back is not None and back.exit_code == ExitCode.BAD_INPUT and back.error.endswith("…")


def test_non_finite_numbers_are_null_and_report_keys_pass_through() -> None:
    summary = TerminationSummary(command="evaluate", status="ok", exit_code=0, quality=float("nan"), loss=0.25)
    value = json.loads(summary.encode())
    assert value["quality"] is None and value["loss"] == 0.25 and value["schema_version"] == SCHEMA_VERSION


def test_the_summary_is_filled_from_result_json_where_it_lacks_numbers() -> None:
    bare = TerminationSummary.parse({"command": "readapt", "status": "ready", "exit_code": 0})
    record = ResultRecord.parse({"format": "relora-result/v1", "status": "ready", "strategy": "auto",
                                 "quality": 0.9, "adapter_uri": "s3://o/", "quality_interval": {"low": 0.8,
                                 "high": 0.95}, "trajectory": [1, 2]})
    merged = outcome(bare, record)
    assert merged is not None
    assert (merged.exit_code, merged.quality, merged.adapter_uri, merged.quality_interval) == (0, 0.9, "s3://o/",
                                                                                              (0.8, 0.95))
    alone = outcome(None, record)
    assert alone is not None and alone.exit_code is None and alone.strategy == "auto"
    assert outcome(None, None) is None


def test_result_json_of_another_format_is_refused_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ContractError, match="relora-result/v9"):
        ResultRecord.parse({"format": "relora-result/v9", "status": "ready", "strategy": "auto"})
    with pytest.raises(ContractError, match="strategy"):
        ResultRecord.parse({"status": "ready", "strategy": "magic"})
    with caplog.at_level(logging.WARNING):
        assert parse_result({"status": "ready"}, "result.json of s3://o/") is None
    assert "result.json of s3://o/: strategy" in caplog.text


def _type(annotation: object) -> str:
    """A field's type in words: ``float`` for ``float | None``, the values of a Literal."""
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(f"`{a}`" for a in typing.get_args(annotation))
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1:
        return _type(args[0])
    return getattr(typing.get_origin(annotation) or annotation, "__name__", str(annotation))


def fields_table(model: type[BaseModel]) -> str:
    """The markdown table of a contract model's keys, as docs/worker-contract.md shows it."""
    rows = ["| key | type | meaning |", "| --- | --- | --- |"]
    for name, info in model.model_fields.items():
        rows.append(f"| `{name}` | {_type(info.annotation)} | {info.description or ''} |")
    return "\n".join(rows)


@pytest.mark.parametrize("model", [TerminationSummary, ResultRecord], ids=lambda m: m.__name__)
def test_the_worker_contract_page_lists_every_key(model: type[BaseModel]) -> None:
    doc = (ROOT / "docs" / "worker-contract.md").read_text()
    table = fields_table(model)
    assert table in doc, f"docs/worker-contract.md: update the {model.__name__} table to:\n{table}"
