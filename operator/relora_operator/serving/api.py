"""The hand-off's Kubernetes calls (blocking: run them in a thread) and how their failures read in Served.

Writes are read-modify-write with the object's resourceVersion (a PUT): another writer in between gets a 409
and the next pass starts again from what it wrote, so the operator never overwrites fields it does not own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from relora_operator import refusals
from relora_operator.redaction import redact
from relora_operator.serving import common
from relora_operator.serving.common import Result


@dataclass(frozen=True)
class Resource:
    """A kind the hand-off reads and writes, and the chart value whose RBAC grants it."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    chart_value: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def grant(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


class NotInstalled(Exception):
    """The API server does not serve the resource at all (no CRD): not the same as a missing object."""


def _names_an_object(exc: ApiException) -> bool:
    # A missing object's 404 names it in its Status details; a resource the server does not know has none.
    try:
        return bool((json.loads(exc.body).get("details") or {}).get("name"))
    except (TypeError, ValueError, AttributeError):
        return False


def get(api: client.ApiClient, res: Resource, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as a plain dict, None when it does not exist; NotInstalled when its kind does not."""
    try:
        if res.plural == "configmaps" and not res.group:
            raw = client.CoreV1Api(api).read_namespaced_config_map(name, namespace, _preload_content=False)
            return dict(json.loads(raw.data))
        return dict(
            client.CustomObjectsApi(api).get_namespaced_custom_object(
                res.group, res.version, namespace, res.plural, name
            )
        )
    except ApiException as exc:
        if exc.status == 404:
            if _names_an_object(exc):
                return None
            raise NotInstalled(res.grant) from exc
        raise


def running_pods(api: client.ApiClient, namespace: str, selector: str) -> int:
    """How many pods matching the label ``selector`` run in ``namespace`` (at most 1 is asked for)."""
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=selector, field_selector="status.phase=Running", limit=1
    )
    return len(pods.items)


def create(api: client.ApiClient, res: Resource, body: dict[str, Any]) -> None:
    namespace = body["metadata"]["namespace"]
    if res.plural == "configmaps" and not res.group:
        client.CoreV1Api(api).create_namespaced_config_map(namespace, body)
    else:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            res.group, res.version, namespace, res.plural, body
        )


def replace(api: client.ApiClient, res: Resource, body: dict[str, Any]) -> None:
    """PUT ``body`` (it carries the resourceVersion it was read at: a concurrent change gives a 409)."""
    meta = body["metadata"]
    if res.plural == "configmaps" and not res.group:
        client.CoreV1Api(api).replace_namespaced_config_map(meta["name"], meta["namespace"], body)
    else:
        client.CustomObjectsApi(api).replace_namespaced_custom_object(
            res.group, res.version, meta["namespace"], res.plural, meta["name"], body
        )


def not_installed(res: Resource, product: str) -> Result:
    return Result(
        "False",
        common.NOT_INSTALLED,
        f"the cluster does not serve {res.kind} ({res.api_version}, CRD {res.grant}): install {product} or "
        "remove spec.serving",
    )


def failure(exc: Exception, res: Resource, namespace: str, verb: str) -> Result:
    """The Served condition for a call that failed: what was refused and what to do."""
    status = getattr(exc, "status", None)
    detail = refusals.api_message(exc) if isinstance(exc, ApiException) else str(exc)
    if status == 403:
        message = refusals.permission_message(verb, res.grant, namespace, detail).replace(
            "(the Helm chart does)", f"(Helm chart value {res.chart_value}=true)"
        )
        return Result("False", common.FORBIDDEN, redact(message))
    if status == 409:
        return Result("Unknown", common.PENDING, f"{res.kind} changed while it was written; writing again")
    if status in (400, 422):
        return Result("False", common.INVALID, redact(f"the API server refused the {res.kind}: {detail}"))
    return Result("False", common.ERROR, redact(f"{verb} {res.grant} failed: {detail}; retrying"))


@dataclass(frozen=True)
class Write:
    """An object to create (or PUT), and the Served result once it is written."""

    body: dict[str, Any]
    create: bool
    result: Result


def keep(
    api: client.ApiClient,
    res: Resource,
    namespace: str,
    name: str,
    product: str,
    decide: Any,  # Callable[[dict | None], Write | Result]: pure, unit-tested per integration
) -> Result:
    """Reads the target, lets ``decide`` say what it should become (or how it stands), writes that."""
    try:
        current = get(api, res, namespace, name)
    except NotInstalled:
        return not_installed(res, product)
    except Exception as exc:
        return failure(exc, res, namespace, "get")
    decision = decide(current)
    if isinstance(decision, Result):
        return decision
    verb = "create" if decision.create else "update"
    try:
        (create if decision.create else replace)(api, res, decision.body)
    except Exception as exc:
        if getattr(exc, "status", None) == 404 and not (isinstance(exc, ApiException) and _names_an_object(exc)):
            return not_installed(res, product)  # the CRD went away between the read and the write
        return failure(exc, res, namespace, verb)
    return decision.result
