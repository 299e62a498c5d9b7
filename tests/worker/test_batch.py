"""``relora readapt-batch``: one base load for several adapters, each exactly as if it ran alone, each published
and recorded as it finishes, one adapter's bad input isolated to it (tiny real models on CPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from relora_contract.batch import AdapterOutcome, BaseCounters, BatchPlan, BatchRecord
from relora_contract.exit_codes import ExitCode
from relora_contract.result import RunStatus
from relora_contract.summary import LIMIT, TerminationSummary
from relora_worker import batch
from relora_worker.cli import _readapt_job, main
from relora_worker.synthetic import Scenario
from tests.worker.conftest import readapt_args
from tests.worker.test_bad_input import copy

# The readapt options of tests/worker/conftest.readapt_args, as a plan carries them (underscored).
OPTIONS = {
    "strategy": "relora",
    "max_steps": 20,
    "stage1_steps": 10,
    "eval_every": 10,
    "val_size": 64,
    "search_budget": 6,
    "threshold": 0.2,
    "lr": 2e-3,
}


def plan_for(s: Scenario, out: Path, adapters: list[dict[str, Any]]) -> Path:
    """A plan over ``s``'s releases; each adapter defaults to the scenario's adapter and data."""
    items = [
        {"adapter": s.adapter_v1, "train_data": s.train, "eval_data": s.eval, "output": str(out / a["key"]), **a}
        for a in adapters
    ]
    plan = {
        "format": "relora-batch-plan/v1",
        "base_model": s.base_v2,
        "old_base_model": s.base_v1,
        "task": s.task,
        "options": OPTIONS,
        "result": str(out / "batch.json"),
        "adapters": items,
    }
    path = out / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def widened_factor(tmp: Path, s: Scenario) -> Path:
    """The scenario's adapter with one lora_A four columns wider than its module: refused at attach time."""
    folder = copy(s.adapter_v1, tmp, "wide-adapter")
    weights = load_file(str(folder / "adapter_model.safetensors"))
    key = next(k for k in weights if ".lora_A." in k)
    weights[key] = torch.cat([weights[key], torch.zeros(weights[key].shape[0], 4)], dim=1).contiguous()
    save_file(weights, str(folder / "adapter_model.safetensors"))
    return folder


def tensors(folder: Path | str) -> dict[str, Any]:
    return load_file(str(Path(folder) / "adapter_model.safetensors"))


def test_a_batch_loads_the_base_once_and_each_adapter_matches_its_solo_run(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    s, out = scenario_cls, tmp_path / "batch"
    out.mkdir()
    # Adapter 2 fails inside the run, after the base was restored for it and PEFT wrapped it.
    broken = widened_factor(tmp_path, s)
    plan = plan_for(
        s,
        out,
        [
            {"key": "ns/one"},
            {"key": "ns/two", "adapter": str(broken)},
            {"key": "ns/three", "options": {"max_steps": 10}},
        ],
    )
    summary_path = out / "termination-log"
    code = main(
        [
            "readapt-batch",
            "--plan",
            str(plan),
            "--progress",
            "off",
            "--json",
            "--termination-message-path",
            str(summary_path),
        ]
    )
    capsys.readouterr()

    record = BatchRecord.parse(json.loads((out / "batch.json").read_text()))
    codes = {a.key: a.exit_code for a in record.adapters}
    assert codes["ns/two"] == ExitCode.BAD_INPUT and "but the base model needs" in (
        record.outcome("ns/two").error or ""
    )
    assert not (out / "ns/two").exists() and not (out / "ns/two.versions").exists()
    assert record.done and not record.pending and record.exit_code == code
    assert code == ExitCode.BELOW_THRESHOLD  # one adapter not published, the others are: see batch_exit_code
    # One load of the base (and one projection) for the batch; the other two adapters got the pristine copy.
    assert record.counters.model_loads == 1 and record.counters.restores == 2
    assert record.counters.projection_loads == 1

    summary = TerminationSummary.parse(json.loads(summary_path.read_text()))
    assert summary.adapter_codes == [codes["ns/one"], ExitCode.BAD_INPUT, codes["ns/three"]]
    assert summary.model_loads == 1 and "ns/two" in (summary.error or "")

    for key, extra in (("ns/one", ()), ("ns/three", ("--max-steps", "10"))):
        solo = tmp_path / f"solo-{key.replace('/', '-')}"
        assert main([*readapt_args(s, solo), *extra]) in (ExitCode.OK, ExitCode.BELOW_THRESHOLD)
        capsys.readouterr()
        mine, alone = tensors(out / key), tensors(solo)
        assert mine.keys() == alone.keys()
        assert all((mine[k] == alone[k]).all() for k in mine), f"{key}: the batch's weights differ from a solo run"
        ours, theirs = (json.loads((p / "result.json").read_text()) for p in (out / key, solo))
        assert ours["quality"] == theirs["quality"] and ours["alpha"] == theirs["alpha"]
        assert record.outcome(key).quality == ours["quality"]
        assert record.outcome(key).adapter_uri == str((out / key).resolve())  # the immutable version's path
    assert json.loads((out / "ns/three/result.json").read_text())["base"]["restores"] == 2


def test_options_of_one_adapter_are_refused_for_that_adapter_alone(scenario_cls: Scenario, tmp_path: Path) -> None:
    plan_path = plan_for(
        scenario_cls,
        tmp_path,
        [
            {"key": "fine"},
            {"key": "typo", "options": {"max_stepz": 3}},
            {"key": "no-data", "train_data": str(tmp_path / "missing.jsonl")},
            {"key": "bad-threshold", "threshold": 1.5},
        ],
    )
    plan, _ = batch.read_plan(str(plan_path))
    jobs = {j.item.key: j for j in batch.prepare(plan, _readapt_job)}
    assert jobs["fine"].error is None and jobs["fine"].config.task.threshold == OPTIONS["threshold"]
    assert "max_stepz" in str(jobs["typo"].error) and "adapters[1] (typo)" in str(jobs["typo"].error)
    assert "missing.jsonl" in str(jobs["no-data"].error)
    assert "threshold" in str(jobs["bad-threshold"].error)
    assert all(j.error.exit_code == ExitCode.BAD_INPUT for k, j in jobs.items() if k != "fine")


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda p: p["adapters"][0].update(thresold=0.5), "adapters.0.thresold"),
        (lambda p: p.update(base_modle=p.pop("base_model")), "base_model"),
        (lambda p: p["adapters"].append(dict(p["adapters"][0])), "adapters[1].key 'a' repeats"),
        (lambda p: p["adapters"][0]["options"].update(task="causal-lm"), "fixed for the whole batch"),
        (lambda p: p.update(format="relora-batch-plan/v9"), "relora-batch-plan/v9"),
    ],
    ids=["misspelt adapter field", "misspelt plan field", "repeated key", "task per adapter", "newer format"],
)
def test_a_plan_with_a_wrong_field_is_refused_naming_it(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture, edit: Any, named: str
) -> None:
    path = plan_for(scenario_cls, tmp_path, [{"key": "a", "options": {}}])
    plan = json.loads(path.read_text())
    edit(plan)
    path.write_text(json.dumps(plan))
    assert main(["readapt-batch", "--plan", str(path), "--progress", "off"]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert named in err and str(path) in err
    assert not (tmp_path / "batch.json").exists() and not (tmp_path / "a").exists()


def test_the_summary_of_fifty_adapters_stays_under_the_limit() -> None:
    keys = [f"team-{i:02d}/adapter-with-a-rather-long-name-{i:02d}" for i in range(50)]
    plan = BatchPlan(
        base_model="s3://b/base",
        result="s3://b/batch.json",
        adapters=[{"key": k, "adapter": "s3://b/a", "train_data": "s3://b/d", "output": f"s3://b/o/{k}"} for k in keys],
    )
    outcomes = [
        AdapterOutcome(key=k, exit_code=ExitCode.BAD_INPUT, status=RunStatus.ERROR, error="x" * 500, output="o")
        for k in keys[:-1]
    ]
    record = BatchRecord(plan_sha256="0" * 64, base_model="s3://b/base", adapters=outcomes, counters=BaseCounters())
    line = batch.summarise(plan, record).encode()
    assert len(line.encode()) <= LIMIT
    summary = TerminationSummary.parse(json.loads(line))
    assert summary.adapter_codes == [ExitCode.BAD_INPUT] * 49 + [batch.NOT_RUN]
    assert summary.exit_code == ExitCode.BAD_INPUT and summary.batch_uri == "s3://b/batch.json"
