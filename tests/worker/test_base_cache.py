"""The node-wide base-model cache (relora_worker/base_cache.py, RELORA_BASE_CACHE_DIR): concurrent fetches of one
base download each file once (counted in the S3 server's own request log), no reader sees a partial copy, a
failed or killed download leaves no entry, new weights get a new entry, an unwritable cache falls back."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relora_worker import base_cache, storage
from relora_worker.cli import main
from relora_worker.synthetic import Scenario
from tests.support.s3server import S3Server, start_s3_server
from tests.worker.conftest import readapt_args

FILES = {"config.json": b'{"model_type": "llama"}', "model.safetensors": bytes(range(256)) * 4096}  # 1 MiB


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A server of its own: its request log counts only this module's downloads."""
    server, proc = start_s3_server(tmp_path_factory.mktemp("s3-cache"), bucket="cache-test")
    try:
        yield server
    finally:
        proc.stop()


@pytest.fixture
def env(s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    cache = tmp_path / "cache"
    monkeypatch.setenv(base_cache.ENV, str(cache))
    return cache


def _upload(s3: S3Server, prefix: str, files: dict[str, bytes] = FILES) -> str:
    for name, body in files.items():
        s3.client().put_object(Bucket=s3.bucket, Key=f"{prefix}/{name}", Body=body)
    return s3.uri(f"{prefix}/")


def _gets(s3: S3Server, prefix: str) -> dict[str, int]:
    """GET requests per file of ``prefix`` in the server's log (downloads; listings and HEADs not counted)."""
    assert s3.log_path is not None
    time.sleep(0.2)  # the server writes its log line after the response
    found = re.findall(rf'"GET /{s3.bucket}/{re.escape(prefix)}/([^ ?]+)[^"]*" 20[06]', s3.log_path.read_text())
    return {name: found.count(name) for name in FILES}


def _read(folder: Path) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in FILES}


def test_concurrent_fetches_download_once(s3: S3Server, env: Path) -> None:
    uri = _upload(s3, "models/shared")
    start = threading.Barrier(6)
    seen: list[tuple[Path, dict[str, str]]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            with storage.fetch(uri, "base model") as folder:
                seen.append((folder, _read(folder)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    want = {n: hashlib.sha256(b).hexdigest() for n, b in FILES.items()}
    assert len(seen) == 6 and all(files == want for _, files in seen)
    assert len({folder for folder, _ in seen}) == 1  # one entry, shared
    assert all(not (seen[0][0] / n).stat().st_mode & 0o222 for n in FILES)  # read-only: no Job changes it
    assert _gets(s3, "models/shared") == {name: 1 for name in FILES}
    # The entry stays for the next Job on the node: no download at all.
    with storage.fetch(uri, "base model") as folder:
        assert _read(folder) == want
    assert _gets(s3, "models/shared") == {name: 1 for name in FILES}
    assert not list(env.glob(".partial-*"))
    # Other inputs are never cached (adapters, data): their own download every time.
    for _ in range(2):
        with storage.fetch(uri, "adapter") as folder:
            assert _read(folder) == want
    assert _gets(s3, "models/shared") == {name: 3 for name in FILES}


def test_without_the_cache_every_fetch_downloads(s3: S3Server, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(base_cache.ENV)
    uri = _upload(s3, "models/private")
    for _ in range(2):
        with storage.fetch(uri, "base model") as folder:
            assert _read(folder)
    assert _gets(s3, "models/private") == {name: 2 for name in FILES}
    assert not env.exists()


def test_new_weights_under_the_same_uri_get_a_new_entry(s3: S3Server, env: Path) -> None:
    uri = _upload(s3, "models/changing")
    with storage.fetch(uri, "base model") as first:
        old = _read(first)
    _upload(s3, "models/changing", {**FILES, "model.safetensors": b"\x01" * 1024})
    with storage.fetch(uri, "base model") as second:
        assert _read(second)["model.safetensors"] != old["model.safetensors"]
    assert first != second and _read(first) == old  # the old entry is untouched (another Job may read it)


def test_a_failed_download_leaves_no_entry(tmp_path: Path) -> None:
    root = tmp_path / "cache"

    def broken(target: Path) -> Path:
        target.mkdir(parents=True)
        (target / "model.safetensors").write_bytes(b"half")
        raise storage.StorageError("connection reset")

    with pytest.raises(storage.StorageError):
        base_cache.fetch(root, "k1", "s3://b/m/", broken, tmp_path)
    assert not (root / "k1").exists() and not list(root.glob(".partial-*"))
    # A partial folder of a killed process (no cleanup ran) is removed by the next download of that key.
    (root / ".partial-k1-999-dead").mkdir()
    (root / ".partial-k1-999-dead" / "junk").write_text("x")

    def good(target: Path) -> Path:
        target.mkdir(parents=True)
        (target / "model.safetensors").write_bytes(b"whole")
        return target

    folder = base_cache.fetch(root, "k1", "s3://b/m/", good, tmp_path)
    assert (folder / "model.safetensors").read_bytes() == b"whole"
    assert not list(root.glob(".partial-*"))


def test_a_killed_lock_holder_does_not_block(tmp_path: Path) -> None:
    """The lock is the kernel's: a worker killed while downloading releases it with its process."""
    root = tmp_path / "cache"
    root.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(600)", str(root / ".k2.lock")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        holder.kill()
        holder.wait(10)

        def good(target: Path) -> Path:
            target.mkdir(parents=True)
            (target / "f").write_text("ok")
            return target

        assert (base_cache.fetch(root, "k2", "s3://b/m/", good, tmp_path) / "f").read_text() == "ok"
    finally:
        holder.kill()


def test_an_unwritable_cache_falls_back_to_a_private_download(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the cache folder should be")

    def good(target: Path) -> Path:
        target.mkdir(parents=True)
        (target / "f").write_text("private")
        return target

    private = tmp_path / "private"
    private.mkdir()
    folder = base_cache.fetch(tmp_path / "not-a-dir" / "cache", "k3", "s3://b/m/", good, private)
    assert folder == private / "folder" and (folder / "f").read_text() == "private"


def test_readapt_trains_from_the_cached_base(
    scenario_cls: Scenario, s3_server: S3Server, s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The real `relora readapt` reads both base models from S3 through the cache (read-only files) and
    publishes; the bases are then cached entries a second Job would get without a download."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(base_cache.ENV, str(cache))
    client = s3_server.client()
    uris = {}
    for flag, folder, prefix in (
        ("--base-model", scenario_cls.base_v2, "cache-e2e/v2"),
        ("--old-base-model", scenario_cls.base_v1, "cache-e2e/v1"),
        ("--adapter", scenario_cls.adapter_v1, "cache-e2e/adapter"),
    ):
        for path in Path(folder).rglob("*"):
            if path.is_file():
                client.upload_file(str(path), s3_server.bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
        uris[flag] = s3_server.uri(prefix + "/")
    args = readapt_args(scenario_cls, s3_server.uri("cache-e2e/out"))
    for flag, uri in uris.items():
        args[args.index(flag) + 1] = uri
    assert main(args) in (0, 3)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["adapter_uri"].startswith(s3_server.uri("cache-e2e/out/versions/"))
    entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 2  # the two bases; the adapter is not a base
    for prefix in ("cache-e2e/v2", "cache-e2e/v1"):
        with storage.fetch(s3_server.uri(prefix + "/"), "base model") as folder:
            assert folder.parent in entries and (folder / "config.json").exists()
    assert s3_server.log_path is not None
    time.sleep(0.2)
    log = s3_server.log_path.read_text()
    assert len(re.findall(r'"GET /[^/ ]+/cache-e2e/v2/config\.json[^"]*" 200', log)) == 1
