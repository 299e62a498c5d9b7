"""Release identity is the weights, not the version string, on the real control plane.

An adapter re-adapted to v2 is re-adapted again when v2 is re-released with other weights under the same
version (the model's manifest changes), and again when v2 is deleted and re-created (a new uid): a history
entry made for an earlier v2 is never restored, and no status shows the adapter Ready for weights it was not
trained on.
"""

# ruff: noqa: F811  (test parameters named like the imported fixtures, as pytest wants)
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.faults.operator_support import apply, cond, get, jobs, model_folder, release, settings, status
from tests.operator.conftest import operator_factory, relora_crds, s3_secret  # noqa: F401  (fixtures)
from tests.operator.factories import adapter_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def _release_status(kubectl: Any, namespace: str, version: str) -> dict[str, Any]:
    return dict(get(kubectl, namespace, "basemodelreleases").get(f"llama-{version}", {}).get("status") or {})


def _ready_on(kubectl: Any, namespace: str, identity: str) -> dict[str, Any] | None:
    st = status(kubectl, namespace, "chat")
    served = st.get("served") or {}
    ok = st.get("phase") == "Ready" and st.get("readyRelease") == "v2" and served.get("releaseIdentity") == identity
    return st if ok else None


def _never_ready_for_other_weights(kubectl: Any, namespace: str, stale: str) -> bool:
    """While re-adapting: Ready=True never goes with the identity of the weights that were replaced."""
    st = status(kubectl, namespace, "chat")
    served = st.get("served") or {}
    assert not (cond(st).get("status") == "True" and served.get("releaseIdentity") == stale), st
    return True


def test_rerelease_with_new_weights_and_recreated_release_readapt(
    relora_crds: None,
    kubectl: Any,
    namespace: str,
    test_kubelet: Any,
    s3_secret: Any,
    operator_factory: Any,
    tmp_path: Path,
) -> None:
    operator_factory(namespace, **settings(namespace))
    v2_uri = model_folder(tmp_path, "v2", "weights-a")
    release(kubectl, namespace, "v1", model_folder(tmp_path, "v1", "weights-0"))
    apply(kubectl, namespace, "TaskAdapter", "chat", adapter_spec())  # trained on v1, strategy relora
    release(kubectl, namespace, "v2", v2_uri)
    first_id = wait_for(lambda: _release_status(kubectl, namespace, "v2").get("identity"), 30, "v2's identity")
    first = wait_for(lambda: _ready_on(kubectl, namespace, first_id), 60, "Ready on v2 (weights a)")
    assert _release_status(kubectl, namespace, "v2")["modelDigest"].startswith("sha256:")

    # Fault 1: the same version re-released with other weights (the folder's manifest changes in place) and
    # the release re-applied unchanged.
    (tmp_path / "v2" / "manifest.json").write_text(json.dumps({"files": {"model.safetensors": {"sha256": "b"}}}))
    release(kubectl, namespace, "v2", v2_uri)
    second_id = wait_for(
        lambda: (i := _release_status(kubectl, namespace, "v2").get("identity")) != first_id and i, 30, "new identity"
    )
    second = wait_for(
        lambda: _never_ready_for_other_weights(kubectl, namespace, first_id)
        and _ready_on(kubectl, namespace, second_id),
        60,
        "re-adapted to v2 with weights b",
    )
    assert second["job"] != first["job"] and cond(second)["reason"] == "Readapted"
    # A projection of its own: the delta of weights a is never reused for weights b.
    assert len(jobs(kubectl, namespace, "projection")) == 2 and len(jobs(kubectl, namespace)) == 2
    # One status.releases entry per release identity: the two weights of v2 are two entries.
    assert [h["releaseIdentity"] for h in second["releases"] if h["release"] == "v2"] == [second_id, first_id]

    # Fault 2: v2 deleted (v1 is the target again: the adapter as given serves) and re-created (a new uid).
    kubectl("delete", "basemodelrelease", "llama-v2", "-n", namespace, "--timeout=30s")
    wait_for(lambda: status(kubectl, namespace, "chat").get("readyRelease") == "v1", 30, "back on v1")
    assert cond(status(kubectl, namespace, "chat"))["reason"] == "TrainedOnRelease"
    release(kubectl, namespace, "v2", v2_uri)
    third_id = wait_for(
        lambda: (i := _release_status(kubectl, namespace, "v2").get("identity")) not in (None, second_id) and i,
        30,
        "identity of the re-created v2",
    )
    third = wait_for(lambda: _ready_on(kubectl, namespace, third_id), 60, "re-adapted to the re-created v2")
    # Re-adapted (a Job for the new release), not restored from the releases entry of the deleted v2.
    assert cond(third)["reason"] == "Readapted" and third["job"] not in (first["job"], second["job"])
    assert len(jobs(kubectl, namespace)) == 3
