"""OperatorState: the operator's in-memory bookkeeping between passes (one object, made once per process)."""

from __future__ import annotations

from relora_operator import state as state_module
from relora_operator.state import OperatorState


def test_in_flight_until_the_index_or_the_watch_shows_the_job() -> None:
    state = OperatorState()
    state.created("ns", "a")
    state.created("ns", "b")
    state.created("ns", "c")
    assert state.in_flight({}) == [("ns", "a"), ("ns", "b"), ("ns", "c")]
    assert state.in_flight({("ns", "a"): ["job a"]}) == [("ns", "b"), ("ns", "c")]  # the index has it
    state.seen_job("ns", "b")  # the watch reported it (even a deletion)
    assert state.in_flight({}) == [("ns", "c")]
    # A create whose watch event never came stops counting after RECENT_TTL.
    state.recently_created[("ns", "c")] -= state_module.RECENT_TTL + 1
    assert state.in_flight({}) == [] and not state.is_in_flight("ns", "c")


def test_states_share_nothing_and_forget_drops_an_objects_memory() -> None:
    one, two = OperatorState(), OperatorState()
    one.written["uid"] = {"phase": "Ready"}
    lock = one.adapter_lock("uid")
    assert one.adapter_lock("uid") is lock and two.adapter_lock("uid") is not lock
    assert one.family_lock("ns", "f") is one.family_lock("ns", "f")
    assert two.written == {} and two.admission is not one.admission
    one.forget("uid")
    assert one.written == {} and "uid" not in one.adapter_locks
