"""README.md of a published adapter: a Hugging Face model card built from the run's record (pure functions).

:func:`card_facts` picks what the card shows from result.json's record; :func:`render_model_card` turns those
facts into text: YAML front matter as the Hub reads it (``base_model``, ``library_name: peft``,
``pipeline_tag``, ``tags``, ``model-index`` with the quality on the evaluation data), then sections: lineage
(base release, source adapter and its release), re-adaptation (strategy, α*, β*), quality against the
threshold with the evaluation data's digest, time to readiness, the random-init control when one was run,
serving notes (vLLM) and library versions.

The front matter is written by hand: every scalar is a JSON string or number, which YAML reads as the same
value, so no YAML library is needed and no value can break the document.
"""

from __future__ import annotations

import json
import math
from typing import Any

from relora_contract import strategies
from relora_contract.result import ResultRecord

PIPELINE_TAGS = {"seq-cls": "text-classification", "causal-lm": "text-generation"}
FUSED_STRATEGIES = strategies.USES_DELTA
MISSING = "—"


def card_facts(record: dict[str, Any], config: dict[str, Any], vllm_problems: list[str]) -> dict[str, Any]:
    """What the card shows, from a result.json record and the published adapter_config.json.

    The card describes the adapter in its own folder: when improving after Ready served the earlier version
    (the record's ``quality`` is then that version's), the final folder's card reports ``final_quality``.
    """
    declared = ResultRecord.view(record)  # result.json's declared fields by name (a partial record allowed)
    inputs = record.get("inputs") or {}
    final = declared.final_quality is not None
    readiness = record.get("readiness") or {}
    search = record.get("search") or {}
    seconds = record.get("seconds") or {}
    return {
        "name": record.get("location") or inputs.get("output") or "adapter",
        "version": record.get("version"),
        "base_model": config.get("base_model_name_or_path"),
        "base_release": inputs.get("new_release") or None,
        "base_uri": inputs.get("base_model"),
        "source_adapter": inputs.get("adapter"),
        "source_release": inputs.get("old_release") or None,
        "projection": inputs.get("projection"),
        "old_base_model": inputs.get("old_base_model"),
        "task": record.get("task") or (record.get("config") or {}).get("task", {}).get("task"),
        "labels": record.get("labels"),
        "lora": {key: config.get(key) for key in ("r", "lora_alpha", "use_rslora", "target_modules")},
        "modules_to_save": config.get("modules_to_save"),
        "strategy": record.get("strategy"),
        "alpha": record.get("alpha"),
        "beta": record.get("beta"),
        "probes": len(search.get("probes") or []) or None,
        "truncation_error": record.get("fusion_truncation_error"),
        "steps": (record.get("finetune") or {}).get("steps"),
        "status": record.get("status"),
        "metric": record.get("metric"),
        "quality": declared.final_quality if final else declared.quality,
        "interval": record.get("final_quality_interval") if final else declared.quality_interval,
        "served_instead": declared.adapter_uri if record.get("serve") == "first-ready" else None,
        "initial_quality": record.get("initial_quality"),
        "threshold": record.get("threshold"),
        "rule": readiness.get("described") or declared.readiness_rule,
        "evaluation": declared.eval_data,
        "ready_after_s": declared.time_to_readiness_s,
        "seconds": {key: seconds.get(key) for key in ("load", "search", "finetune", "evaluation", "end_to_end")},
        "control": record.get("control"),
        "vllm_problems": list(vllm_problems),
        "versions": record.get("versions") or {},
    }


def render_model_card(facts: dict[str, Any]) -> str:
    """The model card's text (front matter, then sections) for :func:`card_facts`' output."""
    sections = [
        _front_matter(facts),
        _title(facts),
        _lineage(facts),
        _readaptation(facts),
        _quality(facts),
        _readiness(facts),
        _control(facts),
        _usage(facts),
        _versions(facts),
    ]
    return "\n".join(section for section in sections if section)


# ------------------------------------------------------------------------------------------ front matter


def _scalar(value: Any) -> str:
    """A YAML scalar: JSON's spelling (quoted string, number, true/false/null) reads back as the same value."""
    if isinstance(value, float) and not math.isfinite(value):
        return "null"
    return json.dumps(value, ensure_ascii=False)


def _front_matter(facts: dict[str, Any]) -> str:
    base = facts.get("base_model") or "unknown"
    tags = ["peft", "lora", "relora", f"base_model:adapter:{base}"]
    if facts.get("strategy"):
        tags.append(f"relora-strategy:{facts['strategy']}")
    lines = [
        "---",
        f"base_model: {_scalar(base)}",
        "library_name: peft",
        f"pipeline_tag: {_scalar(PIPELINE_TAGS.get(facts.get('task') or '', 'text-generation'))}",
        "tags:",
        *(f"- {_scalar(tag)}" for tag in tags),
    ]
    if facts.get("quality") is not None and facts.get("metric"):
        eval_data = facts.get("evaluation") or {}
        lines += [
            "model-index:",
            f"- name: {_scalar(str(facts.get('name')))}",
            "  results:",
            "  - task:",
            f"      type: {_scalar(PIPELINE_TAGS.get(facts.get('task') or '', 'text-generation'))}",
            "    dataset:",
            f"      name: {_scalar(str(eval_data.get('uri') or 'evaluation data'))}",
            '      type: "relora-eval"',
            *([f"      revision: {_scalar('sha256:' + eval_data['sha256'])}"] if eval_data.get("sha256") else []),
            "    metrics:",
            f"    - type: {_scalar(facts['metric'])}",
            f"      value: {_scalar(facts['quality'])}",
            f"      name: {_scalar(_metric_name(facts))}",
        ]
    lines.append("---")
    return "\n".join(lines) + "\n"


def _metric_name(facts: dict[str, Any]) -> str:
    threshold = facts.get("threshold")
    return f"{facts['metric']} (threshold {threshold})" if threshold is not None else str(facts["metric"])


# -------------------------------------------------------------------------------------------------- body


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return MISSING
    return f"{value:.{digits}f}"


def duration(seconds: Any) -> str:
    """``4m12s``, ``1h03m``, ``12.3s``, ``0.004s``: a duration a reader takes in at a glance."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return MISSING
    if seconds < 1:
        return f"{seconds:.3f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _code(value: Any) -> str:
    return f"`{value}`" if value not in (None, "") else MISSING


def _title(facts: dict[str, Any]) -> str:
    release = facts.get("base_release") or facts.get("base_model") or "a new base release"
    status = {"ready": "Ready", "below-threshold": "below its quality threshold"}.get(facts.get("status") or "")
    lines = [f"# {facts.get('name')}", ""]
    summary = f"A LoRA adapter re-adapted to **{release}** with ReLoRA (strategy `{facts.get('strategy')}`)"
    if status:
        summary += f"; {status}: {facts.get('metric')} {_number(facts.get('quality'))} against a threshold of "
        summary += f"{_number(facts.get('threshold'))}"
    lines.append(summary + ".")
    if facts.get("version"):
        lines += ["", f"This folder is the `{facts['version']}` version (the first that met the readiness rule)."]
    if facts.get("served_instead"):
        lines += [
            "",
            f"The version served is the first one that met the readiness rule, `{facts['served_instead']}`: "
            "it measured higher than this final one.",
        ]
    return "\n".join(lines) + "\n"


def _lineage(facts: dict[str, Any]) -> str:
    lora = facts.get("lora") or {}
    targets = lora.get("target_modules")
    targets = ", ".join(targets) if isinstance(targets, list) else targets
    rows = [
        ("Base model (`base_model_name_or_path`)", _code(facts.get("base_model"))),
        ("Base release", _code(facts.get("base_release"))),
        ("Base model URI", _code(facts.get("base_uri"))),
        ("Source adapter", _code(facts.get("source_adapter"))),
        ("Source adapter's release", _code(facts.get("source_release"))),
        *([("Release delta Π_r(ΔΘ)", _code(facts["projection"]))] if facts.get("projection") else []),
        *(
            [("Old base model (Π_r computed from it)", _code(facts["old_base_model"]))]
            if facts.get("old_base_model")
            else []
        ),
        ("Task", _code(facts.get("task"))),
        (
            "LoRA",
            f"r={lora.get('r')}, lora_alpha={lora.get('lora_alpha')}, rsLoRA={bool(lora.get('use_rslora'))}, "
            f"targets: {targets}",
        ),
        ("Modules saved whole (`modules_to_save`)", ", ".join(facts.get("modules_to_save") or []) or "none"),
    ]
    if facts.get("labels") and facts.get("task") == "seq-cls":
        rows.append(("Labels (class order)", ", ".join(str(label) for label in facts["labels"])))
    return "## Lineage\n\n" + _table(rows)


def _readaptation(facts: dict[str, Any]) -> str:
    rows = [("Strategy", _code(facts.get("strategy")))]
    if facts.get("alpha") is not None or facts.get("strategy") in FUSED_STRATEGIES:
        rows += [
            ("α* (weight of the release delta)", _number(facts.get("alpha"))),
            ("β* (weight of the old adapter)", _number(facts.get("beta"))),
            ("Search probes", str(facts.get("probes") or MISSING)),
            ("Fusion truncation error", _number(facts.get("truncation_error"), 4)),
        ]
    rows.append(("Fine-tuning steps", str(facts["steps"]) if facts.get("steps") is not None else MISSING))
    return "## Re-adaptation\n\n" + _table(rows)


def _quality(facts: dict[str, Any]) -> str:
    interval = facts.get("interval") or {}
    eval_data = facts.get("evaluation") or {}
    measured = _number(facts.get("quality"))
    if interval.get("low") is not None:
        measured += f" (95 % interval {_number(interval.get('low'))}–{_number(interval.get('high'))})"
    source = _code(eval_data.get("uri"))
    if eval_data.get("carved_from_train"):
        seed = eval_data.get("split_seed")
        source += f", {eval_data.get('rows')} rows carved from the training data (split seed {seed})"
    rows = [
        ("Metric", _code(facts.get("metric"))),
        ("Quality", measured),
        ("Threshold", _number(facts.get("threshold"))),
        ("Status", _code(facts.get("status"))),
        ("Quality of the start (before fine-tuning)", _number(facts.get("initial_quality"))),
        ("Readiness rule", facts.get("rule") or MISSING),
        ("Evaluation data", source),
        ("Evaluation rows", str(eval_data.get("rows") or MISSING)),
        ("Evaluation file sha256", _code(eval_data.get("sha256"))),
        ("Evaluated rows sha256", _code(eval_data.get("examples_sha256"))),
    ]
    note = (
        "The file digest is `sha256sum` of the evaluation file as read; the rows digest is of the rows as evaluated "
        "(one compact JSON `[text, label]` per line), the same whatever the file format.\n"
    )
    return "## Quality\n\n" + _table(rows) + "\n" + note


def _readiness(facts: dict[str, Any]) -> str:
    seconds = facts.get("seconds") or {}
    rows = [
        (
            "Time to readiness",
            f"{duration(facts.get('ready_after_s'))} (search and fine-tuning, from the "
            "moment the inputs were loaded to the evaluation at which the readiness rule passed)",
        )
    ]
    rows += [(f"Seconds: {name}", duration(value)) for name, value in seconds.items() if value is not None]
    return "## Time to readiness\n\n" + _table(rows)


def _control(facts: dict[str, Any]) -> str:
    control = facts.get("control")
    if facts.get("strategy") == "random-init":
        return (
            "## Random-init control\n\nThis adapter *is* the random-init control (random factors with the old "
            "adapter's norms, the old head, the same anchor).\n"
        )
    if not control:
        return "## Random-init control\n\nNot run for this adapter.\n"
    run = ResultRecord.view(control)  # readapt.read_control: the control's declared fields
    rows = [
        ("Control result", _code(run.result_uri)),
        (f"Quality ({run.metric or facts.get('metric')})", _number(run.quality)),
        ("Time to readiness", duration(run.time_to_readiness_s)),
        ("Status", _code(run.status)),
        (
            "This adapter's quality minus the control's",
            _number(_difference(facts.get("quality"), run.quality)),
        ),
    ]
    return "## Random-init control\n\n" + _table(rows)


def _difference(a: Any, b: Any) -> float | None:
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    return a - b if numbers else None


def _usage(facts: dict[str, Any]) -> str:
    auto_class = "AutoModelForSequenceClassification" if facts.get("task") == "seq-cls" else "AutoModelForCausalLM"
    labels = facts.get("labels") or []
    extra = f", num_labels={len(labels)}" if facts.get("task") == "seq-cls" else ""
    lines = [
        "## Use",
        "",
        "```python",
        "from peft import PeftModel",
        f"from transformers import {auto_class}",
        "",
        f"base = {auto_class}.from_pretrained(BASE_MODEL_FOLDER{extra})  # the base release above",
        "model = PeftModel.from_pretrained(base, ADAPTER_FOLDER)",
        "```",
        "",
    ]
    problems = facts.get("vllm_problems") or []
    if problems:
        lines.append("vLLM's LoRA loader does not take this adapter: " + "; ".join(problems) + ".")
    else:
        lines.append(
            "vLLM: follows its LoRA loader's conventions (adapter_config.json + adapter_model.safetensors, LoRA "
            f"factors only); serve it with `--enable-lora --max-lora-rank {(facts.get('lora') or {}).get('r')}` "
            "or larger on the base release above."
        )
    return "\n".join(lines) + "\n"


def _versions(facts: dict[str, Any]) -> str:
    versions = facts.get("versions") or {}
    names = ("relora", "torch", "transformers", "peft", "botorch", "python")
    rows = [(name, _code(versions.get(name))) for name in names if name in versions]
    return "## Framework versions\n\n" + (_table(rows) if rows else "Not recorded.\n")


def _table(rows: list[tuple[str, str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| | |", "| --- | --- |", *(f"| {cell(k)} | {cell(v)} |" for k, v in rows)]
    return "\n".join(lines) + "\n"
