"""Bodies and views for the operator's unit tests (plain dicts shaped like what the API server returns)."""

from __future__ import annotations

import copy
from typing import Any

from relora_operator import views

from relora_contract.result import ResultRecord
from relora_contract.summary import TerminationSummary

NS = "team-a"


def release_body(
    version: str,
    *,
    family: str = "llama",
    created: str = "2026-01-01T00:00:00Z",
    supersedes: str | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "family": family,
        "version": version,
        "modelUri": f"s3://models/{family}/{version}/",
        "projection": {"svd": "exact"},
    }
    if supersedes:
        spec["supersedes"] = supersedes
    return {
        "apiVersion": "relora.dev/v1alpha1",
        "kind": "BaseModelRelease",
        "metadata": {
            "name": f"{family}-{version}",
            "namespace": NS,
            "uid": f"uid-{family}-{version}",
            "creationTimestamp": created,
            "generation": 1,
        },
        "spec": spec,
        # The model's digest as the operator records it (identity.py): known, so plans need no storage read.
        "status": {"modelDigest": f"sha256:{family}-{version}", "modelDigestUri": spec["modelUri"], **(status or {})},
    }


def adapter_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "family": "llama",
        "adapterUri": "s3://adapters/sentiment/",
        "trainedOnRelease": "v1",
        "targetModules": ["q_proj", "v_proj"],
        "rank": 16,
        "task": {
            "type": "seq-cls",
            "trainData": "s3://data/train.jsonl",
            "evalData": "s3://data/eval.jsonl",
            "labels": ["neg", "pos"],
        },
        "quality": {"metric": "accuracy", "threshold": 0.8},
    }
    spec.update(overrides)
    return spec


def adapter_body(
    name: str = "sentiment",
    *,
    status: dict[str, Any] | None = None,
    created: str = "2026-01-01T00:00:00Z",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "relora.dev/v1alpha1",
        "kind": "TaskAdapter",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "creationTimestamp": created,
            "generation": 1,
        },
        "spec": adapter_spec(**spec),
        "status": status or {},
    }


def adapter(name: str = "sentiment", **kwargs: Any) -> views.AdapterView:
    return views.adapter_view(adapter_body(name, **kwargs))


def releases(*versions: str) -> list[views.ReleaseView]:
    return [views.release_view(release_body(v, created=f"2026-01-0{i + 1}T00:00:00Z")) for i, v in enumerate(versions)]


def job(
    name: str,
    *,
    component: str = "adaptation",
    release: str = "v2",
    state: str = "Running",
    failed: int = 0,
    message: str | None = None,
    kueue: bool = False,
) -> views.JobView:
    return views.JobView(
        namespace=NS,
        name=name,
        component=component,
        release=release,
        adapter="",
        suspended=state == "Suspended",
        active=1 if state == "Running" else 0,
        succeeded=1 if state == "Succeeded" else 0,
        failed=failed,
        complete=state == "Succeeded",
        failed_final=state == "Failed",
        reason=None,
        message=message,
        created=None,
        start_time="2026-01-02T00:00:00Z",
        completion_time="2026-01-02T00:10:00Z" if state in ("Succeeded", "Failed") else None,
        output_uri=None,
        kueue=kueue,
    )


def with_field(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``spec`` with the dotted ``path`` set to ``value`` (removed when ``value`` is KeyError)."""
    spec = copy.deepcopy(spec)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    if value is KeyError:
        node.pop(last)
    else:
        node[last] = value
    return spec


def worker_summary(**fields: Any) -> TerminationSummary:
    """A readapt Job's termination summary as the operator reads it (relora_contract), from the keys a test sets."""
    return TerminationSummary.parse({"command": "readapt", "status": "ready", **fields})


def worker_result(**fields: Any) -> ResultRecord:
    """A result.json as the operator reads it (relora_contract), from the keys a test sets."""
    return ResultRecord.parse({"status": "ready", "strategy": "relora", **fields})
