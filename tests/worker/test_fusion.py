"""Fusion without the dense matrix equals the dense truncated computation."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from relora_worker.fusion import FusionBasis, FusionBatch, ModuleFactors


def factors(seed: int, d_out: int = 40, d_in: int = 24, r: int = 4) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(d_out, r, generator=g),
        torch.randn(r, d_in, generator=g),
        torch.randn(d_out, r, generator=g),
        torch.randn(r, d_in, generator=g),
    )


@pytest.mark.parametrize(("alpha", "beta"), [(0.4, 1.6), (-1.5, 0.7), (0.0, 1.0), (1.0, 0.0), (-0.3, 2.9)])
def test_fused_factors_equal_dense_truncation(alpha: float, beta: float) -> None:
    delta_b, delta_a, adapter_b, adapter_a = factors(7)
    scaling = 2.0
    fused = FusionBasis(delta_b, delta_a, adapter_b, adapter_a, scaling).fuse(alpha, beta)
    dense = fuse_dense_reference(delta_b, delta_a, adapter_b, adapter_a, scaling, alpha, beta, rank=4)
    assert fused.lora_b.shape == (40, 4) and fused.lora_a.shape == (4, 24)
    error = torch.linalg.matrix_norm(fused.lora_b.double() @ fused.lora_a.double() - dense)
    assert error / torch.linalg.matrix_norm(dense).clamp_min(1e-12) < 1e-5


def test_transfer_point_reproduces_the_old_adapter_exactly() -> None:
    delta_b, delta_a, adapter_b, adapter_a = factors(8)
    fused = FusionBasis(delta_b, delta_a, adapter_b, adapter_a, 0.5).fuse(0.0, 1.0)
    assert torch.allclose(fused.lora_b @ fused.lora_a, adapter_b @ adapter_a, atol=1e-4)
    assert fused.truncation_error < 1e-5


def test_truncation_error_is_the_discarded_energy() -> None:
    delta_b, delta_a, adapter_b, adapter_a = factors(9)
    fused = FusionBasis(delta_b, delta_a, adapter_b, adapter_a, 1.0).fuse(0.8, 1.2)
    full = 0.8 * delta_b.double() @ delta_a.double() + 1.2 * adapter_b.double() @ adapter_a.double()
    s = torch.linalg.svdvals(full)
    assert fused.truncation_error == pytest.approx((s[4:].norm() / s.norm()).item(), rel=1e-4)


def test_mismatched_shapes_are_rejected() -> None:
    delta_b, delta_a, adapter_b, adapter_a = factors(10)
    with pytest.raises(ValueError, match="do not match"):
        FusionBasis(delta_b[:-1], delta_a, adapter_b, adapter_a, 1.0)


def test_batch_of_mixed_shapes_equals_each_module_alone() -> None:
    # Shapes interleave so that a grouping bug (wrong order, wrong member) shows; scalings differ within a group.
    shapes = [(40, 24), (16, 40), (40, 24), (24, 24), (16, 40), (40, 24)]
    modules = []
    for seed, (d_out, d_in) in enumerate(shapes):
        delta_b, delta_a, adapter_b, adapter_a = factors(20 + seed, d_out, d_in)
        modules.append(ModuleFactors(delta_b, delta_a, adapter_b, adapter_a, 0.5 + seed))
    lora_b, lora_a, errors = FusionBatch(modules).fuse(-0.7, 1.3)
    assert errors.shape == (len(shapes),)
    for index, module in enumerate(modules):
        dense = fuse_dense_reference(
            module.delta_b, module.delta_a, module.adapter_b, module.adapter_a, module.scaling, -0.7, 1.3, rank=4
        )
        got = lora_b[index].double() @ lora_a[index].double()
        assert got.shape == shapes[index]
        assert torch.linalg.matrix_norm(got - dense) / torch.linalg.matrix_norm(dense) < 1e-5
        alone = FusionBasis(module.delta_b, module.delta_a, module.adapter_b, module.adapter_a, module.scaling)
        assert float(errors[index]) == pytest.approx(alone.fuse(-0.7, 1.3).truncation_error, rel=1e-5)


def fuse_dense_reference(
    delta_b: Tensor,
    delta_a: Tensor,
    adapter_b: Tensor,
    adapter_a: Tensor,
    scaling: float,
    alpha: float,
    beta: float,
    rank: int,
) -> Tensor:
    """The dense rank-r truncation of α/s·B_Δ A_Δ + β·B_i A_i (``d_out × d_in``): the reference."""
    dense = alpha / scaling * delta_b.double() @ delta_a.double() + beta * adapter_b.double() @ adapter_a.double()
    u, s, vh = torch.linalg.svd(dense, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]
