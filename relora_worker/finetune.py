"""Fine-tuning with scheduled regularisation (paper §3.3, Eq. 18–22) and time-to-readiness.

Stage 1 (steps < E1): L = L_task + λ1/2 (‖A−A_init‖² + ‖B−B_init‖²) at constant η1.
Stage 2 (E1 ≤ steps < E_total): the same with λ2 and η(t) = η_min + ½(η1−η_min)(1+cos(π(t−E1)/(E_total−E1))).
Plain fine-tuning is λ1 = λ2 = 0 with the same learning-rate schedule, so strategies differ only in their
start and their anchor. The optimiser is AdamW (no weight decay). The anchor's gradient λ(θ − θ_init)
(Eq. 19) is added to the task gradient with fused multi-tensor ops after the backward pass: the same update
as putting λ/2‖θ − θ_init‖² in the loss, without autograd tracing a Python loop over every factor (which
cost ~39 % per step on MiniLM). ``warmup_steps`` (default 0, the paper's schedule) ramps the learning rate
linearly from 0 to η1 at the start of stage 1.

Quality on D_eval is measured at step 0, then on the cadence of :func:`next_evaluation`, and at the last
step. The readiness clock counts the search and training wall-clock time but not the periodic evaluations,
whose frequency is a measurement choice; their seconds are reported separately.

Speed (issue 14): on a GPU the step runs under bfloat16 autocast (the LoRA factors, their gradients and the
optimiser state stay float32) with the fused AdamW kernel, and nothing in the step reads from the device: the
training clock synchronises once per evaluation interval, not once per step. Activation checkpointing is
switched on only when the step's estimated activations would not fit (:func:`plan_checkpointing`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from relora_worker import distributed
from relora_worker.adapters import LoraSlot
from relora_worker.config import FinetuneConfig
from relora_worker.readiness import Readiness
from relora_worker.tasks import Task, precision_context


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
    eval_points: list[dict[str, float]] = field(default_factory=list)  # step and seconds of every evaluation

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


def make_optimiser(params: list[Tensor], config: FinetuneConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; on a GPU its fused kernel (one launch for every factor's update instead of several per tensor)."""
    fused = device.type == "cuda" and all(p.is_cuda and p.dtype == torch.float32 for p in params)
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **extra)


def next_evaluation(
    step: int,
    config: FinetuneConfig,
    eval_seconds: float,
    next_cost: float,
    train_seconds: float,
    step_seconds: float,
    adaptive: bool,
    now: int | None = None,
) -> int:
    """The step of the next evaluation after the last one at ``step``, planned at step ``now`` (default: then).

    Fixed cadence: every ``eval_every`` steps. Adaptive (a GPU run with ``eval_share`` > 0, once a step time is
    measured): the first step at which all evaluation so far plus the next one (``eval_seconds`` + ``next_cost``)
    stays within ``eval_share`` of the training time by then (``train_seconds`` + k · ``step_seconds``), and never
    sooner than ``eval_every`` steps. The trade-off: readiness is still detected at the first evaluation after
    the crossing, so the detected time-to-readiness is late by at most one interval; with evaluations of e seconds
    the intervals settle near e / share seconds of training (2 s evaluations at share 0.1: one every ~20 s of
    training) — against evaluation's share of the run, which at 8B with a fixed 10-step interval would be
    larger than the training itself. The last step is always evaluated (the final quality).
    """
    due = step + config.eval_every
    if adaptive and config.eval_share > 0 and step_seconds > 0:
        needed = (eval_seconds + next_cost) / config.eval_share - train_seconds  # more training seconds
        due = max(due, (step if now is None else now) + math.ceil(needed / step_seconds))
    return min(due, config.max_steps)


# Activation memory of a training step, bytes per token per layer in units of the activation width: the inputs
# every linear layer keeps for its backward (q/k/v, o, gate/up: 4 × hidden; down: ffn), the SwiGLU pair
# (2 × ffn), attention's q, k, v and output (4 × hidden), the two norms' inputs (2 × hidden), and slack.
CHECKPOINT_FREE_SHARE = 0.8  # checkpoint when the estimate exceeds this share of free device memory


def activation_bytes(model: Any, tokens: int, width: int) -> int:
    """Estimated bytes of the activations one training step of ``tokens`` tokens keeps for its backward."""
    config = getattr(model, "config", None)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    ffn = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    layers = int(getattr(config, "num_hidden_layers", 1) or 1)
    return layers * tokens * (10 * hidden + 4 * ffn) * width


def plan_checkpointing(model: Any, config: FinetuneConfig, device: torch.device) -> dict[str, Any]:
    """Whether training recomputes activations (``gradient_checkpointing`` on/off/auto), with the numbers.

    ``auto`` turns it on on a GPU when the estimate for a full batch of ``max_length`` tokens exceeds 80 % of
    the free memory after loading: it costs about a third more compute per step, so never by default.
    """
    autocast = config.precision == "bfloat16" or (config.precision == "auto" and device.type == "cuda")
    estimate = activation_bytes(model, config.batch_size * config.max_length, 2 if autocast else 4)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    mode = config.gradient_checkpointing
    use = mode == "on" or (mode == "auto" and free is not None and estimate > CHECKPOINT_FREE_SHARE * free)
    return {"gradient_checkpointing": use, "mode": mode, "activation_bytes_estimate": estimate, "free_bytes": free}


def prepare_training(model: Any, config: FinetuneConfig, device: torch.device) -> dict[str, Any]:
    """Applies :func:`plan_checkpointing`'s decision to ``model``; returns the plan (recorded in result.json)."""
    from relora_worker.modelio import enable_gradient_checkpointing

    plan = plan_checkpointing(model, config, device)
    if plan["gradient_checkpointing"]:
        enable_gradient_checkpointing(model)
    return plan


def memory_report(device: torch.device, plan: dict[str, Any], model: Any) -> dict[str, Any]:
    """Peak device memory (allocated and reserved by PyTorch), the process's peak resident host memory, the
    base's dtype and parameter bytes, and the checkpointing plan."""
    import resource

    from relora_worker.tasks import model_dtype

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    report: dict[str, Any] = {
        "base_dtype": str(model_dtype(model)).removeprefix("torch."),
        "parameter_bytes": weights,
        "peak_host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        **plan,
    }
    if device.type == "cuda":
        report["peak_device_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        report["peak_device_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
    return report


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
    optimiser = make_optimiser(params, config, device)
    anchor = Anchor(slots, anchors) if anchors is not None else None
    result = FinetuneResult()
    batches = task.train_batches(config.batch_size, config.seed)
    train_seconds = 0.0
    last_loss: float | None = None
    # CPU runs keep the fixed cadence: their trajectories are reproducible. Several ranks keep it too: an
    # evaluation is collective, so every rank must evaluate at the same steps (issue 18).
    adaptive = device.type == "cuda" and not distributed.current().active

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

    def timed_evaluation(step: int) -> bool:
        started = time.perf_counter()
        outcome = evaluate(step)
        result.eval_points.append({"step": step, "seconds": time.perf_counter() - started})
        return outcome

    ready = timed_evaluation(0)
    result.initial_quality = result.trajectory[0].quality
    model.train()
    step = 0
    due = next_evaluation(0, config, 0.0, 0.0, 0.0, 0.0, adaptive=False)  # no step time measured yet
    last_evaluated = 0
    _sync(device)
    segment_start, segment_steps = time.perf_counter(), 0
    loss: Tensor | None = None
    while step < config.max_steps and not (ready and stop_at_ready) and not (stop is not None and stop(step)):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, config)
        with precision_context(device, config.precision):
            loss = task.loss(model, next(batches))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(params)  # data-parallel ranks (issue 18); a no-op in one process
        strength = anchor_strength(step, config, anchor is not None)
        if strength > 0 and anchor is not None:
            anchor.add_gradient(strength)
        optimiser.step()
        step += 1
        segment_steps += 1
        if on_step:
            on_step(step, None)
        if step >= due:
            last_loss = float(loss.detach())  # the segment's one synchronisation: the clock reads finished work
            now = time.perf_counter()
            train_seconds += now - segment_start
            segment_start, segment_steps = now, 0
            # Re-planned with the step time measured so far: a planned evaluation can move later (not earlier).
            cost = result.eval_points[-1]["seconds"]
            planned = next_evaluation(
                last_evaluated, config, result.eval_seconds, cost, train_seconds, train_seconds / step, adaptive, step
            )
            if planned > step:
                due = planned
                continue
            ready = timed_evaluation(step)
            last_evaluated, cost = step, result.eval_points[-1]["seconds"]
            per_step = train_seconds / step
            due = next_evaluation(step, config, result.eval_seconds, cost, train_seconds, per_step, adaptive)
            segment_start = time.perf_counter()
    if segment_steps:  # stopped between evaluations (a stop callback): book the time, measure the final state
        last_loss = float(loss.detach()) if loss is not None else last_loss
        train_seconds += time.perf_counter() - segment_start
        ready = timed_evaluation(step)
    model.eval()
    result.steps = step
    result.train_seconds = train_seconds
    result.final_quality = result.trajectory[-1].quality
    result.stopped_at_ready = ready and stop_at_ready and step < config.max_steps
    return result
