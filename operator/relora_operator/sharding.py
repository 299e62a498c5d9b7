"""Several replicas split the work: shards by a hash of (namespace, family), one coordination/v1 Lease per shard.

A family (its releases and adapters, and their Jobs) always belongs to one shard, so the decisions that need the
whole family (shared projections, admission by priority) stay in one process. Each replica renews a membership
Lease of its own and holds at most its fair share of shard Leases, ceil(shards / live replicas): when a replica
joins, the others give up their extra shards; when one dies, its Leases are not renewed and, once expired, the
survivors take them. Takeover time: at most ``lease_seconds`` (expiry) + ``lease_seconds / 3`` (the next
round), plus the first pass over the shard (see docs/operator.md, "Sharding").

Expiry is judged without comparing clocks (as client-go's leader election does): a Lease is expired when this
replica has seen its resourceVersion unchanged for ``lease_seconds``. A replica stops acting on a shard at
``lease_seconds - 2 * round`` after its last successful renewal by its own clock, i.e. before any other replica
can consider the Lease expired, so two replicas never act on one shard at the same time (even then, Job names
are deterministic and created only if absent, so no Job would be duplicated).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relora_operator import naming

logger = logging.getLogger(__name__)
LABEL_LEASE = "relora.dev/lease"  # "shard" or "member"


def shard_of(namespace: str, family: str, shards: int) -> int:
    """The shard of a family: a stable hash, the same in every replica and across restarts."""
    if shards <= 1:
        return 0
    digest = hashlib.sha256(f"{namespace}/{family}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Seen:
    version: str
    since: float  # local monotonic time this version was first seen


@dataclass
class Sharding:
    """Which shards this replica acts on now. ``shards <= 1``: all of them, no Leases."""

    shards: int
    namespace: str = "default"
    lease_seconds: float = 15.0
    identity: str = field(default_factory=default_identity)
    prefix: str = "relora-operator"
    on_acquired: Callable[[int], None] | None = None
    held: dict[int, float] = field(default_factory=dict)  # shard -> local monotonic time of the last renewal
    _seen: dict[str, _Seen] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.shards > 1

    @property
    def round_seconds(self) -> float:
        return self.lease_seconds / 3

    def owns(self, namespace: str, family: str) -> bool:
        if not self.enabled:
            return True
        return self.owns_shard(shard_of(namespace, family, self.shards))

    def owns_shard(self, shard: int) -> bool:
        if not self.enabled:
            return True
        renewed = self.held.get(shard)
        # Stop before anyone else may take over: they wait lease_seconds from their last sight of our renewal.
        return renewed is not None and time.monotonic() - renewed < self.lease_seconds - 2 * self.round_seconds

    def shard_lease(self, shard: int) -> str:
        return f"{self.prefix}-shard-{shard}"

    def member_lease(self) -> str:
        return f"{self.prefix}-member-{naming.digest(self.identity, 12)}"

    # --- one round: renew, count members, give up extras or take free shards ---

    def expired(self, lease: dict[str, Any], now: float) -> bool:
        name, version = lease["metadata"]["name"], lease["metadata"]["resourceVersion"]
        seen = self._seen.get(name)
        if seen is None or seen.version != version:
            self._seen[name] = seen = _Seen(version, now)
        duration = (lease.get("spec") or {}).get("leaseDurationSeconds") or self.lease_seconds
        return now - seen.since > duration

    def plan(self, leases: list[dict[str, Any]], now: float) -> tuple[list[int], list[int], list[int]]:
        """(renew, release, acquire) shard numbers for this round, from the Leases as listed."""
        by_name = {lease["metadata"]["name"]: lease for lease in leases}
        members = [
            lease
            for lease in leases
            if (lease["metadata"].get("labels") or {}).get(LABEL_LEASE) == "member"
            and (lease.get("spec") or {}).get("holderIdentity")
            and not self.expired(lease, now)
        ]
        live = len({m["spec"]["holderIdentity"] for m in members} | {self.identity})
        fair = math.ceil(self.shards / live)
        mine, free = [], []
        for shard in range(self.shards):
            lease = by_name.get(self.shard_lease(shard))
            holder = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
            if holder == self.identity:
                mine.append(shard)
            elif lease is None or not holder or self.expired(lease, now):
                free.append(shard)
        renew, release = mine[:fair], mine[fair:]
        # Spread the free shards: each replica starts its search at a different shard.
        offset = int(naming.digest(self.identity, 8), 16) % self.shards
        free.sort(key=lambda s: (s - offset) % self.shards)
        acquire = free[: max(0, fair - len(renew))]
        return renew, release, acquire


    def dead_members(self, leases: list[dict[str, Any]], now: float) -> list[str]:
        """Membership Leases not renewed for 10 lease durations (replicas that are gone)."""
        dead = []
        for lease in leases:
            name = lease["metadata"]["name"]
            seen = self._seen.get(name)
            member = (lease["metadata"].get("labels") or {}).get(LABEL_LEASE) == "member"
            if member and name != self.member_lease() and seen and now - seen.since > 10 * self.lease_seconds:
                dead.append(name)
        return dead


class LeaseClient:
    """The coordination/v1 calls of the lease loop (blocking; run in threads)."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client

        self.api = client.CoordinationV1Api(api)
        self.namespace = namespace

    def delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api.delete_namespaced_lease(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def list(self, selector: str) -> list[dict[str, Any]]:
        items = self.api.list_namespaced_lease(self.namespace, label_selector=selector).items
        return [self.api.api_client.sanitize_for_serialization(i) for i in items]

    def write(self, name: str, kind: str, holder: str, seconds: float, version: str | None) -> bool:
        """Creates (version None) or replaces (optimistic: only at ``version``) the Lease; False on conflict."""
        from kubernetes.client.exceptions import ApiException

        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "labels": {LABEL_LEASE: kind, naming.LABEL_MANAGED: naming.MANAGED_BY}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": math.ceil(seconds), "renewTime": _now()},
        }
        try:
            if version is None:
                self.api.create_namespaced_lease(self.namespace, body)
            else:
                body["metadata"]["resourceVersion"] = version
                self.api.replace_namespaced_lease(name, self.namespace, body)
            return True
        except ApiException as exc:
            if exc.status in (409, 422):
                return False
            raise


async def run(sharding: Sharding, leases: LeaseClient, stop: asyncio.Event) -> None:
    """The lease loop: a round every lease_seconds / 3 until ``stop``; gives up every shard when stopping."""
    selector = f"{LABEL_LEASE} in (shard,member)"
    while not stop.is_set():
        try:
            await _round(sharding, leases, selector)
        except Exception as exc:  # API unreachable: keep trying; owns() lapses on its own
            logger.warning("lease round failed: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), sharding.round_seconds)
    await _give_up(sharding, leases, selector)


async def _round(sharding: Sharding, leases: LeaseClient, selector: str) -> None:
    listed = await asyncio.to_thread(leases.list, selector)
    by_name = {lease["metadata"]["name"]: lease for lease in listed}
    started = time.monotonic()
    member = by_name.get(sharding.member_lease())
    await asyncio.to_thread(
        leases.write,
        sharding.member_lease(),
        "member",
        sharding.identity,
        sharding.lease_seconds,
        member["metadata"]["resourceVersion"] if member else None,
    )
    renew, release, acquire = sharding.plan(listed, started)
    for shard in list(sharding.held):
        if shard not in renew and shard not in acquire:
            sharding.held.pop(shard, None)  # lost (someone else holds it now) or to be released: stop acting
    for shard in release:  # then let the others have it
        lease = by_name[sharding.shard_lease(shard)]
        version = lease["metadata"]["resourceVersion"]
        await asyncio.to_thread(leases.write, sharding.shard_lease(shard), "shard", "", sharding.lease_seconds, version)
        logger.info("shard %d released (rebalancing)", shard)
    for name in sharding.dead_members(listed, started):  # tidy up the membership Leases of replicas long gone
        await asyncio.to_thread(leases.delete, name)
    for shard in [*renew, *acquire]:
        lease = by_name.get(sharding.shard_lease(shard))
        version = lease["metadata"]["resourceVersion"] if lease else None
        ok = await asyncio.to_thread(
            leases.write, sharding.shard_lease(shard), "shard", sharding.identity, sharding.lease_seconds, version
        )
        if not ok:
            sharding.held.pop(shard, None)
            continue
        new = shard not in sharding.held
        sharding.held[shard] = started
        if new:
            logger.info("shard %d acquired by %s", shard, sharding.identity)
            if sharding.on_acquired is not None:
                sharding.on_acquired(shard)


async def _give_up(sharding: Sharding, leases: LeaseClient, selector: str) -> None:
    """On a clean stop, hand the shards over at once instead of after their expiry."""
    held = list(sharding.held)
    sharding.held.clear()
    try:
        listed = {lease["metadata"]["name"]: lease for lease in await asyncio.to_thread(leases.list, selector)}
        for shard in held:
            lease = listed.get(sharding.shard_lease(shard))
            if lease and (lease.get("spec") or {}).get("holderIdentity") == sharding.identity:
                await asyncio.to_thread(
                    leases.write, sharding.shard_lease(shard), "shard", "", sharding.lease_seconds,
                    lease["metadata"]["resourceVersion"],
                )
    except Exception as exc:  # best effort: the Leases expire anyway
        logger.warning("could not release the shards: %s", exc)
