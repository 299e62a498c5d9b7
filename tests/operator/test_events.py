"""The operator's Events: what a status transition posts (reconcile.announce) and the Event's shape."""

from __future__ import annotations

from typing import Any

import pytest
from relora_operator import events, reconcile

OWNER = {
    "apiVersion": "relora.dev/v1alpha1",
    "kind": "TaskAdapter",
    "metadata": {"name": "sentiment", "namespace": "team-a", "uid": "u-1"},
}


def _st(phase: str, reason: str) -> dict[str, Any]:
    return {"phase": phase, "conditions": [{"type": "Ready", "reason": reason, "status": "False"}]}


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    sent: list[tuple[str, str]] = []
    monkeypatch.setattr(events, "post", lambda owner, kind, reason, message: sent.append((kind, reason)))
    return sent


def test_a_job_start_is_no_event_per_adapter(posted: list[tuple[str, str]]) -> None:
    # Waiting -> Adapting: reported once per pass by the release's JobsCreated Event, not per adapter.
    assert not reconcile.announce(OWNER, _st("Queued", "Queued"), _st("Adapting", "Adapting"))
    assert not reconcile.announce(OWNER, _st("WaitingForProjection", "WaitingForProjection"), _st("Adapting", "X"))
    assert posted == []


def test_outcomes_and_leaving_ready_are_events(posted: list[tuple[str, str]]) -> None:
    ready = {"phase": "Ready", "conditions": [{"type": "Ready", "reason": "Readapted", "status": "True"}]}
    assert reconcile.announce(OWNER, _st("Adapting", "Adapting"), ready)
    assert reconcile.announce(OWNER, ready, _st("WaitingForProjection", "WaitingForProjection"))
    assert reconcile.announce(OWNER, _st("Adapting", "Adapting"), _st("Degraded", "BelowThreshold"))
    assert posted == [("Normal", "Readapted"), ("Normal", "WaitingForProjection"), ("Warning", "BelowThreshold")]


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
    events.post(OWNER, "Normal", "Readapted", "no loop here")  # e.g. a unit test calling announce directly
