"""The CLI: every option documented, --config, the termination summary's size limit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from relora_contract.summary import TerminationSummary
from relora_worker.cli import build_parser, main
from relora_worker.synthetic import Scenario
from tests.worker.conftest import readapt_args


@pytest.mark.parametrize("command", ["project-delta", "readapt", "evaluate", "demo"])
def test_every_option_has_help(command: str) -> None:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings} has no help"
    text = subprocess.run(
        [sys.executable, "-m", "relora_worker", command, "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "exit codes:" in text and "--json" in text


def test_config_file_supplies_options_and_flags_win(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = readapt_args(scenario_cls, tmp_path / "out", strategy="transfer")
    options = {
        args[i].removeprefix("--").replace("-", "_"): args[i + 1]
        for i in range(1, len(args) - 1)
        if args[i].startswith("--") and not args[i + 1].startswith("--")
    }
    options["max_steps"] = 5
    config = tmp_path / "job.json"
    config.write_text(json.dumps(options))
    assert main(["readapt", "--config", str(config), "--threshold", "0.01", "--json"]) == 0
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["threshold"] == 0.01 and record["strategy"] == "transfer"


def test_project_delta_publishes_a_manifest(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "proj"
    code = main(
        [
            "project-delta",
            "--old-model",
            scenario_cls.base_v1,
            "--new-model",
            scenario_cls.base_v2,
            "--target-modules",
            ",".join(scenario_cls.target_modules),
            "--rank",
            "8",
            "--svd",
            "randomized",
            "--output",
            str(out),
            "--json",
            "--old-release",
            "v1",
            "--new-release",
            "v2",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip())
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary["modules"] > 0 and manifest["rank"] == 8 and manifest["new_release"] == "v2"
    assert set(manifest["files"]) == {"projection.safetensors", "projection.json"}


def test_termination_summary_is_cut_below_4_kib() -> None:
    text = TerminationSummary.failed("readapt", "x" * 10000, 2).encode()
    assert len(text.encode()) <= 4096
    assert json.loads(text)["exit_code"] == 2
