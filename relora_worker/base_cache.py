"""A base-model cache shared by every worker on a node (or on a shared volume): one download per base.

With ``RELORA_BASE_CACHE_DIR`` set (the chart's ``worker.baseCache``: a hostPath on the node, or a volume
claim), ``storage.fetch`` of a base model from S3 goes through :func:`fetch`:

* The entry's key is a digest of the model's S3 listing (each key relative to the model's prefix, its size
  and ETag): new weights under the same URI get a new entry, the same weights at two URIs share one.
* A missing entry is downloaded by exactly one process at a time: an exclusive ``flock`` per key (held by
  the kernel, so a killed process releases it), the download goes to ``.partial-<key>-...`` and is verified
  there (file by file against the relora manifest when the model has one), and only then renamed to
  ``<key>`` in one ``rename``. A reader sees either no entry or a complete one, never a partial copy;
  a process that waited for the lock finds the entry and downloads nothing. Partial folders left by a killed
  process are removed by the next download of that key.
* Entries are immutable (files read-only) and never removed by the worker (size the volume; clear old keys
  between releases).
* A cache that cannot be written (a read-only volume without the entry) falls back to a private download.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from relora_contract import environment

ENV = environment.BASE_CACHE_DIR
# storage.fetch's ``what`` of the inputs that are base models (the only large inputs shared across Jobs).
CACHED = ("base model", "old base model", "new base model")
ENTRY = "entry.json"
FORMAT = "relora-base-cache/1"
logger = logging.getLogger(__name__)


def _fault(stage: str) -> None:
    from relora_worker.storage import _fault as signal_at  # the tests' RELORA_FAULT_AT hook (storage imports us)

    signal_at(stage)


def cache_dir() -> Path | None:
    value = os.environ.get(ENV, "").strip()
    return Path(value) if value else None


def listing_key(prefix: str, objects: list[dict[str, Any]]) -> str:
    """The entry of a model: sha256 over its objects' (key below ``prefix``, size, ETag), sorted."""
    rows = sorted((o["Key"][len(prefix) :], int(o.get("Size", 0)), str(o.get("ETag", "")).strip('"')) for o in objects)
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()[:32]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another process fills this key
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _entry(root: Path, key: str) -> Path | None:
    """The cached model folder of ``key`` if its entry is complete, else None."""
    try:
        meta = json.loads((root / key / ENTRY).read_text())
    except (OSError, ValueError):
        return None
    folder = root / key / meta["path"]
    return folder if meta.get("format") == FORMAT and folder.is_dir() else None


def fetch(root: Path, key: str, uri: str, download: Callable[[Path], Path], fallback: Path) -> Path:
    """The local folder of the model ``uri`` with listing ``key``, from the cache or downloaded into it.

    ``download(target)`` downloads and verifies the model into the new folder ``target`` and returns the folder
    holding it (``target`` or a version folder below it); ``fallback`` is a private folder of the caller, used
    when the cache cannot be written.
    """
    found = _entry(root, key)
    if found is not None:
        logger.info("base cache hit: %s (%s)", uri, key)
        return found
    with contextlib.ExitStack() as stack:
        try:
            root.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_locked(root / f".{key}.lock"))
        except OSError as error:  # e.g. a read-only volume that lacks this base: download privately
            logger.warning("base cache %s not writable (%s): downloading %s privately", root, error, uri)
            return download(fallback / "folder")
        found = _entry(root, key)  # filled by the process we waited for
        if found is not None:
            logger.info("base cache hit after waiting: %s (%s)", uri, key)
            return found
        for stale in root.glob(f".partial-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        partial = root / f".partial-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        partial.mkdir()
        try:
            folder = download(partial / "data")
            for path in (partial / "data").rglob("*"):  # shared by every Job: nobody may change it in place
                if path.is_file():
                    path.chmod(0o444)
            meta = {"format": FORMAT, "uri": uri, "key": key, "path": str(folder.relative_to(partial))}
            (partial / ENTRY).write_text(json.dumps(meta))
            _fault("base-cache-downloaded")
            os.rename(partial, root / key)  # atomic: readers see the whole entry or none
            _fault("base-cache-entry")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        logger.info("base cache filled: %s (%s)", uri, key)
        found = _entry(root, key)
        assert found is not None, f"base cache entry {root / key} incomplete right after it was written"
        return found
