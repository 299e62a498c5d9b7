"""In-place access to the LoRA factors of a loaded PEFT model (no reload between probes).

A :class:`LoraSlot` is one adapted module: its ``lora_A``/``lora_B`` weights and its PEFT scaling. Writing
factors copies into the existing parameters, so optimisers, hooks and the model stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

ADAPTER_NAME = "default"


@dataclass
class LoraSlot:
    """One LoRA-adapted module of a PEFT model."""

    name: str  # the module's path inside the *base* model, e.g. "model.layers.0.self_attn.q_proj"
    layer: Any  # peft.tuners.lora.LoraLayer

    @property
    def lora_a(self) -> torch.nn.Parameter:
        return self.layer.lora_A[ADAPTER_NAME].weight  # r × d_in

    @property
    def lora_b(self) -> torch.nn.Parameter:
        return self.layer.lora_B[ADAPTER_NAME].weight  # d_out × r

    @property
    def scaling(self) -> float:
        return float(self.layer.scaling[ADAPTER_NAME])

    def set_factors(self, lora_b: Tensor, lora_a: Tensor) -> None:
        with torch.no_grad():
            self.lora_b.copy_(lora_b.to(self.lora_b.dtype))
            self.lora_a.copy_(lora_a.to(self.lora_a.dtype))


def lora_slots(model: Any) -> list[LoraSlot]:
    """Every LoRA layer of ``model`` in a stable order, named by its path in the base model."""
    from peft.tuners.lora import LoraLayer

    slots = []
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A:
            base_name = name.removeprefix("base_model.model.")
            slots.append(LoraSlot(base_name, module))
    return slots


def match_checkpoint_key(module_name: str, keys: list[str]) -> str | None:
    """The checkpoint module key naming the same module as ``module_name`` (longest common suffix).

    A task model wraps the base (``bert.encoder.layer.0...`` vs the base checkpoint's
    ``encoder.layer.0...``), so names are matched on whole dotted suffixes.
    """
    best: str | None = None
    for key in keys:
        same = module_name == key or module_name.endswith("." + key) or key.endswith("." + module_name)
        if same and (best is None or len(key) > len(best)):
            best = key
    return best


def snapshot(slots: list[LoraSlot]) -> dict[str, tuple[Tensor, Tensor]]:
    """Copies of every slot's (B, A) factors."""
    return {s.name: (s.lora_b.detach().clone(), s.lora_a.detach().clone()) for s in slots}
