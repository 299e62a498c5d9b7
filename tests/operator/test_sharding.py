"""Shard assignment: the hash, the fair share and the expiry judgement of the lease loop (``sharding.plan``).

The loop's API calls and the takeover are tested on the real control plane (test_cluster_sharding.py).
"""

from __future__ import annotations

import collections
from typing import Any

from relora_operator.sharding import LABEL_LEASE, Sharding, shard_of


def lease(name: str, holder: str, version: str, kind: str = "shard") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "resourceVersion": version, "labels": {LABEL_LEASE: kind}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15},
    }


def member(identity: str, version: str) -> dict[str, Any]:
    return lease(Sharding(4, identity=identity).member_lease(), identity, version, "member")


def test_shard_of_is_stable_and_spreads_families() -> None:
    assert shard_of("ns", "llama", 1) == 0
    assert shard_of("ns", "llama", 8) == shard_of("ns", "llama", 8)  # a pure function of its inputs
    counts = collections.Counter(shard_of("ns", f"family-{i}", 4) for i in range(400))
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 60
    assert len({shard_of(ns, "llama", 64) for ns in ("a", "b", "c", "d", "e", "f")}) > 1  # the namespace counts


def test_without_sharding_every_family_is_owned() -> None:
    s = Sharding(1, identity="a")
    assert not s.enabled and s.owns("ns", "anything")


def test_alone_a_replica_takes_every_free_shard() -> None:
    s = Sharding(4, identity="a")
    renew, release, acquire = s.plan([], now=0.0)
    assert (renew, release) == ([], []) and sorted(acquire) == [0, 1, 2, 3]


def test_a_live_holder_keeps_its_shards_and_the_newcomer_takes_the_rest() -> None:
    b = Sharding(4, identity="b")
    leases = [member("a", "1"), *(lease(b.shard_lease(i), "a", f"v{i}") for i in (0, 1)), member("b", "2")]
    renew, release, acquire = b.plan(leases, now=0.0)
    assert (renew, release, sorted(acquire)) == ([], [], [2, 3])


def test_more_than_the_fair_share_is_given_up_when_a_replica_joins() -> None:
    a = Sharding(4, identity="a")
    leases = [member("a", "1"), member("b", "2"), *(lease(a.shard_lease(i), "a", f"v{i}") for i in range(4))]
    renew, release, acquire = a.plan(leases, now=0.0)
    assert len(renew) == 2 and len(release) == 2 and acquire == []


def test_a_dead_holders_shards_are_taken_after_the_lease_duration_unchanged() -> None:
    b = Sharding(2, identity="b", lease_seconds=15)
    dead = [member("a", "1"), lease(b.shard_lease(0), "a", "7"), member("b", "2")]
    live = [member("b", "3"), lease(b.shard_lease(1), "b", "8")]
    # First sight of a's Leases: not expired yet, whatever their renewTime says (no clock comparison).
    assert b.plan([*dead, *live], now=100.0)[2] == []
    # Unchanged for less than the duration: still a's.
    assert b.plan([*dead, *live], now=110.0)[2] == []
    # Renewed meanwhile (a new resourceVersion): the clock starts again.
    renewed = [member("a", "4"), lease(b.shard_lease(0), "a", "9"), member("b", "2")]
    assert b.plan([*renewed, *live], now=114.0)[2] == []
    assert b.plan([*renewed, *live], now=125.0)[2] == []
    # Unchanged for longer than leaseDurationSeconds: a is gone, b's fair share is both shards.
    renew, release, acquire = b.plan([*renewed, *live], now=130.0)
    assert (renew, release, acquire) == ([1], [], [0])


def test_a_released_shard_is_free_at_once() -> None:
    b = Sharding(2, identity="b")
    leases = [member("a", "1"), member("b", "2"), lease(b.shard_lease(0), "", "5"), lease(b.shard_lease(1), "a", "6")]
    assert b.plan(leases, now=0.0)[2] == [0]


def test_ownership_lapses_before_anyone_else_may_take_over() -> None:
    s = Sharding(2, identity="a", lease_seconds=15)
    s.held[0] = 0.0
    assert s.owns_shard(0) is False  # renewed at monotonic 0, long ago
    import time

    s.held[0] = time.monotonic()
    assert s.owns_shard(0) and not s.owns_shard(1)
    # It stops acting lease_seconds - 2 rounds after its renewal: before the others' lease_seconds can pass.
    s.held[0] = time.monotonic() - (15 - 2 * s.round_seconds) - 0.01
    assert not s.owns_shard(0)


def test_dead_members_are_tidied_after_ten_durations() -> None:
    s = Sharding(2, identity="b", lease_seconds=1)
    leases = [member("a", "1"), member("b", "2")]
    s.plan(leases, now=0.0)
    assert s.dead_members(leases, now=5.0) == []
    assert s.dead_members(leases, now=11.0) == [Sharding(2, identity="a").member_lease()]
