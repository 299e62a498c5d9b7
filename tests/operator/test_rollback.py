"""Rollback (spec.pinnedRelease, pure): serve an earlier artifact from status.releases, with a condition and an
Event saying from what to what; unpinning serves the newest release's adapter again, without a Job."""

from __future__ import annotations

from typing import Any

from relora_operator import adapter_releases, identity
from relora_operator.decisions import plan_adapter
from relora_operator.outcome import Observed
from relora_operator.settings import Settings
from relora_operator.status import adapter_status

from tests.operator.factories import adapter, releases

S = Settings.from_env({})
NOW = "2026-01-02T00:20:00Z"
FAM = releases("v1", "v2")


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def _on_v2() -> dict[str, Any]:
    shash = plan_adapter(adapter(), FAM, S).spec_hash
    v2 = {
        "release": "v2",
        "adapterUri": "s3://out/v2/",
        "job": "ra-2",
        "specHash": shash,
        "releaseIdentity": identity.identity_of(FAM[1]),
    }
    entries = [
        {**v2, "phase": "Ready", "reason": "Readapted", "quality": 0.9, "current": True, "served": True},
        {"release": "v1", "adapterUri": "s3://adapters/sentiment/", "phase": "Ready", "reason": "TrainedOnRelease"},
    ]
    return {"served": v2, "releases": entries, "phase": "Ready", "targetRelease": "v2", "rollbackRelease": "v1"}


def _pass(status: dict[str, Any], **spec: Any) -> tuple[dict[str, Any], Any]:
    a = adapter(status=status, **spec)
    return adapter_status(a, plan_adapter(a, FAM, S), Observed(), NOW)


def test_pin_serves_the_earlier_artifact_with_a_condition_and_an_event() -> None:
    old = _on_v2()
    plan = plan_adapter(adapter(status=old, pinnedRelease="v1"), FAM, S)
    assert plan.kind == "Pinned" and plan.adaptation is None  # no Job
    status, out = _pass(old, pinnedRelease="v1")
    assert (status["phase"], out.reason, out.ready) == ("RolledBack", "RolledBack", False)
    assert status["served"]["adapterUri"] == "s3://adapters/sentiment/" and status["readyRelease"] == "v1"
    assert [(e["release"], e.get("current"), e.get("served")) for e in status["releases"]] == [
        ("v2", True, None),
        ("v1", None, True),
    ]
    assert status["rollbackRelease"] == "v2"  # what a second rollback would go back to
    promoted = _cond(status, "Promoted")
    assert promoted["status"] == "False" and promoted["reason"] == "RolledBack"
    assert promoted["message"].startswith(
        "switched from s3://out/v2/ (release v2, Job ra-2) to s3://adapters/sentiment/ (release v1, as given)"
    )
    kind, reason, message = adapter_releases.switch_event(old, status)
    assert (kind, reason) == ("Normal", "ArtifactSwitched") and message == promoted["message"]
    # Steady: the next pass changes nothing and posts no Event.
    again, _ = _pass(status, pinnedRelease="v1")
    assert again == status and adapter_releases.switch_event(status, again) is None

    # Unpinned: the v2 adapter is served again, from status.releases, without a Job.
    back, out = _pass(status)
    assert out.ready and back["served"]["adapterUri"] == "s3://out/v2/" and back["phase"] == "Ready"
    assert _cond(back, "Promoted")["status"] == "True" and adapter_releases.switch_event(status, back)


def test_a_pin_without_an_artifact_fails_naming_the_field_and_keeps_serving() -> None:
    status, out = _pass(_on_v2(), pinnedRelease="v0")
    assert status["phase"] == "Failed" and out.reason == "RollbackTargetNotFound"
    assert "spec.pinnedRelease v0" in out.message and "Ready ones: v1, v2" in out.message
    assert status["served"]["adapterUri"] == "s3://out/v2/"
