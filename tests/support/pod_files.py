"""A pod's volumes as host folders, and the rewriting of container paths to those folders.

Pods run as plain local processes, so nothing can be mounted at a container path like /work. Instead each
volume becomes a folder under the pod's directory, and every command/arg/env value that names a path under
a mountPath (or the termination-message path) is rewritten to the host folder (`PathMap.rewrite`). The
mapping is also given to the process as JSON in $TEST_KUBELET_PATH_MAP. See docs/testing.md.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

from tests.support.pod_env import ConfigError, SourceCache, field_ref
from tests.support.rest import Obj, Rest

TOKEN_EXPIRY_S = 3607  # what the real kubelet asks for a projected token


def image_roots() -> tuple[str, ...]:
    """Host folders that stand for the container image's own files: the checkout and the Python install.

    A real pod runs an image whose files (the worker, its interpreter) are not shadowed by the pod's
    volumes; here the "image" is this host's checkout and virtual environment. A mount at /tmp must not
    rewrite /tmp/ci/checkout/tests/operator/fake_worker.py when the checkout itself lives under /tmp.
    """
    roots = {Path(__file__).resolve().parents[2], Path(sys.prefix), Path(sys.base_prefix)}
    return tuple(sorted({str(r) for r in roots if str(r) != "/"}))


class PathMap:
    """Container path -> host path; rewrites occurrences in one pass (no host path is rewritten twice).

    Paths under an ``image_roots`` folder are the image's own files and are never rewritten, however a
    mount is named (see ``image_roots``).
    """

    def __init__(self, mapping: dict[str, str], image_roots: tuple[str, ...] = ()) -> None:
        self.mapping = {k.rstrip("/") or "/": v for k, v in mapping.items()}
        self._keep = {r.rstrip("/") for r in image_roots if r.rstrip("/")}
        keys = sorted(set(self.mapping) | self._keep, key=len, reverse=True)  # longest first: /data/in, /data
        # A container path counts only as a whole path: not preceded by a path character, and followed by
        # "/", the end, or a character that cannot be part of a file name in practice.
        alternatives = "|".join(re.escape(k) for k in keys)
        self._pattern = re.compile(rf"(?<![\w./-])({alternatives})(?=/|$|[^\w.-])") if self.mapping else None

    def rewrite(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        path = match.group(1)
        # An image path is longer than any mount that contains it, so it wins the longest-first alternation.
        return path if path in self._keep and path not in self.mapping else self.mapping[path]


def _write_items(folder: Path, data: dict[str, str], items: list[dict[str, Any]] | None) -> None:
    """Write a Secret/ConfigMap's keys as files, honouring `items` (key -> relative path) when given."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [(i["key"], i.get("path", i["key"])) for i in items] if items else [(k, k) for k in data]
    for key, rel in pairs:
        if key not in data:
            raise ConfigError(f"key {key!r} not found for volume file {rel!r}")
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[key])


class PodVolumes:
    """Materializes a pod's volumes under `root` (emptyDir, secret, configMap, projected, hostPath)."""

    def __init__(self, root: Path, pod: Obj, rest: Rest, sources: SourceCache, server: str, ca_file: str) -> None:
        self.root = root
        self.pod = pod
        self._rest = rest
        self._sources = sources
        self._server = server
        self._ca_file = ca_file
        self.host_dirs: dict[str, Path] = {}
        self.kubeconfig: Path | None = None  # written when the pod gets a service-account token

    def prepare(self) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            self.host_dirs[volume["name"]] = self._materialize(volume)

    def _materialize(self, volume: Obj) -> Path:
        folder: Path = self.root / "volumes" / str(volume["name"])
        if "hostPath" in volume:
            return Path(volume["hostPath"]["path"])  # the host is the node: same path
        if "secret" in volume:
            src = volume["secret"]
            data = self._sources.data("secrets", src["secretName"], optional=bool(src.get("optional")))
            _write_items(folder, data or {}, src.get("items"))
        elif "configMap" in volume:
            src = volume["configMap"]
            data = self._sources.data("configmaps", src["name"], optional=bool(src.get("optional")))
            _write_items(folder, data or {}, src.get("items"))
        elif "projected" in volume:
            for source in volume["projected"].get("sources") or []:
                self._projected(folder, source)
        else:  # emptyDir, and anything else (PVCs, ephemeral) as an empty folder
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _projected(self, folder: Path, source: Obj) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if "serviceAccountToken" in source:
            spec = source["serviceAccountToken"]
            token = self._token(spec.get("audience"), int(spec.get("expirationSeconds") or TOKEN_EXPIRY_S))
            (folder / spec["path"]).write_text(token)
            self._write_kubeconfig(token)
        elif "configMap" in source:
            src = source["configMap"]
            data = self._sources.data("configmaps", src["name"], optional=bool(src.get("optional")))
            _write_items(folder, data or {}, src.get("items"))
        elif "secret" in source:
            src = source["secret"]
            data = self._sources.data("secrets", src["name"], optional=bool(src.get("optional")))
            _write_items(folder, data or {}, src.get("items"))
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    (folder / item["path"]).write_text(field_ref(self.pod, item["fieldRef"]["fieldPath"]))

    def _token(self, audience: str | None, expiry: int) -> str:
        """A pod-bound token for the pod's ServiceAccount, from the TokenRequest API (as the kubelet does)."""
        meta = self.pod["metadata"]
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body: Obj = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": expiry,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        if audience:
            body["spec"]["audiences"] = [audience]
        resp = self._rest.create(f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body)
        return str(resp["status"]["token"])

    def _write_kubeconfig(self, token: str) -> None:
        """Processes cannot read /var/run/secrets/...; they get $KUBECONFIG with the same token instead."""
        ca = base64.b64encode(Path(self._ca_file).read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "in-cluster", "cluster": {"server": self._server, "certificate-authority-data": ca}}],
            "users": [{"name": "pod", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "in-cluster",
                    "context": {
                        "cluster": "in-cluster",
                        "user": "pod",
                        "namespace": self.pod["metadata"]["namespace"],
                    },
                }
            ],
            "current-context": "in-cluster",
        }
        self.kubeconfig = self.root / "kubeconfig"
        self.kubeconfig.write_text(json.dumps(config))  # JSON is valid YAML
        self.kubeconfig.chmod(0o600)

    def container_paths(self, container: Obj) -> dict[str, str]:
        """mountPath -> host folder for one container's volumeMounts (subPath honoured)."""
        mapping: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            host = self.host_dirs.get(mount["name"])
            if host is None:
                raise ConfigError(f"volumeMount {mount['name']!r} names no volume of the pod")
            sub = mount.get("subPath")
            target = host / sub if sub else host
            if sub and not target.exists() and "." not in Path(sub).name:
                target.mkdir(parents=True, exist_ok=True)
            mapping[mount["mountPath"]] = str(target)
        return mapping
