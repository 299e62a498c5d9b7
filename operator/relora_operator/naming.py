"""Deterministic names, labels and artifact URIs.

Every Job name is a pure function of the Job's inputs, so a retry, a second reconcile or a restarted operator
computes the same name and the API server's 409 on create is the only duplicate check needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from relora_contract.hashing import digest, targets_hash  # the one hash of the contract

MANAGED_BY = "relora-operator"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_FAMILY = "relora.dev/family"
LABEL_RELEASE = "relora.dev/release"
LABEL_FROM = "relora.dev/from-release"
LABEL_ADAPTER = "relora.dev/task-adapter"
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
COMPONENT_PROJECTION = "projection"
COMPONENT_ADAPTATION = "adaptation"
ANNOTATION_OUTPUT = "relora.dev/output-uri"
ANNOTATION_SPEC_HASH = "relora.dev/spec-hash"
ANNOTATION_PRIORITY = "relora.dev/priority"
ANNOTATION_BATCH_MEMBERS = "relora.dev/batch-members"

MAX_NAME = 63


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return slug[:limit].strip("-") or "x"


def projection_job_name(
    family: str, from_release: str, to_release: str, rank: int, target_modules: Iterable[str], identities: str = ""
) -> str:
    key: dict[str, Any] = {
        "family": family,
        "from": from_release,
        "to": to_release,
        "rank": rank,
        "targets": sorted(set(target_modules)),
    }
    if identities:  # the releases' identities (weights), not only their version strings
        key["identities"] = identities
    name = f"rp-{_slug(family, 20)}-{_slug(from_release, 8)}-{_slug(to_release, 8)}-{digest(key)}"
    return name[:MAX_NAME]


def adaptation_job_name(adapter: str, to_release: str, inputs: dict[str, Any]) -> str:
    name = f"ra-{_slug(adapter, 32)}-{_slug(to_release, 8)}-{digest(inputs)}"
    return name[:MAX_NAME]


BATCH_PREFIX = "rb-"


def batch_job_name(to_release: str, member_jobs: Iterable[str]) -> str:
    """A batch Job's name: a hash of its members' own Job names (each digests its adapter, spec, source and
    target), so the same batch planned again, by a restarted operator too, gets the same name."""
    name = f"{BATCH_PREFIX}{_slug(to_release, 16)}-{digest(sorted(member_jobs), 16)}"
    return name[:MAX_NAME]


def is_batch_job_name(name: str) -> bool:
    return name.startswith(BATCH_PREFIX)


def batch_member_key(namespace: str, adapter: str) -> str:
    """An adapter's key in a batch plan and its record."""
    return f"{namespace}/{adapter}"


def batch_record_uri(root: str, namespace: str, to_release: str, job_name: str) -> str:
    """Where a batch Job's worker writes its batch record: batches/<namespace>/<release>/<job>/record.json."""
    return join_uri(root, "batches", namespace, to_release, job_name) + "record.json"


def join_uri(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)]) + "/"


def projection_uri(
    root: str,
    family: str,
    from_release: str,
    to_release: str,
    rank: int,
    target_modules: Iterable[str],
    identities: str = "",
) -> str:
    # DESIGN §4: deltas/<family>/<from>__<to>/r<rank>-<targets-hash>/, plus a hash of the releases'
    # identities so that other weights under the same versions never reuse (or overwrite) a delta.
    leaf = f"r{rank}-{targets_hash(target_modules)}" + (f"-{digest(identities, 8)}" if identities else "")
    return join_uri(root, "deltas", family, f"{from_release}__{to_release}", leaf)


def adapter_output_uri(root: str, namespace: str, adapter: str, release: str, spec_hash: str) -> str:
    # DESIGN §4: adapters/<namespace>/<taskadapter>/<release>/; the extra <run-id>/ level
    # keeps a re-run after a spec change from overwriting the adapter being served until the new one is Ready.
    return join_uri(root, "adapters", namespace, adapter, release, spec_hash)


def label_value(text: str) -> str:
    """A valid label value (≤ 63 chars, alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:MAX_NAME]
    return value.strip("-_.")
