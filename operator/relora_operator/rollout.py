"""Steering of a release's rollout (pure; spec.rollout): which adapters form the canary and whether its gate
passed, what holds an adapter's re-adaptation back (pause, dry run, canary), and the dry run's plan with its
GPU-hour estimate.

Level-triggered like the rest: the gate is recomputed from the adapters' statuses on every pass; only its
passing is remembered (status.rollout.canary.state), so that an adapter of the canary that regresses later
does not stop a rollout that was already let through.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relora_operator.adapter_releases import entries_of
from relora_operator.conditions import ready_reason, seconds_between
from relora_operator.views import AdapterView, ReleaseView

LISTED = 20  # names listed in a release's status (canary members, failures, pending adapters); counts are exact
PLAN_LISTED = 50  # entries of a dry run's plan listed in status
BAD = ("Degraded", "Failed")


@dataclass(frozen=True)
class Gate:
    """The canary gate of a release: state '' (no canary), Pending, Passed or Failed."""

    state: str = ""
    members: frozenset[str] = field(default_factory=frozenset)
    ready: int = 0
    failures: tuple[str, ...] = ()  # "name (reason)" of canary adapters Degraded or Failed for the release
    required: int = 0
    message: str = ""

    @property
    def open(self) -> bool:
        """Whether adapters outside the canary may be adapted and promoted."""
        return self.state in ("", "Passed")


@dataclass(frozen=True)
class Hold:
    """Why an adapter's re-adaptation Job is not created now."""

    reason: str  # DryRun | RolloutPaused | WaitingForCanary | CanaryFailed
    message: str
    halted: bool = False  # nothing will move until someone acts


def _rank(release: ReleaseView, adapter: AdapterView) -> str:
    # A fixed, uniform order per release: another release picks another part of the family as its canary.
    return hashlib.sha256(f"{release.uid}/{adapter.uid or adapter.name}".encode()).hexdigest()


def canary_members(release: ReleaseView, adapters: Iterable[AdapterView]) -> frozenset[str]:
    """Names of the adapters in the release's canary: those its selector matches (all without a selector),
    the first ``percent`` of them (rounded up) by a hash of the release's and the adapter's uid."""
    canary = release.rollout.canary
    if canary is None:
        return frozenset()
    selector = canary.selector or {}
    matching = [a for a in adapters if all(a.labels.get(k) == v for k, v in selector.items())]
    if canary.percent is not None:
        matching.sort(key=lambda a: _rank(release, a))
        matching = matching[: math.ceil(len(matching) * canary.percent / 100)]
    return frozenset(a.name for a in matching)


def _phase_for(adapter: AdapterView, release: ReleaseView) -> str | None:
    status = adapter.status
    return status.get("phase") if status.get("targetRelease") == release.version else None


def _reason(adapter: AdapterView) -> str:
    return str(ready_reason(adapter.status) or adapter.status.get("phase"))


def canary_gate(release: ReleaseView, adapters: Sequence[AdapterView]) -> Gate:
    """The gate from the adapters' statuses: Passed once ``successFraction`` of the canary is Ready for the
    release, Failed once too many of it are Degraded or Failed for that to happen, else Pending."""
    canary = release.rollout.canary
    if canary is None:
        return Gate()
    members = canary_members(release, adapters)
    group = [a for a in adapters if a.name in members]
    ready = sum(1 for a in group if _phase_for(a, release) == "Ready")
    failures = tuple(sorted(f"{a.name} ({_reason(a)})" for a in group if _phase_for(a, release) in BAD))
    # The small epsilon keeps 0.5 x 4 = 2 from becoming 3 through float rounding.
    required = max(1, math.ceil(canary.success_fraction * len(group) - 1e-9)) if group else 0
    summary = f"{ready}/{len(group)} of the canary Ready for {release.version}, {required} needed"
    if failures:
        shown = ", ".join(failures[:LISTED]) + (f" and {len(failures) - LISTED} more" if len(failures) > LISTED else "")
        summary += f"; not Ready: {shown}"
    stored = ((release.status.get("rollout") or {}).get("canary") or {}).get("state")
    gate = Gate("Pending", members, ready, failures, required, summary)
    if stored == "Passed" or (not group and not adapters):
        return Gate("Passed", members, ready, failures, required, summary)
    if not group:
        return Gate(
            "Failed",
            members,
            message=f"the canary (spec.rollout.canary) selects none of the family's {len(adapters)} adapter(s)",
        )
    if ready >= required:
        return Gate("Passed", members, ready, failures, required, summary)
    if len(group) - len(failures) < required:
        return Gate("Failed", members, ready, failures, required, summary)
    return gate


def hold_of(release: ReleaseView, gate: Gate, adapter: str) -> Hold | None:
    """What keeps ``adapter``'s re-adaptation to ``release`` from starting now, if anything."""
    version, rollout = release.version, release.rollout
    if rollout.dry_run:
        return Hold("DryRun", f"dry run of release {version} (spec.rollout.dryRun): planned, no Job is created")
    if rollout.paused:
        return Hold(
            "RolloutPaused", f"the rollout of release {version} is paused (spec.rollout.paused); running Jobs finish"
        )
    if gate.open or adapter in gate.members:
        return None
    if gate.state == "Failed":
        return Hold("CanaryFailed", f"the rollout of release {version} halted: {gate.message}", halted=True)
    return Hold("WaitingForCanary", f"waiting for the canary of release {version}: {gate.message}")


def promotion_held(gate: Gate, adapter: str) -> bool:
    """Whether an adapter Ready for the release keeps serving its previous artifact: it is not in the canary and
    the canary gate has not passed."""
    return not gate.open and adapter not in gate.members


def median_job_seconds(adapters: Iterable[AdapterView]) -> tuple[float | None, int]:
    """Median duration of the finished re-adaptation Jobs in the adapters' status.releases, and how many."""
    durations = [
        d
        for a in adapters
        for entry in entries_of(a.status)
        if (d := seconds_between(entry.get("startedAt"), entry.get("finishedAt"))) is not None and d >= 0
    ]
    return (statistics.median(durations) if durations else None), len(durations)


def _gpu_hours(seconds: float | None, gpus: int) -> str:
    return "unknown" if seconds is None else f"{seconds / 3600 * gpus:.2f}"


def dry_run_plan(adapters: Sequence[AdapterView], plans: Mapping[str, Any], default_gpus: int) -> dict[str, Any]:
    """status.rollout.plan: the adapters a rollout would re-adapt, each with its estimated GPU-hours (median
    duration of the family's finished Jobs x the adapter's GPUs; "unknown" without any finished Job)."""
    median, basis = median_job_seconds(adapters)
    by_name = {a.name: a for a in adapters}
    entries, total_gpu_seconds = [], 0.0
    for name in sorted(n for n, p in plans.items() if p.kind == "Adapt" and p.adaptation is not None):
        plan, spec = plans[name], by_name[name].spec
        gpus = spec.resources.gpus if spec is not None and spec.resources.gpus is not None else default_gpus
        total_gpu_seconds += (median or 0.0) * gpus
        entries.append(
            {
                "adapter": name,
                "fromRelease": plan.adaptation.source_release,
                "strategy": spec.strategy.name if spec is not None else "",
                "gpus": gpus,
                "estimatedGpuHours": _gpu_hours(median, gpus),
            }
        )
    return {
        "adapters": entries[:PLAN_LISTED],
        "total": len(entries),
        "estimatedGpuHours": "unknown" if median is None else f"{total_gpu_seconds / 3600:.2f}",
        "basis": f"median of {basis} finished Job(s) of the family: {median:.0f}s"
        if median is not None
        else "no finished Job in the family's status.releases",
    }
