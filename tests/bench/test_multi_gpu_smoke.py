"""CPU smoke test of the multi-GPU benchmark's code path (bench/scale/multi_gpu.py) with a tiny shape.

The same path as the GPU run, on gloo ranks: the layer-by-layer build, then per world size ``relora launch``
with project-delta and readapt, rank 0's records and the goal bookkeeping. It checks the records (one
publisher, the world's size, a projection per world, throughput computed), not timings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.scale import multi_gpu
from bench.scale.build import SHAPES, model_config
from bench.scale.stream_build import INDEX, with_layers


def test_multi_gpu_bench_cpu_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two ranks share the machine's cores
    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    out, work = tmp_path / "results", tmp_path / "work"
    assert multi_gpu.main(["--shape", "tiny", "--device", "cpu", "--nproc", "1,2", "--shard-base", "always",
                           "--steps", "4", "--batch-size", "8", "--train-rows", "64", "--eval-rows", "17",
                           "--val-rows", "16", "--words", "12", "--readapt-extra", "--search grid --grid-size 2",
                           "--out", str(out), "--work", str(work), "--keep"]) == 0  # fmt: skip
    record = json.loads((out / "tiny.json").read_text())
    for nproc in ("1", "2"):
        world = record["worlds"][nproc]
        assert world["readapt"]["world"]["processes"] == int(nproc)
        assert world["readapt"]["steps"] == 4 and world["readapt"]["rows_per_second"] > 0
        assert world["readapt"]["mfu"] > 0
        assert len(world["readapt"]["probe_seconds"]) >= 4  # the 2 × 2 grid at least
        published = [p for p in (work / "tiny" / f"out-{nproc}.versions").iterdir() if not p.name.startswith(".")]
        assert len(published) == 1  # rank 0 alone published
        projections = [p for p in (work / "tiny" / f"projection-{nproc}.versions").iterdir()
                       if not p.name.startswith(".")]  # fmt: skip
        assert len(projections) == 1
    one, two = (record["worlds"][n]["readapt"] for n in ("1", "2"))
    assert len(one["probe_seconds"]) == len(two["probe_seconds"])  # the same search on one process and on two
    sharded = two["world"]
    assert sharded["sharded"] and sum(sharded["frozen_bytes_local"]) == sharded["frozen_bytes_total"]
    assert max(sharded["frozen_bytes_local"]) < 0.6 * sharded["frozen_bytes_total"]  # FSDP2: half each
    # The release rewrote only the target files; the rest are v1's bytes, hard-linked (one copy on disk).
    v1, v2 = Path(record["build"]["base_v1"]), Path(record["build"]["base_v2"])
    index = json.loads((v2 / INDEX).read_text())["weight_map"]
    for file in set(index.values()):
        same_inode = (v1 / file).stat().st_ino == (v2 / file).stat().st_ino
        assert same_inode == file.startswith("rest-"), file
    assert all(file.startswith("targets-") for key, file in index.items() if key.endswith("q_proj.weight"))
    assert record["goals"] == {}  # the goals are stated for the 70B and 8B shapes only


@pytest.mark.parametrize("shape", sorted(set(SHAPES) - {"tiny"}))
def test_fewer_layers_keep_a_config_that_saves(shape: str, tmp_path: Path) -> None:
    """``--layers`` on every shape: the cut config keeps the widths and saves (Qwen2's per-layer
    ``layer_types`` once refused it: "num_hidden_layers (2) must be equal to the number of layer_types (24)")."""
    from transformers import AutoConfig

    whole = model_config(shape)
    cut = with_layers(model_config(shape), 2)
    cut.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.num_hidden_layers == 2
    assert (loaded.hidden_size, loaded.intermediate_size) == (whole.hidden_size, whole.intermediate_size)
    assert len(getattr(loaded, "layer_types", None) or [None, None]) == 2
