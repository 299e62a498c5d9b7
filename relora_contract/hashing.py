"""The one short stable hash of the contract: Job names, storage paths and projection metadata use it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any


def digest(value: Any, length: int = 10) -> str:
    """Stable short hash (hex) of any JSON-serialisable value (key order does not matter)."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def targets_hash(target_modules: Iterable[str]) -> str:
    """The hash of a set of target modules (order and repeats do not matter): 8 hex characters.

    The operator names projection folders ``r<rank>-<targets_hash>`` and the worker records the same value in
    ``projection.json``, so a folder and its metadata can be matched.
    """
    return digest(sorted(set(target_modules)), 8)
