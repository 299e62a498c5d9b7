"""`kubectl relora` against the real control plane, with the operator and the fake worker: `status` shows the
per-adapter table, `pause`/`resume` patch spec.rollout.paused, `rollback` pins the earlier artifact (the operator
serves it with a condition and an ArtifactSwitched Event) and `rollback --clear` serves the newest one again."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from relora_operator import kubectl_plugin

from tests.operator.conftest import ROOT, wait_equal
from tests.operator.factories import adapter_spec
from tests.operator.test_cluster_control_loop import FAKE, apply, get, jobs_by_component, release
from tests.support import binaries
from tests.support.cli import CliRunner
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def plugin(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert kubectl_plugin.main(list(args)) == 0
    return capsys.readouterr().out


def kubectl_with_plugin(kubeconfig: Path, tmp_path: Path) -> CliRunner:
    """kubectl with `kubectl-relora` on its PATH (a shim running this worktree's module, as the console script
    the package installs would), so that `kubectl relora ...` goes through kubectl's plugin discovery."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "kubectl-relora"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m relora_operator.kubectl_plugin "$@"\n')
    shim.chmod(0o755)
    env = {
        "KUBECONFIG": str(kubeconfig),  # kubectl passes no global flags to plugins
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT)]),
    }
    return CliRunner(binaries.tool("kubectl"), [], env)


def test_status_pause_resume_and_rollback(
    relora_crds: None,
    kubectl: Any,
    kubeconfig_path: Path,
    namespace: str,
    test_kubelet: Any,
    s3_secret: Any,
    operator_factory: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig_path))
    operator_factory(namespace, RELORA_WORKER_COMMAND=FAKE, RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}")
    release(kubectl, namespace, "v1")
    apply(kubectl, namespace, "TaskAdapter", "chat", adapter_spec())

    def status() -> dict[str, Any]:
        return get(kubectl, namespace, "taskadapters")["chat"].get("status", {})

    wait_for(lambda: status().get("phase") == "Ready", 60, "Ready on v1 as given")
    release(kubectl, namespace, "v2")
    wait_for(lambda: status().get("readyRelease") == "v2" and status().get("phase") == "Ready", 60, "Ready on v2")
    on_v2 = status()["adapterUri"]

    # status: one row per adapter of the family, through kubectl's plugin discovery.
    out = kubectl_with_plugin(kubeconfig_path, tmp_path)("relora", "-n", namespace, "status", "llama-v2").stdout
    assert "Release llama-v2 (family llama, version v2)" in out
    row = next(line.split() for line in out.splitlines() if line.startswith("chat "))
    assert row == ["chat", "Ready", "Readapted", "0.85", ">=", "0.8", "1.5s", "v2"]

    # pause / resume: spec.rollout.paused, and the operator's answer in the release's status.
    assert "paused" in plugin(capsys, "-n", namespace, "pause", "llama-v2")
    wait_equal(lambda: get(kubectl, namespace, "basemodelreleases")["llama-v2"]["spec"]["rollout"]["paused"], True, 5)
    wait_equal(
        lambda: get(kubectl, namespace, "basemodelreleases")["llama-v2"]["status"].get("rollout", {}).get("paused"),
        True,
        30,
    )
    plugin(capsys, "-n", namespace, "resume", "llama-v2")
    wait_equal(
        lambda: get(kubectl, namespace, "basemodelreleases")["llama-v2"]["status"].get("rollout", {}).get("paused"),
        False,
        30,
    )

    # rollback: pins status.rollbackRelease (v1, the adapter as given); the operator serves it.
    assert status()["rollbackRelease"] == "v1"
    assert "pinned to release v1" in plugin(capsys, "-n", namespace, "rollback", "chat")
    assert get(kubectl, namespace, "taskadapters")["chat"]["spec"]["pinnedRelease"] == "v1"
    wait_equal(lambda: (status().get("phase"), status().get("readyRelease")), ("RolledBack", "v1"), 60)
    st = status()
    assert st["adapterUri"] == "s3://adapters/sentiment/"
    assert [(e["release"], e.get("current"), e.get("served")) for e in st["releases"]] == [
        ("v2", True, None),
        ("v1", None, True),
    ]
    promoted = next(c for c in st["conditions"] if c["type"] == "Promoted")
    assert promoted["reason"] == "RolledBack" and f"switched from {on_v2} (release v2" in promoted["message"]
    release_st = wait_for(
        lambda: (
            (s := get(kubectl, namespace, "basemodelreleases")["llama-v2"]["status"])["adapters"]["degraded"] == 1 and s
        ),
        30,
        "the release counts the rolled-back adapter",
    )
    assert release_st["adapters"]["ready"] == 0

    # rollback --clear: the v2 adapter is served again from status.releases, without a new Job.
    assert "unpinned" in plugin(capsys, "-n", namespace, "rollback", "chat", "--clear")
    wait_equal(lambda: (status().get("phase"), status().get("adapterUri")), ("Ready", on_v2), 60)
    assert len(jobs_by_component(kubectl, namespace)["adaptation"]) == 1
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    # Each switch is said by the Event of its transition: the rollback's, then the one back to v2.
    said = {e["reason"]: e["message"] for e in events if "switched from" in e["message"]}
    assert said["RolledBack"].startswith(f"RolledBack: switched from {on_v2} (release v2")
    assert said["RestoredFromHistory"].startswith(
        "Ready: switched from s3://adapters/sentiment/ (release v1, as given)"
    )

    # A rollback to a release without an artifact: the operator says so and keeps serving.
    plugin(capsys, "-n", namespace, "rollback", "chat", "--to", "v9")
    wait_equal(lambda: status().get("phase"), "Failed", 60)
    ready = next(c for c in status()["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "RollbackTargetNotFound" and "spec.pinnedRelease v9" in ready["message"]
    assert status()["adapterUri"] == on_v2
