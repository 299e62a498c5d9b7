"""A hanging object store on the real control plane: the operator's S3 endpoint is a loopback socket that
accepts connections and never answers. The operator's S3 calls time out (settings), run off the event loop
and in their own threads, and turn into StorageUnavailable conditions, while the adapters whose storage is
healthy (file://) get their status as usual. When the store answers again, the operator's next reads (the
result it could not read, the model digest it re-reads) recover without a restart."""

# ruff: noqa: F811  (test parameters named like the imported fixtures, as pytest wants)
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.operator_support import apply, cond, get, jobs, model_folder, release, settings, status
from tests.operator.conftest import operator_factory, relora_crds, s3_secret  # noqa: F401  (fixtures)
from tests.operator.factories import adapter_spec
from tests.support.hanging import HangingServer
from tests.support.s3server import S3Server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def hanging_endpoint() -> Iterator[HangingServer]:
    """http://127.0.0.1:PORT that accepts every connection and never sends a byte (until it recovers)."""
    server = HangingServer()
    try:
        yield server
    finally:
        server.close()


def _put_result(s3_server: S3Server, output_uri: str, record: dict[str, Any]) -> None:
    """result.json of a run published at ``output_uri`` (s3://bucket/key/), on the S3 server."""
    bucket, _, key = output_uri.removeprefix("s3://").partition("/")
    client = s3_server.client()
    if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key=key.rstrip("/") + "/result.json", Body=json.dumps(record).encode())


def test_hanging_s3_endpoint_is_storage_unavailable_while_others_proceed(
    relora_crds: None,
    kubectl: Any,
    namespace: str,
    test_kubelet: Any,
    s3_secret: Any,
    operator_factory: Any,
    tmp_path: Path,
    hanging_endpoint: HangingServer,
    s3_server: S3Server,
) -> None:
    operator_factory(
        namespace,
        **settings(
            namespace,
            # The operator's own S3 access points at the hanging socket (the worker Jobs do not use S3 here).
            AWS_ENDPOINT_URL=hanging_endpoint.url,
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
    # Still unavailable (never Ready on numbers it could not read).
    st = status(kubectl, namespace, "ok-c")
    assert cond(st)["reason"] == "StorageUnavailable" and st["phase"] == "Adapting"

    # The store answers again, with the result that only it has: the operator's next passes read it (they
    # retry the read, not a cached failure) and the release's digest is read again, without a restart.
    job = jobs(kubectl, namespace)[st["job"]]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    output = next(a.split("=", 1)[1] for a in args if a.startswith("--output="))
    record = {
        "format": "relora-result/v1",
        "status": "ready",
        "strategy": "relora",
        "metric": "accuracy",
        "threshold": 0.8,
        "quality": 0.9731,
        "adapter_uri": output,
        "result_uri": f"{output}result.json",
    }
    _put_result(s3_server, output, record)
    hanging_endpoint.recover(s3_server.endpoint_url)
    st = wait_for(
        lambda: (s := status(kubectl, namespace, "ok-c")).get("readyRelease") == "v2" and s, 90, "ok-c Ready on v2"
    )
    assert st["quality"] == 0.9731 and cond(st)["reason"] == "Readapted"  # the number only storage had

    def hang_v2_storage() -> dict[str, Any]:
        return cond(get(kubectl, namespace, "basemodelreleases")["hang-v2"]["status"], "StorageAvailable")

    wait_for(lambda: hang_v2_storage().get("status") == "True", 60, "hang-v2 StorageAvailable again")
