"""Kubeconfig files: writing self-contained ones for the test control plane, reading the current context."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca_cert: Path,
    client_cert: Path,
    client_key: Path,
    user: str,
    context: str = "relora-test",
) -> Path:
    """Write a kubeconfig with the certificates embedded, so it stays valid if the PEM files move."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(client_cert), "client-key-data": _b64(client_key)},
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def current_context(path: Path) -> tuple[str, dict[str, Any]]:
    """(name, context entry) of the kubeconfig's current context; ValueError when there is none."""
    config = yaml.safe_load(path.read_text()) or {}
    name = config.get("current-context") or ""
    for entry in config.get("contexts") or []:
        if entry.get("name") == name:
            return name, dict(entry.get("context") or {})
    raise ValueError(f"{path}: current-context {name!r} is not among its contexts")
