"""The published adapter folder is portable: stock PEFT loads it in another process, its adapter_config.json
follows PEFT's and vLLM's conventions over generations, and its README.md is a real model card.

Real parts only: tiny models built from configs (tests/worker/conftest.py), PEFT and transformers as
installed, a real S3 server on loopback (tests/support/s3server.py), a fresh Python process for the reader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from safetensors import safe_open

from relora_worker.cli import main
from relora_worker.errors import EXIT_BAD_INPUT
from relora_worker.portable import CORE_FIELDS, vllm_problems
from relora_worker.synthetic import Scenario
from tests.worker.conftest import readapt_args
from tests.worker.test_storage import upload_folder

ROOT = Path(__file__).resolve().parents[2]
READER = Path(__file__).with_name("stock_peft_eval.py")


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, dict]:
    """``relora`` in this process; (exit code, the JSON summary it printed)."""
    code = main(args)
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def tensors(folder: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as handle:
        return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118


def front_matter(card: str):
    """The card parsed as the Hugging Face Hub parses it."""
    from huggingface_hub import ModelCard

    return ModelCard(card).data


def test_three_generations_keep_the_config_and_the_keys_the_same(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from peft import LoraConfig, PeftModel

    configs, keys, source = [], [], scenario_cls.adapter_v1
    for generation in (2, 3, 4):  # v1 -> v2, then from that output, then from that one
        out = tmp_path / f"gen{generation}"
        args = readapt_args(dataclasses.replace(scenario_cls, adapter_v1=source), out, "--base-name", "demo/base@v2")
        code, _summary = run(args, capsys)
        assert code in (0, 3)
        configs.append(json.loads((out / "adapter_config.json").read_text()))
        keys.append(tensors(out))
        source = str(out)

    assert configs[0] == configs[1] == configs[2]  # nothing accumulates: modules_to_save stayed one name
    assert keys[0] == keys[1] == keys[2] == tensors(Path(scenario_cls.adapter_v1))
    config = configs[2]
    assert config["modules_to_save"] == ["classifier"]  # the BERT head saved, once; PEFT's "score" is absent
    assert {k.removeprefix("base_model.model.").rsplit(".", 1)[0] for k in keys[2] if "lora_" not in k} == {
        "classifier"
    }
    assert config["base_model_name_or_path"] == "demo/base@v2"
    assert config["target_modules"] == sorted(scenario_cls.target_modules)
    # Only fields this PEFT knows, none of them dropped silently on load, and the core fields every reader knows.
    assert set(config) <= {f.name for f in dataclasses.fields(LoraConfig)}
    assert set(CORE_FIELDS) <= set(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = LoraConfig.from_pretrained(str(tmp_path / "gen4"))
    assert loaded.r == config["r"] and loaded.lora_alpha == config["lora_alpha"]

    # The last generation still loads with stock PEFT and still names the head it saved.
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(scenario_cls.base_v2, num_labels=len(scenario_cls.labels))
    model = PeftModel.from_pretrained(base, str(tmp_path / "gen4"))
    assert "classifier" in model.modules_to_save
    card = (tmp_path / "gen4" / "README.md").read_text()
    assert "[More Information Needed]" not in card  # PEFT's empty template is gone
    assert front_matter(card).base_model == "demo/base@v2"


def test_a_causal_lm_adapter_published_to_s3_loads_with_stock_peft_in_a_fresh_process(
    scenario_lm: Scenario, s3_env, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    client = s3_env.client()
    bucket = s3_env.bucket
    base = upload_folder(client, bucket, Path(scenario_lm.base_v2), "portable/releases/v2")
    old_base = upload_folder(client, bucket, Path(scenario_lm.base_v1), "portable/releases/v1")
    adapter = upload_folder(client, bucket, Path(scenario_lm.adapter_v1), "portable/adapters/v1")
    client.upload_file(scenario_lm.train, bucket, "portable/data/train.jsonl")
    client.upload_file(scenario_lm.eval, bucket, "portable/data/eval.jsonl")
    eval_uri = s3_env.uri("portable/data/eval.jsonl")
    output = s3_env.uri("portable/adapters/v2")
    args = readapt_args(scenario_lm, output, "--old-release", "v1", "--new-release", "v2")
    for flag, value in (
        ("--base-model", base),
        ("--old-base-model", old_base),
        ("--adapter", adapter),
        ("--train-data", s3_env.uri("portable/data/train.jsonl")),
        ("--eval-data", eval_uri),
    ):
        args[args.index(flag) + 1] = value
    code, summary = run(args, capsys)
    assert code in (0, 3)
    version = summary["adapter_uri"]
    assert version.startswith(output + "/versions/")

    # A fresh process, stock PEFT, the folder as S3 holds it: the quality the worker reported.
    env = {**os.environ, **s3_env.env, "PYTHONPATH": str(ROOT)}
    reader = subprocess.run(
        [sys.executable, str(READER), "--adapter", version, "--base", base, "--eval", eval_uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert reader.returncode == 0, reader.stderr[-3000:]
    stock = json.loads(reader.stdout.strip().splitlines()[-1])
    # Tolerance: one evaluation row. The weights are the same bytes; only a tie in float32 summation order
    # between two processes could move one row's decision.
    assert stock["rows"] == 200
    assert abs(stock["quality"] - summary["quality"]) <= 1 / stock["rows"]
    assert stock["base_model_name_or_path"] == base  # the release's URI, not the worker's download folder
    assert stock["modules_to_save"] is None  # a causal LM adapter saves no whole module: vLLM takes it

    folder = tmp_path / "published"
    folder.mkdir()
    prefix = version.removeprefix(f"s3://{bucket}/")
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md", "result.json"):
        client.download_file(bucket, prefix + name, str(folder / name))
    config = json.loads((folder / "adapter_config.json").read_text())
    assert vllm_problems(config, tensors(folder)) == []
    record = json.loads((folder / "result.json").read_text())
    assert record["artifact"]["vllm_compatible"] is True and summary["vllm_compatible"] is True

    card = front_matter((folder / "README.md").read_text())
    assert card.base_model == base and card.library_name == "peft" and card.pipeline_tag == "text-generation"
    assert f"base_model:adapter:{base}" in card.tags
    (result,) = card.eval_results
    digest = hashlib.sha256(Path(scenario_lm.eval).read_bytes()).hexdigest()
    assert result.metric_type == "accuracy" and result.metric_value == summary["quality"]
    assert result.dataset_name == eval_uri and result.dataset_revision == f"sha256:{digest}"
    assert summary["eval_data_sha256"] == record["eval_data"]["sha256"] == digest
    text = (folder / "README.md").read_text()
    for expected in ("`v1`", "`v2`", adapter, f"{record['alpha']:.3f}", f"{record['beta']:.3f}", "torch", "peft"):
        assert expected in text


def test_the_random_init_control_is_reported_and_must_share_the_evaluation_rows(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, control = run(readapt_args(scenario_cls, tmp_path / "control", strategy="random-init"), capsys)
    assert code in (0, 3)
    control_result = str(tmp_path / "control" / "result.json")
    out = tmp_path / "relora"
    code, summary = run(readapt_args(scenario_cls, out, "--control-result", control_result), capsys)
    assert code in (0, 3)
    record = json.loads((out / "result.json").read_text())
    assert record["control"]["quality"] == control["quality"]
    card = (out / "README.md").read_text()
    section = card.split("## Random-init control", 1)[1].split("\n## ", 1)[0]
    assert f"{control['quality']:.3f}" in section
    assert f"{summary['quality'] - control['quality']:.3f}" in section

    # A control evaluated on other rows is no control: refused before any work, nothing published.
    other_eval = tmp_path / "other-eval.jsonl"
    other_eval.write_text("".join(Path(scenario_cls.eval).read_text().splitlines(keepends=True)[:100]))
    args = readapt_args(scenario_cls, tmp_path / "refused", "--control-result", control_result)
    args[args.index("--eval-data") + 1] = str(other_eval)
    code, refused = run(args, capsys)
    assert code == EXIT_BAD_INPUT
    assert "control result" in refused["error"] and "same evaluation data" in refused["error"]
    assert not (tmp_path / "refused").exists()
