"""``relora project-delta`` across 2 gloo ranks (issue 18) on the tiny synthetic scenario.

Each rank projects a share of the targeted modules and rank 0 alone publishes: the projection must be the
single process's (same keys, same factors, same metadata), published once; a failure on one rank (a NaN in a
weight only rank 1 reads) or on all (targets that match nothing) must end every rank with the single
process's exit code, with nothing published.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from relora_worker.config import ProjectionConfig
from relora_worker.modelio import Checkpoint, target_weight_keys
from relora_worker.project import Projection, checkpoint_pair, project_modules
from relora_worker.sharded_projection import shares
from relora_worker.storage import fetch
from relora_worker.synthetic import Scenario
from tests.worker.test_distributed import _env

# A 64×64 Llama-like block: q/o, GQA's k/v (a quarter), the MLP's gate/up/down (3.5×), two layers.
LLAMA = {
    f"layers.{i}.{name}.weight": size
    for i in range(2)
    for name, size in {"q": 4096, "k": 1024, "v": 1024, "o": 4096, "gate": 14336, "up": 14336, "down": 14336}.items()
}


def _args(scenario: Scenario, out: Path, targets: str = "") -> list[str]:
    # --rank 4 takes svd auto's randomized SVD: the case where a module's factors depend on the generator.
    return ["project-delta", "--old-model", scenario.base_v1, "--new-model", scenario.base_v2,
            "--output", str(out), "--rank", "4", "--device", "cpu", "--json", "--progress", "off",
            "--target-modules", targets or ",".join(scenario.target_modules)]  # fmt: skip


def _single(args: list[str]) -> tuple[int, dict]:
    """The command in one fresh process, as each rank is (one thread; torch seeds each process's generator at
    random, which project-delta must not depend on): its exit code and JSON summary."""
    done = subprocess.run([sys.executable, "-m", "relora_worker", *args], env=_env(), capture_output=True, text=True)
    return done.returncode, json.loads(done.stdout)


def _launch(args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "relora_worker.launch", "--nproc-per-node", "2", *args]
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)


def _two_ranks(args: list[str]) -> list[subprocess.CompletedProcess]:
    """Rank 0 and rank 1 as torchrun would start them (its environment, env:// rendezvous), each process's
    own exit code, stdout and stderr kept apart (torchrun reports only 1 when any rank fails)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    common = {**_env(), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    ranks = [
        subprocess.Popen(
            [sys.executable, "-m", "relora_worker", *args],
            env={**common, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [rank.communicate(timeout=600) for rank in ranks]
    return [
        subprocess.CompletedProcess(rank.args, rank.returncode, out, err)
        for rank, (out, err) in zip(ranks, outputs, strict=True)
    ]


def _versions(out: Path) -> list[str]:
    folder = out.parent / f"{out.name}.versions"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


def test_shares_cover_every_weight_once_balanced_by_size() -> None:
    for ranks in (1, 2, 3, 4, 40):
        plan = shares(LLAMA, ranks)
        assert len(plan) == ranks and all(share == sorted(share) for share in plan)
        assert sorted(k for share in plan for k in share) == sorted(LLAMA)
        loads = [sum(LLAMA[k] for k in share) for share in plan]
        assert max(loads) - min(loads) <= max(LLAMA.values())
        assert shares(dict(reversed(LLAMA.items())), ranks) == plan  # from the keys, not their order
    # Two ranks: each gets three of the six MLP weights and half the attention, not a layer each with
    # whatever the key order puts there.
    first, second = (sum(LLAMA[k] for k in share) for share in shares(LLAMA, 2))
    assert first == second == sum(LLAMA.values()) // 2
    assert shares({"a": 1}, 3) == [["a"], [], []]  # more ranks than weights: the others project nothing


@pytest.mark.parametrize("svd", ["randomized", "exact"])
def test_shares_replay_the_draws_of_the_others(svd: str, scenario_cls: Scenario) -> None:
    """Each share, projected from the same generator state, gives the single process's factors and leaves the
    generator where the single process leaves it: the randomized SVD draws from it, so a share replays the
    draws of the modules it skips."""
    old, new, keys = checkpoint_pair(Path(scenario_cls.base_v1), Path(scenario_cls.base_v2), ["query", "dense"])
    config = ProjectionConfig(rank=4, svd=svd, device="cpu")
    cpu = torch.device("cpu")
    start = torch.get_rng_state()
    whole = project_modules(old, new, keys, config, cpu)
    end = torch.get_rng_state()
    factors = {}
    for share in shares({k: math.prod(new.shape(k)) for k in keys}, 3):
        torch.set_rng_state(start)
        part = project_modules(old, new, keys, config, cpu, share=set(share))
        # The draws after the share's last module too: readapt trains on from here, alike on every rank.
        assert torch.equal(torch.get_rng_state(), end), share
        assert len(part.factors) == len(share) and part.bytes_read == sum(8 * math.prod(new.shape(k)) for k in share)
        factors.update(part.factors)
    assert sorted(factors) == sorted(whole.factors)
    for module, (b, a) in whole.factors.items():
        assert torch.equal(factors[module][0], b) and torch.equal(factors[module][1], a), module
    if svd == "randomized":  # the replay matters: the last module projected alone, from the same state, differs
        torch.set_rng_state(start)
        module = keys[-1][: -len(".weight")]
        alone = project_modules(old, new, keys[-1:], config, cpu)
        assert not torch.equal(alone.factors[module][1], whole.factors[module][1])


def test_two_ranks_publish_the_single_process_projection(scenario_cls: Scenario, tmp_path: Path) -> None:
    code, single = _single(_args(scenario_cls, tmp_path / "single"))
    assert code == 0, single
    done = _launch(_args(scenario_cls, tmp_path / "pair"))
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.splitlines()  # rank 0's summary alone
    pair = json.loads(line)
    assert pair["exit_code"] == 0 and pair["modules"] == single["modules"] > 2
    assert _versions(tmp_path / "pair") == [Path(pair["projection_uri"]).name]  # one publish, rank 0's

    with fetch(single["projection_uri"], "projection") as a, fetch(pair["projection_uri"], "projection") as b:
        one, two = Projection.load(a), Projection.load(b)
        manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (a, b)]
    assert list(two.factors) == list(one.factors)
    for module, (b_one, a_one) in one.factors.items():
        b_two, a_two = two.factors[module]
        # The same SVD of the same delta from the same generator state (seeded, then the other rank's draws
        # replayed): bit for bit on the CPU.
        assert torch.equal(b_two, b_one) and torch.equal(a_two, a_one), module
    ranks = two.meta.pop("ranks")
    assert [line["rank"] for line in ranks] == [0, 1] and all(line["modules"] > 0 for line in ranks)
    (whole,) = one.meta.pop("ranks")
    assert sum(line["modules"] for line in ranks) == whole["modules"] == single["modules"]
    pair_bytes = [2 * 4 * math.prod(m["shape"]) for m in one.meta["modules"].values()]  # old + new, float32
    assert sum(line["bytes_read"] for line in ranks) == whole["bytes_read"] == sum(pair_bytes)
    assert abs(ranks[0]["bytes_read"] - ranks[1]["bytes_read"]) <= max(pair_bytes)  # balanced by size
    assert two.meta.pop("seconds") == max(line["seconds"] for line in ranks)
    one.meta.pop("seconds")
    assert two.meta == one.meta  # targets, their hash, rank, SVD, device, every module's norms
    for manifest in manifests:  # the manifest keeps its fields: no per-module or per-rank records
        assert "ranks" not in manifest and "modules" not in manifest and manifest["rank"] == 4


def test_a_weight_only_rank_1_reads_fails_every_rank(scenario_cls: Scenario, tmp_path: Path) -> None:
    """A NaN in a weight of rank 1's share: rank 0 has nothing wrong, yet exits 2 naming rank 1's error."""
    broken = tmp_path / "base_v2_nan"
    shutil.copytree(scenario_cls.base_v2, broken)
    tensors = load_file(broken / "model.safetensors")
    with safe_open(str(broken / "model.safetensors"), "pt") as handle:
        metadata = handle.metadata()
    keys = target_weight_keys(Checkpoint(broken), scenario_cls.target_modules)
    key = shares({k: tensors[k].numel() for k in keys}, 2)[1][-1]
    tensors[key][3, 5] = float("nan")
    save_file(tensors, str(broken / "model.safetensors"), metadata=metadata)
    args = _args(Scenario(**{**vars(scenario_cls), "base_v2": str(broken)}), tmp_path / "out")
    error = f"new base model {broken}: {key} holds NaN or Inf values; its delta cannot be projected"

    code, single = _single(args)
    assert code == 2 and single["error"] == error

    done = _launch(args)
    assert done.returncode == 2, done.stderr[-3000:]  # rank 0's code, as one process's
    (line,) = done.stdout.splitlines()
    assert json.loads(line)["error"] == f"rank 1 of 2 failed: {error}"
    assert f"relora project-delta: error: {error}" in done.stderr  # rank 1 reports its own error
    assert not (tmp_path / "out").exists() and _versions(tmp_path / "out") == []


def test_targets_matching_nothing_fail_both_ranks_alike(scenario_cls: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rank0, rank1 = _two_ranks(_args(scenario_cls, out, "gate_proj"))
    assert (rank0.returncode, rank1.returncode) == (2, 2), rank0.stderr[-2000:] + rank1.stderr[-2000:]
    error = f"target_modules ['gate_proj'] match no 2-D weight in the new base model {scenario_cls.base_v2}"
    assert json.loads(rank0.stdout)["error"] == error and rank1.stdout == ""  # one summary, rank 0's
    for rank in (rank0, rank1):  # every rank says the single process's message, not "rank 0 failed"
        assert f"relora project-delta: error: {error}\n" in rank.stderr
    assert not out.exists() and _versions(out) == []


def test_a_failed_publish_on_rank_0_ends_rank_1_alike(scenario_cls: Scenario, tmp_path: Path) -> None:
    """Rank 0 alone publishes: when that fails (here the versions folder's name is taken by a file, which
    nothing checks before the publish), rank 1, its share long done, exits with rank 0's code, not 0."""
    out = tmp_path / "out"
    (tmp_path / "out.versions").write_text("not a folder")
    rank0, rank1 = _two_ranks(_args(scenario_cls, out))
    assert (rank0.returncode, rank1.returncode) == (1, 1), rank0.stderr[-2000:] + rank1.stderr[-2000:]
    error = json.loads(rank0.stdout)["error"]
    assert error.startswith("internal error: FileExistsError") and str(tmp_path / "out.versions") in error
    assert f"relora project-delta: error: rank 0 of 2 failed: {error}\n" in rank1.stderr
    assert not out.exists()
