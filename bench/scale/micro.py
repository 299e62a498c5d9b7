"""Per-operation measurements of the worker's own code at one shape, in a fresh process (clean peaks).

    python -m bench.scale.micro --base DIR --adapter DIR --projection DIR --data-dir DIR --out FILE.json

Measures, with the worker's functions (``load_base_model``, ``FusedStart``, ``Task``, ``finetune``):

* loading the base straight to the device (seconds, peak host RSS, weights' bytes);
* one probe (fuse + swap + validation loss of D_val in bf16) and ``val_loss`` alone;
* likelihood accuracy on the evaluation rows three ways: the shared-prompt pass with the labels' continuations
  against its cache (the worker's default), the first-token-only variant, and the full (prompt, label) sequences
  (the previous implementation, on a subset, scaled);
* training steps at ``--seq`` tokens × ``--batch`` rows (bf16 autocast, fused AdamW): seconds per step, MFU,
  peak device memory, with and without activation checkpointing; optionally with the decoder layers compiled.

FLOP count (stated in bench/scale/README.md): a step of T tokens in rows of S needs
2·(2·N_lin·T + 2·L·S·T·d) + 2·2·d·V·T_scored + 6·N_lora·T: the frozen base's forward and its activation
gradient (no weight gradients: the base does not train), causal attention (S/2 keys per query on average,
QKᵀ and AV), the output layer at the scored positions only, and the LoRA factors' full training cost. MFU is that
over (seconds × 989.4 TFLOP/s, the H200 SXM's dense bf16 peak); the 6·N·T convention is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path
from typing import Any

import torch

from bench.scale.build import LABELS, SPECIAL

PEAK_BF16 = 989.4e12  # H200 SXM dense bf16, datasheet


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Any, device: torch.device, repeats: int = 3) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls after one warm-up call, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], out


def linear_parameters(model: Any) -> tuple[int, int]:
    """(frozen linear weights inside the decoder layers, LoRA parameters)."""
    frozen = lora = 0
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            lora += parameter.numel()
        elif ".layers." in name and name.endswith(".weight") and parameter.dim() == 2:
            frozen += parameter.numel()
    return frozen, lora


def step_flops(model: Any, rows: int, seq: int, scored_per_row: int) -> dict[str, float]:
    """FLOPs one training step needs (see the module docstring) and the 6·N·T convention."""
    config = model.config
    tokens = rows * seq
    frozen, lora = linear_parameters(model)
    forward = 2 * frozen * tokens + 2 * config.num_hidden_layers * seq * tokens * config.hidden_size
    head = 2 * 2 * config.hidden_size * config.vocab_size * rows * scored_per_row
    total_params = sum(p.numel() for p in model.parameters())
    return {"required": 2 * forward + head + 6 * lora * tokens, "six_n_t": 6 * total_params * tokens}


def _rows(rng: random.Random, count: int, words: int, vocab: int) -> list[Any]:
    from relora_worker.data import Example

    labels = [f"w{len(SPECIAL) + i}" for i in range(LABELS)]
    examples = []
    for _ in range(count):
        text = " ".join(f"w{rng.randrange(len(SPECIAL) + LABELS, vocab)}" for _ in range(words))
        examples.append(Example(text, rng.choice(labels)))
    return examples


def training_task(tokenizer: Any, vocab: int, rows: int, seq: int, device: torch.device) -> Any:
    """A causal-LM task of ``rows`` training rows of exactly ``seq`` tokens (<s> + words + label + </s>)."""
    from relora_worker.data import TaskData
    from relora_worker.tasks import build_task

    rng = random.Random(1)
    train = _rows(rng, rows, seq - 3, vocab)
    few = _rows(rng, 8, 16, vocab)
    labels = [f"w{len(SPECIAL) + i}" for i in range(LABELS)]
    return build_task("causal-lm", TaskData(train, few, few, labels), tokenizer, seq, device)


def measure_training(
    model: Any, tokenizer: Any, slots: list[Any], device: torch.device, batch: int, seq: int, steps: int, mode: str
) -> dict[str, Any]:
    """Seconds per step, MFU and peak device memory of ``steps`` steps (after 3 warm-up steps)."""
    from relora_worker.config import FinetuneConfig
    from relora_worker.finetune import finetune, prepare_training
    from relora_worker.tasks import precision_context

    held = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0  # weights + what earlier stages keep
    task = training_task(tokenizer, model.config.vocab_size, batch * (steps + 4), seq, device)
    config = FinetuneConfig(
        max_steps=steps, stage1_steps=steps, batch_size=batch, max_length=seq, eval_every=steps,
        gradient_checkpointing=mode,
    )
    plan = prepare_training(model, config, device)
    batch_rows = next(task.train_batches(batch, 0))
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), precision_context(device, "auto"):
        task.loss(model, batch_rows)  # what autograd keeps for one step's backward (the graph is dropped)
    finetune(model, task, slots, FinetuneConfig(max_steps=3, batch_size=batch, max_length=seq, eval_every=3),
             threshold=1.0, anchors=None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = finetune(model, task, slots, config, threshold=1.0, anchors=None)
    per_step = result.train_seconds / max(result.steps, 1)
    flops = step_flops(model, batch, seq, 2)
    out = {
        "batch": batch,
        "seq": seq,
        "steps": result.steps,
        "step_seconds": per_step,
        "tokens_per_second": batch * seq / per_step,
        "flops_required": flops["required"],
        "mfu": flops["required"] / per_step / PEAK_BF16,
        "mfu_6nt": flops["six_n_t"] / per_step / PEAK_BF16,
        "plan": plan,
        "batch_shape": list(batch_rows["input_ids"].shape),
        "saved_for_backward_bytes": saved[0],
    }
    if device.type == "cuda":
        out["allocated_at_start_bytes"] = held
        out["peak_device_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        out["peak_device_train_step_bytes"] = _train_step_peak(model, task, config, device, batch)
    return out


def _train_step_peak(model: Any, task: Any, config: Any, device: torch.device, batch: int) -> int:
    """Peak device memory of training steps alone: ``finetune``'s peak above also holds its evaluations, whose
    batches are sized from the free memory, so it says little about what a step of ``batch`` rows needs."""
    from relora_worker.finetune import make_optimiser
    from relora_worker.tasks import precision_context

    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = make_optimiser(params, config, device)
    batches = task.train_batches(batch, 1)
    model.train()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):
        with precision_context(device, config.precision):
            loss = task.loss(model, next(batches))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    optimiser.zero_grad(set_to_none=True)
    model.eval()
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--projection", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=128, help="evaluation rows' token limit (the default)")
    parser.add_argument("--reference-rows", type=int, default=32, help="rows of the full-sequence reference")
    parser.add_argument("--checkpointing", action="store_true", help="also measure with checkpointing on")
    parser.add_argument("--compile", action="store_true", help="also measure with the decoder layers compiled")
    args = parser.parse_args(argv)

    from relora_worker.adapters import lora_slots
    from relora_worker.config import SearchConfig, TaskConfig
    from relora_worker.data import build_task_data
    from relora_worker.modelio import attach_adapter, load_base_model, load_tokenizer, read_adapter
    from relora_worker.project import Projection, resolve_device
    from relora_worker.strategies import FusedStart
    from relora_worker.tasks import build_task, eval_context, precision_context, probe_rows

    device = resolve_device(args.device)
    record: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    base_dir, data_dir = Path(args.base), Path(args.data_dir)
    tokenizer = load_tokenizer(base_dir)
    _sync(device)
    started = time.perf_counter()
    base = load_base_model(base_dir, "causal-lm", None, tokenizer.pad_token_id, device)
    _sync(device)
    record["load"] = {
        "seconds": time.perf_counter() - started,
        "peak_host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "weight_bytes": sum(p.numel() * p.element_size() for p in base.parameters()),
        "dtype": str(next(base.parameters()).dtype),
        "largest_shard_bytes": max(p.stat().st_size for p in base_dir.glob("*.safetensors")),
    }
    adapter = read_adapter(Path(args.adapter))
    model = attach_adapter(base, adapter, "causal-lm").to(device)
    slots = lora_slots(model)
    config = TaskConfig(task="causal-lm", val_size=512, eval_size=512)
    data = build_task_data(
        config, str(data_dir / "train.jsonl"), str(data_dir / "val.jsonl"), str(data_dir / "eval.jsonl"),
        labels=adapter.task.get("labels"),
    )
    task = build_task("causal-lm", data, tokenizer, args.max_length, device)
    # The search's default: a probe scores the FLOP-bounded prefix of D_val (SearchConfig.probe_flops).
    parameters = sum(p.numel() for p in model.parameters())
    task.limit_probe(probe_rows(task.val.lengths, parameters, SearchConfig().probe_flops))

    # One probe: fuse every module, swap the factors in, D_val's loss in bf16 (what the search does 20 times).
    start = FusedStart(slots, Projection.load(Path(args.projection)))
    alphas = iter([(-0.5 + 0.01 * i, 1.0 + 0.01 * i) for i in range(100)])

    def probe() -> float:
        start.apply(*next(alphas))
        with precision_context(device, "auto"):
            return task.val_loss(model)

    record["probe_seconds"], _ = _timed(probe, device)
    record["val_loss_seconds"], _ = _timed(lambda: task.val_loss(model), device)
    record["val_rows"] = len(data.val)
    record["probe_rows"] = len(task.probe)

    # Likelihood accuracy: shared prompt (default), first token only, full sequences (reference, a subset).
    model.eval()
    record["eval_rows"] = len(data.eval)
    record["quality_seconds"], _ = _timed(lambda: task.quality(model), device)
    record["label_scores_prefix_seconds"], exact = _timed(lambda: task.label_scores(model), device)
    record["label_scores_first_token_seconds"], first = _timed(
        lambda: task.label_scores(model, first_token_only=True), device
    )
    record["first_token_argmax_agreement"] = float((first.argmax(1) == exact.argmax(1)).float().mean())
    # Training throughput at seq × batch.
    record["train"] = measure_training(model, tokenizer, slots, device, args.batch, args.seq, args.steps, "off")
    if args.checkpointing:
        record["train_checkpointing"] = measure_training(
            model, tokenizer, slots, device, args.batch, args.seq, args.steps, "on"
        )
    if args.compile:
        try:
            trunk = model.get_base_model().model
            for layer in trunk.layers:
                layer.compile(dynamic=False)
            started = time.perf_counter()
            record["train_compiled"] = measure_training(
                model, tokenizer, slots, device, args.batch, args.seq, args.steps,
                "on" if args.checkpointing else "off",
            )
            record["train_compiled"]["wall_seconds_with_compilation"] = time.perf_counter() - started
        except Exception as error:  # measured or explained, never fatal to the rest of the record
            record["train_compiled"] = {"error": f"{type(error).__name__}: {error}"[:500]}
    # The previous implementation (every (prompt, label) sequence in full), on a subset: last, as it is the
    # most memory-hungry and the numbers above must survive it.
    try:
        subset = args.reference_rows
        full_prompts = task.prompts
        task.prompts = full_prompts[:subset]
        with torch.no_grad(), eval_context(model, device):
            reference_seconds, reference = _timed(lambda: task._label_scores_full(model), device, repeats=1)
            subset_exact = task.label_scores(model)
        task.prompts = full_prompts
        record["label_scores_full_seconds_subset"] = reference_seconds
        record["label_scores_full_seconds_scaled"] = reference_seconds * len(data.eval) / subset
        record["prefix_vs_full_max_abs_diff"] = float((subset_exact - reference).abs().max())
        agreement = (subset_exact.argmax(1) == reference.argmax(1)).float().mean()
        record["prefix_vs_full_argmax_agreement"] = float(agreement)
    except torch.cuda.OutOfMemoryError as error:
        record["label_scores_full_error"] = f"out of memory: {error}"[:300]
    record["peak_host_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(args.out).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
