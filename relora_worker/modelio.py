"""Loading and saving: base models, checkpoints read tensor by tensor, PEFT adapters (safetensors only).

This is the only module that touches model files. Pickled weights (``.bin``, ``.pt``, ``.pth``, ``.ckpt``)
are refused before anything is loaded: unpickling a model file runs arbitrary code.
"""

from __future__ import annotations

import json
import math
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
            try:  # safe_open checks the header and that the file holds every byte it declares
                with safe_open(str(path), framework="pt") as handle:
                    for key in handle.keys():  # noqa: SIM118 - safe_open has keys(), not __iter__
                        self._where[key] = path
                        self._shapes[key] = tuple(handle.get_slice(key).get_shape())
            except Exception as error:
                raise BadInputError(
                    f"{what} {path}: not a valid safetensors file (truncated or corrupt: {error})"
                ) from error

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

    def rows(self, key: str, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` of one tensor (all of a 0-d one), reading only those bytes of the mapped file."""
        from safetensors import safe_open

        with safe_open(str(self._where[key]), framework="pt") as handle:
            part = handle.get_slice(key)
            return part[start:stop] if len(part.get_shape()) else part[:]


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


TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def load_tokenizer(folder: Path) -> Any:
    """The base model's tokenizer; a folder without one is refused (transformers would build an empty one)."""
    from transformers import AutoTokenizer

    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise BadInputError(
            f"base model {folder}: no tokenizer files; expected one of {', '.join(TOKENIZER_FILES)} "
            "(save the tokenizer with the model: tokenizer.save_pretrained(folder))"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as error:
        raise BadInputError(f"base model {folder}: no usable tokenizer ({error})") from error
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
        raise BadInputError(f"base model {folder}: the tokenizer has no vocabulary beyond its special tokens")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


HALF_DTYPES = ("bfloat16", "float16")


def checkpoint_dtype(folder: Path) -> torch.dtype:
    """The dtype the checkpoint's ``config.json`` declares (``dtype`` or ``torch_dtype``); float32 if none."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return torch.float32
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, name) if isinstance(name, str) and name in ("float32", *HALF_DTYPES) else torch.float32


def load_dtype(folder: Path, device: torch.device) -> torch.dtype:
    """The dtype the base is held in on ``device``.

    On a GPU, the checkpoint's own dtype (a bf16 release stays bf16: no float32 copy anywhere, half the memory
    and the tensor cores' rate). On a CPU, float32: CPU half-precision matmuls are slow and lose precision.
    """
    return checkpoint_dtype(folder) if device.type == "cuda" else torch.float32


def load_base_model(
    folder: Path,
    task: str,
    num_labels: int | None,
    pad_token_id: int | None,
    device: torch.device | str = "cpu",
) -> Any:
    """The base model for ``task`` from a safetensors folder (a classification head is created fresh).

    Weights go straight to ``device`` in :func:`load_dtype` (``device_map``: read tensor by tensor from the
    memory-mapped shards and placed on the device, so the host never holds a full copy of the model).
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    refuse_pickles(folder, "base model")
    device = torch.device(device)
    dtype = load_dtype(folder, device)
    # transformers < 4.56 knows only the older name of the argument
    dtype_arg = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    placement: dict[str, Any] = {dtype_arg: dtype, "low_cpu_mem_usage": True}
    if device.type == "cuda":
        placement["device_map"] = {"": device.index if device.index is not None else torch.cuda.current_device()}
    elif device.type != "cpu":
        placement["device_map"] = {"": str(device)}
    hf_logging.set_verbosity_error()  # "newly initialized head" warnings are expected: the adapter carries it
    try:
        if task == "seq-cls":
            model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), num_labels=num_labels, use_safetensors=True, pad_token_id=pad_token_id, **placement
            )
        else:
            model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True, **placement)
    except Exception as error:
        raise BadInputError(f"base model {folder}: cannot be loaded ({error})") from error
    if pad_token_id is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    return model


def enable_gradient_checkpointing(model: Any) -> None:
    """Recomputes each layer's activations in the backward pass (PEFT model or bare base).

    The inputs of the first layer must require grad for the recomputation to reach the LoRA factors (PEFT's
    own ``enable_input_require_grads``), and non-reentrant checkpointing keeps the anchor's hooks simple.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(base, "enable_input_require_grads"):
        base.enable_input_require_grads()
    if hasattr(base.config, "use_cache"):
        base.config.use_cache = False


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

    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise BadInputError(f"adapter {folder}: no {ADAPTER_CONFIG}")
    config = read_json_object(config_path, "adapter")
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        refuse_pickles(folder, "adapter")
        raise BadInputError(f"adapter {folder}: no {ADAPTER_WEIGHTS}")
    check_adapter_config(config, config_path)
    r = config["r"]
    tensors = load_safetensors(weights, "adapter")
    for key, value in tensors.items():
        if ".lora_A." in key and value.shape[0] != r:
            raise BadInputError(f"adapter {weights}: {key} has rank {value.shape[0]} but the config says r={r}")
        if ".lora_B." in key and value.shape[1] != r:
            raise BadInputError(f"adapter {weights}: {key} has rank {value.shape[1]} but the config says r={r}")
    if not any(".lora_A." in key for key in tensors):
        raise BadInputError(f"adapter {weights}: no lora_A weights")
    task_path = folder / TASK_FILE
    task = read_json_object(task_path, "adapter") if task_path.is_file() else {}
    labels = task.get("labels")
    valid = isinstance(labels, list) and all(isinstance(x, str) and x for x in labels)
    valid = valid and len(set(labels)) == len(labels)
    if labels is not None and not valid:
        raise BadInputError(f"adapter {task_path}: field labels={labels!r}; expected distinct non-empty strings")
    return AdapterFiles(folder, config, tensors, task)


# ------------------------------------------------------------------------------------------- validation


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; NaN/Infinity literals are kept as floats so field checks can name them."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"), parse_constant=float)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise BadInputError(f"{what} {path}: not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise BadInputError(f"{what} {path}: expected a JSON object, found {type(value).__name__}")
    return value


BOOLEAN_FIELDS = ("use_rslora", "use_dora", "fan_in_fan_out", "inference_mode")


def check_adapter_config(config: dict[str, Any], path: Path) -> None:
    """PEFT fields as PEFT means them: a positive integer ``r``, a positive finite ``lora_alpha``, real booleans
    (``"no"`` is a non-empty string, so it would read as True), known ``bias``, non-empty ``target_modules``."""
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise BadInputError(f"adapter {path}: field r={r!r}; expected a positive integer")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha <= 0:
        raise BadInputError(f"adapter {path}: field lora_alpha={alpha!r}; expected a positive finite number")
    for name in BOOLEAN_FIELDS:
        if name in config and config[name] is not None and not isinstance(config[name], bool):
            raise BadInputError(f"adapter {path}: field {name}={config[name]!r}; expected true or false (JSON)")
    if config.get("use_dora"):
        raise BadInputError(f"adapter {path}: field use_dora=true; DoRA adapters are not supported")
    if config.get("bias", "none") not in ("none", "all", "lora_only"):
        raise BadInputError(f"adapter {path}: field bias={config.get('bias')!r}; expected none, all or lora_only")
    targets = config.get("target_modules")
    valid = (isinstance(targets, str) and targets) or (
        isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
    )
    if not valid:
        raise BadInputError(f"adapter {path}: field target_modules={targets!r}; expected module names or a regex")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise BadInputError(f"adapter {path}: rank_pattern/alpha_pattern are not supported yet")


def check_finite(tensors: dict[str, Tensor], where: Path | str) -> None:
    """Refuses a tensor holding NaN or ±Inf, naming it (one would poison every probe and step)."""
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise BadInputError(f"{where}: tensor {key} holds {bad} NaN/Inf value(s); expected finite weights")


def load_safetensors(path: Path, what: str) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, checked: a truncated/corrupt file or a non-finite tensor is refused."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as error:
        raise BadInputError(f"{what} {path}: not a valid safetensors file (truncated or corrupt: {error})") from error
    check_finite(tensors, f"{what} {path}")
    return tensors


def check_adapter_fits(model: Any, adapter: AdapterFiles) -> None:
    """Every LoRA factor has the shape the base model's module needs, and r <= min(d_in, d_out) there.

    A rank above min(d_in, d_out) is refused, not clamped: PEFT keeps one ``r`` for every module and the
    recorded rank must be the rank trained.
    """
    from peft import get_peft_model_state_dict

    r = adapter.rank
    for name, module in model.named_modules():
        d_in, d_out = getattr(module, "in_features", None), getattr(module, "out_features", None)
        if hasattr(module, "lora_A") and isinstance(d_in, int) and isinstance(d_out, int) and r > min(d_in, d_out):
            raise BadInputError(
                f"adapter {adapter.folder}: r={r} exceeds min(d_in, d_out)={min(d_in, d_out)} of module {name} "
                f"({d_out}×{d_in}); expected r <= {min(d_in, d_out)} (a higher rank is not low-rank there)"
            )
    expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model).items()}
    for key, value in adapter.tensors.items():
        if key in expected and tuple(value.shape) != expected[key]:
            module = key.split(".lora_")[0].removeprefix("base_model.model.")
            raise BadInputError(
                f"adapter {adapter.folder}: module {module}: {key} has shape {tuple(value.shape)} but the base "
                f"model needs {expected[key]}; if the base model's shapes changed between releases, use "
                "--strategy scratch"
            )


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
    from peft import get_peft_model

    try:
        model = get_peft_model(base, lora_config_from(adapter, task))
    except ValueError as error:
        raise BadInputError(
            f"adapter {adapter.folder}: target_modules {adapter.config['target_modules']} do not fit the base "
            f"model ({error})"
        ) from error
    check_adapter_fits(model, adapter)
    if load_weights:
        load_adapter_weights(model, adapter)
    return model


def load_adapter_weights(model: Any, adapter: AdapterFiles) -> None:
    """The adapter's tensors into the PEFT model ``model`` (its LoRA factors and saved head)."""
    from peft import set_peft_model_state_dict

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


def save_adapter(model: Any, folder: Path, task_meta: dict[str, Any], base_name: str) -> dict[str, Any]:
    """Saves the PEFT adapter (config + safetensors) and our task metadata (labels, fields); returns the config.

    adapter_config.json is rewritten portable (relora_worker/portable.py): ``base_name`` (the release's name
    or URI, never the local folder the base was read from) as ``base_model_name_or_path``, ``modules_to_save``
    exactly the modules saved. README.md is left to the caller (PEFT writes an empty template there).
    """
    from safetensors import safe_open

    from relora_worker.portable import lora_defaults, portable_adapter_config

    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / TASK_FILE).write_text(json.dumps(task_meta, indent=2))
    for stray in folder.glob("*.bin"):  # never publish pickles, whatever a library version writes
        stray.unlink()
    with safe_open(str(folder / ADAPTER_WEIGHTS), framework="pt") as handle:
        keys = list(handle.keys())
    written = json.loads((folder / ADAPTER_CONFIG).read_text())
    config = portable_adapter_config(written, keys, base_name, lora_defaults())
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return config
