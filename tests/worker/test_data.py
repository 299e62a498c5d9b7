"""Datasets in JSONL, CSV and Parquet with configurable fields; splits; rsLoRA scaling is respected."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from relora_worker.adapters import lora_slots
from relora_worker.config import TaskConfig
from relora_worker.data import build_task_data, load_examples
from relora_worker.errors import BadInputError
from relora_worker.modelio import attach_adapter, load_base_model, load_tokenizer, read_adapter
from relora_worker.synthetic import Scenario

ROWS = [{"sentence": f"text {i}", "section": ["net", "math", "games"][i % 3], "extra": i} for i in range(60)]


def write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_formats_and_field_names(suffix: str, tmp_path: Path) -> None:
    config = TaskConfig(text_field="sentence", label_field="section", val_size=8, eval_size=10)
    path = write(tmp_path / f"data{suffix}", ROWS)
    examples = load_examples(str(path), config)
    assert len(examples) == 60 and examples[1].text == "text 1" and examples[1].label == "math"
    data = build_task_data(config, f"file://{path}")
    assert (len(data.eval), len(data.val), len(data.train)) == (10, 8, 42)
    assert data.labels == ["games", "math", "net"]
    assert not {e.text for e in data.eval} & {e.text for e in data.train}


def test_label_order_comes_from_the_adapter(tmp_path: Path) -> None:
    config = TaskConfig(text_field="sentence", label_field="section", val_size=8, eval_size=10)
    path = write(tmp_path / "d.jsonl", ROWS)
    data = build_task_data(config, str(path), labels=["net", "math", "games"])
    assert data.labels == ["net", "math", "games"]


def test_broken_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": oops}\n')
    with pytest.raises(BadInputError, match=r"d\.jsonl: line 2 is not valid JSON"):
        load_examples(str(path), TaskConfig())


def test_rslora_scaling_is_respected(scenario_cls: Scenario, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "adapter"
    shutil.copytree(scenario_cls.adapter_v1, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["use_rslora"] = True
    (folder / "adapter_config.json").write_text(json.dumps(config))
    adapter = read_adapter(folder)
    tokenizer = load_tokenizer(Path(scenario_cls.base_v2))
    model = attach_adapter(
        load_base_model(Path(scenario_cls.base_v2), "seq-cls", 4, tokenizer.pad_token_id), adapter, "seq-cls"
    )
    slot = lora_slots(model)[0]
    assert slot.scaling == pytest.approx(config["lora_alpha"] / config["r"] ** 0.5)
    x = torch.randn(2, slot.lora_a.shape[1])
    layer = slot.layer
    expected = layer.base_layer(x) + slot.scaling * (x @ slot.lora_a.T @ slot.lora_b.T)
    assert torch.allclose(layer(x), expected, atol=1e-5)
