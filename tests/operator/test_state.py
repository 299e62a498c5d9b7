"""OperatorState: the operator's in-memory bookkeeping between passes (one object, made once per process)."""

from __future__ import annotations

import dataclasses

from relora_operator import identity, views
from relora_operator import state as state_module
from relora_operator.decisions import plan_adapter
from relora_operator.identity import ModelCheck
from relora_operator.settings import Settings
from relora_operator.state import OperatorState

from tests.operator.factories import adapter, release_body, releases

S = Settings.from_env({})


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
    assert one.refusals is not two.refusals and one.identities is not two.identities
    assert one.events is not two.events


def test_forget_drops_the_last_hand_off_too() -> None:
    state = OperatorState()
    state.handoffs["uid"] = (("config_map", "{}", None, 1), "True", 0.0)
    state.forget("uid")
    assert state.handoffs == {}


def test_a_digest_this_process_read_is_what_the_plans_see_before_the_status_has_it() -> None:
    body = release_body("v9")
    body["status"] = {}  # its pass has not written modelDigest yet
    unread = views.release_view(body)
    one, two = OperatorState(), OperatorState()
    one.identities.checks[unread.uid] = ModelCheck(unread.model_uri, "sha256:abc", None, 1.0)
    known = one.identities.known(unread)
    assert identity.identity_of(known) == identity.compute(unread.uid, unread.model_uri, "sha256:abc")
    assert plan_adapter(adapter(), [*releases("v1"), known], S).kind != "Verifying"
    # Another process (another test) knows nothing of it: the plan waits for the read.
    assert two.identities.known(unread) is unread and identity.identity_of(unread) is None
    assert plan_adapter(adapter(), [*releases("v1"), two.identities.known(unread)], S).kind == "Verifying"
    # A read of another model URI (the release was re-applied since) is not this release's digest.
    moved = dataclasses.replace(unread, model_uri="s3://models/llama/v9b/")
    assert one.identities.check(moved) is None and one.identities.known(moved) is moved
