"""S3 transfers in parallel parts with progress in the log (relora_worker.transfers), against moto's S3 server."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from relora_contract.exit_codes import ExitCode
from relora_worker import transfers
from relora_worker.base_session import BaseSession
from relora_worker.errors import BadInputError
from relora_worker.storage import fetch, publish_folder
from tests.support.s3server import S3Server

MIB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


def test_a_file_over_the_multipart_threshold_round_trips_in_parts_with_progress_lines(
    s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RELORA_S3_MULTIPART_THRESHOLD_MB", "5")
    monkeypatch.setenv("RELORA_S3_PART_SIZE_MB", "5")
    monkeypatch.setenv("RELORA_S3_MAX_CONCURRENCY", "3")
    folder = tmp_path / "model"
    folder.mkdir()
    big = os.urandom(13 * MIB)  # three parts: 5 + 5 + 3 MiB
    (folder / "model.safetensors").write_bytes(big)
    (folder / "config.json").write_text("{}")  # small: one PUT, no progress lines
    uri = s3_env.uri(f"transfers/{uuid.uuid4().hex[:8]}")
    caplog.set_level(logging.INFO, logger="relora_worker.transfers")

    manifest = publish_folder(folder, uri, {"kind": "test"})
    key = f"transfers/{uri.rsplit('/', 1)[1]}/versions/{manifest['version']}/model.safetensors"
    assert s3_env.client().head_object(Bucket=s3_env.bucket, Key=key)["ETag"].strip('"').endswith("-3")

    before = transfers.downloaded_bytes()
    with fetch(uri, "base model") as local:
        assert (local / "model.safetensors").read_bytes() == big
        assert (local / "config.json").read_text() == "{}"
    assert transfers.downloaded_bytes() - before >= len(big)

    lines = [r.getMessage() for r in caplog.records if r.name == "relora_worker.transfers"]
    for verb in ("upload", "download"):
        mine = [line for line in lines if line.startswith(f"{verb} ") and "model.safetensors" in line]
        assert mine and re.search(r": 100 % \(13\.0 MiB of 13\.0 MiB, [\d.]+ MiB/s\)$", mine[-1]), lines
        # At most one line per 10 % of each transfer (publishing to S3 also reads the version back to verify it).
        finished = sum(": 100 %" in line for line in mine)
        assert len(mine) <= finished * (100 // transfers.STEP_PERCENT), f"{verb}: progress not bounded: {mine}"
    assert not [line for line in lines if "config.json" in line]


def test_transfer_settings_out_of_range_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELORA_S3_PART_SIZE_MB", "1")  # S3 refuses parts under 5 MiB
    with pytest.raises(BadInputError, match=r"RELORA_S3_PART_SIZE_MB='1'.*at least 5"):
        transfers.transfer_config()


def test_progress_lines_reach_a_pods_log_without_verbose(s3_env: S3Server, tmp_path: Path) -> None:
    # The worker as a pod runs it (a fresh interpreter, no --verbose): a 6 MiB plan (padded) is downloaded in
    # parts and its progress is on stderr, then the plan is refused (it names no base model).
    key = f"transfers/{uuid.uuid4().hex[:8]}/plan.json"
    body = b'{"format": "relora-batch-plan/v1"' + b" " * (6 * MIB) + b"}"
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=key, Body=body)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RELORA_S3_MULTIPART_THRESHOLD_MB": "5",
        "RELORA_S3_PART_SIZE_MB": "5",
    }
    done = subprocess.run(
        [sys.executable, "-m", "relora_worker", "readapt-batch", "--plan", s3_env.uri(key)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == ExitCode.BAD_INPUT, done.stderr
    assert re.search(rf"INFO relora_worker.transfers: download {re.escape(s3_env.uri(key))}: 100 %", done.stderr)
    assert "base_model" in done.stderr


def test_a_batch_session_downloads_the_base_once_and_counts_its_bytes(s3_env: S3Server, tmp_path: Path) -> None:
    # The fleet benchmark's "base bytes downloaded": one download per batch, however often the folder is asked for.
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(os.urandom(3 * MIB))
    (folder / "config.json").write_text("{}")
    uri = s3_env.uri(f"bases/{uuid.uuid4().hex[:8]}")
    publish_folder(folder, uri, {"kind": "model"})
    with contextlib.ExitStack() as stack:
        session = BaseSession(uri, stack, keep=True)
        first = session.folder()
        assert session.folder() == first and (first / "model.safetensors").stat().st_size == 3 * MIB
        counters = session.counters()
    assert counters.base_bytes_downloaded == 3 * MIB + 2 and counters.model_loads == 0
    assert counters.seconds["fetch"] > 0
