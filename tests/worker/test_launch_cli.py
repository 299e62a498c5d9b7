"""``relora launch --nproc-per-node N <command> …``: the worker CLI's own entry to relora_worker.launch (what the
operator's Jobs of several GPUs run, through its worker command). 2 gloo ranks on the tiny scenario."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from relora_worker import cli
from relora_worker.synthetic import Scenario
from tests.worker.conftest import readapt_args
from tests.worker.test_distributed import EXTRA, _env


def test_launch_is_dispatched_to_the_launcher(capsys: pytest.CaptureFixture[str]) -> None:
    """The launcher's own checks answer (exit 2, argparse's bad input), not the relora parser's 'invalid choice'."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["launch", "--nproc-per-node", "0", "readapt"])
    assert exit_.value.code == 2
    assert "--nproc-per-node 0: expected 1 or more" in capsys.readouterr().err


def test_relora_launch_runs_readapt_on_two_ranks_and_publishes_once(scenario_cls: Scenario, tmp_path: Path) -> None:
    out, message = tmp_path / "out", tmp_path / "termination-log"
    args = readapt_args(scenario_cls, out, *EXTRA, "--termination-message-path", str(message))
    command = [sys.executable, "-m", "relora_worker", "launch", "--nproc-per-node", "2", *args]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.splitlines()  # rank 0's summary alone
    summary = json.loads(line)
    assert summary["command"] == "readapt" and summary["exit_code"] == 0
    assert json.loads(message.read_text())["adapter_uri"] == summary["adapter_uri"]  # what the operator reads
    world = json.loads((out / "result.json").read_text())["world"]
    assert (world["processes"], world["rank"]) == (2, 0)
    versions = [p.name for p in (tmp_path / "out.versions").iterdir() if not p.name.startswith(".")]
    assert versions == [Path(summary["adapter_uri"]).name]  # rank 0 alone published
