"""spec.rollout of a release (pure): canary membership and gate, holds, admission limits, the dry run's plan, and
what the adapter's and the release's statuses make of them."""

from __future__ import annotations

from typing import Any

from relora_operator import rollout, views
from relora_operator.decisions import Candidate, admit, plan_adapter, steer
from relora_operator.outcome import Observed
from relora_operator.release_status import Steering, canary_event, release_status
from relora_operator.settings import Settings
from relora_operator.status import adapter_status

from tests.operator.factories import adapter_body, job, release_body, worker_summary

S = Settings.from_env({"RELORA_MAX_CONCURRENT_JOBS": "10", "RELORA_MAX_CONCURRENT_JOBS_PER_RELEASE": "2"})
NOW = "2026-01-02T00:20:00Z"


def rel(version: str = "v2", status: dict[str, Any] | None = None, **rollout_spec: Any) -> views.ReleaseView:
    body = release_body(version, created=f"2026-01-0{int(version[1:])}T00:00:00Z", status=status)
    body["spec"]["rollout"] = rollout_spec
    return views.release_view(body)


def member(name: str, labels: dict[str, str] | None = None, **status: Any) -> views.AdapterView:
    body = adapter_body(name, status=status or None)
    body["metadata"]["labels"] = labels or {}
    return views.adapter_view(body)


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def ready_for(version: str) -> dict[str, Any]:
    return {"targetRelease": version, "phase": "Ready"}


def failed_for(version: str, reason: str = "BelowThreshold") -> dict[str, Any]:
    return {"targetRelease": version, "phase": "Degraded", "conditions": [{"type": "Ready", "reason": reason}]}


def test_canary_members_by_selector_and_percent() -> None:
    family = [member(f"a{i}", {"tier": "canary" if i < 4 else "main"}) for i in range(10)]
    by_label = rel(canary={"selector": {"tier": "canary"}})
    assert rollout.canary_members(by_label, family) == {"a0", "a1", "a2", "a3"}
    # 25 % of the 4 selected, rounded up: 1; 25 % of all 10: 3.
    assert len(rollout.canary_members(rel(canary={"selector": {"tier": "canary"}, "percent": 25}), family)) == 1
    some = rollout.canary_members(rel(canary={"percent": 25}), family)
    assert len(some) == 3
    # Stable: the same release picks the same adapters in any order of the family; another release picks its own.
    assert rollout.canary_members(rel(canary={"percent": 25}), list(reversed(family))) == some
    others = {frozenset(rollout.canary_members(rel(f"v{i}", canary={"percent": 25}), family)) for i in range(2, 9)}
    assert len(others) > 1
    assert rollout.canary_members(rel(), family) == frozenset()


def test_gate_passes_fails_or_waits() -> None:
    canary = {"selector": {"tier": "canary"}, "successFraction": 0.5}
    release = rel(canary=canary)

    def gate(*statuses: dict[str, Any]) -> rollout.Gate:
        family = [member(f"c{i}", {"tier": "canary"}, **s) for i, s in enumerate(statuses)] + [member("main")]
        return rollout.canary_gate(release, family)

    pending = gate({}, {}, {}, {})
    assert pending.state == "Pending" and pending.required == 2 and not pending.open
    passed = gate(ready_for("v2"), ready_for("v2"), {}, {})
    assert passed.state == "Passed" and passed.open
    # Ready for another release does not count.
    assert gate(ready_for("v1"), ready_for("v2"), {}, {}).state == "Pending"
    failed = gate(failed_for("v2"), failed_for("v2", "JobFailed"), failed_for("v2"), ready_for("v2"))
    assert failed.state == "Failed" and failed.failures == (
        "c0 (BelowThreshold)",
        "c1 (JobFailed)",
        "c2 (BelowThreshold)",
    )
    assert "c1 (JobFailed)" in failed.message and "1/4 of the canary Ready" in failed.message
    # Passing is remembered: a canary adapter that regresses later does not stop the rollout again.
    remembered = rel(canary=canary, status={"rollout": {"canary": {"state": "Passed"}}})
    family = [member(f"c{i}", {"tier": "canary"}, **failed_for("v2")) for i in range(4)]
    assert rollout.canary_gate(remembered, family).state == "Passed"
    # A canary that selects nothing halts with a message saying so.
    empty = rollout.canary_gate(rel(canary={"selector": {"tier": "none"}}), [member("main")])
    assert empty.state == "Failed" and "selects none" in empty.message
    assert rollout.canary_gate(rel(), [member("main")]).state == ""


def test_holds_in_order_dry_run_paused_canary() -> None:
    gate = rollout.Gate("Pending", frozenset({"c"}), message="0/1 of the canary Ready")
    assert rollout.hold_of(rel(dryRun=True, paused=True), gate, "c").reason == "DryRun"
    assert rollout.hold_of(rel(paused=True), gate, "c").reason == "RolloutPaused"
    assert rollout.hold_of(rel(), gate, "c") is None  # in the canary
    assert rollout.hold_of(rel(), gate, "x").reason == "WaitingForCanary"
    halted = rollout.hold_of(rel(), rollout.Gate("Failed", frozenset({"c"}), message="c (JobFailed)"), "x")
    assert halted.reason == "CanaryFailed" and halted.halted and "c (JobFailed)" in halted.message
    assert rollout.hold_of(rel(), rollout.Gate("Passed", frozenset({"c"})), "x") is None
    assert rollout.promotion_held(gate, "x") and not rollout.promotion_held(gate, "c")


def _candidates(release: views.ReleaseView, names: list[str]) -> list[Candidate]:
    fam = [rel("v1"), release]
    out = []
    for i, name in enumerate(names):
        a = views.adapter_view(adapter_body(name, created=f"2026-01-01T00:00:0{i}Z"))
        out.append(Candidate(a, plan_adapter(a, fam, S)))
    return out


def test_admission_follows_the_rollout() -> None:
    names = ["c", "x", "y", "z"]
    cands = _candidates(rel(), names)
    plans = {c.adapter.name: c.plan for c in cands}
    assert steer(plans, rel(paused=True), rollout.Gate()) == {}
    assert steer(plans, rel(dryRun=True), rollout.Gate()) == {}
    assert list(steer(plans, rel(), rollout.Gate("Pending", frozenset({"c"})))) == ["c"]
    assert list(steer(plans, rel(), rollout.Gate("Failed", frozenset({"c"})))) == ["c"]
    assert list(steer(plans, rel(), rollout.Gate("Passed"))) == names
    # maxConcurrent replaces the per-release setting (2), up or down; the operator-wide limit (10) still holds.
    assert len(admit(cands, 0, 0, S)) == 2
    assert len(admit(cands, 0, 0, S, release_limit=3)) == 3
    assert len(admit(cands, 0, 1, S, release_limit=1)) == 0
    assert len(admit(cands, 9, 0, S, release_limit=4)) == 1


def test_dry_run_plan_estimates_from_the_familys_finished_jobs() -> None:
    release = rel(dryRun=True)
    fam = [rel("v1"), release]
    gpus = {"a": 2, "b": None}
    adapters = [views.adapter_view(adapter_body(n, resources={"gpus": g} if g else {})) for n, g in gpus.items()]
    plans = {a.name: plan_adapter(a, fam, S) for a in adapters}
    unknown = rollout.dry_run_plan(adapters, plans, default_gpus=1)
    assert unknown["total"] == 2 and unknown["estimatedGpuHours"] == "unknown"
    assert {e["adapter"]: e["estimatedGpuHours"] for e in unknown["adapters"]} == {"a": "unknown", "b": "unknown"}

    def ran(minutes: int) -> dict[str, Any]:
        return {"startedAt": "2026-01-01T00:00:00Z", "finishedAt": f"2026-01-01T00:{minutes:02d}:00Z"}

    runs = [("v0", 30), ("v1", 60 - 1), ("v9", 10)]  # median: 30 minutes
    history = {"releases": [{"release": r, "phase": "Ready", **ran(m)} for r, m in runs]}
    done = [
        views.adapter_view(
            adapter_body(a.name, status=history, **({"resources": {"gpus": 2}} if a.name == "a" else {}))
        )
        for a in adapters
    ]
    plan = rollout.dry_run_plan(done, {a.name: plan_adapter(a, fam, S) for a in done}, default_gpus=1)
    assert {e["adapter"]: (e["gpus"], e["estimatedGpuHours"]) for e in plan["adapters"]} == {
        "a": (2, "1.00"),
        "b": (1, "0.50"),
    }
    assert plan["estimatedGpuHours"] == "1.50" and "median of 6 finished Job(s)" in plan["basis"]
    assert plan["adapters"][0]["fromRelease"] == "v1"


def _status(a: views.AdapterView, release: views.ReleaseView, **seen: Any) -> tuple[dict[str, Any], Any]:
    plan = plan_adapter(a, [rel("v1"), release], S)
    gate = seen.pop("gate", rollout.Gate())
    observed = Observed(
        hold=rollout.hold_of(release, gate, a.name),
        promotion_held=rollout.promotion_held(gate, a.name),
        **{k: v(plan) for k, v in seen.items()},
    )
    return adapter_status(a, plan, observed, NOW)


SUMMARY = worker_summary(status="ready", exit_code=0, quality=0.9, threshold=0.8, adapter_uri="s3://out/v2/")


def test_adapter_status_says_what_holds_it() -> None:
    status, out = _status(member("x"), rel(paused=True))
    assert (status["phase"], out.reason) == ("Queued", "RolloutPaused") and "still serving" in status["message"]
    status, out = _status(member("x"), rel(dryRun=True))
    assert out.reason == "DryRun"
    halted = rollout.Gate("Failed", frozenset({"c"}), message="c (JobFailed)")
    status, out = _status(member("x"), rel(), gate=halted)
    assert out.reason == "CanaryFailed" and not out.progressing and "c (JobFailed)" in status["message"]


def test_a_ready_result_outside_the_canary_is_served_only_after_the_gate() -> None:
    pending = rollout.Gate("Pending", frozenset({"c"}), message="0/1")
    before = {"served": {"release": "v1", "adapterUri": "s3://adapters/sentiment/"}}
    a = member("x", **before)
    # Its Job finished Ready (created before the canary was set): recorded, not served.
    status, out = _status(
        a,
        rel(),
        gate=pending,
        job=lambda p: job(p.adaptation.job_name, state="Succeeded"),
        projection=lambda p: job(p.projection.job_name, state="Succeeded"),
        summary=lambda p: SUMMARY,
    )
    assert out.reason == "WaitingForCanary" and status["phase"] == "Queued"
    assert status["served"]["release"] == "v1" and status["adapterUri"] == "s3://adapters/sentiment/"
    entry = status["releases"][0]
    assert (entry["phase"], entry["reason"], entry["adapterUri"], entry["current"]) == (
        "Ready",
        "WaitingForCanary",
        "s3://out/v2/",
        True,
    )
    assert "served" not in entry and _cond(status, "Promoted")["status"] == "False"
    # Next pass, still pending: the recorded result is not promoted.
    held = member("x", **status)
    again, out2 = _status(held, rel(), gate=pending)
    assert out2.reason == "WaitingForCanary" and again["served"]["release"] == "v1"
    # The gate passed: promoted without a Job.
    promoted, out3 = _status(held, rel(), gate=rollout.Gate("Passed", frozenset({"c"})))
    assert out3.reason == "CanaryPassed" and out3.ready
    assert promoted["served"]["adapterUri"] == "s3://out/v2/" and promoted["readyRelease"] == "v2"
    assert promoted["releases"][0]["served"] and _cond(promoted, "Promoted")["reason"] == "CanaryPassed"
    assert (
        "from s3://adapters/sentiment/ (release v1, as given) to s3://out/v2/" in _cond(promoted, "Promoted")["message"]
    )


def test_release_status_shows_the_steering() -> None:
    gate = rollout.Gate("Failed", frozenset({"c"}), 0, ("c (JobFailed)",), 1, "0/1 of the canary Ready; c (JobFailed)")
    release = rel(canary={"selector": {"tier": "canary"}})
    members = [member("c", **failed_for("v2", "JobFailed")), member("x")]
    st = release_status(
        release,
        newest=True,
        supersedes="v1",
        adapters=members,
        projections=[],
        now=NOW,
        steering=Steering(gate, None, 2),
    )
    assert st["phase"] == "Halted"
    canary = next(c for c in st["conditions"] if c["type"] == "CanaryPassed")
    assert canary["status"] == "False" and canary["reason"] == "CanaryFailed" and "c (JobFailed)" in canary["message"]
    assert st["rollout"]["canary"]["failures"] == ["c (JobFailed)"] and st["rollout"]["maxConcurrent"] == 2
    paused = release_status(
        rel(paused=True), newest=True, supersedes="v1", adapters=[member("x")], projections=[], now=NOW
    )
    assert paused["phase"] == "Paused" and paused["rollout"]["paused"] is True
    progressing = next(c for c in paused["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "Paused")
    assert next(c for c in st["conditions"] if c["type"] == "Progressing")["reason"] == "Halted"
    assert not any(c["type"] == "CanaryPassed" for c in paused["conditions"])


def test_canary_events_on_the_gates_transitions() -> None:
    pending = {"rollout": {"canary": {"state": "Pending"}}}
    failed = {"rollout": {"canary": {"state": "Failed", "message": "c (JobFailed)"}}}
    assert canary_event(pending, failed) == (
        "Warning",
        "CanaryFailed",
        "rollout halted, the canary failed: c (JobFailed)",
    )
    assert canary_event(failed, failed) is None and canary_event({}, pending) is None
    assert canary_event(failed, {"rollout": {"canary": {"state": "Passed", "message": "1/1"}}})[1] == "CanaryPassed"


def test_durations_are_humanised() -> None:
    from relora_operator.conditions import human_duration

    cases = {1.5: "1.5s", 42: "42s", 252: "4m12s", 240: "4m", 7500: "2h5m", 3600: "1h", 273600: "3d4h", None: None}
    assert {s: human_duration(s) for s in cases} == cases


def test_release_lists_pending_and_failed_adapters() -> None:
    members = [
        member("b-wait", **{"targetRelease": "v2", "phase": "Adapting"}),
        member("a-old", **ready_for("v1")),
        member("ok", **ready_for("v2")),
        member("bad", **failed_for("v2", "JobFailed")),
    ]
    st = release_status(rel(), newest=True, supersedes="v1", adapters=members, projections=[], now=NOW)
    assert st["pendingAdapters"] == ["a-old", "b-wait"] and st["failedAdapters"] == ["bad (JobFailed)"]
    many = [member(f"p{i:02d}") for i in range(30)]
    st = release_status(rel(), newest=True, supersedes="v1", adapters=many, projections=[], now=NOW)
    assert len(st["pendingAdapters"]) == rollout.LISTED and st["adapters"]["queued"] == 30
    assert "rolloutDuration" not in st  # only once complete


def test_releases_one_entry_per_release_pruned_never_the_served_one() -> None:
    from relora_operator import adapter_releases as ar

    served = {"release": "v1", "adapterUri": "s3://v1/"}
    entries: list[dict[str, Any]] = []
    for v in ("v1", "v2", "v3", "v4"):
        entries = ar.upsert(entries, {"release": v, "phase": "Ready", "adapterUri": f"s3://{v}/"}, 3, served)
    # Newest first, at most 3: v2, the oldest not served, is pruned; v1 is served and stays.
    assert [e["release"] for e in entries] == ["v4", "v3", "v1"]
    # A later result for the same release replaces its entry (and comes first).
    entries = ar.upsert(entries, {"release": "v3", "phase": "Degraded", "job": "j2"}, 3, served)
    assert [(e["release"], e["phase"]) for e in entries] == [("v3", "Degraded"), ("v4", "Ready"), ("v1", "Ready")]
    marked = ar.mark(entries, served, "v4", None)
    assert [(e["release"], e.get("current"), e.get("served")) for e in marked] == [
        ("v3", None, None),
        ("v4", True, None),
        ("v1", None, True),
    ]
    # The per-Job history of older objects: the newest entry per release, its outcome as phase and reason.
    old = [
        {"release": "v2", "outcome": "BelowThreshold", "job": "b", "timeToReadinessSeconds": 252},
        {"release": "v2", "outcome": "Ready", "job": "a"},
        {"release": "v1", "outcome": "Ready", "job": "c"},
    ]
    assert [(e["release"], e["phase"], e["reason"], e["job"]) for e in ar.from_history(old)] == [
        ("v2", "Degraded", "BelowThreshold", "b"),
        ("v1", "Ready", "Readapted", "c"),
    ]
    assert ar.from_history(old)[0]["timeToReadiness"] == "4m12s"
