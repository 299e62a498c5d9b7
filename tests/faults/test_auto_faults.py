"""Faults and bad inputs of ``auto`` and improve-after-Ready (issue 17): a stop during the improvement never
touches the first ready version already published, and the new options are refused naming the field."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relora_worker.cli import main
from relora_worker.errors import EXIT_BAD_INPUT, EXIT_TERMINATED
from relora_worker.storage import VERSIONS, publish_folder, verify_published
from tests.faults.conftest import REPO, kept, make_folder, orphans, publish_projection, snapshot
from tests.support.waiting import wait_for


def _args(s: Any, out: str, projection: str, *extra: str) -> list[str]:
    return [
        "readapt", "--base-model", s.base_v2, "--adapter", s.adapter_v1, "--projection", projection,
        "--threshold", "0.8", "--train-data", s.train, "--output", out, "--strategy", "auto", "--device", "cpu",
        "--val-size", "16", "--search-budget", "4", *extra,
    ]  # fmt: skip


def _progressed(stderr: bytes) -> bool:
    return b"search" in stderr or b"finetune" in stderr


def test_sigterm_during_the_improvement_keeps_the_first_ready_version(fault_scenario: Any, tmp_path: Path) -> None:
    """Ready at the old adapter (published at OUT-ready), then SIGTERM while improving: exit 143, the first
    version's bytes unchanged and verifiable, nothing published at OUT, no staging leftovers."""
    out = tmp_path / "out"
    first = Path(f"{out}-ready")
    term = tmp_path / "termination-log"
    projection = publish_projection(tmp_path, fault_scenario)
    args = _args(fault_scenario, str(out), projection, "--threshold", "0.01", "--readiness", "point",
                 "--improve-after-ready", "--max-steps", "100000", "--eval-every", "100000",
                 "--termination-message-path", str(term), "--progress", "on")
    log = tmp_path / "stderr"
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "relora_worker", *args], stderr=stderr, cwd=REPO,
                                   env=os.environ)
    wait_for(lambda: (first / "manifest.json").exists() or process.poll() is not None, 300, "the first version")
    assert (first / "manifest.json").exists(), "the first ready version was never published"
    before, published_at = snapshot(str(first)), log.stat().st_size
    # Into the improvement: its search's (or fine-tune's) progress bar moves after that publication.
    wait_for(lambda: _progressed(log.read_bytes()[published_at:]) or process.poll() is not None, 120, "improving")
    assert process.poll() is None, log.read_text(errors="replace")[-2000:]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    err = log.read_text(errors="replace")
    assert process.returncode == EXIT_TERMINATED, err[-2000:]
    summary = json.loads(term.read_text())
    assert summary["reason"] == "Terminated"
    assert kept(before, snapshot(str(first))) and verify_published(str(first))
    record = json.loads((first / "result.json").read_text())
    assert record["version"] == "first-ready" and record["status"] == "ready"
    assert not out.exists() and not (tmp_path / f"out.{VERSIONS}").exists(), "the improvement published nothing"
    assert orphans(str(first)) == [] and orphans(str(out)) == []


CASES = (
    ("readiness method", ("--readiness", "lucky"), r"--readiness.*invalid choice: 'lucky'"),
    ("readiness level", ("--readiness-confidence", "1.5"), r"readiness\.confidence=1\.5.*\[0\.5, 1\)"),
    ("readiness streak", ("--readiness-consecutive", "0"), r"readiness\.consecutive=0.*positive integer"),
    ("search share", ("--search-share", "0"), r"auto\.search_share=0\.0.*\(0, 1\]"),
    ("improvement cap", ("--improve-max-steps", "-1"), r"improve_max_steps=-1.*integer >= 0"),
)


@pytest.mark.parametrize(("case", "extra", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_auto_options_are_refused_naming_the_field(
    case: str, extra: tuple[str, ...], message: str, fault_scenario: Any, tmp_path: Path, capsys: Any
) -> None:
    out = str(tmp_path / "out")
    previous = publish_folder(make_folder(tmp_path / "previous", "previous"), out)["version"]
    guarded = snapshot(out)
    try:
        # any existing folder passes the inputs check that runs first; the options are checked right after
        code = main([*_args(fault_scenario, out, fault_scenario.adapter_v1, *extra)])
    except SystemExit as stop:  # argparse's own refusal of a choice: the same exit code 2
        code = stop.code
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT and re.search(message, err), err
    assert snapshot(out) == guarded and verify_published(out)["version"] == previous
    assert not Path(f"{out}-ready").exists()
