"""Helpers of the chart tests: render the chart with `helm template`, pick objects, read the operator's env."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support import binaries

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "relora-operator"
CRDS = ROOT / "crds"
RELEASE = "relora"
NAMESPACE = "relora-system"


@cache
def helm_bin() -> Path:
    return binaries.tool("helm")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(helm_bin()), *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def values_file(tmp: Path, values: Mapping[str, Any] | None) -> list[str]:
    if not values:
        return []
    path = tmp / f"values-{abs(hash(yaml.safe_dump(dict(values))))}.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return ["-f", str(path)]


def render(tmp: Path, values: Mapping[str, Any] | None = None, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The chart's objects for these values (`helm template`, which also applies values.schema.json)."""
    out = helm("template", RELEASE, str(CHART), "-n", namespace, *values_file(tmp, values)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def rejection(tmp: Path, values: Mapping[str, Any]) -> str:
    """helm's error for values the chart must refuse (fails the test if they are accepted)."""
    result = helm("template", RELEASE, str(CHART), *values_file(tmp, values), check=False)
    assert result.returncode != 0, f"accepted: {values}"
    return result.stderr


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}s: {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["operator"]
    return pod["containers"][0]


def env_values(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The operator's plain env variables (name -> value)."""
    return {e["name"]: e["value"] for e in container(docs)["env"] if "value" in e}


def env_refs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The operator's env variables taken from elsewhere (name -> valueFrom)."""
    return {e["name"]: e["valueFrom"] for e in container(docs)["env"] if "valueFrom" in e}


# The RBAC rules the operator needs: exactly these (docs/operator.md; the rollout test proves they suffice).
EXPECTED_RULES = [
    {
        "apiGroups": ["relora.dev"],
        "resources": ["basemodelreleases", "taskadapters"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": ["relora.dev"], "resources": ["basemodelreleases/status", "taskadapters/status"], "verbs": ["patch"]},
    {
        "apiGroups": ["relora.dev"],
        "resources": ["basemodelreleases/finalizers", "taskadapters/finalizers"],
        "verbs": ["update"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch", "create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
