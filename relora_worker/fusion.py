"""Fusion of Π_r(ΔΘ) and the old adapter into rank-r LoRA factors, without the dense d_out × d_in matrix.

For one module, with PEFT scaling s and unit-scaled delta factors (B_Δ, A_Δ):

    s · B A  ≈  α · B_Δ A_Δ  +  β · s · B_i A_i                       (paper Eq. 7)

The right-hand side is [α/s·B_Δ, β·B_i] [A_Δ; A_i] · s, of rank ≤ 2r. With QR decompositions
[B_Δ, B_i] = Q_B R_B and [A_Δ; A_i]ᵀ = Q_A R_A, the product is Q_B (R_B D R_Aᵀ) Q_Aᵀ with
D = diag(α/s·1_r, β·1_r); an SVD of the 2r × 2r core M = R_B D R_Aᵀ = U Σ Vᵀ gives the best rank-r
approximation B = Q_B U_r Σ_r^½, A = Σ_r^½ V_rᵀ Q_Aᵀ. The QRs do not depend on (α, β), so they are computed
once; each probe costs one tiny SVD per module and two thin products.

:class:`FusionBatch` does this for every module of a model at once: modules of equal shapes are stacked, so a
probe is one batched core product, one batched SVD and two batched products per shape group — a handful of
kernel launches and no host synchronisation, where a loop over modules paid one of each per module (the
probe's cost on a GPU was dominated by those, not by the arithmetic).

The search probes exactly this truncated rank-r start, the same one fine-tuning begins from; the energy it
discards is reported as the truncation error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ModuleFactors:
    """The inputs of one module's fusion.

    Attributes:
        delta_b: ``d_out × r_Δ`` unit-scaled Π_r factor.
        delta_a: ``r_Δ × d_in`` unit-scaled Π_r factor.
        adapter_b: ``d_out × r`` old adapter's ``lora_B``.
        adapter_a: ``r × d_in`` old adapter's ``lora_A``.
        scaling: the adapter's PEFT scaling s (lora_alpha / r, or / √r for rsLoRA).
    """

    delta_b: Tensor
    delta_a: Tensor
    adapter_b: Tensor
    adapter_a: Tensor
    scaling: float

    def check(self) -> None:
        if self.delta_b.shape[0] != self.adapter_b.shape[0] or self.delta_a.shape[1] != self.adapter_a.shape[1]:
            raise ValueError(
                f"delta factors {tuple(self.delta_b.shape)}·{tuple(self.delta_a.shape)} do not match adapter "
                f"factors {tuple(self.adapter_b.shape)}·{tuple(self.adapter_a.shape)}"
            )

    @property
    def group_key(self) -> tuple[int, int, int, int]:
        return (self.adapter_b.shape[0], self.adapter_a.shape[1], self.delta_b.shape[1], self.adapter_b.shape[1])


@dataclass
class FusedFactors:
    """Rank-r factors of one fused start: ``lora_b`` ``d_out × r``, ``lora_a`` ``r × d_in``."""

    lora_b: Tensor
    lora_a: Tensor
    truncation_error: float  # ‖sum − B A‖_F / ‖sum‖_F, from the discarded core singular values


class _ShapeGroup:
    """The stacked QR factors of G modules of one shape (``d_out``, ``d_in``, ``r_Δ``, ``r``)."""

    def __init__(self, members: list[ModuleFactors]):
        self.delta_rank = members[0].delta_b.shape[1]
        self.rank = members[0].adapter_b.shape[1]
        stacked_b = torch.stack([torch.cat([m.delta_b.float(), m.adapter_b.float()], dim=1) for m in members])
        stacked_a = torch.stack([torch.cat([m.delta_a.float(), m.adapter_a.float()], dim=0) for m in members])
        self.q_b, self.r_b = torch.linalg.qr(stacked_b)  # G × d_out × k, G × k × k
        q_a, self.r_a_t = torch.linalg.qr(stacked_a.transpose(1, 2))  # G × d_in × k, G × k × k
        self.r_a_t = self.r_a_t.transpose(1, 2)  # R_Aᵀ
        self.q_a_t = q_a.transpose(1, 2)  # G × k × d_in
        self.inverse_scaling = torch.tensor([1.0 / m.scaling for m in members], device=self.r_b.device)  # G

    def fuse(self, alpha: float, beta: float) -> tuple[Tensor, Tensor, Tensor]:
        """Stacked ``lora_b`` (G × d_out × r), ``lora_a`` (G × r × d_in) and truncation errors (G)."""
        k = self.delta_rank + self.rank
        weights = torch.full((len(self.inverse_scaling), k), float(beta), device=self.r_b.device)
        weights[:, : self.delta_rank] = (alpha * self.inverse_scaling)[:, None]
        core = (self.r_b * weights[:, None, :]) @ self.r_a_t  # G × k × k
        u, s, vh = torch.linalg.svd(core)
        total = torch.linalg.vector_norm(s, dim=1)
        errors = torch.where(total > 0, torch.linalg.vector_norm(s[:, self.rank :], dim=1) / total, 0.0)
        root = s[:, : self.rank].sqrt()  # G × r
        lora_b = self.q_b @ (u[:, :, : self.rank] * root[:, None, :])
        lora_a = (root[:, :, None] * vh[:, : self.rank]) @ self.q_a_t
        return lora_b, lora_a, errors


class FusionBatch:
    """QR factors of every module, reused across (α, β) probes; modules of equal shapes fused together.

    Args:
        modules: one :class:`ModuleFactors` per adapted module, in the order results are wanted.
    """

    def __init__(self, modules: list[ModuleFactors]):
        for module in modules:
            module.check()
        by_shape: dict[tuple[int, int, int, int], list[int]] = {}
        for index, module in enumerate(modules):
            by_shape.setdefault(module.group_key, []).append(index)
        self._indices = list(by_shape.values())
        self._groups = [_ShapeGroup([modules[i] for i in members]) for members in self._indices]
        self.size = len(modules)

    def fuse(self, alpha: float, beta: float) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """The best rank-r factors of α/s·B_Δ A_Δ + β·B_i A_i for every module (so that s·B A is Eq. 7).

        Returns:
            ``lora_b`` (list of ``d_out × r``), ``lora_a`` (list of ``r × d_in``), in the modules' order, and
            the truncation errors (a tensor of ``len(modules)``, left on the device so that a probe never waits
            for it).
        """
        lora_b: list[Tensor] = [torch.empty(0)] * self.size
        lora_a: list[Tensor] = [torch.empty(0)] * self.size
        errors: list[Tensor] = []
        order: list[int] = []
        for members, group in zip(self._indices, self._groups, strict=True):
            b, a, e = group.fuse(alpha, beta)
            for position, index in enumerate(members):
                lora_b[index], lora_a[index] = b[position], a[position]
            errors.append(e)
            order.extend(members)
        stacked = torch.cat(errors) if errors else torch.zeros(0)
        return lora_b, lora_a, stacked[torch.argsort(torch.tensor(order, device=stacked.device))]


class FusionBasis:
    """One module's fusion (a :class:`FusionBatch` of one): the arguments are :class:`ModuleFactors`' fields."""

    def __init__(self, delta_b: Tensor, delta_a: Tensor, adapter_b: Tensor, adapter_a: Tensor, scaling: float):
        self._batch = FusionBatch([ModuleFactors(delta_b, delta_a, adapter_b, adapter_a, float(scaling))])

    def fuse(self, alpha: float, beta: float) -> FusedFactors:
        """The best rank-r factors of α/s·B_Δ A_Δ + β·B_i A_i (so that s·B A is Eq. 7)."""
        lora_b, lora_a, errors = self._batch.fuse(alpha, beta)
        return FusedFactors(lora_b[0], lora_a[0], float(errors[0]))
