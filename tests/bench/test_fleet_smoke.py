"""CPU smoke test of the fleet benchmark (bench/fleet): a release of 3 adapters, before (one process per adapter
on a fresh node) and after (``readapt-batch``, 2 adapters per process, the node's shared base cache).

The counts come from the real S3 server's access log and from the worker's counters (the bench fails when
the two disagree on the base's bytes); the test fails if batching stops sharing the base's load or the cache
stops sharing its download. Timings are not checked (bench/fleet/README.md has the committed run).
"""

from __future__ import annotations

import json

import pytest

from bench.fleet import run


@pytest.mark.slow
def test_fleet_bench_counts_downloads_and_loads(tmp_path):
    out = tmp_path / "results"
    argv = ["--shape", "tiny", "--adapters", "3", "--batch", "2", "--arms", "solo-fresh,batch", "--steps", "1"]
    assert run.main([*argv, "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    result = json.loads((out / "fleet.json").read_text())
    base_bytes = result["base_bytes"]
    assert base_bytes > 0

    before = result["arms"]["solo-fresh"]
    assert before["processes"] == 3 and before["model_loads"] == 3 and before["restores"] == 0
    assert before["server"]["base_downloads"] == 3  # every fresh node downloads the whole base
    assert before["server"]["base_bytes"] == before["worker_base_bytes"] == 3 * base_bytes

    after = result["arms"]["batch"]
    assert after["processes"] == 2 and [b["adapters"] for b in after["batches"]] == [2, 1]
    assert after["model_loads"] == 2 and after["restores"] == 1  # one load per batch, the pristine copy after
    assert [b["counters"]["model_loads"] for b in after["batches"]] == [1, 1]
    assert after["server"]["base_downloads"] == 1  # one node: the second batch finds the base in its cache
    assert after["server"]["base_bytes"] == after["worker_base_bytes"] == base_bytes
    assert [b["counters"]["base_bytes_downloaded"] for b in after["batches"]] == [base_bytes, 0]
    assert len(after["per_adapter"]) == 3 and all(r["adapt_s"] > 0 for r in after["per_adapter"])

    seconds = result["release"]["process_seconds"]
    assert (
        seconds["solo-fresh"] > 0
        and seconds["batch"] > 0
        and seconds["saved_vs_solo-fresh"] == seconds["solo-fresh"] - seconds["batch"]
    )
    assert not (tmp_path / "work" / "nodes" / "fresh-2").exists()  # a fresh node's copy is dropped after its Job


def test_goals_scale_a_solo_subset_to_the_release():
    """The solo arms run on a subset: loads scale with the adapters, fresh-node downloads too, shared ones not."""
    solo = {"adapters": 10, "model_loads": 10, "server": {"base_downloads": 10}}
    assert run.goals("solo-fresh", solo, 200, 50, nodes=1) == {
        "max_loads": 4,
        "loads": 200,
        "loads_met": False,
        "downloads": 200,
        "downloads_per_node": 200.0,
        "downloads_met": False,
    }
    shared = {"adapters": 10, "model_loads": 10, "server": {"base_downloads": 2}}
    assert run.goals("solo-shared", shared, 200, 50, nodes=2)["downloads_met"] is True
    batch = {"adapters": 200, "model_loads": 4, "server": {"base_downloads": 1}}
    assert run.goals("batch", batch, 200, 50, nodes=1)["loads_met"] is True
    assert run.goals("batch", {**batch, "model_loads": 5}, 200, 50, nodes=1)["loads_met"] is False
