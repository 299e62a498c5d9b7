"""The node-wide base-model cache under `kill -9`: a worker killed while it fills an entry (after the download,
before the entry appears; and right after) leaves no partial copy anyone would read, every byte of the other
entries unchanged, and the next worker completes the entry with no orphan left. The real fetching code
(`relora_worker.storage.fetch` -> `base_cache.fetch`) runs in a subprocess against moto's S3 server; the kill
is the storage module's RELORA_FAULT_AT hook."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.s3server import S3Server, start_s3_server

REPO = Path(__file__).resolve().parents[2]
FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": bytes(range(256)) * 2048}
FETCH = """
import hashlib, sys
from relora_worker import storage
with storage.fetch(sys.argv[1], "base model") as folder:
    print(sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in folder.iterdir()))
    print("AT", folder)
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server, proc = start_s3_server(tmp_path_factory.mktemp("s3-cache-faults"), bucket="cache-faults")
    try:
        yield server
    finally:
        proc.stop()


def _upload(s3: S3Server, prefix: str, files: dict[str, bytes] = FILES) -> str:
    for name, body in files.items():
        s3.client().put_object(Bucket=s3.bucket, Key=f"{prefix}/{name}", Body=body)
    return s3.uri(f"{prefix}/")


def _fetch(s3: S3Server, cache: Path, uri: str, fault: str = "") -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **s3.env,
           "RELORA_BASE_CACHE_DIR": str(cache), "RELORA_FAULT_AT": fault}
    return subprocess.run([sys.executable, "-c", FETCH, uri], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def _snapshot(cache: Path) -> dict[str, str]:
    """sha256 of every file of every complete entry (what a reader could be given)."""
    return {str(p.relative_to(cache)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(cache.rglob("*")) if p.is_file() and not p.relative_to(cache).parts[0].startswith(".")}


def _orphans(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob(".partial-*"))


def _gets(s3: S3Server, prefix: str) -> int:
    assert s3.log_path is not None
    time.sleep(0.2)
    pattern = rf'"GET /{s3.bucket}/{re.escape(prefix)}/model\.safetensors[^"]*" 200'
    return len(re.findall(pattern, s3.log_path.read_text()))


WANT = sorted((n, hashlib.sha256(b).hexdigest()) for n, b in FILES.items())


@pytest.mark.parametrize(("stage", "downloads"), [("base-cache-downloaded", 2), ("base-cache-entry", 1)])
def test_kill_while_filling_the_cache(s3: S3Server, tmp_path: Path, stage: str, downloads: int) -> None:
    cache = tmp_path / "cache"
    other = _upload(s3, f"{stage}/other", {**FILES, "model.safetensors": b"other weights"})
    assert _fetch(s3, cache, other).returncode == 0  # an entry that must survive untouched
    before = _snapshot(cache)
    assert before
    prefix = f"{stage}/base"
    uri = _upload(s3, prefix)

    killed = _fetch(s3, cache, uri, fault=stage)
    assert killed.returncode == -9, killed.stderr[-2000:]
    complete = _snapshot(cache)
    new = {k: v for k, v in complete.items() if k not in before}
    assert {k: v for k, v in complete.items() if k in before} == before  # every earlier byte kept
    if stage == "base-cache-downloaded":
        assert new == {}, new  # killed before the rename: no entry a reader could see
        assert len(_orphans(cache)) == 1  # its partial folder, hidden, until the next fill of that key
    else:
        assert len(new) == len(FILES) + 1 and not _orphans(cache)  # the files + entry.json, whole

    again = _fetch(s3, cache, uri)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.splitlines()[0] == str(WANT)
    assert _orphans(cache) == []  # orphans left: 0
    assert {k: v for k, v in _snapshot(cache).items() if k in before} == before
    assert _gets(s3, prefix) == downloads  # the killed fill's download, plus one only when it left no entry
