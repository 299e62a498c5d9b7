"""Fusion of Π_r(ΔΘ) and the old adapter into rank-r LoRA factors, without the dense d_out × d_in matrix.

For one module, with PEFT scaling s and unit-scaled delta factors (B_Δ, A_Δ):

    s · B A  ≈  α · B_Δ A_Δ  +  β · s · B_i A_i                       (paper Eq. 7)

The right-hand side is [α/s·B_Δ, β·B_i] [A_Δ; A_i] · s, of rank ≤ 2r. With QR decompositions
[B_Δ, B_i] = Q_B R_B and [A_Δ; A_i]ᵀ = Q_A R_A, the product is Q_B (R_B D R_Aᵀ) Q_Aᵀ with
D = diag(α/s·1_r, β·1_r); an SVD of the 2r × 2r core M = R_B D R_Aᵀ = U Σ Vᵀ gives the best rank-r
approximation B = Q_B U_r Σ_r^½, A = Σ_r^½ V_rᵀ Q_Aᵀ. The QRs do not depend on (α, β), so
:class:`FusionBasis` computes them once per module and each probe costs one tiny SVD and two thin products.

The search probes exactly this truncated rank-r start, the same one fine-tuning begins from; the energy it
discards is reported as ``truncation_error``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class FusedFactors:
    """Rank-r factors of one fused start: ``lora_b`` ``d_out × r``, ``lora_a`` ``r × d_in``."""

    lora_b: Tensor
    lora_a: Tensor
    truncation_error: float  # ‖sum − B A‖_F / ‖sum‖_F, from the discarded core singular values


class FusionBasis:
    """Per-module QR factors of the stacked delta and adapter factors, reused across (α, β) probes.

    Args:
        delta_b: ``d_out × r`` unit-scaled Π_r factor.
        delta_a: ``r × d_in`` unit-scaled Π_r factor.
        adapter_b: ``d_out × r`` old adapter's ``lora_B``.
        adapter_a: ``r × d_in`` old adapter's ``lora_A``.
        scaling: the adapter's PEFT scaling s (lora_alpha / r, or / √r for rsLoRA).
    """

    def __init__(self, delta_b: Tensor, delta_a: Tensor, adapter_b: Tensor, adapter_a: Tensor, scaling: float):
        if delta_b.shape[0] != adapter_b.shape[0] or delta_a.shape[1] != adapter_a.shape[1]:
            raise ValueError(
                f"delta factors {tuple(delta_b.shape)}·{tuple(delta_a.shape)} do not match adapter factors "
                f"{tuple(adapter_b.shape)}·{tuple(adapter_a.shape)}"
            )
        self.rank = adapter_b.shape[1]
        self.delta_rank = delta_b.shape[1]
        self.scaling = float(scaling)
        stacked_b = torch.cat([delta_b.float(), adapter_b.float()], dim=1)  # d_out × (rΔ + r)
        stacked_a = torch.cat([delta_a.float(), adapter_a.float()], dim=0)  # (rΔ + r) × d_in
        self.q_b, self.r_b = torch.linalg.qr(stacked_b)  # d_out × k, k × k
        q_a, self.r_a = torch.linalg.qr(stacked_a.T)  # d_in × k, k × k
        self.q_a_t = q_a.T  # k × d_in

    def fuse(self, alpha: float, beta: float) -> FusedFactors:
        """The best rank-r factors of α/s·B_Δ A_Δ + β·B_i A_i (so that s·B A is Eq. 7)."""
        weights = torch.cat(
            [
                torch.full((self.delta_rank,), alpha / self.scaling, device=self.r_b.device),
                torch.full((self.rank,), float(beta), device=self.r_b.device),
            ]
        )
        core = (self.r_b * weights) @ self.r_a.T  # k × k
        u, s, vh = torch.linalg.svd(core)
        kept = s[: self.rank]
        total = torch.linalg.vector_norm(s)
        error = (torch.linalg.vector_norm(s[self.rank :]) / total).item() if total > 0 else 0.0
        root = kept.sqrt()
        lora_b = self.q_b @ (u[:, : self.rank] * root)
        lora_a = (root[:, None] * vh[: self.rank]) @ self.q_a_t
        return FusedFactors(lora_b, lora_a, error)
