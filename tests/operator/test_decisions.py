from __future__ import annotations

from relora_operator import identity, views
from relora_operator.decisions import (
    Candidate,
    admit,
    newest_release,
    plan_adapter,
    projection_groups,
    resolve_supersedes,
    running_adaptations,
)
from relora_operator.settings import Settings

from tests.operator.factories import adapter, job, release_body, releases

S = Settings.from_env({"RELORA_MAX_CONCURRENT_JOBS": "3", "RELORA_MAX_CONCURRENT_JOBS_PER_RELEASE": "2"})


def test_newest_release_and_supersedes() -> None:
    fam = releases("v1", "v2", "v3")
    assert newest_release(fam).version == "v3"
    assert resolve_supersedes(fam[2], fam) == "v2"  # no Complete release: the newest older one
    done = views.release_view(release_body("v1", created="2026-01-01T00:00:00Z", status={"phase": "Complete"}))
    assert resolve_supersedes(fam[2], [done, fam[1], fam[2]]) == "v1"
    explicit = views.release_view(release_body("v3", supersedes="v1", created="2026-01-03T00:00:00Z"))
    assert resolve_supersedes(explicit, fam) == "v1"
    assert resolve_supersedes(fam[0], fam) is None


def test_plan_kinds() -> None:
    assert plan_adapter(adapter(), [], S).kind == "NoRelease"
    assert plan_adapter(adapter(), releases("v1"), S).kind == "AsGiven"
    plan = plan_adapter(adapter(), releases("v1", "v2"), S)
    assert plan.kind == "Adapt" and plan.target.version == "v2" and plan.projection.from_release == "v1"
    served = {"served": {"release": "v2", "adapterUri": "s3://x/", "specHash": plan.spec_hash}}
    assert plan_adapter(adapter(status=served), releases("v1", "v2"), S).kind == "UpToDate"
    # Trained on a release that does not exist here.
    assert plan_adapter(adapter(trainedOnRelease="v0"), releases("v1", "v2"), S).kind == "MissingRelease"
    # Strategies without a delta need no projection.
    assert plan_adapter(adapter(strategy={"name": "transfer-ft"}), releases("v1", "v2"), S).projection is None


def test_chained_releases_start_from_the_served_adapter() -> None:
    fam = releases("v1", "v2", "v3")
    a = adapter(status={"served": {"release": "v2", "adapterUri": "s3://out/v2/", "specHash": "old"}})
    plan = plan_adapter(a, fam, S)
    assert plan.adaptation.source_adapter_uri == "s3://out/v2/"
    assert plan.projection.from_release == "v2" and plan.projection.to_release == "v3"


def test_spec_change_after_ready_readapts_from_the_original() -> None:
    a = adapter(status={"served": {"release": "v2", "adapterUri": "s3://out/v2/", "specHash": "stale"}})
    plan = plan_adapter(a, releases("v1", "v2"), S)
    assert plan.kind == "Adapt" and plan.adaptation.source_adapter_uri == "s3://adapters/sentiment/"


def test_same_targets_and_rank_share_one_projection() -> None:
    fam = releases("v1", "v2")
    plans = [
        plan_adapter(adapter("a"), fam, S),
        plan_adapter(adapter("b", targetModules=["v_proj", "q_proj"]), fam, S),
        plan_adapter(adapter("c", rank=8), fam, S),
        plan_adapter(adapter("d", targetModules=["o_proj"]), fam, S),
    ]
    groups = projection_groups(plans)
    assert len(groups) == 3
    assert plans[0].projection.job_name == plans[1].projection.job_name
    assert plans[0].adaptation.job_name != plans[1].adaptation.job_name


def _cands(*specs):  # type: ignore[no-untyped-def]
    fam = releases("v1", "v2")
    out = []
    for i, (name, prio, queue) in enumerate(specs):
        a = adapter(name, priority=prio, created=f"2026-01-01T00:00:0{i}Z", **({"queueName": queue} if queue else {}))
        out.append(Candidate(a, plan_adapter(a, fam, S)))
    return out


def test_admission_by_priority_within_limits() -> None:
    cands = _cands(("low", 0, None), ("high", 10, None), ("mid", 5, None), ("older-low", 0, None))
    assert [c.adapter.name for c in admit(cands, 0, 0, S)] == ["high", "mid"]  # per-release limit 2
    assert [c.adapter.name for c in admit(cands, 2, 0, S)] == ["high"]  # operator-wide limit 3
    assert admit(cands, 3, 0, S) == []
    # Same priority: the older adapter first.
    assert [c.adapter.name for c in admit(cands[:1] + cands[3:], 0, 1, S)] == ["low"]


def test_kueue_candidates_bypass_the_operator_limit() -> None:
    cands = _cands(("q1", 0, "queue"), ("q2", 0, "queue"), ("plain", 0, None))
    assert {c.adapter.name for c in admit(cands, 3, 2, S)} == {"q1", "q2"}


def test_running_counts_exclude_finished_kueue_and_projection() -> None:
    jobs = [
        job("a"),
        job("b", state="Succeeded"),
        job("c", kueue=True),
        job("p", component="projection"),
        job("d", release="v3"),
    ]
    assert running_adaptations(jobs) == 2
    assert running_adaptations(jobs, "v2") == 1


def _rollback_history(shash: str) -> dict:
    # The per-Job status.history written before status.releases: still read (adapter_releases.from_history).
    v2 = identity.identity_of(releases("v1", "v2")[1])
    history = [
        {"release": "v3", "outcome": "Ready", "job": "ra-3", "adapterUri": "s3://out/v3/", "specHash": shash},
        {"release": "v2", "outcome": "BelowThreshold", "job": "ra-2b", "adapterUri": "s3://o/v2b/", "specHash": shash},
        # Made for an earlier v2 (other weights, or deleted and re-created): never restored for today's v2.
        {"release": "v2", "outcome": "Ready", "job": "ra-2x", "adapterUri": "s3://o/v2x/", "specHash": shash,
         "releaseIdentity": "another-v2"},
        {"release": "v2", "outcome": "Ready", "job": "ra-2", "adapterUri": "s3://out/v2/", "specHash": shash,
         "releaseIdentity": v2},
    ]
    return {"served": {"release": "v3", "adapterUri": "s3://out/v3/", "specHash": shash}, "history": history}


def test_rollback_serves_the_adapter_already_made_for_the_release_again() -> None:
    shash = plan_adapter(adapter(), releases("v1", "v2"), S).spec_hash
    # v3 was deleted: v2 is the newest again, and a Ready adapter made for v2 from this spec is in the history.
    plan = plan_adapter(adapter(status=_rollback_history(shash)), releases("v1", "v2"), S)
    assert plan.kind == "Restored" and plan.target.version == "v2"
    assert plan.restored["adapterUri"] == "s3://out/v2/" and plan.restored["job"] == "ra-2"  # not the one below


def test_rollback_without_a_usable_history_readapts_from_the_adapter_as_given() -> None:
    # The history's adapters were made for another spec; the served one's release (v3) is gone.
    plan = plan_adapter(adapter(status=_rollback_history("another-spec")), releases("v1", "v2"), S)
    assert plan.kind == "Adapt" and plan.target.version == "v2"
    assert plan.adaptation.source_adapter_uri == "s3://adapters/sentiment/"
    assert plan.projection.from_release == "v1" and plan.projection.to_release == "v2"
    # Neither the served adapter's release nor the one it was trained on exists: nothing to start from.
    gone = plan_adapter(adapter(status=_rollback_history("x"), trainedOnRelease="v0"), releases("v1", "v2"), S)
    assert gone.kind == "MissingRelease" and "v0" in gone.message
