"""Worker Jobs that go away or hang, on the real control plane: never an adapter stuck "Adapting".

* A re-adaptation Job deleted while running (by a person, a TTL, a node drain) is re-created and the adapter
  gets to Ready; the same when the Job is deleted while the operator is down (found after its restart).
* A Job past its activeDeadlineSeconds (from the TaskAdapter's spec, else the operator's default) is stopped
  by Kubernetes and the adapter says DeadlineExceeded.
"""

# ruff: noqa: F811  (test parameters named like the imported fixtures, as pytest wants)
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.faults.operator_support import apply, cond, jobs, model_folder, release, settings, status
from tests.operator.conftest import operator_factory, relora_crds, s3_secret  # noqa: F401  (fixtures)
from tests.operator.factories import adapter_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def _adapting(kubectl: Any, namespace: str, name: str) -> str | None:
    st = status(kubectl, namespace, name)
    return st.get("job") if st.get("phase") == "Adapting" and st.get("targetRelease") == "v2" else None


def test_job_deleted_mid_run_is_recreated_also_across_a_restart(
    relora_crds: None,
    kubectl: Any,
    namespace: str,
    test_kubelet: Any,
    s3_secret: Any,
    operator_factory: Any,
    tmp_path: Path,
) -> None:
    env = settings(namespace)
    operator = operator_factory(namespace, **env)
    release(kubectl, namespace, "v1", model_folder(tmp_path, "v1", "w1"))
    # Each re-adaptation runs 8 s (fake worker: --max-steps milliseconds): long enough to delete it mid-run.
    for name in ("live", "down"):
        spec = adapter_spec(strategy={"name": "transfer-ft", "maxSteps": 8000})
        apply(kubectl, namespace, "TaskAdapter", name, spec)
    wait_for(lambda: status(kubectl, namespace, "down").get("phase") == "Ready", 60, "Ready as given")
    release(kubectl, namespace, "v2", model_folder(tmp_path, "v2", "w2"))
    first = {n: wait_for(lambda n=n: _adapting(kubectl, namespace, n), 60, f"{n} Adapting") for n in ("live", "down")}
    uids = {n: jobs(kubectl, namespace)[j]["metadata"]["uid"] for n, j in first.items()}

    # Fault 1: the Job is deleted while it runs and the operator watches.
    kubectl("delete", "job", first["live"], "-n", namespace, "--wait=true", "--timeout=30s")
    wait_for(
        lambda: (j := jobs(kubectl, namespace).get(first["live"])) and j["metadata"]["uid"] != uids["live"],
        60,  # the next release tick (every 10 s); before the watch took a deleted Job out of "in flight" this
        # could take RECENT_TTL (120 s) when the Job went before the next pass saw it
        "the deleted Job re-created by the running operator",
    )
    # Fault 2: the operator is down (kill -9) while the other Job is deleted.
    operator.kill()
    kubectl("delete", "job", first["down"], "-n", namespace, "--wait=true", "--timeout=30s")
    operator_factory(namespace, **env)

    for name in ("live", "down"):
        wait_for(
            lambda n=name: status(kubectl, namespace, n).get("readyRelease") == "v2"
            and status(kubectl, namespace, n).get("phase") == "Ready",
            90,
            f"{name} re-created and Ready on v2",
        )
        st = status(kubectl, namespace, name)
        job = jobs(kubectl, namespace)[st["job"]]
        # The same deterministic name, a new Job object (re-created, not an old one seen again).
        assert st["job"] == first[name] and job["metadata"]["uid"] != uids[name]
        assert st["lostJobs"] == 1 and cond(st)["reason"] == "Readapted"
        assert [h["release"] for h in st["releases"] if h.get("job")] == ["v2"]
    assert len(jobs(kubectl, namespace)) == 2


def test_deadline_from_the_spec_or_the_default_and_deadline_exceeded(
    relora_crds: None,
    kubectl: Any,
    namespace: str,
    test_kubelet: Any,
    s3_secret: Any,
    operator_factory: Any,
    tmp_path: Path,
) -> None:
    operator_factory(namespace, **settings(namespace, RELORA_JOB_ACTIVE_DEADLINE_SECONDS="600"))
    release(kubectl, namespace, "v1", model_folder(tmp_path, "v1", "w1"))
    # A worker that would run 10 minutes with a 2 s deadline; a quick one with the operator's default.
    hung = adapter_spec(strategy={"name": "transfer-ft", "maxSteps": 600_000}, activeDeadlineSeconds=2)
    apply(kubectl, namespace, "TaskAdapter", "hung", hung)
    apply(kubectl, namespace, "TaskAdapter", "quick", adapter_spec(strategy={"name": "transfer-ft"}))
    release(kubectl, namespace, "v2", model_folder(tmp_path, "v2", "w2"))
    wait_for(lambda: status(kubectl, namespace, "hung").get("phase") == "Failed", 90, "hung stopped")
    st = status(kubectl, namespace, "hung")
    ready = cond(st)
    assert ready["status"] == "False" and ready["reason"] == "DeadlineExceeded", ready
    assert "activeDeadlineSeconds (2 s)" in ready["message"] and cond(st, "Degraded")["status"] == "True"
    assert st["readyRelease"] == "v1" and st["adapterUri"] == "s3://adapters/sentiment/"  # the old one serves
    wait_for(lambda: status(kubectl, namespace, "quick").get("readyRelease") == "v2", 60, "quick Ready")
    deadlines = {
        j["metadata"]["labels"]["relora.dev/task-adapter"]: j["spec"].get("activeDeadlineSeconds")
        for j in jobs(kubectl, namespace).values()
    }
    assert deadlines == {"hung": 2, "quick": 600}
