"""The ``auto`` strategy: ready no later than re-using the old adapter, and relora's quality after (issue 17).

Our benchmark (bench/README.md, run 3) shows relora ready 2.5–2.7× sooner than fine-tuning the old adapter
when its fused start lands above the threshold, and 0.67–0.93× (slower) when it does not: then the search is
pure overhead. Which case holds is only known by measuring. ``auto`` measures, in this order, and records
every decision with its reason and the readiness clock at which it was taken:

1. **transfer check** — evaluate the old adapter as it is on the new base. If the readiness rule passes, it
   is Ready at t = 0 (no search, no training).
2. **capped search** — time one training step (forward + backward on one batch) and let the Bayesian search
   spend at most ``auto.search_share`` × (that step time × ``max_steps``): the search may cost a stated share
   of this run's own training budget, whatever the task. The transfer point is always its first probe.
3. **fused check** — evaluate the best fused start. If the rule passes, Ready at the search's end.
4. **the better start** — otherwise fine-tune (relora's anchored schedule) from the fused start if it measured
   higher than the old adapter on D_eval by more than the evaluation's noise (``better_start``), else from the
   old adapter, until Ready.
5. **improve after Ready** (``improve_after_ready``) — once Ready, the time no longer delays readiness: the
   search is finished to its full budget T and relora's full fine-tune from the fused start runs (or, when the
   ready phase already was that run, it simply goes on), at most ``improve_max_steps`` steps after Ready
   (0: the whole budget). The final adapter is the better, by measured quality, of the ready phase's end and
   the improvement's end, so improving never regresses.

The readiness clock is the one every strategy uses (search + training seconds, evaluations excluded; the step
timing of 2. is counted). Pure algorithm: loading, saving and publishing stay in readapt.py (the first ready
version is published through ``Readiness.on_ready``).

**Several ranks** (torchrun, relora_worker.distributed): every rank must take the same path, since each phase
makes collective passes (split evaluations, averaged gradients) and a rank that took another branch would wait
forever. Every decision is rank 0's, received by the others:

* the checks' qualities (1., 3.) are rank 0's all-reduced totals, broadcast, so every rank's readiness rule sees
  the same observations (in training the qualities are whole counts of correct rows, exact on every rank);
* the search's cap (2.) is rank 0's: its measured step time (each rank times its own share; rank 0's is
  broadcast), its work cap (the batch's tokens summed over the ranks' shares, so the count is one process's),
  and the search itself, time limit included, runs on rank 0 while the others serve its probes
  (``decided_on_publisher``); so is the completed search of 5.;
* the start to train from (4.) and the adapter to keep (5.) are decided on rank 0 and broadcast.

Each rank logs its decisions and, at the end, its path (logger ``relora_worker.auto``, INFO) so that agreement can
be checked from the logs. In one process every one of these helpers is a no-op.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from relora_worker import distributed
from relora_worker.adapters import LoraSlot, snapshot
from relora_worker.config import ReadaptConfig
from relora_worker.finetune import FinetuneResult, TrajectoryPoint, finetune
from relora_worker.readiness import Readiness, z_value
from relora_worker.search import SearchResult, run_search
from relora_worker.strategies import FusedStart
from relora_worker.tasks import Task, precision_context

Objective = Callable[[float, float], float]
StepCallback = Callable[[int, float | None], None]

logger = logging.getLogger(__name__)


@dataclass
class AutoResult:
    """What ``auto`` did: the search, every decision and phase, the combined quality trajectory."""

    search: SearchResult
    ready_start: str  # the start the ready phase trained from (or was ready at): "transfer" or "fused"
    final_start: str  # the start of the adapter published as final
    transfer_quality: float
    fused_quality: float
    final_quality: float
    search_limit_s: float | None
    step_seconds: float
    decisions: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    trajectory: list[TrajectoryPoint] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    steps: int = 0
    ready_step: int | None = None  # training steps (all phases) before the evaluation that decided Ready

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["search"] = self.search.to_dict()
        return out


START_CONFIDENCE = 0.95  # one-sided level at which the fused start must beat the old adapter


def better_start(fused_quality: float, transfer_quality: float, n: int) -> tuple[str, str]:
    """The start to fine-tune from when neither passed the readiness rule, and why.

    The fused start wins only when it measured higher than the old adapter by more than the noise of two
    proportions measured on ``n`` evaluation rows: fused − transfer > z · √(p_f(1−p_f)/n + p_t(1−p_t)/n) at the
    one-sided ``START_CONFIDENCE`` level. Otherwise (a tie or a small edge) the old adapter is the start. Why: a
    capped search of two or three probes can land on a start that destroyed the adapter (β near 0) and merely
    measures a little above it by chance; fine-tuning from there is slower than transfer-ft (the demo's auto
    did exactly that before: fused 0.30 vs transfer 0.26 on 400 rows, then not ready in its step budget).

    Args:
        fused_quality: the fused start's quality on D_eval (a proportion in [0, 1]).
        transfer_quality: the old adapter's quality on D_eval on the new base.
        n: the number of D_eval rows both were measured on (> 0).
    """
    p_f, p_t = (min(max(q, 0.0), 1.0) for q in (fused_quality, transfer_quality))
    margin = z_value(START_CONFIDENCE) * math.sqrt((p_f * (1 - p_f) + p_t * (1 - p_t)) / max(n, 1))
    start = "fused" if fused_quality - transfer_quality > margin else "transfer"
    return start, (
        f"measured on D_eval ({n} rows): fused {fused_quality:.4f}, transfer {transfer_quality:.4f}; the fused "
        f"start is taken only above transfer + {margin:.4f} (one-sided {START_CONFIDENCE:.0%} noise margin)"
    )


def work_cap_probes(task: Task, config: ReadaptConfig) -> int:
    """How many probes the search may make under the ``work`` cap (at least 1: the transfer point).

    Work is counted in forward-token equivalents: a training step costs 3 × the tokens of one batch (forward and
    backward), a probe costs the tokens it scores (D_val or its first rows: one forward pass, its loss). The search may
    spend ``auto.search_share`` × ``max_steps`` steps' work. Token counts, unlike seconds, are the same on every
    machine and under any load.
    """
    batch = next(task.train_batches(config.finetune.batch_size, config.finetune.seed))
    # Under several ranks the batch is this rank's share: the whole batch's tokens are the shares' sum.
    (tokens,) = distributed.all_reduce_sums([float(batch["attention_mask"].sum())], task.device)
    step_tokens = 3 * int(tokens)
    probe_tokens = max(1, int(task.probe.lengths.sum()))
    budget = config.auto.search_share * config.finetune.max_steps * step_tokens
    return max(1, int(budget // probe_tokens))


def trainable(model: Any) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


@torch.no_grad()
def _copy_into(params: list[Tensor], values: list[Tensor]) -> None:
    for param, value in zip(params, values, strict=True):
        param.copy_(value)


def measure_step_seconds(model: Any, task: Task, batch_size: int, seed: int, precision: str = "float32") -> float:
    """Seconds of one training step's forward and backward pass on one batch (no update: gradients dropped), in
    the training's precision."""
    batch = next(task.train_batches(batch_size, seed))
    was_training = model.training
    model.train()
    if task.device.type == "cuda":
        torch.cuda.synchronize(task.device)
    start = time.perf_counter()
    with precision_context(task.device, precision):
        loss = task.loss(model, batch)
    loss.backward()
    float(loss.detach())  # synchronises
    seconds = time.perf_counter() - start
    for param in trainable(model):
        param.grad = None
    model.train(was_training)
    return seconds


class _Run:
    """The mutable state of one ``auto`` run (clock, trajectory, decisions)."""

    def __init__(self, model: Any, task: Task, readiness: Readiness) -> None:
        self.model, self.task, self.readiness = model, task, readiness
        self.clock = 0.0
        self.steps = 0
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self.trajectory: list[TrajectoryPoint] = []
        self.decisions: list[dict[str, Any]] = []
        self.phases: list[dict[str, Any]] = []
        self.step_offsets: dict[str, int] = {}

    def decide(self, decision: str, why: str, **extra: Any) -> None:
        self.decisions.append({"at_s": self.clock, "decision": decision, "why": why, **extra})
        world = distributed.current()
        logger.info("auto decision (rank %d of %d): %s: %s", world.rank, world.size, decision, why)

    def phase(self, name: str, started: float, **detail: Any) -> None:
        self.phases.append({"phase": name, "started_s": started, "ended_s": self.clock, **detail})

    def check(self, phase: str) -> float:
        """Evaluates the model as it stands (a start): one trajectory point, one readiness observation."""
        self.readiness.start_phase(phase)
        self.step_offsets[phase] = self.steps
        start = time.perf_counter()
        quality = distributed.broadcast_from_publisher(self.task.quality(self.model))  # rank 0's, on every rank
        self.eval_seconds += time.perf_counter() - start
        self.trajectory.append(TrajectoryPoint(self.steps, self.clock, quality, None))
        self.readiness.observe(quality, self.clock, 0)
        return quality

    def train(self, phase: str, config: ReadaptConfig, slots: list[LoraSlot], max_steps: int, stop_at_ready: bool,
              stop: Callable[[int], bool] | None, on_step: StepCallback | None) -> FinetuneResult:
        """Relora's anchored fine-tune from the model's current start, on the shared clock and readiness."""
        self.readiness.start_phase(phase)
        self.step_offsets[phase] = self.steps
        started = self.clock
        budget = replace(config.finetune, max_steps=max_steps, stage1_steps=min(config.finetune.stage1_steps,
                                                                                 max_steps))
        distributed.broadcast_parameters(trainable(self.model))  # the same start on every rank
        result = finetune(self.model, self.task, slots, budget, config.task.threshold, snapshot(slots),
                          clock_offset=self.clock, stop_at_ready=stop_at_ready, on_step=on_step,
                          readiness=self.readiness, stop=stop)
        # The step-0 point re-measures the start the check already measured: keep only the trained points.
        self.trajectory += [replace(p, step=p.step + self.steps) for p in result.trajectory[1:]]
        self.steps += result.steps
        self.clock += result.train_seconds
        self.train_seconds += result.train_seconds
        self.eval_seconds += result.eval_seconds
        self.phase(phase, started, steps=result.steps, final_quality=result.final_quality,
                   stopped_at_ready=result.stopped_at_ready)
        return result


def run_auto(
    model: Any,
    task: Task,
    slots: list[LoraSlot],
    fused: FusedStart,
    objective: Objective,
    config: ReadaptConfig,
    readiness: Readiness,
    on_step: StepCallback | None = None,
) -> AutoResult:
    """Runs the ``auto`` policy on a model holding the old adapter (and its head) on the new base.

    Args:
        model: the PEFT model; on return it holds the final adapter.
        task: the pre-tokenised task.
        slots: the LoRA slots of ``model``.
        fused: the fusion of the old adapter with Π_r(ΔΘ) (``apply(α, β)`` writes a start into ``slots``).
        objective: the search's probe (α, β) → validation loss; it writes the fused start into the model.
        config: the run's configuration (``auto``, ``search``, ``finetune``, ``improve_*``).
        readiness: the readiness rule, shared by every phase (its ``on_ready`` publishes the first version).
        on_step: progress callback of the fine-tunes.
    """
    params = trainable(model)
    old = [p.detach().clone() for p in params]  # the old adapter and its head: every start begins from them
    improve = config.improve_after_ready
    run = _Run(model, task, readiness)

    # 1. The old adapter as it is.
    transfer_quality = run.check("transfer")
    run.phase("transfer-check", 0.0, quality=transfer_quality)
    if readiness.ready:
        run.decide("ready at the transfer point", "the old adapter passes the readiness rule on the new base")

    if readiness.ready and not improve:
        run.decide("no search", "ready and improve_after_ready is off: nothing left to gain")
        search = SearchResult(0.0, 1.0, float("nan"))
        return _finish(run, search, "transfer", "transfer", transfer_quality, transfer_quality, None, 0.0)

    # 2. The search, capped by a share of this run's measured training budget while readiness is at stake.
    started = run.clock
    precision = getattr(config.finetune, "precision", "float32")  # training's autocast, where it has one
    # Every rank times its share (the same passes everywhere); rank 0's time sets the cap on every rank.
    step_seconds = distributed.broadcast_from_publisher(
        measure_step_seconds(model, task, config.finetune.batch_size, config.finetune.seed, precision))
    run.clock += step_seconds
    share, steps = config.auto.search_share, config.finetune.max_steps
    by_work = config.auto.search_cap == "work" and not readiness.ready
    limit = None if readiness.ready or by_work else share * step_seconds * steps
    search_config, cap_probes = config.search, None
    if by_work:
        cap_probes = work_cap_probes(task, config)
        search_config = replace(config.search, budget=min(config.search.budget, cap_probes))
    clock = time.perf_counter()
    # Rank 0 alone watches the time limit; the others serve its probes and receive its result.
    search = distributed.decided_on_publisher(
        objective, lambda probe: run_search(probe, search_config, time_limit_s=limit))
    fused.apply(search.alpha, search.beta)
    run.clock += time.perf_counter() - clock
    run.phase("search", started, probes=len(search.probes), limit_s=limit, stop_reason=search.stop_reason,
              step_seconds=step_seconds, cap_probes=cap_probes)
    if limit is not None:
        run.decide("search capped", f"{share:g} × measured step {step_seconds:.4f} s × {steps} steps = "
                   f"{limit:.3f} s; {len(search.probes)} probes, stopped by {search.stop_reason}")
    elif cap_probes is not None:
        run.decide("search capped", f"{share:g} × {steps} steps' work (forward-token equivalents) = "
                   f"{cap_probes} probe(s); {len(search.probes)} probes")

    # 3. The best fused start.
    was_ready = readiness.ready
    fused_quality = run.check("fused")
    run.phase("fused-check", run.clock, quality=fused_quality, alpha=search.alpha, beta=search.beta)
    if readiness.ready and not was_ready:
        run.decide("ready at the fused start", f"(α, β) = ({search.alpha:.3f}, {search.beta:.3f}) passes the "
                   "readiness rule after the search")
    if readiness.ready and not improve:
        return _finish(run, search, "fused", "fused", transfer_quality, fused_quality, limit, step_seconds)

    cap = config.improve_max_steps
    eval_every = config.finetune.eval_every

    def cap_after_ready(phase: str) -> Callable[[int], bool]:
        def stop(step: int) -> bool:
            first = readiness.first
            if not cap or first is None or step % eval_every:
                return False  # only at an evaluated step, so the final quality is the final state's
            ready_at = run.step_offsets.get(first.phase, 0) + first.step
            return run.step_offsets[phase] + step - ready_at >= cap

        return stop

    # 4. Not ready yet: train from the fused start only when it beats the old adapter beyond the evaluation's
    # noise (``better_start``); else from the old adapter.
    if not readiness.ready:
        ready_start, why = distributed.broadcast_from_publisher(better_start(fused_quality, transfer_quality,
                                                                             readiness.n))
        run.decide(f"fine-tune from the {ready_start} start", why)
        if ready_start == "fused":
            # This run is relora's own fine-tune: it goes on after Ready (the improvement) when asked to.
            result = run.train("finetune-fused", config, slots, config.finetune.max_steps, not improve,
                               cap_after_ready("finetune-fused"), on_step)
            return _finish(run, search, "fused", "fused", transfer_quality, fused_quality, limit, step_seconds,
                           result.final_quality)
        _copy_into(params, old)
        first = run.train("finetune-transfer", config, slots, config.finetune.max_steps, True, None, on_step)
        if not improve:
            return _finish(run, search, "transfer", "transfer", transfer_quality, fused_quality, limit, step_seconds,
                           first.final_quality)
        # Ready (or its budget spent below the threshold): relora's run may still end higher.
        kept, kept_quality = [p.detach().clone() for p in params], first.final_quality
    elif readiness.first is not None and readiness.first.phase == "transfer":
        ready_start, kept, kept_quality = "transfer", old, transfer_quality
    else:
        ready_start, kept, kept_quality = "fused", [p.detach().clone() for p in params], fused_quality

    # 5. Improve after Ready: the whole search, then relora's full fine-tune from the fused start.
    started = run.clock
    _copy_into(params, old)
    clock = time.perf_counter()
    resumed = search
    search = distributed.decided_on_publisher(objective, lambda probe: run_search(probe, config.search,
                                                                                  resume=resumed))
    fused.apply(search.alpha, search.beta)
    run.clock += time.perf_counter() - clock
    run.phase("search-completed", started, probes=len(search.probes), stop_reason=search.stop_reason)
    why = ("Ready: the rest of the search and relora's fine-tune no longer delay readiness" if readiness.ready else
           "the ready phase spent its budget below the threshold: relora's own run may still reach it")
    run.decide("improve: relora from the fused start", f"{why} ({len(search.probes)} probes in all)")
    steps = config.finetune.max_steps if not cap else min(cap, config.finetune.max_steps)
    improved = run.train("improve-fused", config, slots, steps, False, None, on_step)
    final_start, final_quality = "fused", improved.final_quality
    if distributed.broadcast_from_publisher(kept_quality > improved.final_quality):
        _copy_into(params, kept)
        final_start, final_quality = ready_start, kept_quality
        run.decide("keep the ready phase's adapter", f"it measured {kept_quality:.4f} > the improvement's "
                   f"{improved.final_quality:.4f}: improving never regresses")
    return _finish(run, search, ready_start, final_start, transfer_quality, fused_quality, limit, step_seconds,
                   final_quality)


def _finish(run: _Run, search: SearchResult, ready_start: str, final_start: str, transfer_quality: float,
            fused_quality: float, limit: float | None, step_seconds: float,
            final_quality: float | None = None) -> AutoResult:
    first = run.readiness.first
    ready_step = None if first is None else run.step_offsets.get(first.phase, 0) + first.step
    _log_path(run, search, ready_start, final_start, ready_step)
    return AutoResult(
        search=search,
        ready_start=ready_start,
        final_start=final_start,
        transfer_quality=transfer_quality,
        fused_quality=fused_quality,
        final_quality=fused_quality if final_quality is None else final_quality,
        search_limit_s=limit,
        step_seconds=step_seconds,
        decisions=run.decisions,
        phases=run.phases,
        trajectory=run.trajectory,
        train_seconds=run.train_seconds,
        eval_seconds=run.eval_seconds,
        steps=run.steps,
        ready_step=ready_step,
    )


def _log_path(run: _Run, search: SearchResult, ready_start: str, final_start: str, ready_step: int | None) -> None:
    """One INFO line with the path this rank took (no clock readings: they differ between ranks), so the ranks'
    agreement can be read from their logs."""
    world = distributed.current()
    path = {
        "ready_start": ready_start,
        "final_start": final_start,
        "ready_step": ready_step,
        "steps": run.steps,
        "probes": [[p.alpha, p.beta] for p in search.probes],
        "phases": [{k: v for k, v in p.items() if k not in ("started_s", "ended_s")} for p in run.phases],
        "decisions": [[d["decision"], d["why"]] for d in run.decisions],
    }
    logger.info("auto path (rank %d of %d): %s", world.rank, world.size, json.dumps(path))
