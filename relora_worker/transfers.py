"""S3 file transfers through boto3's TransferManager: parallel parts, progress in the pod's log, byte counts.

Settings (environment, read at each transfer):

* ``RELORA_S3_MULTIPART_THRESHOLD_MB`` (default 64): files from this size go in parts, several at a time;
* ``RELORA_S3_PART_SIZE_MB`` (default 16; S3 needs at least 5): the size of one part;
* ``RELORA_S3_MAX_CONCURRENCY`` (default 8): parts in flight at once;
* ``RELORA_S3_PROGRESS_EVERY_S`` (default 30): at most this long between two progress lines of one transfer.

A transfer of a file of at least the multipart threshold logs ``<verb> <uri>: <percent> (<done> of <size>,
<rate>)`` every 10 % or every ``RELORA_S3_PROGRESS_EVERY_S`` seconds, whichever comes first, and once when
done. The lines go to the ``relora_worker.transfers`` logger at INFO, which the CLI keeps at INFO without
``--verbose`` so that ``kubectl logs`` of a worker pod shows a 16 GB base coming in.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any

from relora_worker.errors import BadInputError

logger = logging.getLogger(__name__)
MIB = 1024 * 1024
STEP_PERCENT = 10

_lock = threading.Lock()
_downloaded = 0


def downloaded_bytes() -> int:
    """Bytes this process has downloaded from S3 so far (the batch record's base download counter)."""
    with _lock:
        return _downloaded


def _count(amount: int) -> None:
    global _downloaded
    with _lock:
        _downloaded += amount


def _env_number(name: str, default: float, minimum: float) -> float:
    text = os.environ.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum:
        raise BadInputError(f"environment {name}={text!r}: expected a number of at least {minimum:g}")
    return value


def settings() -> dict[str, float]:
    return {
        "multipart_threshold": _env_number("RELORA_S3_MULTIPART_THRESHOLD_MB", 64, 5) * MIB,
        "part_size": _env_number("RELORA_S3_PART_SIZE_MB", 16, 5) * MIB,
        "max_concurrency": _env_number("RELORA_S3_MAX_CONCURRENCY", 8, 1),
        "progress_every_s": _env_number("RELORA_S3_PROGRESS_EVERY_S", 30, 0.001),
    }


def transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    values = settings()
    return TransferConfig(
        multipart_threshold=int(values["multipart_threshold"]),
        multipart_chunksize=int(values["part_size"]),
        max_concurrency=int(values["max_concurrency"]),
        use_threads=True,
    )


def _size(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


class Progress:
    """TransferManager's byte callback (called from its worker threads): logs at a bounded rate."""

    def __init__(self, verb: str, uri: str, size: int | None, every_s: float, counted: bool) -> None:
        self.verb, self.uri, self.size, self.every_s, self.counted = verb, uri, size, every_s, counted
        self.done = 0
        self.started = self.last_time = time.monotonic()
        self.last_step = 0
        self.logged = size is not None and size >= settings()["multipart_threshold"]
        self._lock = threading.Lock()

    def __call__(self, amount: int) -> None:
        if self.counted:
            _count(amount)
        with self._lock:
            self.done += amount
            if not self.logged:
                return
            now = time.monotonic()
            step = int(self.done * 100 / self.size) // STEP_PERCENT if self.size else 0
            if step > self.last_step or now - self.last_time >= self.every_s:
                self.last_step, self.last_time = step, now
                self._log(now)

    def _log(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-6)
        percent = f"{100 * self.done / self.size:.0f} %" if self.size else "?"
        logger.info(
            "%s %s: %s (%s of %s, %s/s)",
            self.verb,
            self.uri,
            percent,
            _size(self.done),
            _size(self.size or 0),
            _size(rate),
        )


def download(client: Any, bucket: str, key: str, target: str, size: int | None = None) -> None:
    """``download_file`` in parallel parts, counted, with progress lines for a large object (its size from
    the listing or manifest when the caller has it, else from one HEAD request)."""
    if size is None:
        size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
    progress = Progress("download", f"s3://{bucket}/{key}", size, settings()["progress_every_s"], counted=True)
    client.download_file(bucket, key, target, Config=transfer_config(), Callback=progress)


def upload(client: Any, path: str, bucket: str, key: str) -> None:
    """``upload_file`` in parallel parts, with progress lines for a large file."""
    size = os.path.getsize(path)
    progress = Progress("upload", f"s3://{bucket}/{key}", size, settings()["progress_every_s"], counted=False)
    client.upload_file(path, bucket, key, Config=transfer_config(), Callback=progress)
