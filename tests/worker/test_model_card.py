"""The pure parts of a portable adapter: the model card's text and the adapter_config.json rewrite (no model)."""

from __future__ import annotations

import math

import pytest
import yaml

from relora_worker.model_card import card_facts, duration, render_model_card
from relora_worker.portable import lora_defaults, portable_adapter_config, portable_modules_to_save, vllm_problems

EVAL_SHA = "9c5d1b29a094ffb77d625797aef0dad3936fa60097a5264fced7ae96a9eb8824"
LORA_KEYS = [
    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
    "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
]


def record(**overrides) -> dict:
    """A result.json record as readapt writes it, reduced to what the card reads."""
    base = {
        "status": "ready",
        "strategy": "relora",
        "task": "causal-lm",
        "metric": "accuracy",
        "threshold": 0.8,
        "quality": 0.8625,
        "quality_interval": {"low": 0.81, "high": 0.9},
        "initial_quality": 0.71,
        "time_to_readiness_s": 252.4,
        "readiness": {"described": "the one-sided 80% Wilson lower bound of the metric >= threshold"},
        "alpha": -0.8,
        "beta": 0.85,
        "search": {"probes": [{}] * 20},
        "fusion_truncation_error": 0.0123,
        "finetune": {"steps": 300},
        "labels": ["no", "yes"],
        "inputs": {
            "base_model": "s3://models/releases/llama/v2",
            "adapter": "s3://models/adapters/support-bot/v1",
            "output": "s3://models/adapters/support-bot/v2",
            "projection": "s3://models/deltas/llama/v1__v2/r16",
            "old_base_model": None,
            "old_release": "llama-v1",
            "new_release": "llama-v2",
        },
        "eval_data": {
            "uri": "s3://data/support-eval.jsonl",
            "sha256": EVAL_SHA,
            "carved_from_train": False,
            "split_seed": None,
            "rows": 400,
            "examples_sha256": "ab" * 32,
        },
        "seconds": {"load": 12.0, "search": 30.5, "finetune": 200.0, "evaluation": 20.0, "end_to_end": 270.0},
        "control": None,
        "versions": {"relora": "0.1.0", "torch": "2.5.1", "transformers": "4.57.0", "peft": "0.17.1"},
    }
    return {**base, **overrides}


CONFIG = {
    "base_model_name_or_path": "s3://models/releases/llama/v2",
    "r": 16,
    "lora_alpha": 32,
    "use_rslora": False,
    "target_modules": ["q_proj", "v_proj"],
    "modules_to_save": None,
}


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def section(body: str, title: str) -> str:
    return body.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_card_has_hub_front_matter_and_every_fact_a_team_needs() -> None:
    text = render_model_card(card_facts(record(), CONFIG, []))
    meta, body = split_card(text)
    assert meta["base_model"] == "s3://models/releases/llama/v2"
    assert meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert {"peft", "lora", "relora", "base_model:adapter:s3://models/releases/llama/v2"} <= set(meta["tags"])
    (result,) = meta["model-index"][0]["results"]
    assert result["metrics"][0] == {"type": "accuracy", "value": 0.8625, "name": "accuracy (threshold 0.8)"}
    assert result["dataset"]["revision"] == f"sha256:{EVAL_SHA}"

    lineage = section(body, "Lineage")
    for fact in ("`llama-v2`", "`llama-v1`", "`s3://models/adapters/support-bot/v1`", "r16", "q_proj, v_proj"):
        assert fact in lineage
    readaptation = section(body, "Re-adaptation")
    assert "-0.800" in readaptation and "0.850" in readaptation and "| Search probes | 20 |" in readaptation
    quality = section(body, "Quality")
    assert "0.863 (95 % interval 0.810–0.900)" in quality and "| Threshold | 0.800 |" in quality
    assert EVAL_SHA in quality and "| Evaluation rows | 400 |" in quality
    assert "4m12s" in section(body, "Time to readiness")
    assert "Not run" in section(body, "Random-init control")
    assert "--max-lora-rank 16" in section(body, "Use")
    versions = section(body, "Framework versions")
    assert all(f"`{v}`" in versions for v in ("0.1.0", "2.5.1", "4.57.0", "0.17.1"))


def test_the_card_reports_the_control_and_what_vllm_would_refuse() -> None:
    control = {"result_uri": "s3://c/result.json", "quality": 0.7, "metric": "accuracy", "status": "ready"}
    body = split_card(render_model_card(card_facts(record(control=control), CONFIG, ["modules_to_save=['x']"])))[1]
    assert "0.700" in section(body, "Random-init control")
    assert "0.163" in section(body, "Random-init control")  # 0.8625 - 0.7: how much reuse helped
    assert "does not take this adapter: modules_to_save=['x']" in section(body, "Use")


def test_the_front_matter_survives_hostile_values_and_missing_facts() -> None:
    uri = 's3://b/we: "quoted"\n- not a list item #x'
    facts = card_facts(
        {"quality": math.nan, "metric": "accuracy", "inputs": {"base_model": uri}},  # a first-ready-like record
        {**CONFIG, "base_model_name_or_path": uri},
        [],
    )
    meta, body = split_card(render_model_card(facts))
    assert meta["base_model"] == uri
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] is None
    assert "## Quality" in body and "—" in section(body, "Quality")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0042, "0.004s"), (12.34, "12.3s"), (252.4, "4m12s"), (3725, "1h02m"), (None, "—"), (math.inf, "—")],
)
def test_durations_read_at_a_glance(seconds, text) -> None:
    assert duration(seconds) == text


def test_modules_to_save_names_exactly_the_modules_saved() -> None:
    head = ["base_model.model.classifier.weight", "base_model.model.classifier.bias"]
    # PEFT's seq-cls model appends classifier and score to what it loaded: duplicates collapse, absent go.
    assert portable_modules_to_save(["classifier", "score", "classifier", "score"], LORA_KEYS + head) == ["classifier"]
    # A head with sub-modules (RoBERTa's classifier.dense / classifier.out_proj) is still the one name.
    nested = ["base_model.model.classifier.dense.weight", "base_model.model.classifier.out_proj.weight"]
    assert portable_modules_to_save(["classifier", "score"], LORA_KEYS + nested) == ["classifier"]
    assert portable_modules_to_save(["score"], [*LORA_KEYS, "base_model.model.score.weight"]) == ["score"]
    # Nothing saved whole (a causal LM adapter): none, as vLLM requires.
    assert portable_modules_to_save(["classifier", "score"], LORA_KEYS) is None
    assert portable_modules_to_save(None, LORA_KEYS) is None


def test_the_config_keeps_core_and_meaningful_fields_and_drops_the_writers_defaults() -> None:
    defaults = lora_defaults()
    written = {
        **{k: defaults[k] for k in ("lora_dropout", "fan_in_fan_out", "use_dora", "init_lora_weights", "bias")},
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "/tmp/relora-fetch-x1y2/base",
        "inference_mode": True,
        "r": 8,
        "lora_alpha": 16,
        "use_rslora": True,
        "target_modules": ["v_proj", "q_proj"],
        "modules_to_save": None,
        "peft_version": "0.21.2",
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": [0, 1],  # not a default: it changes the adapter, so it stays
        "megatron_core": "megatron.core",
        "a_field_from_a_newer_peft": {"x": 1},  # unknown to this PEFT: kept, the reader decides
    }
    config = portable_adapter_config(written, LORA_KEYS, "llama-v2", defaults)
    assert config["base_model_name_or_path"] == "llama-v2"
    assert config["target_modules"] == ["q_proj", "v_proj"] and config["use_rslora"] is True
    assert config["layers_to_transform"] == [0, 1] and config["a_field_from_a_newer_peft"] == {"x": 1}
    for dropped in ("peft_version", "rank_pattern", "alpha_pattern", "megatron_core"):
        assert dropped not in config
    assert {"lora_dropout", "fan_in_fan_out", "use_dora", "init_lora_weights", "bias", "modules_to_save"} <= set(config)
    # Idempotent: a published config rewritten again is the same (generations do not drift).
    assert portable_adapter_config(config, LORA_KEYS, "llama-v2", defaults) == config


def test_vllm_problems_follow_its_lora_loader() -> None:
    config = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "modules_to_save": None}
    assert vllm_problems(config, LORA_KEYS) == []
    embedding = [
        "base_model.model.model.embed_tokens.lora_embedding_A",
        "base_model.model.model.embed_tokens.lora_embedding_B",
    ]
    assert vllm_problems(config, LORA_KEYS + embedding) == []
    problems = vllm_problems({**config, "modules_to_save": ["classifier"], "use_dora": True}, LORA_KEYS)
    assert any("modules_to_save" in p for p in problems) and any("DoRA" in p for p in problems)
    assert any("not LoRA factors" in p for p in vllm_problems(config, [*LORA_KEYS, "base_model.model.score.weight"]))
    assert vllm_problems({"r": 8}, LORA_KEYS) == [
        "adapter_config.json lacks lora_alpha",
        "adapter_config.json lacks target_modules",
    ]


def test_the_final_folders_card_reports_its_own_adapter_when_the_first_ready_one_is_served() -> None:
    served = "s3://models/adapters/support-bot/v2-ready/versions/20261203T000000000000Z-0123abcd/"
    final = record(
        serve="first-ready",
        adapter_uri=served,
        quality=0.9,  # the served (first-ready) version's, as the summary reports it
        final_quality=0.85,
        final_quality_interval={"low": 0.8, "high": 0.89},
    )
    meta, body = split_card(render_model_card(card_facts(final, CONFIG, [])))
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.85
    assert "0.850 (95 % interval 0.800–0.890)" in section(body, "Quality")
    assert served in body.split("## Lineage", 1)[0]
