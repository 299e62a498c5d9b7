"""The search's probes score a FLOP-bounded prefix of D_val (issue 14: at 8B a probe over all of D_val was 1.6 s
of arithmetic): the rule, the objective over the kept rows, and the record of how many rows the probes used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from relora_worker.cli import main
from relora_worker.synthetic import Scenario
from relora_worker.tasks import probe_rows
from tests.worker.conftest import readapt_args
from tests.worker.test_readapt import loaded


def test_the_probe_keeps_the_longest_affordable_prefix_and_never_fewer_than_the_floor() -> None:
    lengths = torch.tensor([100] * 512)
    # 8 B parameters: 2 × 8e9 × 100 = 1.6e12 FLOPs a row -> 2.5e14 buys 156 rows
    assert probe_rows(lengths, 8_000_000_000, 2.5e14) == 156
    # a 22 M-parameter model scores every row under the same budget
    assert probe_rows(lengths, 22_000_000, 2.5e14) == 512
    # a budget that buys almost nothing still keeps the floor, and the floor never exceeds the split
    assert probe_rows(lengths, 8_000_000_000, 1.0) == 64
    assert probe_rows(torch.tensor([100] * 10), 8_000_000_000, 1.0) == 10
    # 0: every row (the option's documented switch-off)
    assert probe_rows(lengths, 8_000_000_000, 0.0) == 512
    # uneven rows: the prefix is counted in tokens, not rows
    assert probe_rows(torch.tensor([10, 10, 1000, 10] + [10] * 100), 1, 2 * 1025, min_rows=1) == 3


@pytest.mark.parametrize("which", ["scenario_cls", "scenario_lm"])
def test_the_objective_over_kept_rows_is_the_loss_of_those_rows(which: str, request: pytest.FixtureRequest) -> None:
    model, task, _, _ = loaded(request.getfixturevalue(which))
    everything = task.val_loss(model)
    task.limit_probe(5)
    kept = task.val_loss(model)
    with torch.no_grad():
        model.eval()
        reference = float(task.loss(model, task.val.head(5).rows(slice(0, 5))))
    assert len(task.probe) == 5 and len(task.val) > 5
    assert kept == pytest.approx(reference, rel=1e-5)
    assert kept != pytest.approx(everything, rel=1e-6)  # it really scored other rows than all of D_val


def test_readapt_records_the_rows_its_probes_scored(scenario_cls: Scenario, tmp_path: Path) -> None:
    # A budget below one row's cost keeps the floor: 64 of D_val's 100 rows.
    out = tmp_path / "out"
    assert main(readapt_args(scenario_cls, out, "--val-size", "100", "--search-probe-flops", "1")) in (0, 3)
    sizes = json.loads((out / "result.json").read_text())["sizes"]
    assert sizes == {**sizes, "val": 100, "probe": 64}
    out_all = tmp_path / "all"
    assert main(readapt_args(scenario_cls, out_all, "--val-size", "100", "--search-probe-flops", "0")) in (0, 3)
    assert json.loads((out_all / "result.json").read_text())["sizes"]["probe"] == sizes["val"]
