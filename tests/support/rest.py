"""A minimal JSON REST client for the Kubernetes API, used by the test kubelet.

Why not the `kubernetes` package here: the kubelet works on raw API objects (dicts in the API's own
camelCase) and needs exactly get/create/merge-patch/delete/watch; plain HTTP keeps it independent of the
generated client's model classes and its PATCH content-type defaults, which change between releases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

Obj = dict[str, Any]


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:500]}")
        self.status = status


class Rest:
    """HTTPS JSON client bound to one API server and one identity (client cert or bearer token)."""

    def __init__(
        self,
        server: str,
        ca_file: str,
        *,
        cert: tuple[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.session = requests.Session()
        # Ignore REQUESTS_CA_BUNDLE / *_PROXY from the environment: they would override `verify` below
        # (a requests quirk) or send loopback traffic to a proxy.
        self.session.trust_env = False
        self.session.verify = ca_file
        if cert is not None:
            self.session.cert = cert
        if token is not None:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        ctype: str = "application/json",
        params: dict[str, Any] | None = None,
        ok404: bool = False,
    ) -> Obj | None:
        resp = self.session.request(
            method,
            self.server + path,
            params=params,
            timeout=30,
            data=None if body is None else json.dumps(body),
            headers={"Content-Type": ctype},
        )
        if resp.status_code == 404 and ok404:
            return None
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, method, path, resp.text)
        return resp.json() if resp.content else {}

    def get(self, path: str, *, params: dict[str, Any] | None = None) -> Obj:
        return self._request("GET", path, params=params) or {}

    def get_or_none(self, path: str) -> Obj | None:
        return self._request("GET", path, ok404=True)

    def create(self, path: str, body: Obj) -> Obj:
        return self._request("POST", path, body=body) or {}

    def merge_patch(self, path: str, body: Obj) -> Obj:
        return self._request("PATCH", path, body=body, ctype="application/merge-patch+json") or {}

    def delete(self, path: str, *, grace_seconds: int | None = None) -> None:
        params = None if grace_seconds is None else {"gracePeriodSeconds": grace_seconds}
        self._request("DELETE", path, params=params, ok404=True)

    def watch(self, path: str, resource_version: str, timeout_s: int = 30) -> Iterator[Obj]:
        """Watch events ({"type", "object"}) of a collection from `resource_version` for `timeout_s`."""
        params: dict[str, str | int] = {
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": timeout_s,
            "allowWatchBookmarks": "false",
        }
        with self.session.get(self.server + path, params=params, stream=True, timeout=timeout_s + 10) as resp:
            if resp.status_code >= 400:
                raise ApiError(resp.status_code, "WATCH", path, resp.text)
            for line in resp.iter_lines():
                if line:
                    yield json.loads(line)
