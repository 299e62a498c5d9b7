"""The published adapter_config.json, made portable: loads with stock PEFT anywhere and follows vLLM's rules.

What PEFT's ``save_pretrained`` writes is not portable as it stands:

* ``base_model_name_or_path`` is the folder the base was loaded from, which in a worker is a temporary
  download folder that exists nowhere else. It becomes the release's name or URI.
* ``modules_to_save`` grows by ``["classifier", "score"]`` at every generation: PEFT's sequence-classification
  model appends both names to whatever the loaded config had. It becomes exactly the modules whose weights
  the safetensors file holds (of the names the config declared), once each.
* Every field of the writing PEFT version is written, most at their defaults, and older PEFT versions refuse
  a field they do not know (``TypeError`` before 0.14, a warning since). Fields left at the writer's default
  are dropped, except the core LoRA fields every reader (PEFT since 0.7, vLLM's ``PEFTHelper``) knows;
  ``peft_version`` is informational and goes to the model card instead.

:func:`vllm_problems` states, from the config and the tensor names alone, why vLLM's LoRA loader would refuse
the folder (vllm/lora/peft_helper.py and lora_model.py: ``modules_to_save`` must be empty, no DoRA, every
tensor a ``lora_A``/``lora_B`` factor or a LoRA embedding). A sequence-classification adapter carries its
head in ``modules_to_save``: PEFT loads it, vLLM's LoRA loader does not (stated in the model card).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

# Written whatever their value: what PEFT since 0.7 and vLLM's PEFTHelper read.
CORE_FIELDS = (
    "peft_type",
    "task_type",
    "base_model_name_or_path",
    "inference_mode",
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "bias",
    "fan_in_fan_out",
    "use_rslora",
    "use_dora",
    "modules_to_save",
    "init_lora_weights",
)
# Never written: facts about the writer, not the adapter (the model card records the PEFT version).
INFORMATIONAL_FIELDS = ("peft_version",)

PEFT_PREFIX = "base_model.model."
LORA_FACTOR = re.compile(r"\.lora_(A|B)\.weight$|\.lora_embedding_(A|B)$")


def lora_defaults() -> dict[str, Any]:
    """Every field of the installed PEFT's ``LoraConfig`` with its default value."""
    from peft import LoraConfig

    defaults: dict[str, Any] = {}
    for item in dataclasses.fields(LoraConfig):
        if item.default is not dataclasses.MISSING:
            defaults[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            defaults[item.name] = item.default_factory()
    return defaults


def _whole_tensor_paths(tensor_keys: Iterable[str]) -> list[list[str]]:
    """Dotted paths (inside the base model) of the tensors that are not LoRA factors."""
    return [key.removeprefix(PEFT_PREFIX).split(".") for key in tensor_keys if not LORA_FACTOR.search(key)]


def _saves(parts: list[str], name: str) -> bool:
    """Whether the tensor at ``parts`` lies in a module ``name`` names (PEFT's rule: the module's path or its
    last dotted parts), e.g. ``classifier.out_proj.weight`` in ``classifier``."""
    for end in range(1, len(parts)):
        module = ".".join(parts[:end])
        if module == name or module.endswith("." + name):
            return True
    return False


def portable_modules_to_save(declared: list[str] | None, tensor_keys: Iterable[str]) -> list[str] | None:
    """The declared names under which the safetensors file holds whole weights, once each, in declared order;
    None when it holds none (what vLLM requires)."""
    paths = _whole_tensor_paths(tensor_keys)
    names: list[str] = []
    for name in declared or []:
        if name not in names and any(_saves(parts, name) for parts in paths):
            names.append(name)
    return names or None


def portable_adapter_config(
    config: dict[str, Any], tensor_keys: Iterable[str], base_name: str, defaults: dict[str, Any]
) -> dict[str, Any]:
    """``config`` as written by PEFT, made portable (see the module's docstring); ``defaults`` are the writing
    PEFT's LoraConfig defaults (:func:`lora_defaults`)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in INFORMATIONAL_FIELDS:
            continue
        if key in CORE_FIELDS or key not in defaults or value != _jsonable(defaults[key]):
            out[key] = value
    out["base_model_name_or_path"] = base_name
    out["modules_to_save"] = portable_modules_to_save(config.get("modules_to_save"), tensor_keys)
    targets = config.get("target_modules")
    if isinstance(targets, list):  # PEFT keeps a set: its order changes from one process to the next
        out["target_modules"] = sorted(set(targets))
    out["inference_mode"] = True
    return dict(sorted(out.items()))


def _jsonable(value: Any) -> Any:
    """A default as it reads back from JSON (a set or tuple is written as a list; an enum as its value)."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return getattr(value, "value", value)


def vllm_problems(config: dict[str, Any], tensor_keys: Iterable[str]) -> list[str]:
    """Why vLLM's LoRA loader would refuse this adapter; empty when it follows vLLM's conventions.

    The rank limit (``--max-lora-rank``) and the model's supported modules are the server's settings, so they
    are not judged here.
    """
    problems = [
        f"adapter_config.json lacks {name}" for name in ("r", "lora_alpha", "target_modules") if name not in config
    ]
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save={config['modules_to_save']} (vLLM only supports none)")
    if config.get("use_dora"):
        problems.append("use_dora=true (vLLM does not support DoRA)")
    whole = [key for key in tensor_keys if not LORA_FACTOR.search(key)]
    if whole:
        problems.append(f"{len(whole)} tensor(s) that are not LoRA factors, e.g. {whole[0]}")
    return problems
