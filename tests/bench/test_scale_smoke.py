"""CPU smoke test of the LLM-scale benchmark's code path (bench/scale) with a tiny shape.

It runs what the GPU run runs — build the models, ``relora project-delta`` and ``relora readapt`` (relora and
transfer-ft) through the CLI, the per-operation measurements in a fresh process — and checks the records,
not the timings (those come from the H200 run under bench/results/scale/).
"""

from __future__ import annotations

import json

from bench.scale import run


def test_scale_bench_cpu_smoke(tmp_path):
    out = tmp_path / "results"
    assert run.main(["--shapes", "tiny", "--device", "cpu", "--out", str(out), "--work", str(tmp_path / "work"),
                     "--steps", "6", "--train-rows", "128", "--eval-rows", "16", "--val-rows", "16", "--words", "12",
                     "--mfu-seq", "32", "--mfu-batch", "2", "--mfu-steps", "2", "--checkpointing",
                     "--readapt-extra", "--search-budget 6"]) == 0
    record = json.loads((out / "tiny.json").read_text())
    assert record["project_delta"]["svd"] == "randomized"  # the default for r <= 64
    assert record["project_delta"]["modules"] == 2 * 4  # 2 layers × q, k, v, o
    for strategy in ("relora", "transfer-ft"):
        run_record = record["readapt"][strategy]
        assert run_record["steps"] == 6
        assert run_record["seconds"]["end_to_end"] >= run_record["seconds"]["finetune"] > 0
        assert run_record["memory"]["base_dtype"] == "float32"  # a CPU holds the base in float32
        assert run_record["evaluations"] >= 2  # step 0 and the last step at least
    assert len(record["readapt"]["relora"]["probe_seconds"]) == 6
    micro = record["micro"]
    assert micro["eval_rows"] == 16 and micro["val_rows"] == 16
    # the shared-prompt likelihood accuracy computes what the full sequences compute
    assert micro["prefix_vs_full_max_abs_diff"] < 1e-4 and micro["prefix_vs_full_argmax_agreement"] == 1.0
    assert micro["train"]["batch_shape"] == [2, 32] and micro["train"]["flops_required"] > 0
    assert micro["train"]["plan"]["gradient_checkpointing"] is False
    assert micro["train_checkpointing"]["plan"]["gradient_checkpointing"] is True
    # checkpointing keeps less for the backward pass than storing every activation
    assert micro["train_checkpointing"]["saved_for_backward_bytes"] < micro["train"]["saved_for_backward_bytes"]
    summary = json.loads((out / "summary.json").read_text())
    assert "error" not in summary["shapes"]["tiny"]
    assert not (tmp_path / "work" / "tiny").exists()  # the built models are removed (an 8B pair is 32 GB)
