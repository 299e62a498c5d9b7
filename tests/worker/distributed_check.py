"""Run by tests/worker/test_distributed.py under torchrun (2 gloo ranks); prints one JSON line per rank.

``distributed_check.py decisions``: :func:`relora_worker.distributed.decided_on_publisher` with a collective
objective, once deciding and once failing on rank 0 (the other rank must raise, not wait).

FSDP2 sharding of a frozen base: ``distributed_check.py bert SCENARIO_DIR``: the synthetic scenario's BERT
classifier with its adapter attached the way ``readapt`` attaches it; ``distributed_check.py llama``: a tiny
random Llama causal LM with a PEFT LoRA (the ``_no_split_modules`` path). Each rank computes the unsharded
reference (loss and one step's LoRA gradients on the whole batch), then shards the base
(relora_worker.distributed.shard_frozen_base), scores its share of the rows and back-propagates its share.

Equal pass counts under a sharded base: ``distributed_check.py passes CLS_DIR LM_DIR``: the classification
and causal-LM scenarios' bases loaded shard by shard (relora_worker.sharded_load), evaluated through
:class:`~relora_worker.sharded_task.ShardedTask` one row per pass on uneven shares (one of them empty); each
rank reports its passes, fillers and values next to the single process's, computed first with the whole base
(likelihood accuracy calls a causal LM's trunk and output layer directly: two passes per chunk of prompts).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.tensor import DTensor

from relora_worker import distributed

ROWS = 8


def _bert(folder: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    from relora_worker.modelio import attach_adapter, load_base_model, load_tokenizer, read_adapter

    tokenizer = load_tokenizer(folder / "base_v2")
    base = load_base_model(folder / "base_v2", "seq-cls", 4, tokenizer.pad_token_id, torch.device("cpu"))
    model = attach_adapter(base, read_adapter(folder / "adapter_v1"), "seq-cls")
    texts = [f"row {i}: the market and the oven and the stars" for i in range(ROWS)]
    batch = dict(tokenizer(texts, return_tensors="pt", padding=True))
    return model, batch, torch.arange(ROWS) % 4


def _llama() -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for module in model.modules():  # B = 0 at init: give the factors values so their gradients are not trivial
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.1)
    ids = torch.randint(1, 97, (ROWS, 12), generator=torch.Generator().manual_seed(1))
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids


def _loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], target: torch.Tensor, kind: str) -> torch.Tensor:
    logits = model(**batch).logits
    if kind == "bert":
        return F.cross_entropy(logits, target)
    # Every row has the same token count, so the mean over shares' means is the whole batch's mean.
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1))


def decisions() -> None:
    cpu = torch.device("cpu")
    with distributed.joined("cpu") as world:
        calls: list[list[float]] = []

        def objective(alpha: float, beta: float) -> float:
            calls.append([alpha, beta])
            (total,) = distributed.all_reduce_sums([alpha + beta * (world.rank + 1)], cpu)  # collective
            return total

        def decide(probe: Callable[..., float]) -> dict:  # a search's shape: probes, then a choice
            losses = [probe(0.0, 1.0), probe(0.5, 0.25)]
            return {"alpha": 0.5, "beta": 0.25, "losses": losses}

        def fail(probe: Callable[..., float]) -> dict:
            probe(1.0, 0.0)
            raise ValueError("every probe of the fusion search gave a non-finite validation loss")

        chosen = distributed.decided_on_publisher(objective, decide)
        try:
            distributed.decided_on_publisher(objective, fail)
            failure = None
        except Exception as error:  # the test compares each rank's error
            failure = f"{type(error).__name__}: {error}"
        report = {"rank": world.rank, "calls": calls, "chosen": chosen, "failure": failure}
    print(json.dumps(report), flush=True)


def _task(folder: Path, task: str, metric: str, model: Any, probe: int) -> tuple[Any, Any]:
    """The scenario's task with ``probe`` probe rows and 7 evaluation rows, one row per evaluation pass, and
    its model (the whole base when ``model`` is None)."""
    from relora_worker.config import TaskConfig
    from relora_worker.data import build_task_data
    from relora_worker.modelio import attach_adapter, load_base_model, load_tokenizer, read_adapter
    from relora_worker.tasks import build_task

    tokenizer = load_tokenizer(folder / "base_v2")
    adapter = read_adapter(folder / "adapter_v1")
    data = build_task_data(TaskConfig(task=task, val_size=16), str(folder / "train.jsonl"),
                           eval_uri=str(folder / "eval.jsonl"), labels=adapter.task.get("labels"))  # fmt: skip
    data.eval = data.eval[:7]
    if model is None:
        base = load_base_model(folder / "base_v2", task, len(data.labels), tokenizer.pad_token_id)
        model = attach_adapter(base, adapter, task)
    built = build_task(task, data, tokenizer, 64, torch.device("cpu"), metric)
    built.eval_tokens = 1  # one row per pass: a share's pass count is its row count
    built.limit_probe(probe)
    return built, model


def passes(folders: dict[str, Path]) -> None:
    from relora_worker.modelio import load_tokenizer, read_adapter
    from relora_worker.sharded_load import load_sharded_model
    from relora_worker.sharded_task import ShardedTask

    cases = [("seq-cls", "accuracy"), ("causal-lm", "accuracy")]
    reference = {}
    for task, metric in cases:  # the single process: the whole base, every row
        torch.manual_seed(0)
        whole, model = _task(folders[task], task, metric, None, 5)
        one_row, _ = _task(folders[task], task, metric, model, 1)
        reference[task, metric] = (whole.val_loss(model), whole.quality(model), one_row.val_loss(model))
    reports = []
    with distributed.joined("cpu") as world:
        for task, metric in cases:
            folder = folders[task]
            tokenizer, adapter = load_tokenizer(folder / "base_v2"), read_adapter(folder / "adapter_v1")
            model = load_sharded_model(folder / "base_v2", task, len(adapter.task["labels"]), tokenizer.pad_token_id,
                                       torch.device("cpu"), adapter, load_weights=True)  # fmt: skip
            counted = distributed.first_block(model)
            sharded = ShardedTask(_task(folder, task, metric, model, 5)[0], world, 2, counted)
            val, quality = sharded.val_loss(model), sharded.quality(model)  # shares 2/3 and 3/4 rows
            alone = ShardedTask(_task(folder, task, metric, model, 1)[0], world, 2, counted)
            one_row = alone.val_loss(model)  # rank 1's share is empty: filler passes only
            reports.append({
                "case": f"{task}/{metric}", "val_loss": val, "quality": quality, "one_row_val_loss": one_row,
                "reference": reference[task, metric], "passes": sharded.passes + alone.passes,
                "filler_passes": sharded.filler_passes + alone.filler_passes,
            })  # fmt: skip
        dist.barrier()
    print(json.dumps({"rank": world.rank, "reports": reports}), flush=True)


def tied(folder: Path) -> None:
    """A causal LM whose output layer is its embedding (tied): loaded shard by shard, sharded as one root unit,
    scored through the whole model (the task cannot call trunk and head apart), as the whole base scores."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from relora_worker.modelio import AdapterFiles, attach_adapter, load_base_model
    from relora_worker.sharded_load import load_sharded_model
    from relora_worker.tasks import CausalLanguageModelTask, trunk_and_head

    with distributed.joined("cpu") as world:
        if world.is_publisher:
            config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
            LlamaForCausalLM(config).save_pretrained(folder)
        dist.barrier()
        adapter = AdapterFiles(folder, {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}, {})
        whole = attach_adapter(load_base_model(folder, "causal-lm", None, 0), adapter, "causal-lm", False)
        model = load_sharded_model(folder, "causal-lm", None, 0, torch.device("cpu"), adapter, load_weights=False)
        halved = 2 * distributed.frozen_bytes_local(model) <= 1.1 * distributed.frozen_bytes_local(whole)
        ids = torch.randint(1, 97, (2, 12), generator=torch.Generator().manual_seed(1))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "targets": ids}
        with torch.no_grad():
            reference = CausalLanguageModelTask.token_losses(whole, batch).sum().item()
            sharded = CausalLanguageModelTask.token_losses(model, batch).sum().item()
        lm = model.get_base_model()
        tied_now = lm.lm_head.weight is lm.model.embed_tokens.weight
        report = {"rank": world.rank, "reference": reference, "sharded": sharded, "halved": halved,
                  "full_forward": trunk_and_head(model) is None, "tied": tied_now}  # fmt: skip
        dist.barrier()
    print(json.dumps(report), flush=True)


def main() -> None:
    kind = sys.argv[1]
    if kind == "tied":
        tied(Path(sys.argv[2]))
        return
    if kind == "decisions":
        decisions()
        return
    if kind == "passes":
        passes({"seq-cls": Path(sys.argv[2]), "causal-lm": Path(sys.argv[3])})
        return
    torch.manual_seed(0)
    model, batch, target = _bert(Path(sys.argv[2])) if kind == "bert" else _llama()
    trainable = [p for p in model.parameters() if p.requires_grad]
    reference = _loss(model, batch, target, kind)
    reference.backward()
    reference_grads = [p.grad.clone() for p in trainable]
    model.zero_grad(set_to_none=True)
    frozen_total = sum(p.numel() for p in model.parameters() if not p.requires_grad)

    with distributed.joined("cpu") as world:
        blocks = distributed.shard_frozen_base(model)
        share = world.share(ROWS)
        mine = {k: v[share] for k, v in batch.items()}
        with torch.no_grad():
            part = _loss(model, mine, target[share], kind).item()
        (split_loss,) = distributed.all_reduce_sums([part / world.size], torch.device("cpu"))
        _loss(model, mine, target[share], kind).backward()
        distributed.average_gradients(trainable)
        frozen = [p for p in model.parameters() if not p.requires_grad]
        report = {
            "rank": world.rank,
            "blocks": blocks,
            "frozen_sharded": all(isinstance(p, DTensor) for p in frozen),
            "frozen_local": sum(p.to_local().numel() for p in frozen if isinstance(p, DTensor)),
            "frozen_total": frozen_total,
            "trainable_plain": not any(isinstance(p, DTensor) for p in trainable),
            "reference_loss": reference.item(),
            "split_loss": split_loss,
            "grad_error": max(float((p.grad - g).abs().max()) for p, g in zip(trainable, reference_grads, strict=True)),
            "grad_scale": max(float(g.abs().max()) for g in reference_grads),
        }
        dist.barrier()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
