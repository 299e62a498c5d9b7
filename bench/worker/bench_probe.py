"""Benchmark (a) of issue 2: one in-place BO probe vs reloading the adapter, and the search's cost split.

A MiniLM-sized encoder (hidden 384, 6 layers, 12 heads, MLP 1536; random weights, built from a config),
a rank-16 adapter on query/key/value/dense with a 16-way head, D_val of 512 examples of 64 tokens.

* in-place probe: fuse (α, β) for every module, copy the factors into the loaded model, validation loss;
* reload probe: write the fused adapter to disk and load it into the model again with PEFT
  (``load_adapter`` + ``set_adapter``), then the validation loss — what a probe costs without in-place swaps;
* a full 20-probe Bayesian search: seconds in probes, in GP fitting and in acquisition.

    python bench/worker/bench_probe.py --out probe-bench.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from relora_worker.adapters import lora_slots
from relora_worker.config import SearchConfig
from relora_worker.data import Example, TaskData
from relora_worker.project import Projection
from relora_worker.search import run_search, warm_up
from relora_worker.strategies import FusedStart
from relora_worker.synthetic import make_tokenizer
from relora_worker.tasks import build_task


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--val", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="probe-bench.json")
    args = parser.parse_args()

    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = random.Random(0)
    words = [f"w{i}" for i in range(3000)]
    tokenizer = make_tokenizer(words, "bert")
    labels = [f"s{i}" for i in range(16)]
    examples = [Example(" ".join(rng.choice(words) for _ in range(60)), rng.choice(labels)) for _ in range(args.val)]
    data = TaskData(train=examples[:64], val=examples, eval=examples[:64], labels=labels)
    torch.manual_seed(0)
    base = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=12,
            intermediate_size=4 * args.hidden,
            num_labels=16,
            pad_token_id=0,
        )
    )
    model = (
        get_peft_model(
            base,
            LoraConfig(
                r=16, lora_alpha=32, target_modules=["query", "key", "value", "dense"], task_type=TaskType.SEQ_CLS
            ),
        )
        .to(device)
        .eval()
    )
    slots = lora_slots(model)
    for slot in slots:  # a trained-looking adapter: B is not zero
        slot.set_factors(0.02 * torch.randn_like(slot.lora_b), slot.lora_a.detach())
    projection = Projection(
        {s.name: (0.01 * torch.randn_like(s.lora_b).cpu(), 0.01 * torch.randn_like(s.lora_a).cpu()) for s in slots},
        {"rank": 16},
    )
    task = build_task("seq-cls", data, tokenizer, 64, device)
    start = FusedStart(slots, projection)
    task.val_loss(model)  # warm-up: kernels, allocator

    swap = timed(lambda: start.apply(0.3, 1.5), args.repeats)
    in_place = timed(lambda: (start.apply(0.3, 1.5), task.val_loss(model)), args.repeats)
    evaluation = timed(lambda: task.val_loss(model), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "fused"

        def reload() -> None:
            start.apply(0.3, 1.5)
            model.save_pretrained(str(saved))
            model.load_adapter(str(saved), adapter_name="probe")
            model.set_adapter("probe")
            task.val_loss(model)
            model.set_adapter("default")
            model.delete_adapter("probe")

        reload_times = timed(reload, args.repeats)

    def objective(alpha: float, beta: float) -> float:
        start.apply(alpha, beta)
        return task.val_loss(model)

    warm_up()  # as the worker does while it loads the model (one-time per process, off the readiness clock)
    searches = []
    # The GP's tensors are tiny (≤ 20 points): compare the default intra-op thread pool with one thread.
    default_threads = torch.get_num_threads()
    for threads in (default_threads, 1):
        torch.set_num_threads(threads)
        for seed in range(3):
            result = run_search(objective, SearchConfig(budget=20, seed=seed))
            searches.append(
                {
                    "torch_threads": threads,
                    "probes": len(result.probes),
                    "probe_seconds": result.probe_seconds,
                    "fit_seconds": result.fit_seconds,
                    "acquisition_seconds": result.acquisition_seconds,
                    "stop_reason": result.stop_reason,
                }
            )
    torch.set_num_threads(default_threads)
    from relora_worker.adapters import snapshot
    from relora_worker.config import FinetuneConfig
    from relora_worker.finetune import finetune

    step_ms = {}
    for name, anchors in (("plain", None), ("anchored", snapshot(slots))):
        config = FinetuneConfig(max_steps=60, stage1_steps=60, eval_every=60, batch_size=32)
        tuned = finetune(model, task, slots, config, threshold=1.0, anchors=anchors)
        step_ms[name] = 1000 * tuned.train_seconds / tuned.steps
    median = statistics.median
    results = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": {"hidden": args.hidden, "layers": args.layers, "lora_modules": len(slots), "rank": 16},
        "val_examples": args.val,
        "repeats": args.repeats,
        "median_seconds": {
            "swap_in_place": median(swap),
            "probe_in_place": median(in_place),
            "validation_loss_only": median(evaluation),
            "probe_with_reload": median(reload_times),
        },
        "reload_over_in_place": median(reload_times) / median(in_place),
        "searches": searches,
        "finetune_ms_per_step": step_ms,
    }
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
