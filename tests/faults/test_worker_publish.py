"""Publishing under faults: kill -9 at every stage, SIGTERM, racing publishers, torn and tampered artifacts.

Each case records every published byte first (checksums) and asserts none was lost or changed, that the
current version is always a complete one, and that no staging leftovers remain after the next publish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from relora_worker.cli import main
from relora_worker.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED, BadInputError, PublishConflict
from relora_worker.storage import VERSIONS, fetch, parse_uri, publish_folder, verify_published
from tests.faults.conftest import (
    REPO,
    kept,
    make_folder,
    orphans,
    project_delta_args,
    publish_projection,
    run_publisher,
    run_worker,
    snapshot,
)

# The stages publish_folder passes (RELORA_FAULT_AT): before anything, after the first file, after every
# file, after the version's manifest, after the pointer (the one write that makes a version current).
STAGES = ("publish-start", "file-1", "files", "version", "pointer")


def _dest(kind: str, tmp_path: Path, s3: Any, name: str) -> str:
    return s3.uri(f"faults/{name}-{uuid.uuid4().hex[:6]}") if kind == "s3" else str(tmp_path / name)


def _tag(uri: str) -> str:
    """Which publisher's bytes the current version holds (every file must agree: never a mix)."""
    with fetch(uri, "artifact") as folder:
        tags = {p.read_bytes().split(b":")[0].decode() for p in folder.glob("part-*.bin")}
        tags.add(json.loads((folder / "sub" / "result.json").read_text())["tag"])
    assert len(tags) == 1, f"a mix of publishers: {tags}"
    return tags.pop()


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_kill_9_during_publish_keeps_the_previous_version(
    kind: str, stage: str, tmp_path: Path, s3_fault_env: Any
) -> None:
    s3 = s3_fault_env.client()
    dest = _dest(kind, tmp_path, s3_fault_env, f"kill-{stage}")
    first = publish_folder(make_folder(tmp_path / "v1", "one"), dest, {"kind": "test"})
    before = snapshot(dest, s3)

    killed = run_publisher(make_folder(tmp_path / "v2", "two"), dest, {"RELORA_FAULT_AT": stage})

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    after = snapshot(dest, s3)
    assert kept(before, after), "a byte published before the kill was lost or changed"
    current = verify_published(dest)
    if stage == "pointer":  # killed after the commit: the new version is whole and current
        assert current["version"] != first["version"] and _tag(dest) == "two"
    else:
        assert current["version"] == first["version"] and _tag(dest) == "one"
        assert {k: v for k, v in after.items() if k in ("manifest.json",) or k.startswith("link:")} == {
            k: v for k, v in before.items() if k in ("manifest.json",) or k.startswith("link:")
        }, "the pointer moved before the new version was complete"
    # The next publish removes what the killed one left half-written (grace 0: nobody else is publishing).
    recovered = run_publisher(make_folder(tmp_path / "v3", "three"), dest, {"RELORA_PUBLISH_GRACE_S": "0"})
    assert recovered.returncode == 0, recovered.stderr
    assert _tag(dest) == "three" and orphans(dest, s3) == []
    assert kept(before, snapshot(dest, s3))


def test_kill_9_of_the_worker_during_its_upload(fault_scenario: Any, tmp_path: Path, s3_fault_env: Any) -> None:
    """The real `relora project-delta`, killed after its first uploaded file: the projection it replaces stays."""
    s3 = s3_fault_env.client()
    dest = s3_fault_env.uri(f"faults/worker-kill-{uuid.uuid4().hex[:6]}/projection")
    args = project_delta_args(fault_scenario, dest, "--json")
    env = {"RELORA_S3_MAX_ATTEMPTS": "2"}
    assert run_worker(args, env).returncode == 0
    before = snapshot(dest, s3)
    current = verify_published(dest)["version"]

    killed = run_worker(args, {**env, "RELORA_FAULT_AT": "file-1"})

    assert killed.returncode == -signal.SIGKILL
    assert kept(before, snapshot(dest, s3)) and snapshot(dest, s3)["manifest.json"] == before["manifest.json"]
    assert verify_published(dest)["version"] == current


def test_sigterm_during_publish_withdraws_the_new_version(fault_scenario: Any, tmp_path: Path) -> None:
    """SIGTERM while files are copied: exit 143, summary reason Terminated, old version current, no leftovers."""
    dest = str(tmp_path / "projection")
    term = tmp_path / "termination-log"
    args = project_delta_args(fault_scenario, dest, "--termination-message-path", str(term))
    publish_folder(make_folder(tmp_path / "v1", "one"), dest)
    before = snapshot(dest)

    stopped = run_worker(args, {"RELORA_FAULT_AT": "files:TERM"})

    assert stopped.returncode == EXIT_TERMINATED, stopped.stderr
    summary = json.loads(term.read_text())
    assert summary["reason"] == "Terminated" and summary["exit_code"] == EXIT_TERMINATED
    assert summary["status"] == "terminated" and "SIGTERM" in summary["error"]
    assert "SIGTERM" in stopped.stderr and stopped.stderr.count("\n") == 1
    assert snapshot(dest) == before and _tag(dest) == "one"
    assert orphans(dest) == []  # withdrawn at once, not left for the next publish


def _race(dest: str, folders: list[Path]) -> dict[str, BaseException | str]:
    """Publishes every folder at ``dest`` from its own thread, all released at once; who -> version or error."""
    start = threading.Barrier(len(folders))
    outcome: dict[str, BaseException | str] = {}

    def publish(folder: Path) -> None:
        start.wait()
        try:
            outcome[folder.name.split("-")[-1]] = publish_folder(folder, dest)["version"]
        except PublishConflict as error:
            outcome[folder.name.split("-")[-1]] = error

    threads = [threading.Thread(target=publish, args=(folder,)) for folder in folders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_racing_publishers_leave_one_whole_artifact(kind: str, tmp_path: Path, s3_fault_env: Any) -> None:
    """Two publishers start together on one destination, 20 times: one whole artifact, a clear loser, no leftovers."""
    s3 = s3_fault_env.client()
    conflicts = 0
    for round_ in range(20):
        dest = _dest(kind, tmp_path, s3_fault_env, f"race-{round_}")
        publish_folder(make_folder(tmp_path / f"base-{round_}", "base", files=1), dest)
        before = snapshot(dest, s3)
        folders = [make_folder(tmp_path / f"r{round_}-{who}", who, files=1) for who in ("left", "right")]
        outcome = _race(dest, folders)
        winners = {who: v for who, v in outcome.items() if isinstance(v, str)}
        losers = {who: e for who, e in outcome.items() if isinstance(e, PublishConflict)}
        assert len(winners) + len(losers) == 2 and winners, outcome
        for error in losers.values():
            assert "another publisher" in str(error) and "withdrawn" in str(error)
        conflicts += len(losers)
        current = verify_published(dest)
        assert current["version"] in winners.values()
        assert _tag(dest) in winners  # one publisher's bytes, whole
        assert orphans(dest, s3) == [] and kept(before, snapshot(dest, s3))
    assert conflicts >= 1  # the race really happened (each loser withdrew and said so)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_torn_or_tampered_artifact_is_refused_naming_the_file(
    kind: str, tmp_path: Path, s3_fault_env: Any
) -> None:
    s3 = s3_fault_env.client()
    dest = _dest(kind, tmp_path, s3_fault_env, "tamper")
    published = publish_folder(make_folder(tmp_path / "v1", "one"), dest)
    loc = parse_uri(published["uri"])
    if kind == "s3":
        s3.put_object(Bucket=loc.bucket, Key=loc.key + "part-1.bin", Body=b"tampered")
    else:
        assert loc.path is not None
        (loc.path / "part-1.bin").write_bytes(b"tampered")
    with pytest.raises(BadInputError, match=r"part-1\.bin does not match the manifest's sha256"):
        verify_published(dest)
    with pytest.raises(BadInputError, match=r"part-1\.bin"), fetch(dest, "adapter"):
        pass
    if kind == "s3":
        s3.delete_object(Bucket=loc.bucket, Key=loc.key + "part-2.bin")
    else:
        assert loc.path is not None
        (loc.path / "part-2.bin").unlink()
    with pytest.raises(BadInputError, match=r"part-(1|2)\.bin"):
        verify_published(dest)


def test_worker_refuses_a_tampered_projection(fault_scenario: Any, tmp_path: Path, capsys: Any) -> None:
    """`relora readapt` reads the projection through its manifest: one changed byte is exit 2 naming the file."""
    proj = Path(publish_projection(tmp_path, fault_scenario))
    weights = proj / "projection.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))  # through the link, into the published version
    out = tmp_path / "out"
    code = main(
        [
            "readapt",
            "--threshold",
            "0.8",
            "--base-model",
            fault_scenario.base_v2,
            "--adapter",
            fault_scenario.adapter_v1,
            "--projection",
            str(proj),
            "--train-data",
            fault_scenario.train,
            "--output",
            str(out),
            "--strategy",
            "relora",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, err
    assert "projection.safetensors does not match the manifest's sha256" in err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_republish_keeps_every_old_version_and_moves_only_the_pointer(
    kind: str, tmp_path: Path, s3_fault_env: Any
) -> None:
    s3 = s3_fault_env.client()
    dest = _dest(kind, tmp_path, s3_fault_env, "again")
    published = []
    for tag in ("one", "two", "three"):
        before = snapshot(dest, s3)
        published.append((tag, publish_folder(make_folder(tmp_path / tag, tag), dest)))
        assert kept(before, snapshot(dest, s3)) and _tag(dest) == tag
    for tag, manifest in published:  # each version stays whole at its own immutable URI
        assert verify_published(manifest["uri"])["version"] == manifest["version"] and _tag(manifest["uri"]) == tag


def test_sigterm_while_training_publishes_nothing(fault_scenario: Any, tmp_path: Path) -> None:
    """A Job deleted mid-training: the worker stops, writes the Terminated summary, publishes nothing."""
    out = tmp_path / "out"
    term = tmp_path / "termination-log"
    args = [
        "readapt",
        "--threshold",
        "0.8",
        "--base-model",
        fault_scenario.base_v2,
        "--adapter",
        fault_scenario.adapter_v1,
        "--train-data",
        fault_scenario.train,
        "--output",
        str(out),
        "--strategy",
        "transfer-ft",
        "--max-steps",
        "100000",
        "--eval-every",
        "100000",
        "--device",
        "cpu",
        "--progress",
        "on",
        "--termination-message-path",
        str(term),
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "relora_worker", *args], stderr=subprocess.PIPE, cwd=REPO, env=os.environ
    )
    assert process.stderr is not None
    seen = b""
    deadline = time.monotonic() + 240
    while b"finetune" not in seen and time.monotonic() < deadline and process.poll() is None:
        seen += os.read(process.stderr.fileno(), 4096)  # tqdm's bar names the stage: training has begun
    assert b"finetune" in seen, seen[-2000:]
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == EXIT_TERMINATED, (seen + rest)[-2000:]
    summary = json.loads(term.read_text())
    assert summary["reason"] == "Terminated" and summary["exit_code"] == EXIT_TERMINATED
    assert not out.exists() and not (tmp_path / f"out.{VERSIONS}").exists()


def test_sigint_before_publishing_exits_130(
    fault_scenario: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Ctrl-C (SIGINT) as the publish starts: exit 130, reason Terminated, the previous version untouched."""
    dest = str(tmp_path / "projection")
    publish_folder(make_folder(tmp_path / "v1", "one"), dest)
    before = snapshot(dest)
    term = tmp_path / "termination-log"
    monkeypatch.setenv("RELORA_FAULT_AT", "publish-start:INT")
    code = main(project_delta_args(fault_scenario, dest, "--termination-message-path", str(term)))
    err = capsys.readouterr().err
    assert code == EXIT_INTERRUPTED and "SIGINT" in err and err.count("\n") == 1, err
    summary = json.loads(term.read_text())
    assert summary["reason"] == "Terminated" and summary["exit_code"] == EXIT_INTERRUPTED
    assert snapshot(dest) == before and _tag(dest) == "one" and orphans(dest) == []


def test_sigterm_to_the_launcher_stops_every_rank_and_publishes_nothing(fault_scenario: Any, tmp_path: Path) -> None:
    """A multi-GPU Job deleted mid-training: the kubelet signals the launcher (PID 1) alone; every rank stops,
    rank 0 writes the Terminated summary, nothing is published and the launcher exits 143 (not torchrun's 1)."""
    out, term = tmp_path / "out", tmp_path / "termination-log"
    args = ["launch", "--nproc-per-node", "2", "readapt", "--threshold", "0.8", "--base-model", fault_scenario.base_v2,
            "--adapter", fault_scenario.adapter_v1, "--train-data", fault_scenario.train, "--output", str(out),
            "--strategy", "transfer-ft", "--max-steps", "100000", "--eval-every", "100000", "--device", "cpu",
            "--batch-size", "8", "--progress", "on", "--termination-message-path", str(term)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "relora_worker", *args]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, cwd=REPO, env=env)
    assert process.stderr is not None
    seen = b""
    deadline = time.monotonic() + 300
    while b"finetune" not in seen and time.monotonic() < deadline and process.poll() is None:
        seen += os.read(process.stderr.fileno(), 4096)  # a rank's tqdm bar names the stage: training has begun
    assert b"finetune" in seen, seen[-2000:]
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=120)
    assert process.returncode == EXIT_TERMINATED, (seen + rest)[-3000:]
    assert b"stopped by SIGTERM" in rest
    summary = json.loads(term.read_text())  # rank 0's
    assert summary["reason"] == "Terminated" and summary["exit_code"] == EXIT_TERMINATED
    assert not out.exists() and not (tmp_path / f"out.{VERSIONS}").exists()
