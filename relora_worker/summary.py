"""The one-line JSON summary for a Kubernetes termination message (always under 4 KiB)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

LIMIT = 4096


def readapt_summary(record: dict[str, Any], exit_code: int) -> dict[str, Any]:
    return {
        "command": "readapt",
        "status": record["status"],
        "exit_code": exit_code,
        "strategy": record["strategy"],
        "quality": record["quality"],
        "threshold": record["threshold"],
        "time_to_readiness_s": record["time_to_readiness_s"],
        "alpha": record["alpha"],
        "beta": record["beta"],
        "adapter_uri": record["adapter_uri"],
        "result_uri": record["result_uri"],
        # issue 17: the interval of the quality, and the first ready version when improving after Ready
        "quality_interval": _interval(record.get("quality_interval")),
        "ready_adapter_uri": (record.get("ready_version") or {}).get("adapter_uri"),
        "final_quality": record.get("final_quality"),
        # issue 13: whether vLLM's LoRA loader takes the adapter as published, and which rows measured it
        "vllm_compatible": (record.get("artifact") or {}).get("vllm_compatible"),
        "eval_data_sha256": (record.get("eval_data") or {}).get("sha256"),
        "error": None,
    }


def _interval(interval: dict[str, Any] | None) -> list[float] | None:
    return None if not interval else [interval["low"], interval["high"]]


def error_summary(command: str, message: str, exit_code: int) -> dict[str, Any]:
    return {"command": command, "status": "error", "exit_code": exit_code, "error": message}


def encode(summary: dict[str, Any]) -> str:
    """Compact JSON; a long error message is shortened so the whole line stays under the limit."""
    text = json.dumps(summary, separators=(",", ":"), default=str)
    if len(text.encode()) <= LIMIT:
        return text
    shortened = dict(summary)
    message = str(shortened.get("error") or "")
    overflow = len(text.encode()) - LIMIT + 16
    shortened["error"] = message[: max(0, len(message) - overflow)] + "…"
    return json.dumps(shortened, separators=(",", ":"), default=str)[:LIMIT]


def write_termination_message(path: str | None, summary: dict[str, Any]) -> None:
    """Writes the summary to ``path`` (e.g. /dev/termination-log); never raises: it is best effort."""
    if not path:
        return
    with contextlib.suppress(OSError):
        Path(path).write_text(encode(summary) + "\n")
