"""examples/: every field commented, the two task types, and all of them accepted by the API server as written
(applied for real, then read back: a misspelt field would be pruned silently by the structural schema)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import ROOT
from tests.chart.cluster import ensure_crds
from tests.support.cli import CliRunner

EXAMPLES = ROOT / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))
# Top-level structure of every manifest; explained in each file's header comment.
STRUCTURE = {"apiVersion", "kind", "metadata", "spec", "type", "stringData"}
FREE_FORM = {"nodeSelector", "labels", "annotations"}


def _docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in FILES for d in yaml.safe_load_all(p.read_text()) if d]


def test_the_examples_are_there() -> None:
    kinds = sorted((d["kind"], d.get("spec", {}).get("task", {}).get("type", "")) for _, d in _docs())
    assert kinds == [
        ("BaseModelRelease", ""),
        ("BaseModelRelease", ""),
        ("Secret", ""),
        ("TaskAdapter", "causal-lm"),
        ("TaskAdapter", "seq-cls"),
        ("TaskAdapter", "seq-cls"),
    ]
    for path, doc in _docs():
        assert "namespace" not in doc["metadata"], f"{path.name}: apply with -n, no hard-coded namespace"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_field_is_commented(path: Path) -> None:
    """Each field has a comment line right above it, except the manifest's structure (apiVersion, kind, ...),
    the keys of a free-form map (nodeSelector) and the fields of a list item (the list is commented)."""
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#"), f"{path.name}: starts with a comment saying what it is"
    prev = ""
    parents: list[tuple[int, str, bool]] = []  # (indent, key, is a list item)
    for n, line in enumerate(lines, 1):
        m = re.match(r"^(\s*)(- )?([A-Za-z][\w./-]*):", line)
        if m and not line.lstrip().startswith("#"):
            indent = len(m.group(1)) + (2 if m.group(2) else 0)
            parents = [p for p in parents if p[0] < indent]
            in_item = bool(m.group(2)) or any(p[2] for p in parents)
            exempt = (not parents and m.group(3) in STRUCTURE) or (parents and parents[-1][1] in FREE_FORM) or in_item
            if not exempt:
                assert prev.startswith("#"), f"{path.name}:{n}: field {m.group(3)!r} has no comment above it"
            parents.append((len(m.group(1)) if m.group(2) else indent, m.group(3), bool(m.group(2))))
        if line.strip():
            prev = line.strip()


def _contains(got: Any, want: Any, where: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        for k, v in want.items():
            assert k in got, f"{where}.{k} was dropped by the API server (misspelt or unknown field?)"
            _contains(got[k], v, f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _contains(g, w, f"{where}[{i}]")
    else:
        assert got == want or (isinstance(want, float) and float(got) == want), f"{where}: {got!r} != {want!r}"


@pytest.mark.cluster
def test_the_api_server_accepts_every_example(kubectl: CliRunner, namespace: str) -> None:
    ensure_crds(kubectl)
    out = kubectl("apply", "-n", namespace, "-f", str(EXAMPLES)).stdout
    for path, doc in _docs():
        assert re.search(
            rf"^{doc['kind'].lower()}(\.relora\.dev)?/{re.escape(doc['metadata']['name'])} created$", out, re.M
        ), (
            path.name,
            out,
        )
        kind = {"Secret": "secret"}.get(doc["kind"], doc["kind"].lower() + "s.relora.dev")
        got = json.loads(kubectl("get", kind, doc["metadata"]["name"], "-n", namespace, "-o", "json").stdout)
        if doc["kind"] == "Secret":
            assert set(got["data"]) == set(doc["stringData"])
        else:
            _contains(got["spec"], doc["spec"], f"{path.name}: spec")
