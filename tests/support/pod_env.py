"""A container's environment as the kubelet computes it: envFrom, env, valueFrom, $(VAR) expansion."""

from __future__ import annotations

import base64
import re
from typing import Any

from tests.support.rest import Obj, Rest


class ConfigError(RuntimeError):
    """The container cannot start yet (a referenced Secret/ConfigMap/key is missing): the kubelet's
    CreateContainerConfigError. The test kubelet retries, as the real one does."""


class PodSpecError(RuntimeError):
    """The test kubelet can never run this pod (e.g. a container without `command`): the pod fails."""


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, unknown ones kept, `$$` escapes `$`."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(repl, text)


class SourceCache:
    """Secrets and ConfigMaps of one namespace, read once per container start."""

    def __init__(self, rest: Rest, namespace: str) -> None:
        self._rest = rest
        self._ns = namespace
        self._cache: dict[tuple[str, str], Obj | None] = {}

    def get(self, kind: str, name: str) -> Obj | None:
        key = (kind, name)
        if key not in self._cache:
            self._cache[key] = self._rest.get_or_none(f"/api/v1/namespaces/{self._ns}/{kind}/{name}")
        return self._cache[key]

    def data(self, kind: str, name: str, *, optional: bool) -> dict[str, str] | None:
        """The decoded data of secrets/<name> or configmaps/<name>; None when optional and missing."""
        obj = self.get(kind, name)
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind[:-1]} "{name}" not found')
        if kind == "secrets":
            return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})


def field_ref(pod: Obj, path: str) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP") or "127.0.0.1",
        "status.hostIP": status.get("hostIP") or "127.0.0.1",
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f"fieldRef {path!r} is not supported by the test kubelet")


def _value_from(src: dict[str, Any], pod: Obj, sources: SourceCache) -> str | None:
    for field, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
        if field in src:
            ref = src[field]
            optional = bool(ref.get("optional", False))
            data = sources.data(kind, ref["name"], optional=optional)
            if data is None or ref["key"] not in data:
                if optional:
                    return None
                raise ConfigError(f"couldn't find key {ref['key']} in {kind[:-1]} {ref['name']}")
            return data[ref["key"]]
    if "fieldRef" in src:
        return field_ref(pod, src["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in src:
        return "0"  # no cgroups here; a number keeps callers that parse it working
    raise ConfigError(f"unsupported valueFrom {sorted(src)}")


def container_env(pod: Obj, container: Obj, sources: SourceCache) -> dict[str, str]:
    """envFrom first, then env in order (later wins), each value $(VAR)-expanded against the ones before."""
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for field, kind in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
            if field in src:
                ref = src[field]
                data = sources.data(kind, ref["name"], optional=bool(ref.get("optional", False))) or {}
                env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        if "valueFrom" in var:
            value = _value_from(var["valueFrom"], pod, sources)
            if value is None:
                continue
        else:
            value = expand(var.get("value", ""), env)
        env[var["name"]] = value
    return env
