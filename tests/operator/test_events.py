"""The operator's Events: what a status transition posts (reconcile.announce) and the Event's shape."""

from __future__ import annotations

from typing import Any

import pytest
from relora_operator import events, reconcile
from relora_operator.state import OperatorState

OWNER = {
    "apiVersion": "relora.dev/v1alpha1",
    "kind": "TaskAdapter",
    "metadata": {"name": "sentiment", "namespace": "team-a", "uid": "u-1"},
}


def _st(phase: str, reason: str) -> dict[str, Any]:
    return {"phase": phase, "conditions": [{"type": "Ready", "reason": reason, "status": "False"}]}


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> OperatorState:
    """The test's own operator state, whose Events are recorded in ``state.sent`` instead of posted."""
    own = OperatorState()
    sent: list[tuple[str, str, str]] = []
    monkeypatch.setattr(own.events, "post", lambda owner, kind, reason, message: sent.append((kind, reason, message)))
    own.sent = sent  # type: ignore[attr-defined]
    return own


def _posted(state: OperatorState) -> list[tuple[str, str]]:
    return [(kind, reason) for kind, reason, _ in state.sent]  # type: ignore[attr-defined]


def test_a_job_start_is_no_event_per_adapter(state: OperatorState) -> None:
    # Waiting -> Adapting: reported once per pass by the release's JobsCreated Event, not per adapter.
    assert not reconcile.announce(state, OWNER, _st("Queued", "Queued"), _st("Adapting", "Adapting"))
    waiting = _st("WaitingForProjection", "WaitingForProjection")
    assert not reconcile.announce(state, OWNER, waiting, _st("Adapting", "X"))
    assert _posted(state) == []


def test_outcomes_and_leaving_ready_are_events(state: OperatorState) -> None:
    ready = {"phase": "Ready", "conditions": [{"type": "Ready", "reason": "Readapted", "status": "True"}]}
    assert reconcile.announce(state, OWNER, _st("Adapting", "Adapting"), ready)
    assert reconcile.announce(state, OWNER, ready, _st("WaitingForProjection", "WaitingForProjection"))
    assert reconcile.announce(state, OWNER, _st("Adapting", "Adapting"), _st("Degraded", "BelowThreshold"))
    expected = [("Normal", "Readapted"), ("Normal", "WaitingForProjection"), ("Warning", "BelowThreshold")]
    assert _posted(state) == expected


def test_event_body_names_the_object_and_the_operator() -> None:
    body = events.event_body(OWNER, "Warning", "BelowThreshold", "x" * 5000)
    assert body["involvedObject"] == {
        "apiVersion": "relora.dev/v1alpha1",
        "kind": "TaskAdapter",
        "name": "sentiment",
        "namespace": "team-a",
        "uid": "u-1",
    }
    assert body["metadata"] == {"generateName": "sentiment.", "namespace": "team-a"}
    assert (body["type"], body["reason"], len(body["message"])) == ("Warning", "BelowThreshold", 1024)
    assert body["source"] == {"component": "relora-operator"} and body["reportingComponent"] == "relora-operator"


def test_posting_outside_an_event_loop_is_a_no_op() -> None:
    poster = events.Events()
    poster.post(OWNER, "Normal", "Readapted", "no loop here")  # e.g. a unit test calling announce directly
    assert not poster.pending and poster.drop_pending() == 0


def test_a_switch_of_the_served_artifact_rides_on_the_transitions_event(state: OperatorState) -> None:
    v1 = {"release": "v1", "adapterUri": "s3://a/v1/"}
    v2 = {"release": "v2", "adapterUri": "s3://a/v2/", "job": "ra-2"}
    promoted = {
        "type": "Promoted",
        "reason": "Readapted",
        "message": "switched from s3://a/v1/ (release v1, as "
        "given) to s3://a/v2/ (release v2, Job ra-2): ready for release v2",
        "status": "True",
    }
    ready = {"phase": "Ready", "served": v2, "conditions": [{"type": "Ready", "reason": "Readapted"}, promoted]}
    assert reconcile.announce(state, OWNER, {**_st("Adapting", "Adapting"), "served": v1}, ready)
    # Without a transition (same phase and reason), the switch is an Event of its own.
    assert reconcile.announce(state, OWNER, {**ready, "served": v1}, ready)
    assert state.sent == [  # type: ignore[attr-defined]
        ("Normal", "Readapted", "Ready: " + promoted["message"]),
        ("Normal", "ArtifactSwitched", promoted["message"]),
    ]
    assert not reconcile.announce(state, OWNER, ready, ready)
