"""Where a training step's device memory goes at one shape: allocated bytes after loading, after the forward, at
the forward's and the backward's peaks, per decoder layer, with activation checkpointing off and on.

Builds the random-weight model of ``--shape`` straight on the device (nothing is read from disk), attaches LoRA
r=16 on q/k/v/o and runs the worker's own causal-LM loss (``CausalLanguageModelTask.completion_losses``: the
output layer on the completion positions only) on one batch of ``--batch`` × ``--seq`` tokens.

    PYTHONPATH=. python3 -m bench.scale.memory_probe --shape llama-3-8b --out $OUT/memory.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

GIB = 2**30


def _model(shape: str, device: torch.device, through: Path | None = None) -> Any:
    """The LoRA-wrapped model, built on the device; with ``through``, saved there as safetensors and read back
    with the worker's ``load_base_model`` (the path a real run takes)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from bench.scale.build import model_config
    from relora_worker.modelio import load_base_model

    with torch.device(device):
        base = AutoModelForCausalLM.from_config(model_config(shape), dtype=torch.bfloat16)
    if through is not None:
        base.save_pretrained(str(through), safe_serialization=True)
        del base
        torch.cuda.empty_cache()
        base = load_base_model(through, "causal-lm", None, 0, device)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return get_peft_model(base, lora)


def _batch(vocab: int, batch: int, seq: int, device: torch.device) -> dict[str, Any]:
    ids = torch.randint(10, vocab, (batch, seq), device=device)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "targets": ids.clone(),
        "scored": torch.full((batch,), 2, device=device),
        "lengths": torch.full((batch,), seq, device=device),
        "max_scored": 2,
    }


def _task_batch(model: Any, batch: int, seq: int, device: torch.device) -> dict[str, Any]:
    """A batch the worker's own task makes (tokenizer, padding, masks, as ``finetune`` draws them)."""
    from bench.scale.build import word_tokenizer
    from bench.scale.micro import training_task

    vocab = model.config.vocab_size
    task = training_task(word_tokenizer(vocab), vocab, batch * 2, seq, device)
    return task._bounded(next(task.train_batches(batch, 0)))


def _step(model: Any, batch: dict[str, Any], device: torch.device) -> dict[str, float]:
    from relora_worker.tasks import CausalLanguageModelTask, precision_context

    layers: list[float] = []
    trunk = model.get_base_model().model
    hooks = [
        layer.register_forward_hook(lambda *_: layers.append(torch.cuda.memory_allocated(device) / GIB))
        for layer in trunk.layers
    ]
    model.train()
    torch.cuda.synchronize(device)
    start = torch.cuda.memory_allocated(device) / GIB
    torch.cuda.reset_peak_memory_stats(device)
    with precision_context(device, "auto"):
        losses, real = CausalLanguageModelTask.completion_losses(model, batch)
        loss = losses.sum() / real.sum()
    torch.cuda.synchronize(device)
    after_forward = torch.cuda.memory_allocated(device) / GIB
    forward_peak = torch.cuda.max_memory_allocated(device) / GIB
    torch.cuda.reset_peak_memory_stats(device)
    loss.backward()
    torch.cuda.synchronize(device)
    backward_peak = torch.cuda.max_memory_allocated(device) / GIB
    for hook in hooks:
        hook.remove()
    model.zero_grad(set_to_none=True)
    per_layer = [b - a for a, b in zip([start, *layers[:-1]], layers, strict=True)]
    return {
        "allocated_before_gib": start,
        "after_forward_gib": after_forward,
        "forward_peak_gib": forward_peak,
        "backward_peak_gib": backward_peak,
        "first_layers_growth_gib": per_layer[:3],
        "mean_layer_growth_gib": sum(per_layer) / len(per_layer),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-3-8b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--out", required=True)
    parser.add_argument("--through", type=Path, default=None, help="save and reload the base with the worker here")
    args = parser.parse_args(argv)

    from relora_worker.modelio import enable_gradient_checkpointing

    device = torch.device("cuda")
    model = _model(args.shape, device, args.through)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / GIB
    batch = _batch(model.config.vocab_size, args.batch, args.seq, device)
    record: dict[str, Any] = {"shape": args.shape, "batch": args.batch, "seq": args.seq, "weights_gib": weights}
    record["attention"] = str(getattr(model.config, "_attn_implementation", None))
    record["loaded_through_worker"] = args.through is not None
    record["trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _step(model, batch, device)  # warm-up: kernels and the allocator's first segments
    record["checkpointing_off"] = _step(model, batch, device)
    worker_batch = _task_batch(model, args.batch, args.seq, device)
    record["worker_batch"] = {k: list(v.shape) for k, v in worker_batch.items() if isinstance(v, torch.Tensor)}
    record["worker_batch_masked_tokens"] = int((worker_batch["attention_mask"] == 0).sum())
    record["worker_batch_checkpointing_off"] = _step(model, worker_batch, device)
    enable_gradient_checkpointing(model)
    record["checkpointing_on"] = _step(model, batch, device)
    record["worker_batch_checkpointing_on"] = _step(model, worker_batch, device)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
