"""The CRDs: generated from the models without drift, documented, and validating examples (structurally; CEL
rules are checked against the real API server in test_cluster_validation.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from relora_operator.crdgen import all_crds, render
from relora_operator.docgen import reference

from tests.operator.factories import adapter_spec, release_body, with_field

ROOT = Path(__file__).resolve().parents[2]


def test_crd_files_match_the_models() -> None:
    for name, crd in all_crds().items():
        path = ROOT / "crds" / name
        assert path.read_text() == render(crd), f"{path} drifted: run python -m relora_operator.crdgen --out crds"


def test_docs_reference_is_current() -> None:
    assert reference() in (ROOT / "docs" / "operator.md").read_text(), "run python -m relora_operator.docgen"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, prop in schema.get("properties", {}).items():
        out.append((f"{path}.{name}", prop))
        out += _walk(prop, f"{path}.{name}")
        if "items" in prop:
            out += _walk(prop["items"], f"{path}.{name}[]")
    return out


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_every_field_has_a_description_and_is_structural(name: str) -> None:
    crd = all_crds()[name]
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path, prop in _walk(schema):
        if path == ".metadata":  # the API server forbids anything but the type here
            continue
        assert prop.get("description"), f"{name}: {path} has no description"
        assert "type" in prop, f"{name}: {path} has no type (not structural)"
        for banned in ("anyOf", "$ref", "title", "allOf", "oneOf"):
            assert banned not in prop, f"{name}: {path} has {banned}"
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["relora"]
    assert crd["spec"]["names"]["shortNames"]


def test_printer_columns() -> None:
    cols = {
        c["name"]: c
        for c in all_crds()["taskadapters.relora.dev.yaml"]["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    for name in ("Family", "Release", "Ready", "Reason", "Quality", "Threshold", "TTR", "Age"):
        assert name in cols and not cols[name].get("priority")
    assert cols["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert any(c.get("priority") == 1 for c in cols.values())
    # Durations humanised (4m12s): a column shows a field as it is, so it points at the humanised string.
    assert (cols["TTR"]["jsonPath"], cols["TTR"]["type"]) == (".status.timeToReadiness", "string")
    release = {
        c["name"]: c
        for c in all_crds()["basemodelreleases.relora.dev.yaml"]["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert (release["Duration"]["jsonPath"], release["Duration"]["type"]) == (".status.rolloutDuration", "string")


def _validator(plural: str) -> jsonschema.Draft4Validator:
    crd = yaml.safe_load((ROOT / "crds" / f"{plural}.relora.dev.yaml").read_text())
    # OpenAPI v3.0 (boolean exclusiveMinimum) is Draft 4's dialect.
    return jsonschema.Draft4Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _adapter(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "relora.dev/v1alpha1",
        "kind": "TaskAdapter",
        "metadata": {"name": "a"},
        "spec": spec,
    }


def test_examples_validate() -> None:
    _validator("taskadapters").validate(
        _adapter(
            adapter_spec(
                strategy={"name": "transfer-ft"},
                priority=5,
                queueName="gpu-queue",
                tolerations=[{"key": "gpu", "operator": "Exists"}],
            )
        )
    )
    body = release_body("v2", supersedes="v1")
    body.pop("status")
    _validator("basemodelreleases").validate(body)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("quality.threshold", 0),
        ("quality.threshold", 1.5),
        ("task.type", "regression"),
        ("strategy.name", "magic"),
        ("rank", 0),
        ("family", KeyError),
        ("targetModules", []),
        ("family", "Not_A_Name"),
        ("priority", 5000),
        ("resources.gpus", -1),
    ],
)
def test_structurally_invalid_adapters_are_rejected(path: str, value: Any) -> None:
    spec = with_field(adapter_spec(), path, value)
    assert list(_validator("taskadapters").iter_errors(_adapter(spec))), f"{path}={value!r} accepted"
