"""Generates the CRDs from the pydantic models (the one source of truth).

``python -m relora_operator.crdgen --out crds`` rewrites ``crds/*.yaml``; a test fails when they drift.
Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema, so the
conversion inlines ``$ref``s, unwraps ``Optional`` (``anyOf [X, null]``), drops titles and
``additionalProperties: false``, and turns numeric ``exclusiveMinimum`` into the v3.0 boolean form.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from relora_operator.models import (
    GROUP,
    VERSION,
    BaseModelReleaseSpec,
    BaseModelReleaseStatus,
    TaskAdapterSpec,
    TaskAdapterStatus,
)

READY = '.status.conditions[?(@.type=="Ready")]'


def structural(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs)


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        # Keys next to the $ref (description, default) win over the referenced model's own.
        node = {**target, **node}
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v != {"type": "null"}]
        if len(variants) != 1:
            raise ValueError(f"cannot express anyOf {variants} structurally")
        node = {**_convert(variants[0], defs), **node}
    node.pop("title", None)
    if node.get("default", 0) is None:
        node.pop("default")
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    if isinstance(node.get("exclusiveMinimum"), (int, float)) and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if isinstance(node.get("exclusiveMaximum"), (int, float)) and not isinstance(node["exclusiveMaximum"], bool):
        node["maximum"], node["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _convert(prop, defs) for name, prop in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _convert(value, defs)
        else:
            out[key] = value
    return out


def _conditions_as_map(status: dict[str, Any]) -> dict[str, Any]:
    # One condition per type, merged by type (like metav1.Condition lists in core APIs).
    status["properties"]["conditions"].update({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    return status


def _crd(
    kind: str,
    plural: str,
    short: list[str],
    description: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "relora-operator", "app.kubernetes.io/part-of": "relora"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["relora"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "API version of this object.",
                                },
                                "kind": {"type": "string", "description": "Kind of this object."},
                                "metadata": {"type": "object"},  # the API server allows nothing more here
                                "spec": spec,
                                "status": _conditions_as_map(status),
                            },
                        }
                    },
                }
            ],
        },
    }


def _col(name: str, path: str, type_: str = "string", priority: int = 0, description: str = "") -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    if description:
        col["description"] = description
    return col


def task_adapter_crd() -> dict[str, Any]:
    return _crd(
        "TaskAdapter",
        "taskadapters",
        ["ta"],
        "A task's LoRA adapter, kept ready for the newest release of its base model family.",
        structural(TaskAdapterSpec),
        structural(TaskAdapterStatus),
        [
            _col("Family", ".spec.family"),
            _col("Release", ".status.readyRelease", description="Release the served adapter is ready for."),
            _col("Ready", f"{READY}.status"),
            _col("Reason", f"{READY}.reason"),
            _col("Quality", ".status.quality", "number"),
            _col("Threshold", ".spec.quality.threshold", "number"),
            _col("TTR", ".status.timeToReadiness", description="Time to readiness (humanised)."),
            _col("Age", ".metadata.creationTimestamp", "date"),
            _col("Target", ".status.targetRelease", priority=1),
            _col("Phase", ".status.phase", priority=1),
            _col("Strategy", ".spec.strategy.name", priority=1),
            _col("Alpha", ".status.alpha", "number", priority=1),
            _col("Beta", ".status.beta", "number", priority=1),
            _col("Job", ".status.job", priority=1),
            _col("Adapter", ".status.adapterUri", priority=1),
            _col("Served", '.status.conditions[?(@.type=="Served")].reason', priority=1, description="Hand-off."),
        ],
    )


def base_model_release_crd() -> dict[str, Any]:
    return _crd(
        "BaseModelRelease",
        "basemodelreleases",
        ["bmr"],
        "A released version of a base model family; its TaskAdapters are re-adapted to it.",
        structural(BaseModelReleaseSpec),
        structural(BaseModelReleaseStatus),
        [
            _col("Family", ".spec.family"),
            _col("Version", ".spec.version"),
            _col("Phase", ".status.phase"),
            _col("Ready", ".status.adapters.ready", "integer"),
            _col("Total", ".status.adapters.total", "integer"),
            _col("Duration", ".status.rolloutDuration", description="Rollout duration (humanised)."),
            _col("Age", ".metadata.creationTimestamp", "date"),
            _col("Supersedes", ".status.supersedes", priority=1),
            _col("Degraded", ".status.adapters.degraded", "integer", priority=1),
            _col("Failed", ".status.adapters.failed", "integer", priority=1),
            _col("Running", ".status.adapters.running", "integer", priority=1),
            _col("Queued", ".status.adapters.queued", "integer", priority=1),
            _col("Canary", ".status.rollout.canary.state", priority=1),
        ],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD manifest."""
    return {f"{crd['metadata']['name']}.yaml": crd for crd in (base_model_release_crd(), task_adapter_crd())}


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `python -m relora_operator.crdgen --out crds`; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder to write one YAML per CRD (default: stdout)")
    args = parser.parse_args(argv)
    for name, crd in all_crds().items():
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / name).write_text(render(crd))
        else:
            sys.stdout.write("---\n" + render(crd))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
