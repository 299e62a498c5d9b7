"""Fixtures of the worker tests: tiny real models and adapters built locally (no hub), shared per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from relora_worker.synthetic import Scenario, ScenarioSize, build_scenario

# Small enough to build in seconds on two cores; quality is not what these tests measure.
TEST_SIZE = ScenarioSize(train_rows=600, eval_rows=200, pretrain_steps=120, release_steps=80, adapter_steps=80)


@pytest.fixture(scope="session")
def scenario_cls(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return build_scenario(tmp_path_factory.mktemp("scenario-cls"), task="seq-cls", seed=0, size=TEST_SIZE)


@pytest.fixture(scope="session")
def scenario_lm(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return build_scenario(tmp_path_factory.mktemp("scenario-lm"), task="causal-lm", seed=0, size=TEST_SIZE)


def readapt_args(scenario: Scenario, output: Path | str, *extra: str, strategy: str = "relora") -> list[str]:
    """CLI arguments for a quick re-adaptation of ``scenario`` (small budgets)."""
    return [
        "readapt",
        "--base-model",
        scenario.base_v2,
        "--old-base-model",
        scenario.base_v1,
        "--adapter",
        scenario.adapter_v1,
        "--train-data",
        scenario.train,
        "--eval-data",
        scenario.eval,
        "--output",
        str(output),
        "--strategy",
        strategy,
        "--task",
        scenario.task,
        "--max-steps",
        "20",
        "--stage1-steps",
        "10",
        "--eval-every",
        "10",
        "--val-size",
        "64",
        "--search-budget",
        "6",
        "--threshold",
        "0.2",
        "--lr",
        "2e-3",
        "--progress",
        "off",
        "--json",
        *extra,
    ]
