"""What every integration shares: the hand-off to make, its result, placeholders, owner references, labels."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relora_operator import naming

LABEL_SERVED_RELEASE = "relora.dev/served-release"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
CONFIGMAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

# Served condition: status "True" / "False" / "Unknown", with these reasons.
SERVED = "Served"  # the target reports the served artifact loaded (a ConfigMap: written)
PENDING = "HandOffPending"  # written; the target has not reported on it yet
NOTHING = "NothingServed"  # no status.served yet
NOT_INSTALLED = "TargetKindNotInstalled"
NOT_FOUND = "TargetNotFound"
CONFLICT = "TargetConflict"
FAILED = "TargetFailed"
BASE_NOT_SERVED = "BaseNotServed"
INVALID = "InvalidTarget"
FORBIDDEN = "Forbidden"
ERROR = "HandOffError"


@dataclass(frozen=True)
class HandOff:
    """What to serve, from the TaskAdapter's status.served, and who asks."""

    namespace: str
    adapter: str  # the TaskAdapter's name
    uid: str
    owner: Mapping[str, Any]  # the TaskAdapter's owner reference source (views.AdapterView.owner)
    family: str
    release: str  # status.served.release
    uri: str  # status.served.adapterUri
    model_uri: str | None = None  # the served release's spec.modelUri (None: that release is gone)


@dataclass(frozen=True)
class Result:
    """The Served condition's status, reason and message; ``change`` says what this call changed (an Event)."""

    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    change: str | None = None


class Invalid(ValueError):
    """A name or label value of spec.serving that is not valid once its placeholders are replaced."""


def expand(template: str, handoff: HandOff) -> str:
    return template.replace("{release}", handoff.release).replace("{family}", handoff.family)


def checked(template: str, handoff: HandOff, field: str, pattern: re.Pattern[str], limit: int, what: str) -> str:
    """``template`` expanded; Invalid naming ``field``, the template and the value when it is not ``what``."""
    value = expand(template, handoff)
    if len(value) > limit or not pattern.match(value):
        raise Invalid(f"spec.serving.{field} {template!r} gives {value!r}: expected {what}")
    return value


def dns_name(template: str, handoff: HandOff, field: str) -> str:
    """``template`` expanded, checked as an object name (DNS subdomain) naming ``field`` when it is not one."""
    what = "an object name (lowercase letters, digits, '-', '.', at most 253 characters)"
    return checked(template, handoff, field, DNS_SUBDOMAIN, 253, what)


def label_value(template: str, handoff: HandOff, field: str) -> str:
    what = "a label value (at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit)"
    return checked(template, handoff, field, LABEL_VALUE, 63, what)


def owner_reference(owner: Mapping[str, Any], controller: bool = True) -> dict[str, Any]:
    """An ownerReference to the TaskAdapter: the garbage collector deletes what it owns along with it."""
    meta = owner.get("metadata") or {}
    return {
        "apiVersion": owner.get("apiVersion"),
        "kind": owner.get("kind"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def labels(handoff: HandOff) -> dict[str, str]:
    """Labels of an object the operator creates for a TaskAdapter (find them with -l relora.dev/task-adapter=...)."""
    return {
        naming.LABEL_MANAGED: naming.MANAGED_BY,
        naming.LABEL_ADAPTER: naming.label_value(handoff.adapter),
        naming.LABEL_FAMILY: naming.label_value(handoff.family),
        LABEL_SERVED_RELEASE: naming.label_value(handoff.release),
    }


def served_text(handoff: HandOff) -> str:
    return f"{handoff.uri} (release {handoff.release})"
