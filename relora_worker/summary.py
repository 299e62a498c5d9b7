"""Writes the termination summary (relora_contract.summary.TerminationSummary) where Kubernetes reads it."""

from __future__ import annotations

import contextlib
from pathlib import Path

from relora_contract.summary import TerminationSummary


def write_termination_message(path: str | None, summary: TerminationSummary) -> None:
    """Writes the summary to ``path`` (e.g. /dev/termination-log); never raises: it is best effort."""
    if not path:
        return
    with contextlib.suppress(OSError):
        Path(path).write_text(summary.encode() + "\n")
