"""The operator's own storage reads (a Job's result.json, the digest of a release's model), S3 or file://.

Every S3 call has the connect/read timeouts and retries of the settings and runs in a thread pool of its own
(RELORA_S3_WORKERS), never on the event loop and never in the threads the Kubernetes calls use: a store that
hangs or fails costs a ``StorageUnavailable`` condition on the resources that need it, while every other
reconcile goes on. Reads tell "absent" (None / "") from "cannot tell now" (``StorageUnavailable``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from relora_operator.redaction import redact
from relora_operator.settings import Settings

MAX_JSON_BYTES = 16 * 1024 * 1024
MANIFEST = "manifest.json"
T = TypeVar("T")


class StorageUnavailable(Exception):
    """The store could not answer (timeout, connection refused, access denied, no credentials)."""

    def __init__(self, uri: str, cause: BaseException | str) -> None:
        text = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(redact(f"{uri}: {text}"))
        self.uri = uri


_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_clients: dict[tuple[float, float, int], Any] = {}


def _executor(settings: Settings) -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max(1, settings.s3_workers), thread_name_prefix="relora-s3")
        return _pool


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client with the settings' timeouts and retries (credentials, region and AWS_ENDPOINT_URL from
    the standard environment variables)."""
    key = (settings.s3_connect_timeout, settings.s3_read_timeout, settings.s3_retries)
    with _lock:
        if key not in _clients:
            import boto3  # lazily: file:// deployments never need it
            from botocore.config import Config

            config = Config(
                connect_timeout=settings.s3_connect_timeout,
                read_timeout=settings.s3_read_timeout,
                retries={"total_max_attempts": settings.s3_retries + 1, "mode": "standard"},
            )
            _clients[key] = boto3.session.Session().client("s3", config=config)
        return _clients[key]


def call_timeout(settings: Settings) -> float:
    """The longest one storage call may take, all attempts included (a guard above botocore's own timeouts)."""
    attempts = settings.s3_retries + 1
    return attempts * (settings.s3_connect_timeout + settings.s3_read_timeout) + attempts * 2.0 + 1.0


async def call(fn: Callable[..., T], *args: Any, settings: Settings) -> T:
    """Runs a blocking storage read in the storage pool; a call past ``call_timeout`` is StorageUnavailable."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_executor(settings), lambda: fn(*args, settings))
    try:
        return await asyncio.wait_for(future, call_timeout(settings))
    except TimeoutError as exc:
        raise StorageUnavailable(str(args[0]) if args else "storage", "no answer in time") from exc


def _is_absent(exc: BaseException) -> bool:
    response = getattr(exc, "response", None) or {}  # None for connection errors and timeouts
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket")


def read_bytes(uri: str, settings: Settings) -> bytes | None:
    """The object at ``uri`` (s3://bucket/key, file:///path or a path), None when it does not exist."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        try:
            body = s3_client(settings).get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
            return bytes(body.read(MAX_JSON_BYTES))
        except Exception as exc:  # botocore's errors: absent, or the store cannot answer
            if _is_absent(exc):
                return None
            raise StorageUnavailable(uri, exc) from exc
    path = Path(parsed.path if parsed.scheme == "file" else uri)
    try:
        with path.open("rb") as fh:
            return fh.read(MAX_JSON_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise StorageUnavailable(uri, exc) from exc


def read_json(uri: str, settings: Settings) -> dict[str, Any] | None:
    """The JSON object at ``uri``; None when absent or not a JSON object."""
    data = read_bytes(uri, settings)
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def model_digest(uri: str, settings: Settings) -> str:
    """The digest of the model folder at ``uri``: sha256 of its manifest.json when it has one (the worker's
    published artifacts do), else sha256 of its file listing (relative names, sizes and S3 ETags or file
    modification times); "" when the folder is empty or absent."""
    manifest = read_bytes(uri.rstrip("/") + "/" + MANIFEST, settings)
    if manifest is not None:
        return "sha256:" + hashlib.sha256(manifest).hexdigest()
    listing = _listing(uri, settings)
    if not listing:
        return ""
    return "listing:" + hashlib.sha256(json.dumps(sorted(listing)).encode()).hexdigest()


def _listing(uri: str, settings: Settings) -> list[tuple[str, int, str]]:
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        prefix = parsed.path.lstrip("/").rstrip("/") + "/"
        entries: list[tuple[str, int, str]] = []
        try:
            pages = s3_client(settings).get_paginator("list_objects_v2").paginate(Bucket=parsed.netloc, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    entries.append((obj["Key"][len(prefix) :], int(obj["Size"]), str(obj.get("ETag", ""))))
        except Exception as exc:
            if _is_absent(exc):
                return []
            raise StorageUnavailable(uri, exc) from exc
        return entries
    root = Path(parsed.path if parsed.scheme == "file" else uri)
    try:
        return [
            (str(p.relative_to(root)), p.stat().st_size, str(p.stat().st_mtime_ns))
            for p in sorted(root.rglob("*"))
            if p.is_file()
        ]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageUnavailable(uri, exc) from exc


POINTER_FORMAT = "relora-pointer/v1"  # the worker's publishing pointer (README, "Publishing layout")


def result_uri(output_uri: str) -> str:
    return output_uri.rstrip("/") + "/result.json"


def read_published_result(output_uri: str, settings: Settings) -> dict[str, Any] | None:
    """result.json of a folder the worker published: beside the files (a local output is a link to the current
    version) or, on S3, in the version that the pointer ``<output>/manifest.json`` names. None when absent."""
    record = read_json(result_uri(output_uri), settings)
    if record is not None:
        return record
    pointer = read_json(output_uri.rstrip("/") + "/manifest.json", settings) or {}
    current = pointer.get("current")
    if pointer.get("format") != POINTER_FORMAT or not isinstance(current, str):
        return None
    if current.startswith("/") or ".." in current.split("/"):  # a pointer never leaves its own folder
        return None
    return read_json(result_uri(f"{output_uri.rstrip('/')}/{current.strip('/')}"), settings)


async def read_result(output_uri: str, settings: Settings) -> tuple[dict[str, Any] | None, str | None]:
    """A finished Job's result.json: (record, None), (None, None) when absent, (None, why) when storage
    could not answer (the adapter then shows StorageUnavailable and the next pass tries again)."""
    try:
        return await call(read_published_result, output_uri, settings=settings), None
    except StorageUnavailable as exc:
        return None, str(exc)
    except Exception as exc:  # anything else the client library raises: the store did not answer usably
        return None, str(StorageUnavailable(result_uri(output_uri), exc))
