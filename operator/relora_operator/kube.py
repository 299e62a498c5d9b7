"""The few Kubernetes API writes the operator makes besides kopf's own: create-if-absent of Jobs."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

_lock = threading.Lock()
_api: client.ApiClient | None = None


def new_api_client(pool_size: int) -> client.ApiClient:
    """A client of its own (own connection pool), from the in-cluster ServiceAccount or the kubeconfig."""
    try:
        config.load_incluster_config()
        configuration = client.Configuration.get_default_copy()
    except config.ConfigException:
        configuration = client.Configuration()
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = max(pool_size, 4)
    return client.ApiClient(configuration)


def api_client(pool_size: int = 16) -> client.ApiClient:
    """The client of the operator's writes: one connection per API worker thread, so concurrent creates do
    not queue on the pool (the watches have their own client: see ``new_api_client``)."""
    global _api
    with _lock:
        if _api is None:
            _api = new_api_client(pool_size)
        return _api


def batch_api(pool_size: int = 16) -> client.BatchV1Api:
    return client.BatchV1Api(api_client(pool_size))


def patch_status(
    group: str, version: str, plural: str, namespace: str, name: str, patch: dict[str, Any], pool_size: int = 16
) -> None:
    """Merge-patches ``status`` through the status subresource (a 404 means the object is gone: fine)."""
    try:
        client.CustomObjectsApi(api_client(pool_size)).patch_namespaced_custom_object_status(
            group, version, namespace, plural, name, {"status": patch}, _content_type="application/merge-patch+json"
        )
    except ApiException as exc:
        if exc.status != 404:
            raise


def create_job_if_absent(job: dict[str, Any], pool_size: int = 16) -> bool:
    """Creates ``job``; False when a Job of that name already exists (409): the name is deterministic, so an
    existing Job is this very work, started before a restart or by an earlier reconcile."""
    try:
        batch_api(pool_size).create_namespaced_job(job["metadata"]["namespace"], job)
        return True
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise


def create_configmap_if_absent(configmap: dict[str, Any], pool_size: int = 16) -> bool:
    """Creates ``configmap``; False when one of that name exists (409: its name is deterministic too)."""
    try:
        client.CoreV1Api(api_client(pool_size)).create_namespaced_config_map(
            configmap["metadata"]["namespace"], configmap
        )
        return True
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise


def create_event(event: dict[str, Any], pool_size: int = 16) -> None:
    client.CoreV1Api(api_client(pool_size)).create_namespaced_event(event["metadata"]["namespace"], event)
