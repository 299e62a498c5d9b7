"""``relora readapt-batch`` killed mid-batch: every adapter finished before the kill stays published byte for
byte and recorded; the one in progress leaves nothing half-written; the batch record is whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relora_contract.batch import BatchRecord
from relora_contract.exit_codes import ExitCode
from relora_contract.summary import TerminationSummary
from relora_worker.storage import VERSIONS, verify_published
from tests.faults.conftest import REPO, orphans, snapshot
from tests.support.waiting import wait_for


def _plan(s: Any, out: Path) -> Path:
    def item(key: str, steps: int) -> dict[str, Any]:
        options = {"max_steps": steps, "eval_every": steps, "stage1_steps": 1}
        return {
            "key": key,
            "adapter": s.adapter_v1,
            "train_data": s.train,
            "output": str(out / key),
            "options": options,
        }

    plan = {
        "base_model": s.base_v2,
        "task": s.task,
        "options": {"strategy": "transfer-ft", "threshold": 0.2, "device": "cpu", "val_size": 8},
        "result": str(out / "batch.json"),
        # The second adapter trains until it is killed: the signal lands while it is in progress.
        "adapters": [item("first", 2), item("second", 100000), item("third", 2)],
    }
    path = out / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def _finished(record_path: Path) -> BatchRecord | None:
    try:
        record = BatchRecord.parse(json.loads(record_path.read_text()))
    except (OSError, ValueError):
        return None
    return record if record.adapters else None


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill -9", "SIGTERM"])
def test_a_kill_mid_batch_keeps_every_finished_adapter_and_half_writes_nothing(
    fault_scenario: Any, tmp_path: Path, sig: signal.Signals
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    term = tmp_path / "termination-log"
    argv = ["readapt-batch", "--plan", str(_plan(fault_scenario, out)), "--termination-message-path", str(term)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "relora_worker", *argv], cwd=REPO, env=env, stderr=subprocess.PIPE
    )
    try:
        record = wait_for(lambda: _finished(out / "batch.json") or process.poll(), 300, "the first adapter's result")
        assert isinstance(record, BatchRecord), process.stderr.read() if process.stderr else ""
        before = snapshot(str(out / "first"))
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else ExitCode.TERMINATED), err[-2000:]

    assert snapshot(str(out / "first")) == before  # every byte of the finished adapter, unchanged
    verify_published(str(out / "first"))  # whole: its manifest names every file with its sha256
    after = BatchRecord.parse(json.loads((out / "batch.json").read_text()))  # whole, never half a JSON
    assert [a.key for a in after.adapters] == ["first"] and after.pending == ["second", "third"]
    assert not after.done and after.adapters[0].exit_code in (ExitCode.OK, ExitCode.BELOW_THRESHOLD)
    assert after.adapters[0].adapter_uri == str((out / "first").resolve())
    for key in ("second", "third"):  # nothing current, no version folder, no staging leftovers
        assert not (out / key).exists() and not (out / f"{key}.{VERSIONS}").exists()
        assert orphans(str(out / key)) == []
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]  # the record's own staging file
    if sig == signal.SIGTERM:
        summary = TerminationSummary.parse(json.loads(term.read_text()))
        assert summary.reason == "Terminated" and summary.exit_code == ExitCode.TERMINATED
