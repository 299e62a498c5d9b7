"""The command lines the operator builds are accepted by the real worker's parser, and every exit code and
summary field the worker reports reaches the operator as meant (the contract, checked)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from relora_operator.builders.jobs import TERMINATION_LOG, build_adaptation_job, build_projection_job
from relora_operator.decisions import plan_adapter
from relora_operator.outcome import Observed
from relora_operator.settings import Settings
from relora_operator.status import adapter_status
from relora_operator.views import parse_summary

from relora_contract import cli_args
from relora_contract.cli_args import Flag
from relora_contract.exit_codes import ExitCode
from relora_contract.summary import TerminationSummary
from tests.operator.factories import adapter, job, releases

cli = pytest.importorskip("relora_worker.cli", reason="the worker (torch) is not installed")
write_termination_message = pytest.importorskip("relora_worker.summary").write_termination_message
S = Settings.from_env({})


def _args(job):  # type: ignore[no-untyped-def]
    return job["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("strategy", ["relora", "transfer-ft", "scratch"])
def test_readapt_args_parse(strategy: str) -> None:
    a = adapter(strategy={"name": strategy, "alphaMin": -1.5, "learningRate": 0.001, "batchSize": 8})
    plan = plan_adapter(a, releases("v1", "v2"), S)
    ns = cli.build_parser().parse_args(_args(build_adaptation_job(S, a.spec, plan.adaptation)))
    assert ns.command == "readapt" and ns.strategy == strategy
    assert tuple(ns.alpha_bounds) == (-1.5, 1.0) and ns.lr == 0.001 and ns.batch_size == 8
    assert ns.termination_message_path == TERMINATION_LOG and ns.stop_at_ready
    assert (ns.projection is not None) == (strategy == "relora")


def _options(command: str) -> set[str]:
    sub = cli.build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    return {o for action in sub._actions for o in action.option_strings}


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("readapt", cli_args.READAPT),
        ("project-delta", cli_args.PROJECT_DELTA),
        ("readapt-batch", cli_args.READAPT_BATCH),
    ],
)
def test_every_contract_flag_is_an_option_of_the_worker(command: str, flags: tuple[Flag, ...]) -> None:
    assert set(flags) <= _options(command), f"relora {command} lacks {sorted(set(flags) - _options(command))}"


def test_every_flag_the_builder_emits_is_the_contracts_and_parses() -> None:
    # Every optional knob set, so that every flag the builder can write is written.
    strategy = {"name": "auto", "learningRate": 0.002, "batchSize": 4, "evalEvery": 5, "improveMaxSteps": 7,
                "alphaMin": -1.5}
    a = adapter(strategy=strategy, task={"type": "seq-cls", "trainData": "s3://data/t.jsonl", "valData":
                "s3://data/v.jsonl", "evalData": "s3://data/e.jsonl", "labels": ["neg", "pos"]})
    plan = plan_adapter(a, releases("v1", "v2"), S)
    for job_, command in ((build_adaptation_job(S, a.spec, plan.adaptation), "readapt"),
                          (build_projection_job(S, plan.projection), "project-delta")):
        args = _args(job_)
        assert args[0] == command
        flags = [x.split("=", 1)[0] for x in args[1:] if x.startswith("--")]
        assert set(flags) <= set(Flag), f"not in relora_contract.cli_args: {sorted(set(flags) - set(Flag))}"
        ns = cli.build_parser().parse_args(args)
        for x in args[1:]:
            if x.startswith("--") and "=" in x:
                assert getattr(ns, Flag(x.split("=", 1)[0]).dest) is not None
    ns = cli.build_parser().parse_args(_args(build_adaptation_job(S, a.spec, plan.adaptation)))
    assert (ns.lr, ns.batch_size, ns.eval_every, ns.improve_max_steps) == (0.002, 4, 5, 7)
    assert ns.labels and ns.val_data == "s3://data/v.jsonl" and ns.improve_after_ready


def test_projection_args_parse() -> None:
    plan = plan_adapter(adapter(), releases("v1", "v2"), S)
    ns = cli.build_parser().parse_args(_args(build_projection_job(S, plan.projection)))
    assert ns.command == "project-delta" and ns.rank == 16 and ns.old_release == "v1"


# What the operator makes of each exit code the worker reports (docs/worker-contract.md, "Exit codes").
REASONS = {
    ExitCode.OK: "Readapted",
    ExitCode.BELOW_THRESHOLD: "BelowThreshold",
    ExitCode.BAD_INPUT: "BadInput",
    ExitCode.INTERNAL: "JobFailed",
    ExitCode.STORAGE: "JobFailed",
    ExitCode.INTERRUPTED: "JobFailed",
    ExitCode.TERMINATED: "JobFailed",
}


def _written_and_read(summary: TerminationSummary, tmp_path: Path) -> TerminationSummary:
    """The summary through the real path: the worker's writer, the file Kubernetes reads, the operator's parser."""
    log = tmp_path / "termination-log"
    write_termination_message(str(log), summary)
    read = parse_summary(log.read_text(), "pod")
    assert read is not None
    return read


@pytest.mark.parametrize("code", list(ExitCode), ids=lambda c: c.name)
def test_every_exit_code_is_documented_written_and_understood(code: ExitCode, tmp_path: Path) -> None:
    assert set(REASONS) == set(ExitCode), "a new exit code needs its outcome here and in the operator"
    assert re.search(rf"^  (\d+ .*\()?{int(code)}\b", cli.EPILOG, re.M), f"`relora --help` omits exit code {code}"
    if code == ExitCode.OK:
        sent = TerminationSummary(command="readapt", status="ready", exit_code=code, quality=0.9, threshold=0.8)
    elif code == ExitCode.BELOW_THRESHOLD:
        sent = TerminationSummary(command="readapt", status="below-threshold", exit_code=code, quality=0.5)
    else:
        reason = "Terminated" if code in (ExitCode.INTERRUPTED, ExitCode.TERMINATED) else None
        sent = TerminationSummary.failed("readapt", f"the worker's words for {code.name}", code, reason)
    read = _written_and_read(sent, tmp_path)
    assert read == sent and read.exit_code == code
    a = adapter()
    plan = plan_adapter(a, releases("v1", "v2"), S)
    state = "Succeeded" if code == ExitCode.OK else "Failed"
    done = job(plan.adaptation.job_name, state=state, failed=0 if code == ExitCode.OK else 3)
    _, out = adapter_status(a, plan, Observed(job=done, summary=read), "2026-12-03T00:00:00Z")
    assert out.reason == REASONS[code]
    if code not in (ExitCode.OK, ExitCode.BELOW_THRESHOLD):
        assert sent.error in out.message  # the worker's message reaches the status


SAMPLES: dict[str, object] = {
    "schema_version": 1,
    "command": "project-delta",
    "status": "below-threshold",
    "exit_code": 4,
    "error": "cannot read s3://b/k",
    "reason": "Terminated",
    "strategy": "transfer-ft",
    "quality_interval": (0.25, 0.75),
    "vllm_compatible": False,
    "modules": 14,
    "adapter_codes": [0, 2, -1],
    "model_loads": 1,
}


@pytest.mark.parametrize("name", list(TerminationSummary.model_fields), ids=str)
def test_every_summary_field_reaches_the_operator(name: str, tmp_path: Path) -> None:
    annotation = str(TerminationSummary.model_fields[name].annotation)
    value = SAMPLES.get(name, 0.625 if "float" in annotation else f"s3://bucket/{name}")
    sent = TerminationSummary.model_validate({"command": "readapt", "status": "ready", "exit_code": 0, name: value})
    read = _written_and_read(sent, tmp_path)
    assert getattr(read, name) == value, f"{name} did not survive the termination message"
