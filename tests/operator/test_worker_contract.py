"""The command lines the operator builds are accepted by the real worker's parser (the contract, checked)."""

from __future__ import annotations

import pytest
from relora_operator.builders.jobs import TERMINATION_LOG, build_adaptation_job, build_projection_job
from relora_operator.decisions import plan_adapter
from relora_operator.settings import Settings

from tests.operator.factories import adapter, releases

cli = pytest.importorskip("relora_worker.cli", reason="the worker (torch) is not installed")
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


def test_projection_args_parse() -> None:
    plan = plan_adapter(adapter(), releases("v1", "v2"), S)
    ns = cli.build_parser().parse_args(_args(build_projection_job(S, plan.projection)))
    assert ns.command == "project-delta" and ns.rank == 16 and ns.old_release == "v1"
