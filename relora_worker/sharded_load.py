"""A base loaded straight into its FSDP2 shards (``--shard-base``, issue 18): no rank holds the whole base.

The model is built with its parameters on the meta device (no memory), the adapter is attached, the frozen
base is sharded (:func:`relora_worker.distributed.shard_frozen_base`), and only then is memory allocated
(``to_empty``: each rank its own Shard(0) rows). Each rank fills its rows from the safetensors files with
``safe_open(...).get_slice(key)[start:stop]``, which reads just those rows of the memory-mapped file: a rank's
peak is its shard plus one tensor's rows, never the base. Buffers (rotary frequencies, position ids) are
built for real at construction and kept; the LoRA factors and any saved head stay whole tensors and are
initialised, then loaded from the adapter, as :func:`relora_worker.modelio.attach_adapter` does.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from relora_worker.distributed import shard_frozen_base
from relora_worker.errors import BadInputError
from relora_worker.modelio import AdapterFiles, Checkpoint, attach_adapter, load_adapter_weights, load_dtype

PEFT_PREFIX = "base_model.model."


def base_weight_bytes(folder: Path, device: torch.device) -> int:
    """Bytes of the base's weights once loaded on ``device`` (in :func:`relora_worker.modelio.load_dtype`),
    read from the checkpoint's headers: what ``--shard-base auto`` weighs before anything is loaded."""
    checkpoint = Checkpoint(folder, "base model")
    width = torch.finfo(load_dtype(folder, device)).bits // 8
    return sum(math.prod(checkpoint.shape(key)) for key in checkpoint) * width


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Every parameter registered in the block lives on the meta device; buffers stay real (they are built
    from the config, e.g. rotary frequencies, and are not all in the checkpoint)."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and not param.is_meta:  # a meta one is kept: tying an output layer reuses it
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def _skeleton(folder: Path, task: str, num_labels: int | None, pad_token_id: int | None, dtype: torch.dtype) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as error:
        raise BadInputError(f"base model {folder}: cannot read its config ({error})") from error
    if task == "seq-cls":
        config.num_labels = num_labels
        config.pad_token_id = pad_token_id
    with _parameters_on_meta():
        cls = AutoModelForSequenceClassification if task == "seq-cls" else AutoModelForCausalLM
        model = cls.from_config(config, dtype=dtype)
    if pad_token_id is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    return model


def _checkpoint_key(name: str, checkpoint: Checkpoint, prefix: str) -> str | None:
    """The checkpoint's key of the PEFT model's frozen parameter ``name`` (PEFT's ``base_layer`` wrapping and
    prefix removed; with or without the base's ``base_model_prefix``, as transformers matches them)."""
    plain = name.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")
    known = set(checkpoint.keys())
    for candidate in (plain, plain.removeprefix(prefix + "."), f"{prefix}.{plain}"):
        if candidate in known:
            return candidate
    return None


def _local_rows(param: Any) -> tuple[Tensor, int]:
    """This rank's tensor of ``param`` and the first row it holds (FSDP2's Shard(0): chunks of ⌈rows/N⌉)."""
    from torch.distributed.tensor import DTensor

    if not isinstance(param, DTensor):
        return param.data, 0
    local = param.to_local()
    rows, size = param.shape[0], param.device_mesh.size()
    start = min(param.device_mesh.get_local_rank() * math.ceil(rows / size), rows)
    return local, start


@torch.no_grad()
def _fill_frozen(model: Any, folder: Path) -> None:
    """Every frozen parameter's local rows from the checkpoint. A head the checkpoint lacks is the frozen
    original of a ``modules_to_save`` copy (the adapter's head is what runs): zeros, like an unused slot."""
    checkpoint = Checkpoint(folder, "base model")
    prefix = getattr(model.get_base_model(), "base_model_prefix", "")
    for name, param in model.named_parameters():
        if param.requires_grad:
            continue
        local, start = _local_rows(param)
        key = _checkpoint_key(name, checkpoint, prefix)
        if key is None:
            if ".original_module." not in name:
                raise BadInputError(
                    f"base model {folder}: no tensor for {name.removeprefix(PEFT_PREFIX)} in its safetensors "
                    "files; sharded loading reads tensors by name (use --shard-base never for this base)"
                )
            local.zero_()
            continue
        if tuple(checkpoint.shape(key))[1:] != tuple(local.shape[1:]):
            raise BadInputError(
                f"base model {folder}: tensor {key} has shape {checkpoint.shape(key)}; the model needs "
                f"{tuple(param.shape)}"
            )
        local.copy_(checkpoint.rows(key, start, start + (local.shape[0] if local.dim() else 0)))


def _init_trainable(model: Any) -> None:
    """The LoRA factors and saved-head copies, materialised empty, initialised as a whole load initialises
    them and in the same order: a new head first (transformers' ``_init_weights``, as ``from_pretrained``
    initialises a head the checkpoint lacks), then every LoRA factor (PEFT's init)."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    base = model.get_base_model()
    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper):
            for copy in module.modules_to_save.values():
                for sub in copy.modules():
                    base._init_weights(sub)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for adapter in module.lora_A:
                module.reset_lora_parameters(adapter, True)


def load_sharded_model(
    folder: Path,
    task: str,
    num_labels: int | None,
    pad_token_id: int | None,
    device: torch.device,
    adapter: AdapterFiles,
    load_weights: bool,
) -> Any:
    """The PEFT model of ``adapter`` over the base in ``folder``, its frozen base sharded across the world's
    ranks (FSDP2) and each rank's shard read from the safetensors files; the adapter whole on every rank."""
    model = attach_adapter(_skeleton(folder, task, num_labels, pad_token_id, load_dtype(folder, device)),
                           adapter, task, load_weights=False)  # fmt: skip
    shard_frozen_base(model)
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    model.to_empty(device=device)  # each rank allocates its shards (and the whole adapter), nothing else
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
        _fill_frozen(model, folder)
        _init_trainable(model)
    if load_weights:
        load_adapter_weights(model, adapter)
    return model
