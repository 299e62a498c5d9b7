"""Small helpers the infra smoke tests share: applying YAML through kubectl and waiting for a condition."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import yaml

from tests.support.cli import CliRunner


def apply(kubectl: CliRunner, *objects: dict[str, Any], namespace: str | None = None) -> None:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    kubectl(*args, input=yaml.safe_dump_all(objects))


def get_json(kubectl: CliRunner, *args: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", *args, "-o", "json").stdout))


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy (returned); fail with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {last!r}")


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The status condition `kind` when it is True, else None."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None
