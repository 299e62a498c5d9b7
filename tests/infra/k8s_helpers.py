"""Small helpers the infra smoke tests share: applying YAML through kubectl and waiting for a condition."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.support.cli import CliRunner


def apply(kubectl: CliRunner, *objects: dict[str, Any], namespace: str | None = None) -> None:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    kubectl(*args, input=yaml.safe_dump_all(objects))


def get_json(kubectl: CliRunner, *args: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", *args, "-o", "json").stdout))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The status condition `kind` when it is True, else None."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None
