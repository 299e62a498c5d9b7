"""A hanging object store on the real control plane: the operator's S3 endpoint is a loopback socket that
accepts connections and never answers. The operator's S3 calls time out (settings), run off the event loop
and in their own threads, and turn into StorageUnavailable conditions, while the adapters whose storage is
healthy (file://) get their status as usual."""

# ruff: noqa: F811  (test parameters named like the imported fixtures, as pytest wants)
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.operator_support import apply, cond, get, model_folder, release, settings, status
from tests.operator.conftest import operator_factory, relora_crds, s3_secret  # noqa: F401  (fixtures)
from tests.operator.factories import adapter_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def hanging_endpoint() -> Iterator[str]:
    """http://127.0.0.1:PORT that accepts every connection and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # kept open, never read or answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_hanging_s3_endpoint_is_storage_unavailable_while_others_proceed(
    relora_crds: None,
    kubectl: Any,
    namespace: str,
    test_kubelet: Any,
    s3_secret: Any,
    operator_factory: Any,
    tmp_path: Path,
    hanging_endpoint: str,
) -> None:
    operator_factory(
        namespace,
        **settings(
            namespace,
            # The operator's own S3 access points at the hanging socket (the worker Jobs do not use S3 here).
            AWS_ENDPOINT_URL=hanging_endpoint,
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test-secret",
            AWS_DEFAULT_REGION="us-east-1",
            RELORA_S3_CONNECT_TIMEOUT="1",
            RELORA_S3_READ_TIMEOUT="1",
            RELORA_S3_RETRIES="1",
            RELORA_ARTIFACT_ROOT="s3://relora/artifacts",
        ),
    )
    # Family "hang": its models are on the hanging store. Family "ok": on healthy file:// storage.
    for version in ("v1", "v2"):
        release(kubectl, namespace, version, f"s3://models/hang/{version}/", family="hang")
        release(kubectl, namespace, version, model_folder(tmp_path, version, f"w-{version}"), family="ok")
    apply(kubectl, namespace, "TaskAdapter", "ok-a", adapter_spec(family="ok"))
    apply(kubectl, namespace, "TaskAdapter", "ok-b", adapter_spec(family="ok", adapterUri="s3://adapters/b/"))
    # Its worker reports no numbers: the operator must read result.json, on the hanging store.
    no_summary = {"type": "seq-cls", "trainData": "s3://data/nosummary.jsonl"}
    apply(kubectl, namespace, "TaskAdapter", "ok-c", adapter_spec(family="ok", task=no_summary))
    apply(kubectl, namespace, "TaskAdapter", "hang-a", adapter_spec(family="hang"))

    # Healthy storage: complete as usual (their result is in the termination message).
    for name in ("ok-a", "ok-b"):
        wait_for(lambda n=name: status(kubectl, namespace, n).get("readyRelease") == "v2", 90, f"{name} Ready on v2")
    # The result that must come from the hanging store: a visible condition, not a silent wait nor a fake Ready.
    st = wait_for(
        lambda: (s := status(kubectl, namespace, "ok-c")) and cond(s).get("reason") == "StorageUnavailable" and s,
        60,
        "ok-c StorageUnavailable",
    )
    assert cond(st)["status"] == "False" and "result.json" in cond(st)["message"] and st["readyRelease"] == "v1"
    # The releases on the hanging store say so; their digest is unknown, their adapters are not held back.
    hang = wait_for(
        lambda: (r := get(kubectl, namespace, "basemodelreleases")["hang-v2"].get("status") or {})
        and cond(r, "StorageAvailable").get("reason") == "StorageUnavailable"
        and r,
        60,
        "hang-v2 StorageUnavailable",
    )
    assert "s3://models/hang/v2/" in cond(hang, "StorageAvailable")["message"]
    assert hang["modelDigest"] == ""
    ok = get(kubectl, namespace, "basemodelreleases")["ok-v2"]["status"]
    assert cond(ok, "StorageAvailable")["status"] == "True" and ok["modelDigest"].startswith("sha256:")
    wait_for(lambda: status(kubectl, namespace, "hang-a").get("readyRelease") == "v2", 60, "hang-a Ready on v2")
    # Still unavailable a few resyncs later (never Ready on numbers it could not read).
    st = status(kubectl, namespace, "ok-c")
    assert cond(st)["reason"] == "StorageUnavailable" and st["phase"] == "Adapting"
