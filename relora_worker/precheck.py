"""Argument checks that need no model, run before torch or transformers is imported (a refusal in well under
a second): every URI parses, local inputs exist, the output is apart from every input and replaceable, and
the label list is unambiguous.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from relora_contract import strategies
from relora_worker.errors import BadInputError
from relora_worker.storage import check_output_apart, check_output_target, parse_uri

# flag -> how messages name it (the same words the loaders use)
INPUTS = {
    "project-delta": {"--old-model": "old base model", "--new-model": "new base model"},
    "readapt": {
        "--base-model": "base model",
        "--adapter": "adapter",
        "--old-base-model": "old base model",
        "--projection": "projection",
        "--train-data": "dataset",
        "--val-data": "dataset",
        "--eval-data": "dataset",
        "--control-result": "control result",
    },
    "evaluate": {"--base-model": "base model", "--adapter": "adapter", "--data": "dataset"},
}
REQUIRED = {"readapt": ("--base-model", "--adapter", "--train-data", "--output")}
NEEDS_DELTA = strategies.USES_DELTA  # auto needs it too (readapt refuses it later otherwise)


def parse_labels(value: Any) -> tuple[str, ...] | None:
    """``--labels``: ``a,b,c``, or a JSON array (``["x, y", "z"]``) when a label contains a comma.

    Raises:
        BadInputError: an empty or duplicated label, or an array that is not a list of strings.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise BadInputError(f"--labels {value!r}: not a valid JSON array ({error})") from error
    if isinstance(value, str):
        labels = [x.strip() for x in value.split(",")]
    elif isinstance(value, list) and all(isinstance(x, str) for x in value):
        labels = list(value)
    else:
        raise BadInputError(f"--labels {value!r}: expected a,b,c or a JSON array of strings")
    if any(not x for x in labels):
        raise BadInputError(f"--labels {value!r}: an empty label; expected a,b,c or a JSON array of strings")
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise BadInputError(f"--labels {value!r}: label(s) {duplicates} appear twice; each class once, in order")
    return tuple(labels)


def _value(args: argparse.Namespace, flag: str) -> Any:
    return getattr(args, flag.lstrip("-").replace("-", "_"), None)


def validate(args: argparse.Namespace) -> None:
    """Refuses what the arguments alone show to be wrong (BadInputError naming the flag and the URI)."""
    command = args.command
    for flag in REQUIRED.get(command, ()):
        if not _value(args, flag):
            raise BadInputError(f"{flag} is required (on the command line or in --config)")
    inputs: dict[str, str | None] = {}
    for flag, what in INPUTS.get(command, {}).items():
        uri = _value(args, flag)
        if not uri:
            continue
        loc = parse_uri(uri, f"{what} ({flag})")
        if loc.scheme == "file" and loc.path is not None and not loc.path.exists():
            raise BadInputError(f"{what} {uri} ({flag}): no such file or folder")
        inputs[flag] = uri
    output = _value(args, "--output")
    if output and command in ("readapt", "project-delta"):
        check_output_apart(output, inputs)
        check_output_target(output)
    if command == "readapt":
        parse_labels(args.labels)
        if args.strategy in NEEDS_DELTA and not (args.projection or args.old_base_model):
            raise BadInputError(f"strategy {args.strategy} needs --projection or --old-base-model (for Π_r(ΔΘ))")
