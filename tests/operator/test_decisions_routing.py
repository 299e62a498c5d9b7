"""The routing rules of decisions: which re-adaptation may be admitted, when an adapter's result is recorded, which
watch event starts which pass. Pure functions on views: no cluster, no API calls."""

from __future__ import annotations

import dataclasses

from relora_operator import decisions, improve
from relora_operator.settings import Settings
from relora_operator.views import PodView

from tests.operator.factories import NS, adapter, job, releases

S = Settings.from_env({"RELORA_JOB_BACKOFF_LIMIT": "2"})


def _adapt_plan(**kwargs: object) -> tuple:  # type: ignore[type-arg]
    a = adapter(**kwargs)  # type: ignore[arg-type]
    plan = decisions.plan_adapter(a, releases("v1", "v2"), S)
    assert plan.kind == "Adapt" and plan.projection is not None
    return a, plan


def test_an_adaptation_is_due_once_its_projection_completed_and_its_job_is_absent() -> None:
    a, plan = _adapt_plan()
    done, running = job("p", component="projection", state="Succeeded"), job("p", component="projection")
    assert decisions.adaptation_due(a, plan, False, done, S)
    assert not decisions.adaptation_due(a, plan, True, done, S)  # exists, in flight or refused
    assert not decisions.adaptation_due(a, plan, False, running, S)  # the projection still runs
    assert not decisions.adaptation_due(a, plan, False, None, S)  # the projection Job is not there yet
    failed = job("p", component="projection", state="Failed")
    assert not decisions.adaptation_due(a, plan, False, failed, S)


def test_a_strategy_without_projection_is_due_at_once_and_other_plans_never() -> None:
    a, _ = _adapt_plan()
    direct = decisions.plan_adapter(adapter(strategy={"name": "transfer-ft"}), releases("v1", "v2"), S)
    assert direct.projection is None and decisions.adaptation_due(a, direct, False, None, S)
    as_given = decisions.plan_adapter(a, releases("v1"), S)
    assert as_given.kind == "AsGiven" and not decisions.adaptation_due(a, as_given, False, None, S)


def test_a_lost_job_is_recreated_up_to_the_backoff_limit() -> None:
    _, plan = _adapt_plan()
    name = plan.adaptation.job_name
    done = job("p", component="projection", state="Succeeded")
    lost_once = adapter(status={"job": name, "phase": "Adapting", "lostJobs": 1})
    lost_twice = adapter(status={"job": name, "phase": "Adapting", "lostJobs": 2})
    assert decisions.adaptation_due(lost_once, plan, False, done, S)
    assert not decisions.adaptation_due(lost_twice, plan, False, done, S)


def test_result_recorded_only_for_the_status_job_in_a_final_phase() -> None:
    finished = job("ra-1", state="Succeeded")
    ready = {"job": "ra-1", "phase": "Ready", "conditions": [{"type": "Ready", "reason": "Readapted"}]}
    assert decisions.result_recorded(ready, finished)
    assert decisions.result_recorded({**ready, "phase": "Failed"}, finished)
    assert not decisions.result_recorded({**ready, "job": "ra-0"}, finished)  # another Job's outcome
    assert not decisions.result_recorded({**ready, "phase": "Adapting"}, finished)
    assert not decisions.result_recorded(ready, None)
    improving = {**ready, "conditions": [{"type": "Ready", "reason": improve.IMPROVING}]}
    assert not decisions.result_recorded(improving, finished)  # Ready early: the Job's end is still to read


def test_waiting_on_the_running_job_else_the_running_projection() -> None:
    run, done = job("ra"), job("ra", state="Succeeded")
    proj_run, proj_done = job("p", component="projection"), job("p", component="projection", state="Succeeded")
    assert decisions.waiting_on(run, proj_done) is run
    assert decisions.waiting_on(None, proj_run) is proj_run
    assert decisions.waiting_on(done, proj_run) is proj_run
    assert decisions.waiting_on(done, proj_done) is None
    assert decisions.waiting_on(None, None) is None


def test_adapter_events_sync_new_generations_and_forget_deletions() -> None:
    a = adapter()
    edited = dataclasses.replace(a, generation=a.generation + 1)
    assert decisions.adapter_event(None, a) == "sync"  # created
    assert decisions.adapter_event(a, edited) == "sync"
    assert decisions.adapter_event(a, dataclasses.replace(a, status={"phase": "Ready"})) is None  # status only
    assert decisions.adapter_event(a, None) == "forget"
    assert decisions.adapter_event(None, None) is None


def test_job_events_route_a_finished_job_once() -> None:
    proj_run, proj_done = job("p", component="projection"), job("p", component="projection", state="Succeeded")
    run, failed = job("ra"), job("ra", state="Failed")
    assert decisions.job_event(proj_run, proj_done) == "family"
    assert decisions.job_event(run, failed) == "adapter"
    assert decisions.job_event(None, failed) == "adapter"  # first seen finished (e.g. after a restart)
    assert decisions.job_event(failed, failed) is None  # already finished: a label or status echo
    assert decisions.job_event(None, run) is None and decisions.job_event(run, None) is None
    assert decisions.job_event(None, job("x", component="other", state="Succeeded")) is None


def test_a_pod_event_counts_once_its_exit_code_first_shows() -> None:
    running = PodView(NS, "ra-x", "ra", "Running", None, None, None)
    ended = dataclasses.replace(running, phase="Succeeded", exit_code=0, finished_at="2026-01-01T00:00:00Z")
    assert decisions.pod_just_ended(running, ended) and decisions.pod_just_ended(None, ended)
    assert not decisions.pod_just_ended(ended, ended)
    assert not decisions.pod_just_ended(None, running) and not decisions.pod_just_ended(ended, None)


def test_is_newest_of_the_family() -> None:
    fam = releases("v1", "v2")
    assert decisions.is_newest(fam[1], fam) and not decisions.is_newest(fam[0], fam)
    assert not decisions.is_newest(fam[0], [])
