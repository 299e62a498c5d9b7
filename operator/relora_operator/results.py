"""Reads a finished Job's full record (result.json): kept for callers of the old API; ``storage`` does the
reading, with the settings' timeouts and retries."""

from __future__ import annotations

from typing import Any

from relora_operator.settings import Settings
from relora_operator.storage import StorageUnavailable, result_uri
from relora_operator.storage import read_json as _read_json
from relora_operator.storage import read_published_result as _read_published_result

__all__ = ["StorageUnavailable", "read_json", "read_published_result", "result_uri"]


def read_json(uri: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """The JSON object at ``uri``, None when absent; raises StorageUnavailable when storage cannot answer."""
    return _read_json(uri, settings or Settings.from_env())


def read_published_result(output_uri: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """result.json of a published folder, following the worker's S3 pointer (``storage.read_published_result``)."""
    return _read_published_result(output_uri, settings or Settings.from_env())
