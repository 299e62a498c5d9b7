"""Fine-tuning with scheduled regularisation (paper §3.3, Eq. 18–22) and time-to-readiness.

Stage 1 (steps < E1): L = L_task + λ1/2 (‖A−A_init‖² + ‖B−B_init‖²) at constant η1.
Stage 2 (E1 ≤ steps < E_total): the same with λ2 and η(t) = η_min + ½(η1−η_min)(1+cos(π(t−E1)/(E_total−E1))).
Plain fine-tuning is λ1 = λ2 = 0 with the same learning-rate schedule, so strategies differ only in their
start and their anchor. The optimiser is AdamW (no weight decay). The anchor's gradient λ(θ − θ_init)
(Eq. 19) is added to the task gradient with fused multi-tensor ops after the backward pass: the same update
as putting λ/2‖θ − θ_init‖² in the loss, without autograd tracing a Python loop over every factor (which
cost ~39 % per step on MiniLM). ``warmup_steps`` (default 0, the paper's schedule) ramps the learning rate
linearly from 0 to η1 at the start of stage 1.

Quality on D_eval is measured at step 0 and every ``eval_every`` steps. The readiness clock counts the
search and training wall-clock time but not the periodic evaluations, whose frequency is a measurement
choice; their seconds are reported separately.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from relora_worker.adapters import LoraSlot
from relora_worker.config import FinetuneConfig
from relora_worker.readiness import Readiness
from relora_worker.tasks import Task


@dataclass
class TrajectoryPoint:
    step: int
    seconds: float  # readiness clock: search + training so far
    quality: float
    train_loss: float | None


@dataclass
class FinetuneResult:
    trajectory: list[TrajectoryPoint] = field(default_factory=list)
    time_to_readiness_s: float | None = None
    ready_step: int | None = None
    final_quality: float = 0.0
    initial_quality: float = 0.0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    steps: int = 0
    stopped_at_ready: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def learning_rate(step: int, config: FinetuneConfig) -> float:
    """η at ``step``: constant through stage 1, cosine-annealed to ``lr_min`` through stage 2."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / (config.warmup_steps + 1)
    if step < config.stage1_steps:
        return config.lr
    span = max(config.max_steps - config.stage1_steps, 1)
    progress = min((step - config.stage1_steps) / span, 1.0)
    return config.lr_min + 0.5 * (config.lr - config.lr_min) * (1 + math.cos(math.pi * progress))


def anchor_strength(step: int, config: FinetuneConfig, regularise: bool) -> float:
    """λ at ``step``: λ1 in stage 1, λ2 in stage 2, 0 for plain fine-tuning."""
    if not regularise:
        return 0.0
    return config.lambda1 if step < config.stage1_steps else config.lambda2


class Anchor:
    """The (B_init, A_init) of every slot, flattened into parallel lists for ``torch._foreach_*`` ops."""

    def __init__(self, slots: list[LoraSlot], anchors: dict[str, tuple[Tensor, Tensor]]):
        self.params: list[Tensor] = []
        self.inits: list[Tensor] = []
        for slot in slots:
            b0, a0 = anchors[slot.name]
            self.params += [slot.lora_b, slot.lora_a]
            self.inits += [b0.to(slot.lora_b.dtype), a0.to(slot.lora_a.dtype)]

    @torch.no_grad()
    def add_gradient(self, strength: float) -> None:
        """grad += λ (θ − θ_init) for every factor (∇ of λ/2 ‖θ − θ_init‖², paper Eq. 19)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        torch._foreach_add_(grads, torch._foreach_sub(self.params, self.inits), alpha=strength)


def anchor_penalty(slots: list[LoraSlot], anchors: dict[str, tuple[Tensor, Tensor]]) -> Tensor:
    """Σ_modules ‖A − A_init‖²_F + ‖B − B_init‖²_F (without the λ/2 factor)."""
    total = torch.zeros((), device=slots[0].lora_a.device)
    for slot in slots:
        b0, a0 = anchors[slot.name]
        total = total + (slot.lora_a - a0).pow(2).sum() + (slot.lora_b - b0).pow(2).sum()
    return total


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def finetune(
    model: Any,
    task: Task,
    slots: list[LoraSlot],
    config: FinetuneConfig,
    threshold: float,
    anchors: dict[str, tuple[Tensor, Tensor]] | None,
    clock_offset: float = 0.0,
    stop_at_ready: bool = False,
    on_step: Callable[[int, float | None], None] | None = None,
    readiness: Readiness | None = None,
    stop: Callable[[int], bool] | None = None,
) -> FinetuneResult:
    """Trains the LoRA factors (and any saved head) of ``model`` for ``config.max_steps`` steps.

    Args:
        model: a PEFT model whose trainable parameters are the adapter (and ``modules_to_save``).
        task: the pre-tokenised task (batches, loss, quality).
        slots: the LoRA slots, for the anchor.
        config: schedule, λ's, batch size, evaluation period.
        threshold: the service-quality threshold that defines readiness.
        anchors: (B_init, A_init) per slot; ``None`` trains without the anchor (plain fine-tuning).
        clock_offset: seconds already spent before training (the search), counted in readiness.
        stop_at_ready: stop at the first evaluation that meets the threshold.
        on_step: progress callback ``(step, quality or None)``.
        readiness: the statistical readiness rule (relora_worker/readiness.py); ``None``: quality >= threshold.
        stop: asked before every step with the step number; True ends training there (the cap on training
            after Ready of the ``auto`` policy).
    """
    device = task.device
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    anchor = Anchor(slots, anchors) if anchors is not None else None
    result = FinetuneResult()
    batches = task.train_batches(config.batch_size, config.seed)
    train_seconds = 0.0
    last_loss: float | None = None

    def evaluate(step: int) -> bool:
        start = time.perf_counter()
        quality = task.quality(model)
        result.eval_seconds += time.perf_counter() - start
        clock = clock_offset + train_seconds
        result.trajectory.append(TrajectoryPoint(step, clock, quality, last_loss))
        if on_step:
            on_step(step, quality)
        passed = readiness.observe(quality, clock, step) if readiness is not None else quality >= threshold
        if passed and result.time_to_readiness_s is None:
            result.time_to_readiness_s, result.ready_step = clock, step
        return result.time_to_readiness_s is not None

    ready = evaluate(0)
    result.initial_quality = result.trajectory[0].quality
    model.train()
    step = 0
    while step < config.max_steps and not (ready and stop_at_ready) and not (stop is not None and stop(step)):
        _sync(device)
        start = time.perf_counter()
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, config)
        loss = task.loss(model, next(batches))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        strength = anchor_strength(step, config, anchor is not None)
        if strength > 0 and anchor is not None:
            anchor.add_gradient(strength)
        optimiser.step()
        step += 1
        last_loss = float(loss.detach())  # also synchronises, so the clock reads finished work
        train_seconds += time.perf_counter() - start
        if on_step:
            on_step(step, None)
        if step % config.eval_every == 0 or step == config.max_steps:
            ready = evaluate(step)
    model.eval()
    result.steps = step
    result.train_seconds = train_seconds
    result.final_quality = result.trajectory[-1].quality
    result.stopped_at_ready = ready and stop_at_ready and step < config.max_steps
    return result
