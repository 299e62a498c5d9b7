"""``relora readapt --shard-base always`` on 2 gloo ranks (issue 18): the frozen base sharded with FSDP2.

Each rank loads only its Shard(0) rows of the base from the safetensors files (relora_worker.sharded_load) and
every forward pass all-gathers them, so the ranks must run equal numbers of passes: a bug there hangs, so every
launch has a timeout that fails the test instead. The run must agree with the single process (same α*, β*,
probe losses, quality within a few rows), publish exactly one version, and hold about half the frozen bytes on
each rank.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from relora_worker import distributed
from relora_worker.cli import build_parser, readapt_config_from
from relora_worker.config import ReadaptConfig
from relora_worker.distributed import World, shard_decision
from relora_worker.errors import BadInputError
from relora_worker.modelio import load_base_model
from relora_worker.sharded_load import base_weight_bytes
from relora_worker.synthetic import Scenario
from tests.worker.conftest import readapt_args
from tests.worker.test_distributed import CHECK, EXTRA, _env, _result, _single, _torchrun

# An odd probe (63 rows: shares of 31 and 32) so the shares are uneven.
SHARDED = (*EXTRA, "--val-size", "63")
LAUNCH_TIMEOUT = 240  # s: a run takes ~25 s on two shared cores; a pass-count mismatch would wait forever


def _launch(program: list[str], logs: Path) -> tuple[subprocess.CompletedProcess, dict[int, str]]:
    try:
        return _torchrun(program, logs, timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"2 ranks did not finish in {LAUNCH_TIMEOUT} s: unequal collective passes (a hang)")


@pytest.mark.parametrize("scenario_name", ["scenario_cls", "scenario_lm"])
def test_sharded_base_matches_one_process_and_publishes_once(
    scenario_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    scenario: Scenario = request.getfixturevalue(scenario_name)
    single = _single(scenario, tmp_path / "single", *SHARDED)
    program = ["-m", "relora_worker", *readapt_args(scenario, tmp_path / "pair", *SHARDED, "--shard-base", "always")]
    done, stdout = _launch(program, tmp_path / "logs")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert json.loads(stdout[0])["status"] == single["status"] and stdout[1].strip() == ""

    one, two = _result(tmp_path / "single"), _result(tmp_path / "pair")
    world = two["world"]
    assert world["sharded"] and world["shard_base"] == "always" and world["processes"] == 2
    # Each rank holds its half of every frozen weight (an odd row count: one more row on rank 0), not a copy.
    assert sum(world["frozen_bytes_local"]) == world["frozen_bytes_total"]
    for local in world["frozen_bytes_local"]:
        assert 0.45 * world["frozen_bytes_total"] <= local <= 0.55 * world["frozen_bytes_total"]

    assert (two["alpha"], two["beta"]) == (one["alpha"], one["beta"])
    split = [(p["alpha"], p["beta"]) for p in two["search"]["probes"]]
    assert split == [(p["alpha"], p["beta"]) for p in one["search"]["probes"]]
    losses = [p["loss"] for p in two["search"]["probes"]]
    assert losses == pytest.approx([p["loss"] for p in one["search"]["probes"]], rel=1e-4)
    assert two["initial_quality"] == pytest.approx(one["initial_quality"], abs=1e-6)
    assert two["quality"] == pytest.approx(one["quality"], abs=3 / one["sizes"]["eval"])
    assert [p["step"] for p in two["finetune"]["trajectory"]] == [p["step"] for p in one["finetune"]["trajectory"]]

    versions = [p for p in (tmp_path / "pair.versions").iterdir() if not p.name.startswith(".")]  # .lock
    assert len(versions) == 1, versions  # rank 0 alone published
    published = json.loads((versions[0] / "result.json").read_text())
    assert published["world"]["frozen_bytes_local"] == world["frozen_bytes_local"]
    assert two["base"]["model_loads"] == 1


def test_uneven_and_empty_shares_run_equal_passes_with_the_single_process_values(
    scenario_cls: Scenario, scenario_lm: Scenario, tmp_path: Path
) -> None:
    """One row per pass on shares of 2/3 probe rows, 3/4 evaluation rows and 0/1 (an empty share): the short
    rank runs filler passes, both ranks run as many passes, and the values are the whole base's in one process
    (classification, and likelihood accuracy's trunk and output layer called directly)."""
    folders = [str(Path(s.base_v2).parent) for s in (scenario_cls, scenario_lm)]
    done, stdout = _launch([CHECK, "passes", *folders], tmp_path / "logs")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    ranks = [json.loads(stdout[rank])["reports"] for rank in (0, 1)]
    for mine, theirs in zip(*ranks, strict=True):
        assert mine["passes"] == theirs["passes"] > 0, mine["case"]
        assert mine["filler_passes"] + theirs["filler_passes"] >= 3, mine["case"]  # val, quality, empty share
        for report in (mine, theirs):
            val, quality, one_row = report["reference"]
            assert report["val_loss"] == pytest.approx(val, rel=1e-5)
            assert report["quality"] == pytest.approx(quality, abs=1e-6)
            assert report["one_row_val_loss"] == pytest.approx(one_row, rel=1e-5)


def test_a_tied_output_layer_is_sharded_as_the_root_and_scored_through_the_whole_model(tmp_path: Path) -> None:
    done, stdout = _launch([CHECK, "tied", str(tmp_path / "tied")], tmp_path / "logs")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    for rank in (0, 1):
        report = json.loads(stdout[rank])
        assert report["tied"] and report["full_forward"] and report["halved"]  # each rank: about half the base
        assert report["sharded"] == pytest.approx(report["reference"], rel=1e-6)


def test_exact_match_is_refused_on_a_sharded_base(scenario_lm: Scenario, tmp_path: Path) -> None:
    """Generation stops when a rank's own rows are done: refused (exit 2, through the launcher) before loading."""
    out = tmp_path / "out"
    args = readapt_args(scenario_lm, out, *EXTRA, "--metric", "exact-match", "--shard-base", "always")
    command = [sys.executable, "-m", "relora_worker.launch", "--nproc-per-node", "2", *args]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "--metric exact-match does not run on a sharded base" in json.loads(done.stdout)["error"]
    assert not out.exists()


def test_shard_decision_follows_the_option_and_the_world(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert shard_decision("always", cpu, 10**12) == (False, "one process")  # a world of one never shards
    monkeypatch.setattr(distributed, "_current", World(1, 2))
    assert shard_decision("always", cpu, 1) == (True, "--shard-base always")
    assert shard_decision("never", cpu, 10**12) == (False, "--shard-base never")
    assert shard_decision("auto", cpu, 10**12) == (False, "auto: not on GPUs")


def test_shard_base_is_validated_by_name() -> None:
    assert ReadaptConfig().shard_base == "auto"
    with pytest.raises(BadInputError, match=r"invalid shard_base='sometimes': expected one of never, always, auto"):
        ReadaptConfig(shard_base="sometimes")
    args = build_parser().parse_args(["readapt", "--threshold", "0.5", "--shard-base", "never"])
    assert readapt_config_from(args).shard_base == "never"


def test_auto_weighs_the_base_from_its_headers_as_it_would_be_loaded(scenario_lm: Scenario) -> None:
    folder = Path(scenario_lm.base_v2)
    model = load_base_model(folder, "causal-lm", None, None)
    loaded = sum(p.numel() * p.element_size() for p in model.parameters())
    assert base_weight_bytes(folder, torch.device("cpu")) == loaded  # float32 on a CPU, untied head
