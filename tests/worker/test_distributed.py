"""``relora readapt`` under torchrun (issue 18's CPU slice): 2 gloo ranks on the tiny synthetic scenario.

The ranks split the projection's modules, the probe and evaluation rows and every training batch; the search
is decided on rank 0.
The run must agree with the single-process one (same α*, β*, quality within a row or two of D_eval), exit 0
on every rank and publish exactly one version, with rank 0's summary alone on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relora_worker.distributed import World, detect, is_publisher
from relora_worker.synthetic import Scenario
from tests.worker.conftest import readapt_args

ROOT = Path(__file__).resolve().parents[2]
CHECK = str(ROOT / "tests" / "worker" / "distributed_check.py")  # what each rank runs, for the helper tests
# Grid search: its probes are fixed points, so the comparison tests the split evaluation, not the GP's path.
EXTRA = ("--search", "grid", "--grid-size", "2", "--device", "cpu", "--batch-size", "8", "--threshold", "0.01")


def _env() -> dict[str, str]:
    # This worktree's code, in every rank; one thread per rank (two ranks share two cores).
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "operator")]), OMP_NUM_THREADS="1")
    return env


def _single(scenario: Scenario, out: Path, *extra: str) -> dict:
    command = [sys.executable, "-m", "relora_worker", *readapt_args(scenario, out, *(extra or EXTRA))]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _torchrun(
    program: list[str], logs: Path, timeout: float = 900
) -> tuple[subprocess.CompletedProcess, dict[int, str]]:
    """``program`` (``-m module …`` or ``script …``) on 2 ranks; returns torchrun's outcome and each rank's stdout."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "--log-dir", str(logs), "--redirects", "3", *program,
    ]  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=timeout)
    stdout = {int(p.parent.name): p.read_text() for p in logs.rglob("stdout.log")}
    return done, stdout


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def test_world_comes_from_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert detect() == World(0, 1, 0) and not detect().active
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = detect()
    assert world == World(3, 4, 1) and world.active and not world.is_publisher
    # Shares cover every row once, in order, sizes within one of each other (an empty one is allowed).
    shares = [World(r, 4).share(10) for r in range(4)]
    assert [i for s in shares for i in range(10)[s]] == list(range(10))
    assert {s.stop - s.start for s in shares} == {2, 3}
    assert World(2, 4).share(1) == slice(0, 0)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4 is outside WORLD_SIZE=4"):
        detect()
    assert is_publisher()  # an unreadable world reports its own error (as rank 0 would)
    monkeypatch.setenv("RANK", "1")
    assert not is_publisher()


@pytest.mark.parametrize("scenario_name", ["scenario_cls", "scenario_lm"])
def test_two_ranks_match_one_process_and_publish_once(
    scenario_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    scenario: Scenario = request.getfixturevalue(scenario_name)
    single = _single(scenario, tmp_path / "single")
    program = ["-m", "relora_worker", *readapt_args(scenario, tmp_path / "pair", *EXTRA)]
    done, stdout = _torchrun(program, tmp_path / "logs")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]  # torchrun: every rank exited 0

    assert sorted(stdout) == [0, 1]
    summary = json.loads(stdout[0])  # rank 0's summary; rank 1 prints none (one summary per container)
    assert stdout[1].strip() == ""
    assert summary["exit_code"] == 0 and summary["status"] == single["status"]

    one, two = _result(tmp_path / "single"), _result(tmp_path / "pair")
    assert (two["world"]["processes"], two["world"]["rank"], two["world"]["sharded"]) == (2, 0, False)  # auto on CPUs
    assert (two["alpha"], two["beta"]) == (one["alpha"], one["beta"])
    # Π_r from --old-base-model: each rank projected a share of the modules (not every module on every rank),
    # and the whole projection, sent to both, is the single process's to the bit.
    lines = two["projection"]["ranks"]
    assert [line["rank"] for line in lines] == [0, 1] and all(line["modules"] > 0 for line in lines)
    assert sum(line["modules"] for line in lines) == len(one["projection"]["modules"])
    assert two["projection"]["modules"] == one["projection"]["modules"]
    # Every probe's validation loss is the same total, added in another order (for the LM, the row-weighted
    # mean of the shares' token means: the token mean when the shares' completions are as long on average).
    losses = [(p["alpha"], p["beta"], p["loss"]) for p in one["search"]["probes"]]
    split = [(p["alpha"], p["beta"], p["loss"]) for p in two["search"]["probes"]]
    assert [x[:2] for x in split] == [x[:2] for x in losses]
    assert [x[2] for x in split] == pytest.approx([x[2] for x in losses], rel=1e-4)
    # The start (before training) is scored on every D_eval row split across ranks: the same count.
    assert two["initial_quality"] == pytest.approx(one["initial_quality"], abs=1e-6)  # LM: a float32 mean
    # Training splits each batch: the same gradients up to float order, so within a few D_eval rows.
    rows = one["sizes"]["eval"]
    assert two["quality"] == pytest.approx(one["quality"], abs=3 / rows)
    assert [p["step"] for p in two["finetune"]["trajectory"]] == [p["step"] for p in one["finetune"]["trajectory"]]

    versions = [p for p in (tmp_path / "pair.versions").iterdir() if not p.name.startswith(".")]  # .lock
    assert len(versions) == 1, versions  # rank 0 alone published
    assert not (tmp_path / "pair-ready").exists()


def test_other_commands_refuse_a_world_of_several(scenario_cls: Scenario, tmp_path: Path) -> None:
    """evaluate is not split: under torchrun it says so (exit 2) instead of running once per rank."""
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    command = [sys.executable, "-m", "relora_worker", "evaluate", "--base-model", scenario_cls.base_v2,
               "--adapter", scenario_cls.adapter_v1, "--data", scenario_cls.eval]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "relora evaluate runs in one process; only readapt and project-delta run under torchrun" in done.stderr


@pytest.mark.parametrize("model", ["bert", "llama"])
def test_fsdp2_shards_the_frozen_base_and_keeps_the_adapter_whole(
    model: str, scenario_cls: Scenario, tmp_path: Path
) -> None:
    """FSDP2 (shard_frozen_base) on 2 gloo ranks: each rank holds about half the frozen weights; the split
    rows' loss and the averaged LoRA gradients are the single process's."""
    done, stdout = _torchrun([CHECK, model, str(Path(scenario_cls.base_v2).parent)], tmp_path / "logs")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    reports = [json.loads(stdout[rank]) for rank in (0, 1)]
    assert sum(r["frozen_local"] for r in reports) == reports[0]["frozen_total"]  # each weight on one rank
    for report in reports:
        assert report["blocks"] >= 2  # the two or three layers (BERT: its embeddings too), each its own unit
        assert report["frozen_sharded"] and report["trainable_plain"]
        assert report["frozen_local"] < 0.6 * report["frozen_total"]
        assert report["split_loss"] == pytest.approx(report["reference_loss"], rel=1e-5)
        assert report["grad_scale"] > 0 and report["grad_error"] <= 1e-5 * report["grad_scale"]


def test_decisions_come_from_rank_0_and_its_failure_reaches_every_rank(tmp_path: Path) -> None:
    done, stdout = _torchrun([CHECK, "decisions"], tmp_path / "logs")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    first, second = (json.loads(stdout[rank]) for rank in (0, 1))
    # Rank 1 evaluated exactly rank 0's probes (one failing decision included) and got rank 0's choice,
    # whose losses are the all-reduced totals (1·β + 2·β + 2α).
    assert first["calls"] == second["calls"] == [[0.0, 1.0], [0.5, 0.25], [1.0, 0.0]]
    assert first["chosen"] == second["chosen"] == {"alpha": 0.5, "beta": 0.25, "losses": [3.0, 1.75]}
    assert first["failure"] == "ValueError: every probe of the fusion search gave a non-finite validation loss"
    assert second["failure"] == (
        "DistributedError: rank 0 failed during the fusion search: "
        "ValueError: every probe of the fusion search gave a non-finite validation loss"
    )


def test_launch_keeps_rank_0s_exit_code(scenario_cls: Scenario, tmp_path: Path) -> None:
    """torchrun would exit 1 for a below-threshold run; relora_worker.launch exits 3, as one process does."""
    out = tmp_path / "out"
    args = readapt_args(scenario_cls, out, *EXTRA[:-2], "--threshold", "0.99", "--max-steps", "10")
    command = [sys.executable, "-m", "relora_worker.launch", "--nproc-per-node", "2", *args]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 3, done.stderr[-3000:]
    (line,) = done.stdout.splitlines()  # rank 0's summary alone
    summary = json.loads(line)
    assert summary["status"] == "below-threshold" and summary["exit_code"] == 3
    assert [p.name for p in (tmp_path / "out.versions").iterdir() if not p.name.startswith(".")] == [
        Path(summary["adapter_uri"]).name
    ]

