"""How each strategy builds its starting point (pure: operates on LoRA slots in place).

* ``transfer`` / ``transfer-ft`` — the old adapter as it is (PortLLM; the latter fine-tuned plainly).
* ``scratch`` — PEFT's fresh init (A random, B zero) and a fresh classification head.
* ``relora`` / ``relora-noreg`` — the fused start α·Π_r(ΔΘ) + β·ΔΘ_i with searched (α, β); the former
  fine-tunes with the scheduled anchor, the latter plainly.
* ``random-init`` — random factors with the old adapter's per-module norms (old head kept) and the same
  anchor as ``relora``: the control that tells whether reuse helped or merely regularised (paper 003).
"""

from __future__ import annotations

import torch

from relora_contract import strategies
from relora_worker.adapters import LoraSlot, match_checkpoint_key
from relora_worker.errors import BadInputError
from relora_worker.fusion import FusionBatch, ModuleFactors
from relora_worker.project import Projection

ANCHORED, FUSED, TRAINED = strategies.ANCHORED, strategies.FUSED, strategies.TRAINED


def randomise_like(slots: list[LoraSlot], seed: int) -> None:
    """Replaces each slot's factors by Gaussian ones with the same Frobenius norms."""
    generator = torch.Generator().manual_seed(seed)
    for slot in slots:
        b, a = slot.lora_b.detach(), slot.lora_a.detach()
        new_b = torch.randn(b.shape, generator=generator)
        new_a = torch.randn(a.shape, generator=generator)
        new_b *= b.float().norm().cpu() / new_b.norm().clamp_min(1e-12)
        new_a *= a.float().norm().cpu() / new_a.norm().clamp_min(1e-12)
        slot.set_factors(new_b.to(b.device), new_a.to(a.device))


class FusedStart:
    """The fusion of every slot; ``apply(α, β)`` writes the fused rank-r start into the model in place."""

    def __init__(self, slots: list[LoraSlot], projection: Projection):
        keys = list(projection.factors)
        self.slots = slots
        modules = []
        for slot in slots:
            key = match_checkpoint_key(slot.name, keys)
            if key is None:
                raise BadInputError(
                    f"projection has no factors for adapted module {slot.name}; it was computed for "
                    f"target_modules {projection.meta.get('target_modules')}"
                )
            delta_b, delta_a = projection.factors[key]
            device = slot.lora_b.device
            modules.append(
                ModuleFactors(
                    delta_b.to(device), delta_a.to(device), slot.lora_b.detach(), slot.lora_a.detach(), slot.scaling
                )
            )
        self.fusion = FusionBatch(modules)
        self._errors: torch.Tensor | None = None

    def apply(self, alpha: float, beta: float) -> None:
        lora_b, lora_a, self._errors = self.fusion.fuse(alpha, beta)
        with torch.no_grad():
            for slot, b, a in zip(self.slots, lora_b, lora_a, strict=True):
                slot.lora_b.copy_(b)
                slot.lora_a.copy_(a)

    @property
    def truncation_error(self) -> float:
        """The largest relative truncation error of the last applied start (0 before any)."""
        if self._errors is None or self._errors.numel() == 0:
            return 0.0
        return float(self._errors.max())
