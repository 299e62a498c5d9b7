"""The one redaction function for every string the operator writes: status, conditions, history, Events,
logs, Job arguments and the worker messages it copies from termination messages.

The CRDs already refuse URIs that carry credentials (``models.common.CREDENTIAL_RULE``); this is defence in
depth for what slips past them: objects stored before the rule existed, a worker error quoting a presigned
URL, an exception text of a client library. It removes the secret part and keeps the rest readable.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
# scheme://user[:password]@host -> scheme://***@host
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@?#]+)@")
# Query or matrix parameters that are credentials (presigned URLs, key parameters).
CREDENTIAL_PARAMS = (
    r"x-amz-[a-z-]+",
    r"awsaccesskeyid",
    r"signature",
    r"sig",
    r"access_?key(?:_?id)?",
    r"secret(?:_?access)?_?key",
    r"(?:security_?|session_?)?token",
    r"password",
    r"passwd",
    r"credential",
)
# Any prefix counts (aws_secret_access_key=, X-Amz-Security-Token=): better one harmless value too many masked.
_PARAMS = re.compile(
    r"(?i)(?P<name>[A-Za-z0-9_.-]*(?:" + "|".join(CREDENTIAL_PARAMS) + r"))=(?P<value>[^&\s;#\"']+)"
)
# Key material that may appear on its own (e.g. in an exception text): AWS access key ids.
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")


def redact(text: str) -> str:
    """``text`` with userinfo, credential parameters and access key ids replaced by ``***``."""
    # Nothing to mask without "@", "=" or a key id's prefix: most strings (names, phases, plain URIs) take this
    # path. redact_obj over every status was 87 % of a status pass's CPU before it (bench/operator, issue 20).
    if not text or ("@" not in text and "=" not in text and "AKIA" not in text and "ASIA" not in text):
        return text
    return _redact_marked(text)


@functools.lru_cache(maxsize=4096)
def _redact_marked(text: str) -> str:
    # Cached: the same messages (a worker error, a Job's URIs) are redacted again on every pass.
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _PARAMS.sub(lambda m: f"{m['name']}={MASK}", text)
    return _ACCESS_KEY_ID.sub(MASK, text)


def redact_obj(value: Any) -> Any:
    """A copy of a JSON-like value with every string redacted (status dicts, Job manifests)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_obj(v) for v in value]
    return value


def has_credentials(uri: str) -> bool:
    """Whether ``uri`` carries anything ``redact`` would remove (the CRD's credential rule, in Python)."""
    return redact(uri) != uri or "?" in uri
