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


def test_jsonl_records_end_at_newline_only(tmp_path: Path) -> None:
    """U+2028/U+2029, \\x85 and \\x1c inside a string are text (str.splitlines() would split the record there)."""
    rows = [{"text": f"one\u2028two\u2029three\x85four\x1c{i}", "label": "ab"[i % 2]} for i in range(4)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows), encoding="utf-8")
    examples = load_examples(str(path), TaskConfig())
    assert [e.text for e in examples] == [r["text"] for r in rows]


def test_csv_follows_the_csv_module(tmp_path: Path) -> None:
    """Quoted fields keep their newlines and commas; a byte-order mark does not rename the first column."""
    path = tmp_path / "d.csv"
    path.write_text('\ufefftext,label\n"line one\nline two, still text","a,b"\nplain,c\n', encoding="utf-8")
    examples = load_examples(str(path), TaskConfig())
    assert [(e.text, e.label) for e in examples] == [("line one\nline two, still text", "a,b"), ("plain", "c")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,label,label\nx,a,b\n", r"column\(s\) \['label'\] appear more than once"),
        ('text,label\n"unterminated,a\n', r"not valid CSV|has 1 fields"),
        ("text,label\nx,a,extra\n", r"record 2 has 3 fields; the header has 2"),
    ],
)
def test_ambiguous_csv_is_refused(content: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(content)
    with pytest.raises(BadInputError, match=message):
        load_examples(str(path), TaskConfig())


def test_labels_with_the_separator_and_disagreeing_labels(tmp_path: Path) -> None:
    from relora_worker.precheck import parse_labels

    assert parse_labels('["a, b", "c"]') == ("a, b", "c") and parse_labels("x, y") == ("x", "y")
    for bad, message in (("a,,b", "empty label"), ("a,b,a", "appear twice"), ("[1, 2]", "JSON array of strings")):
        with pytest.raises(BadInputError, match=message):
            parse_labels(bad)
    rows = [{"text": f"t{i}", "label": ["a, b", "c"][i % 2]} for i in range(40)]
    path = write(tmp_path / "d.jsonl", rows)
    config = TaskConfig(labels=("a, b", "c"), val_size=4, eval_size=4)
    assert build_task_data(config, str(path)).labels == ["a, b", "c"]
    with pytest.raises(BadInputError, match=r"--labels \['a, b', 'c'\] disagree with the adapter's"):
        build_task_data(config, str(path), labels=["c", "a, b"])
