"""Π_r: recovers planted low-rank deltas; its error equals the discarded singular values; checkpoint I/O."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from relora_worker.config import ProjectionConfig
from relora_worker.errors import BadInputError
from relora_worker.project import Projection, compute_projection
from relora_worker.projection import project_delta


def planted(d_out: int, d_in: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d_out, rank, generator=g) @ torch.randn(rank, d_in, generator=g)


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_recovers_planted_rank_r_delta(method: str) -> None:
    old = torch.randn(96, 64, generator=torch.Generator().manual_seed(1))
    delta = planted(96, 64, 6, seed=2)
    result = project_delta(old, old + delta, rank=6, method=method)
    assert result.delta_b.shape == (96, 6) and result.delta_a.shape == (6, 64)
    relative = torch.linalg.matrix_norm(result.delta_b @ result.delta_a - delta) / torch.linalg.matrix_norm(delta)
    assert relative < 1e-4
    assert result.residual_norm / result.delta_norm < 1e-4


@pytest.mark.parametrize("method", ["exact", "randomized"])
def test_error_matches_discarded_singular_values(method: str) -> None:
    g = torch.Generator().manual_seed(3)
    delta = planted(80, 50, 4, seed=4) + 0.3 * torch.randn(80, 50, generator=g)
    old = torch.zeros(80, 50)
    result = project_delta(old, delta, rank=4, method=method, power_iterations=6)
    singular = torch.linalg.svdvals(delta.double())
    expected = singular[4:].pow(2).sum().sqrt().item()
    tolerance = 1e-4 if method == "exact" else 2e-2  # randomized is near-optimal, not optimal
    assert result.residual_norm == pytest.approx(expected, rel=tolerance)
    assert result.residual_norm >= expected * (1 - 1e-5)  # nothing beats Eckart–Young
    assert torch.allclose(result.singular_values.double(), singular[:4], rtol=1e-3 if method == "exact" else 2e-2)


def _checkpoint(folder: Path, tensors: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "test"}))
    return folder


def test_checkpoints_projected_module_by_module(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(5)
    old = {f"layers.{i}.{m}.weight": torch.randn(32, 16, generator=g) for i in range(2) for m in ("q", "v", "o")}
    old["embed.weight"] = torch.randn(10, 16, generator=g)
    new = {k: v + planted(*v.shape, 2, seed=i) for i, (k, v) in enumerate(old.items())}
    projection = compute_projection(
        _checkpoint(tmp_path / "a", old),
        _checkpoint(tmp_path / "b", new),
        ["q", "v"],
        ProjectionConfig(rank=2, device="cpu"),
        ("v1", "v2"),
    )
    assert sorted(projection.factors) == ["layers.0.q", "layers.0.v", "layers.1.q", "layers.1.v"]
    b, a = projection.factors["layers.1.v"]
    assert torch.allclose(b @ a, new["layers.1.v.weight"] - old["layers.1.v.weight"], atol=1e-4)
    assert projection.meta["old_release"] == "v1" and projection.meta["rank"] == 2
    projection.save(tmp_path / "saved")
    again = Projection.load(tmp_path / "saved")
    assert torch.equal(again.factors["layers.0.q"][0], projection.factors["layers.0.q"][0])


def test_shape_change_between_releases_suggests_scratch(tmp_path: Path) -> None:
    old = _checkpoint(tmp_path / "a", {"l.q.weight": torch.zeros(8, 4)})
    new = _checkpoint(tmp_path / "b", {"l.q.weight": torch.zeros(8, 6)})
    with pytest.raises(BadInputError, match=r"changed shape.*scratch"):
        compute_projection(old, new, ["q"], ProjectionConfig(rank=2, device="cpu"))


def test_targets_matching_nothing_are_named(tmp_path: Path) -> None:
    old = _checkpoint(tmp_path / "a", {"l.q.weight": torch.zeros(8, 4)})
    new = _checkpoint(tmp_path / "b", {"l.q.weight": torch.ones(8, 4)})
    with pytest.raises(BadInputError, match=r"gate_proj.*match no"):
        compute_projection(old, new, ["gate_proj"], ProjectionConfig(rank=2, device="cpu"))


def test_pickled_checkpoints_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save({"l.q.weight": torch.zeros(2, 2)}, folder / "pytorch_model.bin")
    with pytest.raises(BadInputError, match=r"pickled.*refusing"):
        compute_projection(folder, folder, ["q"], ProjectionConfig(rank=1, device="cpu"))
