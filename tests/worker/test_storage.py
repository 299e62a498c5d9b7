"""Artifacts on a real S3-compatible server (moto on loopback) and local folders; atomic publication."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from relora_worker.cli import main
from relora_worker.errors import EXIT_STORAGE, BadInputError
from relora_worker.storage import publish_folder, verify_published
from relora_worker.synthetic import Scenario
from tests.support.ports import free_port
from tests.worker.conftest import readapt_args


def upload_folder(client, bucket: str, folder: Path, prefix: str) -> str:
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://{bucket}/{prefix}"


def test_readapt_reads_and_publishes_on_s3(
    scenario_cls: Scenario, s3_server, s3_env, capsys: pytest.CaptureFixture
) -> None:
    client = s3_server.client()
    base = upload_folder(client, s3_server.bucket, Path(scenario_cls.base_v2), "releases/demo/v2")
    old_base = upload_folder(client, s3_server.bucket, Path(scenario_cls.base_v1), "releases/demo/v1")
    adapter = upload_folder(client, s3_server.bucket, Path(scenario_cls.adapter_v1), "adapters/ns/a/v1")
    client.upload_file(scenario_cls.train, s3_server.bucket, "data/train.jsonl")
    output = s3_server.uri("adapters/ns/a/v2")
    args = readapt_args(scenario_cls, output)
    for flag, value in (
        ("--base-model", base),
        ("--old-base-model", old_base),
        ("--adapter", adapter),
        ("--train-data", s3_server.uri("data/train.jsonl")),
    ):
        args[args.index(flag) + 1] = value
    assert main(args) in (0, 3)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The summary names the immutable version; the pointer at the output names the same one.
    version = summary["adapter_uri"]
    assert version.startswith(output + "/versions/") and version.endswith("/")
    assert summary["result_uri"] == version + "result.json"
    manifest = verify_published(output)
    assert manifest["kind"] == "adapter" and "adapter_model.safetensors" in manifest["files"]
    assert version.endswith(f"/{manifest['version']}/") and verify_published(version) == manifest


def test_unreachable_s3_is_a_storage_error(
    scenario_cls: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("RELORA_S3_MAX_ATTEMPTS", "2")
    args = readapt_args(scenario_cls, tmp_path / "out")
    args[args.index("--train-data") + 1] = "s3://bucket/train.jsonl"
    assert main(args) == EXIT_STORAGE
    err = capsys.readouterr().err
    assert "s3://bucket/train.jsonl" in err and "unreachable" in err
    assert not (tmp_path / "out").exists()


def test_access_denied_is_a_storage_error(
    scenario_cls: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # A second moto server that authenticates every request: unknown keys are refused with 403.
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        import socket

        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNUNKNOWN00")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        monkeypatch.setenv("RELORA_S3_MAX_ATTEMPTS", "1")
        args = readapt_args(scenario_cls, tmp_path / "out")
        args[args.index("--train-data") + 1] = "s3://private/train.jsonl"
        assert main(args) == EXIT_STORAGE
        err = capsys.readouterr().err
        assert "s3://private/train.jsonl" in err and "access denied" in err
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_crash_before_publish_leaves_no_manifest(scenario_cls: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = readapt_args(scenario_cls, out)
    args[args.index("--max-steps") + 1] = "100000"  # long enough to be killed mid-training
    process = subprocess.Popen(
        [sys.executable, "-m", "relora_worker", *args, "--progress", "on"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        # Killed once it is fine-tuning (its progress bar says so), not after a guessed delay: a kill before the
        # training started, or after the run ended, would pass without testing anything.
        seen = _read_until(process.stderr, b"finetune", timeout=300)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert b"finetune" in seen and process.returncode == -signal.SIGKILL, seen[-2000:]
    assert not (out / "manifest.json").exists()
    with pytest.raises(BadInputError):
        verify_published(str(out))


def test_local_publish_replaces_atomically_and_detects_tampering(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_text("one")
    dest = tmp_path / "dest"
    publish_folder(source, str(dest))
    (source / "a.txt").write_text("two")
    publish_folder(source, str(dest))
    assert (dest / "a.txt").read_text() == "two" and dest.is_symlink()  # the link moved, the old bytes stayed
    assert verify_published(str(dest))["files"]["a.txt"]["size"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "dest.versions", "src"]
    old, new = sorted(p for p in (tmp_path / "dest.versions").iterdir() if p.is_dir())
    assert (old / "a.txt").read_text() == "one" and (new / "a.txt").read_text() == "two"
    (dest / "a.txt").write_text("tampered")
    with pytest.raises(BadInputError, match="does not match"):
        verify_published(str(dest))


def test_json_outputs_are_strict() -> None:
    from relora_worker.storage import dumps_strict

    text = dumps_strict({"quality": float("nan"), "bounds": [float("inf"), 0.5], "name": "x"})
    assert json.loads(text) == {"quality": None, "bounds": [None, 0.5], "name": "x"} and "NaN" not in text


@pytest.mark.parametrize(
    ("output", "inputs", "relation"),
    [
        ("s3://b/a/v2", {"--adapter": "s3://b/a/v2/"}, "is the same location as"),
        ("s3://b/a//./v2/x", {"--adapter": "s3://b/a/v2"}, "is inside"),
        ("s3://b/a/", {"--train-data": "s3://b/a/../a/train.jsonl"}, "contains"),
        ("s3://b/data-2", {"--train-data": "s3://b/data/t.jsonl"}, None),
        ("s3://other/a", {"--adapter": "s3://b/a"}, None),
    ],
)
def test_output_apart_from_inputs_on_s3(output: str, inputs: dict, relation: str | None) -> None:
    from relora_worker.storage import check_output_apart

    if relation is None:
        check_output_apart(output, inputs)
        return
    with pytest.raises(BadInputError, match=f"--output {output} {relation} {next(iter(inputs))}"):
        check_output_apart(output, inputs)


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/x", "a\\x", "a//x", "./x", "", "C:x"])
def test_unsafe_relative_paths_are_refused(name: str) -> None:
    from relora_worker.storage import safe_relative

    with pytest.raises(BadInputError, match="refusing path"):
        safe_relative(name, "manifest")
    assert safe_relative("sub/file.bin", "manifest") == "sub/file.bin"


def _read_until(stream: Any, marker: bytes, timeout: float) -> bytes:
    """What ``stream`` (a pipe) says until ``marker`` appears, the pipe closes or ``timeout`` passes."""
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([stream], [], [], left)
        chunk = os.read(stream.fileno(), 65536) if ready else b""
        if not chunk:
            break
        seen += chunk
    return seen
