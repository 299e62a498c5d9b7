"""Reads a finished Job's full record (result.json) from S3 or file:// storage."""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger(__name__)
MAX_RESULT_BYTES = 16 * 1024 * 1024


@cache
def _s3() -> Any:
    import boto3  # imported lazily: file:// deployments and unit tests never need it

    # Credentials, region and AWS_ENDPOINT_URL come from the standard environment variables.
    return boto3.client("s3")


def read_json(uri: str) -> dict[str, Any] | None:
    """The JSON object at ``uri`` (s3://bucket/key, file:///path or a path), or None if absent/unreadable."""
    try:
        parsed = urlparse(uri)
        if parsed.scheme == "s3":
            body = _s3().get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["Body"]
            data = body.read(MAX_RESULT_BYTES)
        else:
            data = Path(parsed.path if parsed.scheme == "file" else uri).read_bytes()[:MAX_RESULT_BYTES]
        value = json.loads(data)
        return value if isinstance(value, dict) else None
    except Exception as exc:  # storage errors must not break the reconcile; the summary usually suffices
        logger.warning("cannot read %s: %s", uri, exc)
        return None


def result_uri(output_uri: str) -> str:
    return output_uri.rstrip("/") + "/result.json"
