"""Task data: JSONL, CSV or Parquet records from any URI, checked and split into train / val / eval.

Only the two configured fields are kept. A missing field, an empty split or a label outside the label set
ends as a BadInputError naming the file, the row and the field. JSONL records end at ``\n`` only (U+2028,
U+2029 and other Unicode line breaks inside a string are text); CSV follows the csv module (a quoted field
may hold newlines and commas) and a header naming a column twice is refused, as is a Parquet file doing so.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relora_worker.config import TaskConfig
from relora_worker.errors import BadInputError
from relora_worker.storage import fetch, sha256_file

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Example:
    """One (text, label) pair; for causal-LM tasks the text is the prompt and the label the completion."""

    text: str
    label: str


@dataclass
class TaskData:
    """The three splits and the ordered label set (the classifier's class order)."""

    train: list[Example]
    val: list[Example]
    eval: list[Example]
    labels: list[str]
    # Where D_eval came from, with digests a reader can check (the model card reports them): see eval_source().
    eval_source: dict[str, Any] = field(default_factory=dict)


def examples_sha256(examples: list[Example]) -> str:
    """sha256 of the examples as evaluated: one compact JSON ``[text, label]`` per line, in order.

    Defined whatever the file format (and for a D_eval carved from the training data), so two runs that
    evaluated on the same rows report the same digest.
    """
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.text, example.label], ensure_ascii=False, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def eval_source(uri: str, file_sha256: str, examples: list[Example], carved: bool, split_seed: int) -> dict[str, Any]:
    """D_eval's provenance: its file (``sha256`` of its bytes: ``sha256sum FILE`` gives the same), whether it
    was carved from that (training) file, and the digest of the rows themselves."""
    return {
        "uri": uri,
        "sha256": file_sha256,
        "carved_from_train": carved,
        "split_seed": split_seed if carved else None,
        "rows": len(examples),
        "examples_sha256": examples_sha256(examples),
    }


def _format_of(path: Path, uri: str) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in FORMATS:
        raise BadInputError(f"dataset {uri}: unknown file type; expected .jsonl, .csv or .parquet")
    return FORMATS[suffixes[-1]]


def _read_rows(path: Path, uri: str) -> list[dict]:
    kind = _format_of(path, uri)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            _refuse_duplicates(list(table.column_names), uri)
            return table.to_pylist()
        if path.suffix.lower() == ".gz":
            import gzip

            with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as handle:
                text = handle.read()
        else:
            with path.open(encoding="utf-8-sig", newline="") as handle:  # newline="": no translation of \r
                text = handle.read()
        if kind == "csv":
            return _csv_rows(text, uri)
        rows = []
        # str.splitlines() would also split at U+2028/U+2029, \x1c-\x1e, \x85...: text inside JSON strings.
        for number, line in enumerate(text.split("\n"), 1):
            line = line.removesuffix("\r")
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as error:
                    raise BadInputError(f"dataset {uri}: line {number} is not valid JSON ({error.args[0]})") from None
        return rows
    except BadInputError:
        raise
    except Exception as error:
        raise BadInputError(f"dataset {uri}: not readable as {kind} ({error})") from error


def _refuse_duplicates(columns: list[str], uri: str) -> None:
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise BadInputError(f"dataset {uri}: column(s) {duplicates} appear more than once; expected unique names")


def _csv_rows(text: str, uri: str) -> list[dict]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return []
        _refuse_duplicates(header, uri)
        rows = []
        for values in reader:
            if not values:
                continue  # a blank line
            if len(values) != len(header):
                raise BadInputError(
                    f"dataset {uri}: record {reader.line_num} has {len(values)} fields; the header has {len(header)}"
                )
            rows.append(dict(zip(header, values, strict=True)))
        return rows
    except csv.Error as error:
        raise BadInputError(f"dataset {uri}: not valid CSV near line {reader.line_num} ({error})") from error


def load_examples(uri: str, config: TaskConfig) -> list[Example]:
    """Reads every row of ``uri`` as an :class:`Example`, checking that both fields are present."""
    return read_examples(uri, config)[0]


def read_examples(uri: str, config: TaskConfig) -> tuple[list[Example], str]:
    """:func:`load_examples` and the sha256 of the file's bytes."""
    with fetch(uri, "dataset") as path:
        if path.is_dir():
            raise BadInputError(f"dataset {uri}: is a folder; expected a .jsonl, .csv or .parquet file")
        rows = _read_rows(path, uri)
        digest = sha256_file(path)
    examples = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise BadInputError(f"dataset {uri}: row {number} is not an object")
        for name in (config.text_field, config.label_field):
            if row.get(name) is None or str(row.get(name)) == "":
                raise BadInputError(f"dataset {uri}: row {number} has no field {name!r}; fields present: {sorted(row)}")
        examples.append(Example(str(row[config.text_field]), str(row[config.label_field])))
    if not examples:
        raise BadInputError(f"dataset {uri}: no rows")
    return examples, digest


def _check_labels(examples: list[Example], labels: list[str], where: str) -> None:
    known = set(labels)
    unknown = sorted({e.label for e in examples} - known)
    if unknown:
        raise BadInputError(f"{where}: unknown label(s) {unknown[:5]}; expected one of {labels}")


def build_task_data(
    config: TaskConfig,
    train_uri: str,
    val_uri: str | None = None,
    eval_uri: str | None = None,
    labels: list[str] | None = None,
) -> TaskData:
    """Loads the splits; carves D_val (``val_size``) and D_eval (``eval_size``) from train when not given.

    The label order is, by priority: ``labels`` (e.g. from the old adapter), ``config.labels``, the sorted
    labels of the training split.
    """
    train, train_sha256 = read_examples(train_uri, config)
    val = load_examples(val_uri, config) if val_uri else None
    evaluation, eval_sha256 = read_examples(eval_uri, config) if eval_uri else (None, train_sha256)
    carved = evaluation is None
    shuffled = train[:]
    random.Random(config.split_seed).shuffle(shuffled)
    if evaluation is None:
        take = min(config.eval_size, len(shuffled) // 4)
        evaluation, shuffled = shuffled[:take], shuffled[take:]
    if val is None:
        take = min(config.val_size, len(shuffled) // 4)
        val, shuffled = shuffled[:take], shuffled[take:]
    else:
        val = val[: config.val_size]
    train = shuffled
    for name, split in (("training", train), ("validation", val), ("evaluation", evaluation)):
        if not split:
            raise BadInputError(f"{name} split is empty (training data {train_uri} too small to carve it?)")
    if labels and config.labels and list(labels) != list(config.labels):
        raise BadInputError(
            f"--labels {list(config.labels)} disagree with the adapter's {'relora_task.json'} labels {list(labels)} "
            "(the classifier's class order); give the same labels in the same order, or leave --labels out"
        )
    label_list = list(labels or config.labels or sorted({e.label for e in train}))
    source = eval_source(eval_uri or train_uri, eval_sha256, evaluation, carved, config.split_seed)
    if config.task == "causal-lm" and config.metric == "exact-match":
        # Free-text completions: there is no closed label set to check against.
        return TaskData(train, val, evaluation, label_list, source)
    _check_labels(train, label_list, f"dataset {train_uri}")
    _check_labels(val, label_list, f"dataset {val_uri or train_uri} (validation)")
    _check_labels(evaluation, label_list, f"dataset {eval_uri or train_uri} (evaluation)")
    if len(label_list) < 2:
        raise BadInputError(f"dataset {train_uri}: only one label {label_list}; a task needs at least two")
    return TaskData(train, val, evaluation, label_list, source)
