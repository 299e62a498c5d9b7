"""The cluster's own worker pod settings (RELORA_WORKER_POD_TEMPLATE, set by the Helm chart's ``worker.*``
values), laid over every worker Job the builders make.

Platforms need things the operator cannot know: a ServiceAccount that carries a cloud identity (IRSA, EKS Pod
Identity, GKE Workload Identity), pull secrets, a priority class, affinity, labels that cost-allocation or
policy engines select on, a CA bundle or proxy in the environment, a shared cache volume. They are validated
once at start-up (``parse``: a bad value stops the operator with the field named), then ``apply`` adds them to
each Job. What the operator relies on is never overridden: its own labels (selection, Kueue), the /tmp volume,
the locked-down security contexts, and ``automountServiceAccountToken: false`` (a worker needs no API access;
cloud identity webhooks project their own tokens).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from relora_operator import naming

ENV = "RELORA_WORKER_POD_TEMPLATE"
FIELDS = (
    "serviceAccountName",
    "imagePullSecrets",
    "labels",
    "annotations",
    "affinity",
    "priorityClassName",
    "env",
    "envFrom",
    "volumes",
    "volumeMounts",
)
# Labels the operator selects and Kueue admits by: a template may not set them.
RESERVED_LABELS = (
    naming.LABEL_MANAGED,
    naming.LABEL_COMPONENT,
    naming.LABEL_FAMILY,
    naming.LABEL_RELEASE,
    naming.LABEL_FROM,
    naming.LABEL_ADAPTER,
    naming.LABEL_QUEUE,
    "app.kubernetes.io/name",
)
OWN_VOLUME = "tmp"
OWN_MOUNT = "/tmp"
# A multi-GPU pod's shared memory (jobs.py); a template that mounts its own at SHM_MOUNT keeps it.
SHM_VOLUME = "relora-shm"
SHM_MOUNT = "/dev/shm"
AFFINITY_KEYS = ("nodeAffinity", "podAffinity", "podAntiAffinity")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class TemplateError(ValueError):
    """A bad RELORA_WORKER_POD_TEMPLATE; the message names the field (e.g. ``volumes[1].name``)."""


def _fail(field: str, expected: str, got: Any) -> TemplateError:
    # The value itself is left out of env entries (it may be a token someone put in `value`).
    shown = "" if field.startswith("env[") else f", got {got!r}"
    return TemplateError(f"{ENV}.{field}: expected {expected}{shown}")


def _list_of_objects(raw: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _fail(key, "a list of objects", value)
    return [dict(v) for v in value]


def _string_map(raw: Mapping[str, Any], key: str, names: re.Pattern[str], values: re.Pattern[str] | None) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise _fail(key, "an object of strings", value)
    for name, item in value.items():
        if not isinstance(name, str) or len(name) > 316 or not names.match(name):
            raise _fail(f"{key}.{name}", "a valid key (prefix/name)", name)
        if not isinstance(item, str) or (values is not None and (len(item) > 63 or not values.match(item))):
            raise _fail(f"{key}.{name}", "a string" + (" label value (<= 63 chars)" if values else ""), item)
    return dict(value)


def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The validated template (a plain dict with only the non-empty fields); raises TemplateError naming the
    first field that is wrong and what was expected."""
    if not isinstance(raw, Mapping):
        raise TemplateError(f"{ENV}: expected a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise TemplateError(f"{ENV}: unknown field(s) {unknown}; expected some of {list(FIELDS)}")
    out: dict[str, Any] = _names(raw)
    # Checked in this order, so the first wrong field named is the same whatever else is wrong.
    fields: dict[str, Any] = {
        "imagePullSecrets": _image_pull_secrets(raw),
        "labels": _labels(raw),
        "annotations": _string_map(raw, "annotations", _LABEL_NAME, None),
        "affinity": _affinity(raw),
        "env": _env(raw),
        "envFrom": _env_from(raw),
        "volumes": _volumes(raw),
    }
    fields["volumeMounts"] = _mounts(raw, {v["name"] for v in fields["volumes"]})
    out.update({key: value for key, value in fields.items() if value})
    return out


def _names(raw: Mapping[str, Any]) -> dict[str, str]:
    """serviceAccountName and priorityClassName: DNS subdomain names, when set."""
    out = {}
    for key in ("serviceAccountName", "priorityClassName"):
        value = raw.get(key) or ""
        if not isinstance(value, str) or (value and (len(value) > 253 or not _DNS_SUBDOMAIN.match(value))):
            raise _fail(key, "a DNS subdomain name", value)
        if value:
            out[key] = value
    return out


def _image_pull_secrets(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """imagePullSecrets: {name} references only."""
    secrets = _list_of_objects(raw, "imagePullSecrets")
    for i, secret in enumerate(secrets):
        if set(secret) != {"name"} or not isinstance(secret["name"], str) or not _DNS_SUBDOMAIN.match(secret["name"]):
            raise _fail(f"imagePullSecrets[{i}]", "{name: <Secret name>}", secret)
    return secrets


def _labels(raw: Mapping[str, Any]) -> dict:
    """labels: valid keys and values, none of the labels the operator sets itself (it finds its Jobs by them)."""
    labels = _string_map(raw, "labels", _LABEL_NAME, _LABEL_VALUE)
    reserved = sorted(set(labels) & set(RESERVED_LABELS))
    if reserved:
        raise _fail(f"labels.{reserved[0]}", "a label the operator does not set itself", reserved[0])
    return labels


def _affinity(raw: Mapping[str, Any]) -> dict[str, Any]:
    """affinity: an Affinity object (its contents are the API server's to check)."""
    affinity = raw.get("affinity") or {}
    if not isinstance(affinity, dict) or set(affinity) - set(AFFINITY_KEYS):
        raise _fail("affinity", f"an Affinity object (keys {', '.join(AFFINITY_KEYS)})", affinity)
    return affinity


def _env(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """env: named variables, each with exactly one of value and valueFrom."""
    env = _list_of_objects(raw, "env")
    for i, var in enumerate(env):
        name = var.get("name")
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise _fail(f"env[{i}].name", "an environment variable name", name)
        if set(var) - {"name", "value", "valueFrom"} or ("value" in var) == ("valueFrom" in var):
            raise _fail(f"env[{i}] ({name})", "{name, value} or {name, valueFrom}", var)
    return env


def _env_from(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """envFrom: one named ConfigMap or Secret reference each (and an optional prefix)."""
    env_from = _list_of_objects(raw, "envFrom")
    for i, source in enumerate(env_from):
        refs = set(source) & {"configMapRef", "secretRef"}
        if len(refs) != 1 or set(source) - {"configMapRef", "secretRef", "prefix"}:
            raise _fail(f"envFrom[{i}]", "one of configMapRef or secretRef (and an optional prefix)", source)
        ref = source[refs.pop()]
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not ref["name"]:
            raise _fail(f"envFrom[{i}]", "a reference with a name", source)
    return env_from


def _volumes(raw: Mapping[str, Any]) -> list[dict[str, Any]]:
    """volumes: distinct DNS-label names, none the worker's own volume's, each with exactly one source."""
    volumes = _list_of_objects(raw, "volumes")
    names: set[str] = set()
    for i, volume in enumerate(volumes):
        name = volume.get("name")
        if not isinstance(name, str) or not _DNS_LABEL.match(name) or len(name) > 63:
            raise _fail(f"volumes[{i}].name", "a DNS label", name)
        if name in (OWN_VOLUME, SHM_VOLUME) or name in names:
            own = f"{OWN_VOLUME!r}, {SHM_VOLUME!r}"
            raise _fail(f"volumes[{i}].name", f"a name other than {own} and the other volumes'", name)
        if len(volume) != 2:
            raise _fail(f"volumes[{i}] ({name})", "a name and exactly one volume source", sorted(volume))
        names.add(name)
    return volumes


def _mounts(raw: Mapping[str, Any], names: set[str]) -> list[dict[str, Any]]:
    """volumeMounts: of the template's own ``names`` volumes, at absolute paths other than / and the worker's
    own mount (which would hide its files)."""
    mounts = _list_of_objects(raw, "volumeMounts")
    for i, mount in enumerate(mounts):
        path = mount.get("mountPath")
        if mount.get("name") not in names:
            raise _fail(f"volumeMounts[{i}].name", f"one of the template's volumes {sorted(names)}", mount.get("name"))
        if not isinstance(path, str) or not path.startswith("/") or path.rstrip("/") in ("", OWN_MOUNT):
            raise _fail(f"volumeMounts[{i}].mountPath", f"an absolute path other than / and {OWN_MOUNT}", path)
    return mounts


def apply(job: dict[str, Any], template: Mapping[str, Any]) -> dict[str, Any]:
    """``job`` with the (parsed) template laid over its pod template; returns the same dict."""
    if not template:
        return job
    t = copy.deepcopy(dict(template))
    pod = job["spec"]["template"]
    meta, spec = pod.setdefault("metadata", {}), pod["spec"]
    # The operator's labels win: they select the Job's pods and route it through Kueue.
    meta["labels"] = {**t.get("labels", {}), **meta.get("labels", {})}
    if t.get("annotations"):
        meta["annotations"] = {**t["annotations"], **meta.get("annotations", {})}
    for key in ("serviceAccountName", "priorityClassName", "affinity", "imagePullSecrets"):
        if key in t:
            spec[key] = t[key]
    spec["automountServiceAccountToken"] = False
    spec["volumes"] = [*spec.get("volumes", []), *t.get("volumes", [])]
    for container in spec["containers"]:
        # Template env replaces an operator variable of the same name (e.g. AWS_REGION, HF_HOME on a cache).
        extra = {var["name"] for var in t.get("env", [])}
        container["env"] = [v for v in container.get("env", []) if v["name"] not in extra] + t.get("env", [])
        if t.get("envFrom"):
            container["envFrom"] = [*container.get("envFrom", []), *t["envFrom"]]
        container["volumeMounts"] = [*container.get("volumeMounts", []), *t.get("volumeMounts", [])]
    return job
