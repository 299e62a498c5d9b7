"""RELORA_TEST_KUBECONFIG: the suite runs against an existing cluster only when it is marked as a test one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.binaries import REPO_ROOT
from tests.support.realcluster import refusal


def _kubeconfig(tmp_path: Path, context: str) -> Path:
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": context,
                "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {}}],
            }
        )
    )
    return path


def test_refuses_an_unmarked_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELORA_TEST_CLUSTER_CONTEXTS", raising=False)
    monkeypatch.delenv("RELORA_TEST_ALLOW", raising=False)
    reason = refusal(_kubeconfig(tmp_path, "prod-eu"), lambda: False)
    assert reason is not None and "refusing" in reason and "prod-eu" in reason
    # kind-/k3d- names alone are not enough either: they also need RELORA_TEST_ALLOW=1.
    assert refusal(_kubeconfig(tmp_path, "kind-dev"), lambda: False) is not None


def test_accepts_listed_allowed_or_marked_contexts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELORA_TEST_CLUSTER_CONTEXTS", "staging-test, other")
    assert refusal(_kubeconfig(tmp_path, "staging-test"), lambda: False) is None
    monkeypatch.delenv("RELORA_TEST_CLUSTER_CONTEXTS")
    monkeypatch.setenv("RELORA_TEST_ALLOW", "1")
    assert refusal(_kubeconfig(tmp_path, "k3d-relora"), lambda: False) is None
    monkeypatch.delenv("RELORA_TEST_ALLOW")
    assert refusal(_kubeconfig(tmp_path, "lab"), lambda: True) is None


def _run_suite_against(kubeconfig: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELORA_TEST_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'inner'}",
            "tests/infra/test_api.py::test_rbac_restricted_service_account",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, "RELORA_TEST_KUBECONFIG": str(kubeconfig), **env},
    )


@pytest.mark.cluster
def test_suite_runs_against_an_existing_cluster_only_when_listed(kubeconfig_path: Path, tmp_path: Path) -> None:
    # Our own control plane plays the "existing cluster" (context relora-test): refused until listed.
    refused = _run_suite_against(kubeconfig_path, tmp_path)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "refusing to run the tests against context 'relora-test'" in refused.stdout + refused.stderr
    accepted = _run_suite_against(kubeconfig_path, tmp_path, RELORA_TEST_CLUSTER_CONTEXTS="relora-test")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
