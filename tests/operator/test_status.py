from __future__ import annotations

from relora_operator import adapter_releases, identity, views
from relora_operator.decisions import plan_adapter
from relora_operator.outcome import Observed
from relora_operator.release_status import release_status
from relora_operator.settings import Settings
from relora_operator.status import adapter_status, status_patch, transition_event

from tests.operator.factories import adapter, job, releases, worker_summary

S = Settings.from_env({})
NOW = "2026-01-02T00:20:00Z"
FAM = releases("v1", "v2")


def _cond(status, type_="Ready"):  # type: ignore[no-untyped-def]
    return next(c for c in status["conditions"] if c["type"] == type_)


def _run(a, seen_factory):  # type: ignore[no-untyped-def]
    plan = plan_adapter(a, FAM, S)
    return (*adapter_status(a, plan, seen_factory(plan), NOW), plan)


def test_ready_after_success() -> None:
    summary = {
        "command": "readapt",
        "status": "ready",
        "exit_code": 0,
        "quality": 0.91,
        "threshold": 0.8,
        "time_to_readiness_s": 12.5,
        "alpha": 0.4,
        "beta": 1.6,
        "adapter_uri": "s3://out/new/",
        "result_uri": "s3://out/new/result.json",
        "strategy": "relora",
    }
    status, out, plan = _run(
        adapter(),
        lambda p: Observed(
            job=job(p.adaptation.job_name, state="Succeeded"),
            projection=job(p.projection.job_name, state="Succeeded"),
            summary=worker_summary(**summary),
        ),
    )
    assert out.ready and status["phase"] == "Ready"
    entry = status["releases"][0]
    assert entry["specHash"] == plan.spec_hash  # what a later rollback matches on
    assert (entry["release"], entry["phase"], entry["threshold"], entry["timeToReadiness"]) == (
        "v2",
        "Ready",
        0.8,
        "12s",
    )
    assert entry["current"] and entry["served"] and entry["adapterUri"] == "s3://out/new/"
    assert status["served"]["adapterUri"] == "s3://out/new/" and status["adapterUri"] == "s3://out/new/"
    assert status["readyRelease"] == "v2" and status["targetRelease"] == "v2"
    assert (status["quality"], status["timeToReadinessSeconds"], status["alpha"], status["beta"]) == (
        0.91,
        12.5,
        0.4,
        1.6,
    )
    assert _cond(status)["status"] == "True" and _cond(status)["reason"] == "Readapted"
    assert status["timeToReadiness"] == "12s"  # humanised for the TTR column
    assert _cond(status, "Degraded")["status"] == "False"
    assert status["observedGeneration"] == 1 and "history" not in status
    # Next pass: up to date, nothing to write.
    again = adapter(status=status)
    plan2 = plan_adapter(again, FAM, S)
    assert plan2.kind == "UpToDate"
    new, _ = adapter_status(again, plan2, Observed(), NOW)
    assert status_patch(status, new) == {}


def test_below_threshold_is_degraded_and_keeps_the_previous_adapter() -> None:
    summary = {
        "status": "below-threshold",
        "exit_code": 3,
        "quality": 0.6,
        "threshold": 0.8,
        "adapter_uri": "s3://out/weak/",
    }
    status, out, _ = _run(
        adapter(),
        lambda p: Observed(
            job=job(p.adaptation.job_name, state="Failed"),
            projection=job(p.projection.job_name, state="Succeeded"),
            summary=worker_summary(**summary),
        ),
    )
    assert status["phase"] == "Degraded" and not out.ready
    assert _cond(status)["reason"] == "BelowThreshold"
    assert _cond(status, "Degraded")["status"] == "True"
    assert status["adapterUri"] == "s3://adapters/sentiment/" and status["readyRelease"] == "v1"
    assert status["quality"] == 0.6
    assert "0.6" in status["message"] and "s3://adapters/sentiment/" in status["message"]


def test_bad_input_carries_the_worker_message() -> None:
    summary = {"status": "error", "exit_code": 2, "error": "cannot read s3://data/missing.jsonl: NoSuchKey"}
    status, _out, _ = _run(
        adapter(),
        lambda p: Observed(
            job=job(p.adaptation.job_name, state="Failed"),
            projection=job(p.projection.job_name, state="Succeeded"),
            summary=worker_summary(**summary),
        ),
    )
    assert status["phase"] == "Failed" and _cond(status)["reason"] == "BadInput"
    assert "s3://data/missing.jsonl" in _cond(status)["message"]


def test_crash_after_retries_and_missing_summary() -> None:
    status, _, _ = _run(
        adapter(),
        lambda p: Observed(
            job=job(
                p.adaptation.job_name,
                state="Failed",
                failed=3,
                message="Job has reached the specified backoff limit",
            ),
            projection=job(p.projection.job_name, state="Succeeded"),
            pod_end="OOMKilled, exit code 137",
        ),
    )
    # No summary: the verdict is unknown, and the status still says why (the Job's words, how its pod ended).
    assert _cond(status)["reason"] == "JobFailed"
    assert "3 attempt" in status["message"] and "backoff limit" in status["message"]
    assert "left no summary" in status["message"] and "OOMKilled" in status["message"]


def test_waiting_queued_running_and_projection_failure() -> None:
    status, out, _ = _run(adapter(), lambda p: Observed())
    assert status["phase"] == "Queued" and out.progressing and "projection" in status["message"]
    waiting_message = status["message"]
    status, _, _ = _run(adapter(), lambda p: Observed(projection=job(p.projection.job_name, state="Succeeded")))
    assert status["phase"] == "Queued" and status["message"] == waiting_message  # no second write
    status, _, _ = _run(
        adapter(),
        lambda p: Observed(job=job(p.adaptation.job_name), projection=job(p.projection.job_name, state="Succeeded")),
    )
    assert status["phase"] == "Adapting" and _cond(status, "Progressing")["status"] == "True"
    status, _, _ = _run(
        adapter(),
        lambda p: Observed(
            job=job(p.adaptation.job_name, state="Suspended"),
            projection=job(p.projection.job_name, state="Succeeded"),
        ),
    )
    assert _cond(status)["reason"] == "QueuedInKueue"
    status, _, _ = _run(
        adapter(),
        lambda p: Observed(
            projection=job(p.projection.job_name, state="Failed", message="bad model"),
            projection_summary=worker_summary(
                command="project-delta", status="error", exit_code=2, error="cannot read s3://models/llama/v2/config.json"
            ),
        ),
    )
    assert status["phase"] == "Failed" and "config.json" in status["message"]


def test_as_given_and_transition_time_kept() -> None:
    a = adapter()
    plan = plan_adapter(a, releases("v1"), S)
    status, out = adapter_status(a, plan, Observed(), NOW)
    assert out.reason == "TrainedOnRelease" and status["readyRelease"] == "v1"
    later, _ = adapter_status(
        adapter(status=status),
        plan_adapter(adapter(status=status), releases("v1"), S),
        Observed(),
        "2030-01-01T00:00:00Z",
    )
    assert _cond(later)["lastTransitionTime"] == NOW


def test_release_aggregation() -> None:
    rel = FAM[1]
    members = [
        adapter(n, status={"targetRelease": "v2", "phase": p})
        for n, p in [
            ("a", "Ready"),
            ("b", "Ready"),
            ("c", "Degraded"),
            ("d", "Failed"),
            ("e", "Adapting"),
            ("f", "Queued"),
        ]
    ]
    st = release_status(rel, newest=True, supersedes="v1", adapters=members, projections=[], now=NOW)
    assert st["adapters"] == {"total": 6, "ready": 2, "degraded": 1, "failed": 1, "running": 1, "queued": 1}
    assert st["phase"] == "RollingOut" and st["supersedes"] == "v1" and "finishTime" not in st
    assert _cond(st, "Degraded")["status"] == "True"
    done = [adapter(n, status={"targetRelease": "v2", "phase": "Ready"}) for n in "ab"]
    rel2 = views.ReleaseView(**{**rel.__dict__, "status": {"startTime": "2026-01-02T00:00:00Z"}})
    st = release_status(rel2, newest=True, supersedes="v1", adapters=done, projections=[], now=NOW)
    assert st["phase"] == "Complete" and st["rolloutDurationSeconds"] == 1200.0 and st["rolloutDuration"] == "20m"
    assert _cond(st)["status"] == "True" and _cond(st)["reason"] == "RolloutComplete"
    old = release_status(FAM[0], newest=False, supersedes=None, adapters=done, projections=[], now=NOW)
    assert old["phase"] == "Superseded"


def _st(phase: str, reason: str) -> dict:
    return {"phase": phase, "message": "m", "conditions": [{"type": "Ready", "reason": reason}]}


def test_events_on_transitions_but_not_between_waiting_states() -> None:
    assert transition_event(_st("Ready", "Readapted"), _st("Ready", "Readapted")) is None
    assert transition_event(_st("Ready", "TrainedOnRelease"), _st("WaitingForProjection", "WaitingForProjection"))
    assert transition_event(_st("WaitingForProjection", "WaitingForProjection"), _st("Queued", "Queued")) is None
    assert transition_event(_st("Queued", "Queued"), _st("Adapting", "Adapting"))[:2] == ("Normal", "Adapting")
    assert transition_event(_st("Adapting", "Adapting"), _st("Degraded", "BelowThreshold"))[:2] == (
        "Warning",
        "BelowThreshold",
    )
    assert transition_event({}, _st("Ready", "TrainedOnRelease"))[1] == "TrainedOnRelease"


def test_rollback_restores_the_earlier_adapter_and_then_stays_quiet() -> None:
    shash = plan_adapter(adapter(), FAM, S).spec_hash
    history = [
        {"release": "v3", "outcome": "Ready", "job": "ra-3", "adapterUri": "s3://out/v3/", "specHash": shash},
        {
            "releaseIdentity": identity.identity_of(FAM[1]),
            "release": "v2",
            "outcome": "Ready",
            "job": "ra-2",
            "adapterUri": "s3://out/v2/",
            "specHash": shash,
            "quality": 0.91,
            "timeToReadinessSeconds": 12.5,
        },
    ]
    old = {
        "served": {"release": "v3", "adapterUri": "s3://out/v3/", "specHash": shash, "job": "ra-3"},
        "history": history,
        "phase": "Ready",
        "quality": 0.95,
        "alpha": 0.3,
    }
    a = adapter(status=old)
    plan = plan_adapter(a, FAM, S)  # v3 deleted
    status, out = adapter_status(a, plan, Observed(), NOW)
    assert out.ready and _cond(status)["reason"] == "RestoredFromHistory" and "ra-2" in status["message"]
    assert status["readyRelease"] == "v2" and status["adapterUri"] == "s3://out/v2/"
    assert (status["quality"], status["timeToReadinessSeconds"], status.get("alpha")) == (0.91, 12.5, None)
    # The old per-Job history is read into releases[] (restoring is not a new attempt: no new entry).
    assert [(e["release"], e.get("current"), e.get("served")) for e in status["releases"]] == [
        ("v3", None, None),
        ("v2", True, True),
    ]
    assert "history" not in status
    promoted = _cond(status, "Promoted")
    assert promoted["status"] == "True" and promoted["reason"] == "RestoredFromHistory"
    assert "from s3://out/v3/ (release v3, Job ra-3) to s3://out/v2/ (release v2, Job ra-2)" in promoted["message"]
    assert adapter_releases.switch_event(old, status)[1] == "ArtifactSwitched"
    # The next pass finds it up to date and writes nothing.
    again = adapter(status=status)
    plan2 = plan_adapter(again, FAM, S)
    assert plan2.kind == "UpToDate"
    assert status_patch(status, adapter_status(again, plan2, Observed(), "2030-01-01T00:00:00Z")[0]) == {}
