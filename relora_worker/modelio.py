"""Loading and saving: base models, checkpoints read tensor by tensor, PEFT adapters (safetensors only).

This is the only module that touches model files. Pickled weights (``.bin``, ``.pt``, ``.pth``, ``.ckpt``)
are refused before anything is loaded: unpickling a model file runs arbitrary code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from relora_worker.errors import BadInputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TASK_FILE = "relora_task.json"


def refuse_pickles(folder: Path, what: str) -> list[Path]:
    """The folder's safetensors files; a BadInputError if it only offers pickled weights."""
    tensors = sorted(folder.glob("*.safetensors"))
    if not tensors:
        pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES] if folder.is_dir() else []
        if pickles:
            raise BadInputError(
                f"{what} {folder}: only pickled weights ({', '.join(pickles)}); refusing to unpickle. "
                "Convert them to safetensors (e.g. save_pretrained(..., safe_serialization=True))"
            )
        raise BadInputError(f"{what} {folder}: no *.safetensors weights found")
    return tensors


# ---------------------------------------------------------------------------------------------- checkpoints


class Checkpoint:
    """A Hugging Face folder's weights, read one tensor at a time with ``safetensors.safe_open``."""

    def __init__(self, folder: Path, what: str = "model"):
        from safetensors import safe_open

        self.folder = folder
        self.what = what
        if not folder.is_dir():
            raise BadInputError(f"{what} {folder}: not a folder; expected a Hugging Face model folder")
        self._files = refuse_pickles(folder, what)
        self._where: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        for path in self._files:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - safe_open has keys(), not __iter__
                    self._where[key] = path
                    self._shapes[key] = tuple(handle.get_slice(key).get_shape())

    def keys(self) -> list[str]:
        return list(self._where)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._shapes[key]

    def tensor(self, key: str, device: str | torch.device = "cpu") -> Tensor:
        """One tensor; the file is mapped only while it is read, so read pages do not pile up in RSS."""
        from safetensors import safe_open

        with safe_open(str(self._where[key]), framework="pt") as handle:
            return handle.get_tensor(key).to(device)


def module_matches(name: str, targets: list[str] | str) -> bool:
    """PEFT's rule: a string target is a full regex match; a list matches a module name or its suffix."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def target_weight_keys(checkpoint: Checkpoint, targets: list[str] | str) -> list[str]:
    """2-D ``*.weight`` tensors whose module matches the adapter's ``target_modules``."""
    keys = []
    for key in checkpoint:
        is_target = key.endswith(".weight") and module_matches(key[: -len(".weight")], targets)
        if is_target and len(checkpoint.shape(key)) == 2:
            keys.append(key)
    return sorted(keys)


# ------------------------------------------------------------------------------------------- base models


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as error:
        raise BadInputError(f"base model {folder}: no usable tokenizer ({error})") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def load_base_model(folder: Path, task: str, num_labels: int | None, pad_token_id: int | None) -> Any:
    """The base model for ``task`` from a safetensors folder (a classification head is created fresh)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    refuse_pickles(folder, "base model")
    hf_logging.set_verbosity_error()  # "newly initialized head" warnings are expected: the adapter carries it
    try:
        if task == "seq-cls":
            model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), num_labels=num_labels, use_safetensors=True, pad_token_id=pad_token_id
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True)
    except Exception as error:
        raise BadInputError(f"base model {folder}: cannot be loaded ({error})") from error
    if pad_token_id is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    return model


# ----------------------------------------------------------------------------------------------- adapters


@dataclass
class AdapterFiles:
    """An adapter folder read into memory: its PEFT config, its tensors, and our task metadata if any."""

    folder: Path
    config: dict[str, Any]
    tensors: dict[str, Tensor]
    task: dict[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    @property
    def target_modules(self) -> list[str] | str:
        targets = self.config.get("target_modules")
        return targets if isinstance(targets, str) else sorted(targets or [])


def read_adapter(folder: Path) -> AdapterFiles:
    """Reads and checks a PEFT adapter folder (config fields, rank of every factor, safetensors only)."""
    from safetensors.torch import load_file

    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise BadInputError(f"adapter {folder}: no {ADAPTER_CONFIG}")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as error:
        raise BadInputError(f"adapter {config_path}: not valid JSON ({error})") from error
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        refuse_pickles(folder, "adapter")
        raise BadInputError(f"adapter {folder}: no {ADAPTER_WEIGHTS}")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or r <= 0:
        raise BadInputError(f"adapter {config_path}: field r={r!r}; expected a positive integer")
    if not isinstance(alpha, (int, float)) or alpha <= 0:
        raise BadInputError(f"adapter {config_path}: field lora_alpha={alpha!r}; expected a positive number")
    if not config.get("target_modules"):
        raise BadInputError(f"adapter {config_path}: field target_modules is empty")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise BadInputError(f"adapter {config_path}: rank_pattern/alpha_pattern are not supported yet")
    tensors = load_file(str(weights))
    for key, value in tensors.items():
        if ".lora_A." in key and value.shape[0] != r:
            raise BadInputError(f"adapter {weights}: {key} has rank {value.shape[0]} but the config says r={r}")
        if ".lora_B." in key and value.shape[1] != r:
            raise BadInputError(f"adapter {weights}: {key} has rank {value.shape[1]} but the config says r={r}")
    if not any(".lora_A." in key for key in tensors):
        raise BadInputError(f"adapter {weights}: no lora_A weights")
    task_path = folder / TASK_FILE
    task = json.loads(task_path.read_text()) if task_path.is_file() else {}
    return AdapterFiles(folder, config, tensors, task)


def lora_config_from(adapter: AdapterFiles, task: str) -> Any:
    """A ``LoraConfig`` with the adapter's rank, alpha, rsLoRA flag and targets."""
    from peft import LoraConfig, TaskType

    config = adapter.config
    return LoraConfig(
        r=adapter.rank,
        lora_alpha=config["lora_alpha"],
        use_rslora=bool(config.get("use_rslora", False)),
        target_modules=config["target_modules"],
        lora_dropout=0.0,  # deterministic probes; re-adaptation is short
        bias=config.get("bias", "none"),
        modules_to_save=config.get("modules_to_save"),
        task_type=TaskType.SEQ_CLS if task == "seq-cls" else TaskType.CAUSAL_LM,
    )


def attach_adapter(base: Any, adapter: AdapterFiles, task: str, load_weights: bool = True) -> Any:
    """Wraps ``base`` in a PEFT model shaped like ``adapter`` and (optionally) loads its weights."""
    from peft import get_peft_model, set_peft_model_state_dict

    try:
        model = get_peft_model(base, lora_config_from(adapter, task))
    except ValueError as error:
        raise BadInputError(
            f"adapter {adapter.folder}: target_modules {adapter.config['target_modules']} do not fit the base "
            f"model ({error})"
        ) from error
    if load_weights:
        try:
            result = set_peft_model_state_dict(model, adapter.tensors)
        except RuntimeError as error:
            raise BadInputError(
                f"adapter {adapter.folder}: weights do not fit the base model ({error}); if the base model's "
                "shapes changed between releases, use --strategy scratch"
            ) from error
        unexpected = [k for k in result.unexpected_keys if "lora_" in k or "modules_to_save" in k]
        if unexpected:
            raise BadInputError(f"adapter {adapter.folder}: weights for modules the base model lacks: {unexpected[:3]}")
    return model


def save_adapter(model: Any, folder: Path, task_meta: dict[str, Any]) -> None:
    """Saves the PEFT adapter (config + safetensors) and our task metadata (labels, fields)."""
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / TASK_FILE).write_text(json.dumps(task_meta, indent=2))
    for stray in folder.glob("*.bin"):  # never publish pickles, whatever a library version writes
        stray.unlink()
