"""``relora readapt --strategy auto`` on 2 gloo ranks through ``relora_worker.launch`` (issue 18).

auto's decisions depend on wall-clock time (the search's cap) and on measured qualities; every one is taken on
rank 0 and received by the others (relora_worker/auto.py), so the ranks take the same path through their
collective passes. Each rank logs its decisions and its path (``relora_worker.auto``, INFO under
``--verbose``): the tests read both ranks' lines from the launcher's stderr and require them to be equal.
A rank that took another branch would wait in a collective for ever: every launch runs under a timeout that
kills the ranks' process group and fails the test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from relora_worker.synthetic import Scenario
from tests.worker.conftest import readapt_args
from tests.worker.test_distributed import _env, _result

TIMEOUT_S = 420  # a 2-rank run takes 20-45 s on two shared cores; a hang is a failure, not a blocked suite
COMMON = ("--device", "cpu", "--batch-size", "8", "--improve-after-ready", "--verbose")
PATH_LINE = re.compile(r"auto path \(rank (\d+) of 2\): (\{.*\})$", re.MULTILINE)
DECISION_LINE = re.compile(r"auto decision \(rank (\d+) of 2\): (.*)$", re.MULTILINE)


def _run(command: list[str]) -> subprocess.CompletedProcess:
    """``command`` in its own process group (the launcher and its ranks), killed whole on a timeout."""
    with subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:  # fmt: skip
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            pytest.fail(f"{command[2]} did not finish in {TIMEOUT_S} s (ranks waiting on each other?) {stderr[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _launch(args: list[str], code: int) -> tuple[subprocess.CompletedProcess, dict[int, dict], dict[int, list[str]]]:
    """``args`` on 2 ranks, which must exit with ``code``: the outcome, each rank's logged path and decisions."""
    done = _run([sys.executable, "-m", "relora_worker.launch", "--nproc-per-node", "2", *args])
    assert done.returncode == code, (done.stdout + done.stderr)[-4000:]  # rank 0's code; a failed rank gives 1
    paths = {int(rank): json.loads(path) for rank, path in PATH_LINE.findall(done.stderr)}
    decisions: dict[int, list[str]] = {0: [], 1: []}
    for rank, decision in DECISION_LINE.findall(done.stderr):
        decisions[int(rank)].append(decision)
    assert sorted(paths) == [0, 1], done.stderr[-4000:]  # one path line per rank
    return done, paths, decisions


def _versions(location: Path) -> list[str]:
    folder = location.parent / (location.name + ".versions")
    return [p.name for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []  # .lock


def _check_one_publish(done: subprocess.CompletedProcess, out: Path, record: dict) -> None:
    (line,) = done.stdout.splitlines()  # rank 0's summary alone
    summary = json.loads(line)
    assert (summary["exit_code"], summary["status"]) == (done.returncode, record["status"])
    assert len(_versions(out)) == 1  # rank 0 alone published the final version ...
    ready = out.parent / (out.name + "-ready")
    assert len(_versions(ready)) == (1 if record["ready_version"] else 0)  # ... and the first ready one, once


def _search_phase(path: dict) -> dict:
    (phase,) = (p for p in path["phases"] if p["phase"] == "search")
    return phase


# (scenario, threshold, exit code): the threshold puts the run on one of auto's two paths, whatever the tiny
# scenario's qualities (they change with the machine's thread count): 0.01 is ready at the old adapter, 0.99 never.
PATHS = [
    # ready at the old adapter (exit 0): no cap, the whole search on rank 0, the improvement, the adapter kept
    ("scenario_lm", "0.01", 0),
    # never ready (exit 3): the capped search, the start to train from, its fine-tune, the improvement, the keep
    ("scenario_cls", "0.99", 3),
]


@pytest.mark.parametrize(("scenario_name", "threshold", "code"), PATHS)
def test_auto_on_two_ranks_takes_one_path_and_matches_one_process(
    scenario_name: str, threshold: str, code: int, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The work cap (token counts, the same on any machine) lets the 2-rank run be compared with one process:
    the same cap, the same capped probes, the same starts, a final quality inside one process's interval."""
    scenario: Scenario = request.getfixturevalue(scenario_name)
    extra = (*COMMON, "--threshold", threshold, "--search-cap", "work", "--search-share", "1", "--search-budget", "12")
    single = _run([sys.executable, "-m", "relora_worker", *readapt_args(scenario, tmp_path / "one", *extra,
                                                                        strategy="auto")])  # fmt: skip
    assert single.returncode == code, single.stderr[-3000:]
    done, paths, decisions = _launch(readapt_args(scenario, tmp_path / "two", *extra, strategy="auto"), code)

    # Rank 1 took rank 0's path: every decision (with its reason), phase, probe and step count.
    assert paths[1] == paths[0]
    assert decisions[1] == decisions[0] and decisions[0]
    one, two = _result(tmp_path / "one"), _result(tmp_path / "two")
    assert (two["world"]["processes"], two["world"]["rank"]) == (2, 0)
    path = paths[0]
    assert (two["auto"]["ready_start"], two["auto"]["final_start"]) == (path["ready_start"], path["final_start"])
    assert [[p["alpha"], p["beta"]] for p in two["search"]["probes"]] == path["probes"]
    assert [f"{d['decision']}: {d['why']}" for d in two["auto"]["decisions"]] == decisions[0]

    # The same choices as one process: the cap counts the whole batch's tokens (the ranks' shares summed),
    # the capped probes are the transfer point and fixed quasi-random points, the checks are exact counts.
    solo = {"probes": len(one["search"]["probes"]), **one["auto"]}
    solo_search = next(p for p in one["auto"]["phases"] if p["phase"] == "search")
    assert _search_phase(path)["cap_probes"] == solo_search["cap_probes"]
    assert threshold == "0.01" or 1 < solo_search["cap_probes"] < 12  # binding, and would move with the tokens
    capped = min(solo_search["probes"], 4)  # the transfer point and 3 quasi-random seeds; then the GP's picks
    assert path["probes"][:capped] == [[p["alpha"], p["beta"]] for p in one["search"]["probes"][:capped]]
    assert [p["phase"] for p in path["phases"]] == [p["phase"] for p in solo["phases"]]
    assert (path["ready_start"], path["ready_step"], path["steps"]) == (
        solo["ready_start"], solo["ready_step"], solo["steps"])  # fmt: skip
    assert two["auto"]["transfer_quality"] == pytest.approx(one["auto"]["transfer_quality"], abs=1e-6)
    interval = one["quality_interval"]
    assert interval["low"] <= two["quality"] <= interval["high"]
    assert two["status"] == one["status"]
    _check_one_publish(done, tmp_path / "two", two)


def test_a_time_cap_on_two_ranks_is_rank_0s_and_every_rank_finishes(scenario_cls: Scenario, tmp_path: Path) -> None:
    """A cap in seconds (the default) small enough to stop the search: each rank measures a different step time,
    yet both stop after the same probe (rank 0's), train from the same start and finish (below the threshold
    here, so that the cap applies: exit 3, rank 0's)."""
    extra = (*COMMON, "--threshold", "0.99", "--search-share", "0.25", "--search-budget", "12")
    done, paths, decisions = _launch(readapt_args(scenario_cls, tmp_path / "out", *extra, strategy="auto"), 3)

    assert paths[1] == paths[0]
    assert decisions[1] == decisions[0]
    search = _search_phase(paths[0])
    assert search["stop_reason"] == "time limit" and 1 <= search["probes"] < 12
    # The cap is rank 0's measured step time on every rank (the reason quotes it, equal on both ranks).
    assert search["limit_s"] == pytest.approx(0.25 * search["step_seconds"] * 20)
    capped = next(d for d in decisions[0] if d.startswith("search capped"))
    assert f"{search['step_seconds']:.4f} s × 20 steps" in capped and "stopped by time limit" in capped
    record = _result(tmp_path / "out")
    assert record["auto"]["search_limit_s"] == search["limit_s"]
    assert record["auto"]["step_seconds"] == search["step_seconds"]
    assert [p["probes"] for p in record["auto"]["phases"] if p["phase"] == "search"] == [search["probes"]]
    _check_one_publish(done, tmp_path / "out", record)


def test_auto_on_a_sharded_base_takes_one_path_on_every_rank(scenario_lm: Scenario, tmp_path: Path) -> None:
    """auto's checks, capped search, start choice and improvement on a base sharded with FSDP2: every forward is
    collective there, so a decision taken on one rank alone would hang (the timeout fails the test)."""
    extra = (*COMMON, "--threshold", "0.99", "--search-share", "0.25", "--search-budget", "8", "--shard-base",
             "always", "--val-size", "63")  # fmt: skip
    done, paths, decisions = _launch(readapt_args(scenario_lm, tmp_path / "out", *extra, strategy="auto"), 3)
    assert paths[1] == paths[0] and decisions[1] == decisions[0]
    record = _result(tmp_path / "out")
    assert record["world"]["sharded"] and record["world"]["processes"] == 2
    assert sum(record["world"]["frozen_bytes_local"]) == record["world"]["frozen_bytes_total"]
    phases = [p["phase"] for p in record["auto"]["phases"]]
    assert phases == [p["phase"] for p in paths[0]["phases"]] and "search" in phases  # the logged path, searched
    _check_one_publish(done, tmp_path / "out", record)
