"""Random-weight checkpoints too big to build whole (Llama-3-70B: 141 GB in bf16), written one layer at a time.

``build.py`` draws a whole model on the device and saves it with ``save_pretrained``: a 70B model does not fit
one GPU, and v1 + v2 (282 GB) do not fit a multi-GPU node's 235 GB disk. This builder never holds more than one
decoder layer: it takes the parameter names and shapes from the model built on the ``meta`` device (no memory),
draws each layer's tensors on the device (N(0, 0.02) matrices, unit norms, like the models' own initialisers),
and writes them to safetensors files with a ``model.safetensors.index.json``, as a hub checkpoint is laid out.

Files are split by what the release changes: ``targets-*.safetensors`` hold the adapter's target projections
(q/k/v/o), ``rest-*.safetensors`` everything else. v2 rewrites the target files with the release's change (the
same rank-32 update and noise as build.py's ``_release``, on those matrices only) and **hard-links** the rest to
v1's bytes (same inode, no second copy on disk): only the targets' difference matters to project-delta (it
reads target pairs only) and to readapt (it loads v2, whatever its values). For Llama-3-70B that is 141 GB +
21 GB of disk instead of 282 GB. The old adapter is PEFT's own LoRA (r=16, α=32 on q/k/v/o) on the meta model
with real factors, saved by the worker's ``save_adapter``, so its files are what ``build.py`` writes.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from bench.scale.build import SHAPES, TARGETS, Built, model_config, word_tokenizer, write_task_data

INDEX = "model.safetensors.index.json"
LAYER = re.compile(r"\.layers\.(\d+)\.")


def _parameters(config: Any) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter the checkpoint stores, from the model built on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]  # a tied head is stored once


def _is_target(name: str) -> bool:
    return any(name.endswith(f"{target}.weight") for target in TARGETS)


def _file_of(name: str, layers_per_file: int) -> str:
    """``targets-00003.safetensors`` / ``rest-00003.safetensors`` by layer group; embeddings and head: group 0."""
    match = LAYER.search(name)
    group = 0 if match is None else 1 + int(match.group(1)) // layers_per_file
    return f"{'targets' if _is_target(name) else 'rest'}-{group:05d}.safetensors"


def _draw(name: str, shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    if len(shape) == 1:  # RMSNorm weights
        return torch.ones(shape, dtype=torch.bfloat16, device=device)
    return (0.02 * torch.randn(shape, generator=generator, device=device)).to(torch.bfloat16)


def _released(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """build.py's release on one target matrix: a rank-32 update (0.2 × its scale) plus 1 % dense noise."""
    scale = weight.float().std().item()
    d_out, d_in = weight.shape
    left = torch.randn(d_out, 32, generator=generator, device=weight.device)
    right = torch.randn(32, d_in, generator=generator, device=weight.device)
    noise = torch.randn(weight.shape, generator=generator, device=weight.device)
    return (weight.float() + 0.2 * scale / 32**0.5 * left @ right + 0.01 * scale * noise).to(weight.dtype)


def _write_checkpoints(
    config: Any, v1: Path, v2: Path, device: torch.device, seed: int, layers_per_file: int
) -> tuple[int, int]:
    """Writes v1 and v2 file by file; returns (weight bytes, largest file's bytes)."""
    by_file: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for name, shape in _parameters(config):
        by_file.setdefault(_file_of(name, layers_per_file), []).append((name, shape))
    weights = torch.Generator(device=device).manual_seed(seed)
    release = torch.Generator(device=device).manual_seed(seed + 1)
    total, largest, weight_map = 0, 0, {}
    for file, entries in sorted(by_file.items()):
        drawn = {name: _draw(name, shape, weights, device) for name, shape in entries}
        save_file({k: t.cpu() for k, t in drawn.items()}, str(v1 / file), metadata={"format": "pt"})
        if file.startswith("targets-"):
            changed = {k: _released(t, release).cpu() for k, t in drawn.items()}
            save_file(changed, str(v2 / file), metadata={"format": "pt"})
        else:
            os.link(v1 / file, v2 / file)  # the release leaves these bytes as they are
        total += sum(t.numel() * t.element_size() for t in drawn.values())
        largest = max(largest, (v1 / file).stat().st_size)
        weight_map.update(dict.fromkeys(drawn, file))
        del drawn
    for folder in (v1, v2):
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / INDEX).write_text(json.dumps(index, indent=2))
    return total, largest


def _adapter(config: Any, out: Path, base_v1: Path, seed: int, labels: list[str]) -> None:
    """PEFT's LoRA on the meta-device model, its factors made real (A ~ Kaiming-like, B ~ N(0, 0.01)), saved."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    from relora_worker.modelio import save_adapter

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, lora_dropout=0.0, task_type=TaskType.CAUSAL_LM)
    wrapped = get_peft_model(model, lora)
    generator = torch.Generator().manual_seed(seed)
    for module in wrapped.modules():
        for factor, std in (("lora_A", None), ("lora_B", 0.01)):
            layer = getattr(module, factor, None)
            if not isinstance(layer, torch.nn.ModuleDict) or "default" not in layer:
                continue
            shape = layer["default"].weight.shape
            std = std if std is not None else shape[1] ** -0.5
            layer["default"].weight = torch.nn.Parameter(std * torch.randn(shape, generator=generator))
    save_adapter(wrapped, out, {"task": "causal-lm", "labels": labels, "release": "v1"}, str(base_v1))


def with_layers(config: Any, layers: int) -> Any:
    """``config`` cut to its first ``layers`` decoder layers, widths kept (Qwen2 lists an attention kind per layer
    in ``layer_types``, which must stay one per layer or the config refuses to save)."""
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = config.layer_types[:layers]
    return config


def build_streaming(
    shape: str,
    out: Path,
    device: torch.device,
    train_rows: int,
    eval_rows: int,
    val_rows: int,
    words: int,
    seed: int = 0,
    layers_per_file: int = 4,
    layers: int | None = None,
) -> Built:
    """Writes base_v1/, base_v2/, adapter_v1/ and train/val/eval JSONL for ``shape`` under ``out``, layer by layer.

    Weights are bfloat16 on every device (the checkpoint's dtype; the worker loads float32 on a CPU). ``layers``
    keeps the shape's widths with fewer decoder layers (a 70B's layers on a disk too small for all 80)."""
    out.mkdir(parents=True, exist_ok=True)
    config = model_config(shape)
    spec = dict(SHAPES[shape])
    if layers is not None:
        spec["num_hidden_layers"] = layers
        with_layers(config, layers)
    tokenizer = word_tokenizer(config.vocab_size)
    labels = write_task_data(out, config.vocab_size, (train_rows, eval_rows, val_rows), words, seed)
    v1, v2 = out / "base_v1", out / "base_v2"
    for folder in (v1, v2):
        folder.mkdir(exist_ok=True)
        config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    weight_bytes, largest = _write_checkpoints(config, v1, v2, device, seed, layers_per_file)
    seconds["write_v1_v2"] = time.perf_counter() - started
    started = time.perf_counter()
    _adapter(config, out / "adapter_v1", v1, seed, labels)
    seconds["adapter"] = time.perf_counter() - started
    return Built(str(v1), str(v2), str(out / "adapter_v1"), str(out / "train.jsonl"), str(out / "eval.jsonl"),
                 str(out / "val.jsonl"), spec, seconds, weight_bytes, largest)  # fmt: skip
