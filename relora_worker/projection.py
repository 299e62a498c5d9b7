"""Π_r: the best rank-r approximation of a base-model delta, as LoRA factors (pure; tensors in, out).

For one module with old weight W and new weight W' (both d_out × d_in), ΔW = W' − W is decomposed in
float32 and truncated to rank r: ΔW ≈ U_r S_r V_rᵀ. By Eckart–Young this is the best rank-r approximation in
Frobenius norm, and its squared error is the sum of the discarded squared singular values. The factors are
returned at unit scaling, balanced as B = U_r S_r^½ and A = S_r^½ V_rᵀ; an adapter with PEFT scaling s uses
B/√s·A/√s or, as :mod:`relora_worker.fusion` does, divides the product by s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ProjectedDelta:
    """Rank-r factors of one module's delta.

    Attributes:
        delta_b: ``d_out × r`` float32.
        delta_a: ``r × d_in`` float32.
        singular_values: the r kept singular values, descending.
        delta_norm: ‖ΔW‖_F.
        residual_norm: ‖ΔW − B A‖_F (computed exactly, not estimated).
    """

    delta_b: Tensor
    delta_a: Tensor
    singular_values: Tensor
    delta_norm: float
    residual_norm: float


def low_rank_factors(
    delta: Tensor, rank: int, method: str = "exact", oversample: int = 8, power_iterations: int = 4
) -> tuple[Tensor, Tensor, Tensor]:
    """Truncated SVD of ``delta`` (``d_out × d_in``) as balanced factors.

    Args:
        delta: ``d_out × d_in`` matrix; computed in float32 on its own device.
        rank: r; capped at min(d_out, d_in).
        method: ``"exact"`` (``torch.linalg.svd``) or ``"randomized"`` (``torch.svd_lowrank``).
        oversample: extra columns of the randomized range finder.
        power_iterations: subspace iterations of the randomized range finder.

    Returns:
        ``(B, A, S)`` with B ``d_out × r``, A ``r × d_in``, S ``r`` such that B A ≈ delta.
    """
    delta = delta.float()
    r = min(rank, *delta.shape)
    if method == "exact":
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        u, s, vh = u[:, :r], s[:r], vh[:r]
    elif method == "randomized":
        q = min(r + oversample, *delta.shape)
        u, s, v = torch.svd_lowrank(delta, q=q, niter=power_iterations)
        u, s, vh = u[:, :r], s[:r], v[:, :r].T
    else:
        raise ValueError(f"unknown SVD method {method!r}: expected 'exact' or 'randomized'")
    root = s.clamp_min(0).sqrt()
    return u * root, root[:, None] * vh, s


def project_delta(
    old_weight: Tensor,
    new_weight: Tensor,
    rank: int,
    method: str = "exact",
    oversample: int = 8,
    power_iterations: int = 4,
) -> ProjectedDelta:
    """Π_r(W' − W) for one module; both weights ``d_out × d_in`` (any dtype, same device)."""
    if old_weight.shape != new_weight.shape:
        raise ValueError(f"shapes differ: old {tuple(old_weight.shape)} vs new {tuple(new_weight.shape)}")
    delta = new_weight.float() - old_weight.float()
    b, a, s = low_rank_factors(delta, rank, method, oversample, power_iterations)
    residual = torch.linalg.matrix_norm(delta - b @ a).item()
    return ProjectedDelta(b, a, s, torch.linalg.matrix_norm(delta).item(), residual)
