"""Random-weight models of real LLM shapes, their "release", an old adapter and a task: built on the device.

Nothing is downloaded: each shape is a transformers config with the published dimensions (Qwen2.5-0.5B,
Qwen2.5-1.5B, Llama-3-8B; a tiny one for the CPU smoke test). Weights are drawn by the model's own initialiser
directly on the device in bfloat16 and saved as safetensors shards of at most 5 GB (as the hub's checkpoints).
The release v2 is v1 plus a rank-32 update of every attention projection and small dense noise, so Π_r has a
real delta to project. The tokenizer is a word-level one with the shape's full vocabulary (``w<i>`` words),
so the output layer has its real size; prompts are random words, labels 16 single words (completion: the
label token and end-of-sequence).

Speed and memory, not quality, are what these models measure: with random weights every strategy's accuracy
is chance.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {  # the CPU smoke test's shape: the same code path in seconds
        "family": "llama",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "tie_word_embeddings": False,
    },
    "qwen2.5-0.5b": {
        "family": "qwen2",
        "vocab_size": 151936,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
        "rope_theta": 1000000.0,
    },
    "qwen2.5-1.5b": {
        "family": "qwen2",
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
        "rope_theta": 1000000.0,
    },
    "llama-3-8b": {
        "family": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
        "rope_theta": 500000.0,
    },
    "llama-3-70b": {  # 141 GB in bf16: built by stream_build.py, run across several GPUs (issue 18)
        "family": "llama",
        "vocab_size": 128256,
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
        "rope_theta": 500000.0,
    },
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]
LABELS = 16


@dataclass
class Built:
    """Where one shape's scenario was written, and what building it cost."""

    base_v1: str
    base_v2: str
    adapter_v1: str
    train: str
    eval: str
    val: str
    config: dict[str, Any]
    seconds: dict[str, float]
    weight_bytes: int
    largest_shard_bytes: int


def model_config(shape: str) -> Any:
    """The transformers config of ``shape`` (bfloat16, sdpa attention)."""
    from transformers import LlamaConfig, Qwen2Config

    spec = dict(SHAPES[shape])
    family = spec.pop("family")
    cls = Qwen2Config if family == "qwen2" else LlamaConfig
    return cls(
        **spec,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        dtype="bfloat16",
        attn_implementation="sdpa",
    )


def word_tokenizer(vocab_size: int) -> Any:
    """A word-level fast tokenizer whose vocabulary is ``<pad> <unk> <s> </s> w4 … w{V-1}``."""
    from relora_worker.synthetic import make_tokenizer

    return make_tokenizer([f"w{i}" for i in range(len(SPECIAL), vocab_size)], "llama")


def _rows(rng: random.Random, count: int, words: int, vocab: int, labels: list[str]) -> list[dict[str, str]]:
    rows = []
    for _ in range(count):
        text = " ".join(f"w{rng.randrange(len(SPECIAL) + LABELS, vocab)}" for _ in range(words))
        rows.append({"text": text, "label": rng.choice(labels)})
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_task_data(out: Path, vocab: int, counts: tuple[int, int, int], words: int, seed: int) -> list[str]:
    """train/eval/val JSONL of ``counts`` rows each (prompts of ``words`` random words, one of 16 labels) under
    ``out``; returns the labels."""
    labels = [f"w{len(SPECIAL) + i}" for i in range(LABELS)]
    rng = random.Random(seed)
    for name, count in zip(("train", "eval", "val"), counts, strict=True):
        _write_jsonl(out / f"{name}.jsonl", _rows(rng, count, words, vocab, labels))
    return labels


def _release(model: Any, seed: int) -> None:
    """v1 → v2 in place: a rank-32 update of every attention projection, plus small noise on every matrix."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() != 2:
                continue
            scale = parameter.float().std().item()
            if any(name.endswith(f"{t}.weight") for t in TARGETS):
                d_out, d_in = parameter.shape
                left = torch.randn(d_out, 32, generator=generator, device=parameter.device)
                right = torch.randn(32, d_in, generator=generator, device=parameter.device)
                parameter += (0.2 * scale / 32**0.5 * left @ right).to(parameter.dtype)
            noise = torch.randn(parameter.shape, generator=generator, device=parameter.device)
            parameter += (0.01 * scale * noise).to(parameter.dtype)


def _adapter(model: Any, out: Path, seed: int, labels: list[str]) -> None:
    """An old LoRA adapter (r=16, α=32 on q/k/v/o) with random non-zero factors, saved with PEFT."""
    from peft import LoraConfig, TaskType, get_peft_model

    from relora_worker.modelio import save_adapter

    torch.manual_seed(seed)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, lora_dropout=0.0, task_type=TaskType.CAUSAL_LM)
    wrapped = get_peft_model(model, lora)
    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.01)
    save_adapter(wrapped, out, {"task": "causal-lm", "labels": labels, "release": "v1"}, str(out.parent / "base_v1"))
    wrapped.unload()


def build(
    shape: str,
    out: Path,
    device: torch.device,
    train_rows: int,
    eval_rows: int,
    val_rows: int,
    words: int,
    seed: int = 0,
) -> Built:
    """Writes base_v1/, base_v2/, adapter_v1/ and train/val/eval JSONL for ``shape`` under ``out``."""
    from transformers import AutoModelForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    config = model_config(shape)
    tokenizer = word_tokenizer(config.vocab_size)
    labels = write_task_data(out, config.vocab_size, (train_rows, eval_rows, val_rows), words, seed)

    started = time.perf_counter()
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    _sync(device)
    seconds["init"] = time.perf_counter() - started
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    started = time.perf_counter()
    model.save_pretrained(out / "base_v1", max_shard_size="5GB")
    tokenizer.save_pretrained(out / "base_v1")
    seconds["save_v1"] = time.perf_counter() - started

    started = time.perf_counter()
    _adapter(model, out / "adapter_v1", seed, labels)
    seconds["adapter"] = time.perf_counter() - started

    started = time.perf_counter()
    _release(model, seed + 1)
    _sync(device)
    model.save_pretrained(out / "base_v2", max_shard_size="5GB")
    tokenizer.save_pretrained(out / "base_v2")
    seconds["release_and_save_v2"] = time.perf_counter() - started
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    largest = max(p.stat().st_size for p in (out / "base_v2").glob("*.safetensors"))
    return Built(
        str(out / "base_v1"),
        str(out / "base_v2"),
        str(out / "adapter_v1"),
        str(out / "train.jsonl"),
        str(out / "eval.jsonl"),
        str(out / "val.jsonl"),
        {k: v for k, v in SHAPES[shape].items()},
        seconds,
        weight_bytes,
        largest,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
