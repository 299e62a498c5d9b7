"""Object storage that attacks or fails: keys escaping the download folder, an endpoint that never answers.

Each case asserts the exact exit code, that the one-line message names the key or the endpoint's timeout,
and that nothing outside the temporary download folder (nor the published artifact) changed.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relora_worker.cli import main
from relora_worker.errors import EXIT_BAD_INPUT, EXIT_STORAGE
from relora_worker.synthetic import Scenario
from tests.faults.conftest import make_folder, project_delta_args, snapshot
from tests.support.hanging import HangingServer
from tests.support.ports import LOOPBACK

# The remainder of a key after the prefix: each would land outside (or ambiguously inside) the folder.
ESCAPES = [
    ("parent segment", "../escaped.txt"),
    ("deep parent segment", "sub/../../../escaped.txt"),
    ("absolute", "/etc/escaped.txt"),
    ("backslash", "sub\\..\\escaped.txt"),
    ("empty segment", "sub//escaped.txt"),
    ("dot segment", "./escaped.txt"),
]


@pytest.mark.parametrize(("case", "rest"), ESCAPES, ids=[c for c, _ in ESCAPES])
def test_a_key_escaping_the_download_folder_is_refused(
    case: str, rest: str, fault_scenario: Scenario, s3_fault_env: Any, tmp_path: Path, capsys: Any
) -> None:
    s3 = s3_fault_env.client()
    prefix = f"evil-{uuid.uuid4().hex[:8]}"
    for path in Path(fault_scenario.adapter_v1).iterdir():
        s3.upload_file(str(path), s3_fault_env.bucket, f"{prefix}/{path.name}")
    key = f"{prefix}/{rest}"
    s3.put_object(Bucket=s3_fault_env.bucket, Key=key, Body=b"planted")
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_fault_env.bucket, Prefix=prefix + "/")["Contents"]}
    assert key in listed  # the server kept the key verbatim: the worker, not the server, must refuse it
    out = str(tmp_path / "out")
    from relora_worker.storage import publish_folder

    publish_folder(make_folder(tmp_path / "prev", "prev"), out)
    before = snapshot(out)
    watched = sorted(p for p in tmp_path.parent.rglob("escaped.txt"))

    code = main(
        [
            "readapt",
            "--threshold",
            "0.8",
            "--base-model",
            fault_scenario.base_v2,
            "--adapter",
            s3_fault_env.uri(prefix),
            "--train-data",
            fault_scenario.train,
            "--output",
            out,
            "--strategy",
            "transfer",
            "--device",
            "cpu",
        ]
    )

    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT, err
    assert err.count("\n") == 0 and f"object key {key!r}" in err and "refusing path" in err, err
    assert sorted(p for p in tmp_path.parent.rglob("escaped.txt")) == watched
    assert not Path("/etc/escaped.txt").exists() and snapshot(out) == before


@pytest.fixture
def hanging_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingServer]:
    server = HangingServer()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{LOOPBACK}:{server.port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("RELORA_S3_READ_TIMEOUT", "1")
    monkeypatch.setenv("RELORA_S3_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("RELORA_S3_MAX_ATTEMPTS", "2")
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("where", ["input", "output"])
def test_a_hanging_endpoint_ends_in_exit_4_within_the_configured_timeout(
    where: str, hanging_s3: HangingServer, fault_scenario: Scenario, tmp_path: Path, capsys: Any
) -> None:
    out = str(tmp_path / "out")
    old_model = "s3://stuck/models/v1" if where == "input" else None
    args = project_delta_args(
        fault_scenario, out if where == "input" else "s3://stuck/deltas/v1__v2", old_model=old_model
    )
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == EXIT_STORAGE, err
    assert err.count("\n") == 0 and re.search(r"s3://stuck/\S+: S3 endpoint did not answer in time", err), err
    assert "read 1 s, 2 attempt(s)" in err and "RELORA_S3_READ_TIMEOUT" in err
    # Bounded by the settings: measured, botocore opens attempts + 1 connections (each given up after 1 s).
    assert 1 <= len(hanging_s3.accepted) <= 3
    assert not Path(out).exists()
