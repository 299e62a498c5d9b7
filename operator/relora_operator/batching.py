"""Many adapters per Job (spec.batching): which re-adaptations share one worker Job, and what a batch Job's
record says about each of its adapters (pure; the I/O is in ``batch_results`` and ``reconcile``).

* ``units``: the re-adaptations due now, grouped by what one load of the base can serve (release and its
  weights, base and projection, task kind, resources, scheduling, seed and label count, as the worker's
  readapt-batch wants them: docs/worker-contract.md) and cut into batches of at most ``maxAdaptersPerJob``
  adapters and ``maxGpuMinutesPerJob`` expected GPU-minutes. A batch of one is today's single Job. An adapter
  of several GPUs always gets a Job of its own: readapt-batch runs one process, ``relora launch`` one command.
* Every adapter keeps the Job name it would have alone (its "own" name: a hash of its adapter, spec, source and
  target); a batch Job's name is a hash of its members' own names and its ``relora.dev/batch-members``
  annotation lists them, so the caches find an adapter's batch by its own name (``JobIndex``) and a restarted
  operator plans the same batch under the same name (the API server's 409 is the duplicate check).
* ``member_view``: the batch Job as one member's status should see it: running until the record has the
  member's outcome, then finished the way a Job of its own would have finished (Ready, BelowThreshold, BadInput
  with the worker's message). A member the batch did not finish (the Job was killed, or the adapter hit a
  retryable error) needs a Job again: its own, never another batch, so nothing finished is re-run.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from relora_contract.batch import AdapterOutcome, BatchRecord
from relora_contract.result import RunStatus
from relora_contract.summary import Command, TerminationSummary
from relora_contract.verdict import Verdict, verdict_of
from relora_operator import naming
from relora_operator.builders.jobs import adapter_gpus, adapter_tolerations
from relora_operator.conditions import parse_time
from relora_operator.decisions import Candidate
from relora_operator.settings import Settings
from relora_operator.views import JobView, ReleaseView


@dataclass(frozen=True)
class Limits:
    """How big one batch may be (spec.batching, else the operator's settings)."""

    max_adapters: int = 1
    max_gpu_minutes: int = 0  # 0: no bound
    minutes_per_adapter: float | None = None  # the family's median re-adaptation time; None: not known yet

    @property
    def enabled(self) -> bool:
        return self.max_adapters > 1


def limits_of(release: ReleaseView, settings: Settings, median_seconds: float | None) -> Limits:
    spec = release.batching
    return Limits(
        max_adapters=spec.max_adapters_per_job or settings.batch_max_adapters_per_job,
        max_gpu_minutes=spec.max_gpu_minutes_per_job or settings.batch_max_gpu_minutes_per_job,
        minutes_per_adapter=median_seconds / 60 if median_seconds is not None else None,
    )


def gpus_of(cand: Candidate, settings: Settings) -> int:
    assert cand.adapter.spec is not None
    return adapter_gpus(settings, cand.adapter.spec)


def group_key(cand: Candidate, settings: Settings) -> Hashable:
    """What members of one batch share: one base load (release, its weights, base, projection, task kind), one
    pod (GPUs, cpu, memory, nodeSelector, tolerations, queue) and one pristine base (seed, label count: the
    worker reloads the base when they change)."""
    spec, adaptation = cand.adapter.spec, cand.plan.adaptation
    assert spec is not None and adaptation is not None
    return (
        adaptation.namespace,
        adaptation.target_release,
        adaptation.target_identity,
        adaptation.base_model_uri,
        adaptation.projection_uri or "",
        spec.task.type,
        gpus_of(cand, settings),
        spec.resources.cpu or "",
        spec.resources.memory or "",
        json.dumps(spec.node_selector, sort_keys=True),
        json.dumps(adapter_tolerations(spec), sort_keys=True),
        cand.queue,
        spec.strategy.seed,
        len(spec.task.labels or []),
    )


def units(
    candidates: Iterable[Candidate], limits: Limits, settings: Settings, alone: frozenset[str] = frozenset()
) -> list[list[Candidate]]:
    """The candidates (in priority order) cut into Jobs: batches of compatible ones within the limits, each
    led by its highest-priority member; ``alone`` (adapter names), adapters of several GPUs and everything when
    batching is off get a Job each."""
    ordered = sorted(candidates, key=lambda c: c.sort_key)
    if not limits.enabled:
        return [[c] for c in ordered]
    out: list[list[Candidate]] = []
    open_units: dict[Hashable, list[Candidate]] = {}
    for cand in ordered:
        if cand.adapter.name in alone or gpus_of(cand, settings) > 1:
            out.append([cand])
            continue
        key = group_key(cand, settings)
        unit = open_units.get(key)
        if unit is None or not _fits(unit, cand, limits, settings):
            unit = open_units[key] = []
            out.append(unit)
        unit.append(cand)
    return out


def _fits(unit: Sequence[Candidate], cand: Candidate, limits: Limits, settings: Settings) -> bool:
    if len(unit) >= limits.max_adapters:
        return False
    if not limits.max_gpu_minutes or limits.minutes_per_adapter is None:
        return True
    expected = (len(unit) + 1) * gpus_of(cand, settings) * limits.minutes_per_adapter
    return expected <= limits.max_gpu_minutes


class JobIndex(Mapping[Hashable, list[Any]]):
    """The Jobs index as the reconcile reads it, plus batch Jobs found by their members' own Job names: a key
    with a Job of that very name gives that Job (an adapter's own Job wins over a batch it was in), else the
    batch Jobs listing it. Iterating and ``values`` see every Job once (counts and limits stay per Job)."""

    def __init__(self, direct: Mapping[Hashable, list[Any]], by_member: Mapping[Hashable, list[Any]]) -> None:
        self.direct, self.by_member = direct, by_member

    def __getitem__(self, key: Hashable) -> list[Any]:
        found = self.direct.get(key) or self.by_member.get(key)
        if not found:
            raise KeyError(key)
        return list(found)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self.direct)

    def __len__(self) -> int:
        return len(self.direct)

    def values(self) -> Any:
        return self.direct.values()

    def items(self) -> Any:
        return self.direct.items()


def member_keys(job: JobView) -> list[tuple[str, str]]:
    """The keys a batch Job is indexed under: (namespace, each member's own Job name)."""
    return [(job.namespace, own) for own, _ in job.members]


@dataclass(frozen=True)
class MemberView:
    """A batch Job as one member sees it."""

    job: JobView | None  # None: the batch is over without this member's outcome: it needs its own Job
    summary: TerminationSummary | None = None  # the member's outcome, as a Job of its own would have said it
    storage_error: str | None = None  # the finished batch's record could not be read
    again: bool = False  # the batch did not finish it (killed, or a retryable error): its own Job next


def member_view(
    batch: JobView, adapter: str, record: BatchRecord | None, error: str | None, read: bool, now: str
) -> MemberView:
    """What the member ``adapter`` of ``batch`` should show, from the batch record (``read``: whether this pass
    could read it; ``record`` None with ``read``: none written yet; ``error``: why storage did not answer)."""
    outcome = record.outcome(naming.batch_member_key(batch.namespace, adapter)) if record is not None else None
    summary = summary_of(outcome) if outcome is not None else None
    if outcome is not None and verdict_of(summary) != Verdict.RETRYABLE:
        return MemberView(_finished(batch, outcome, now), summary)
    if not batch.finished:
        return MemberView(batch)
    if not read:  # the batch is over; until its record can be read, say so (StorageUnavailable) and wait
        return MemberView(dataclasses.replace(batch, complete=False, failed_final=True), storage_error=error)
    return MemberView(None, again=True)


def _finished(batch: JobView, outcome: AdapterOutcome, now: str) -> JobView:
    """The member's own end inside the batch: Succeeded when ready, Failed (with the worker's message) else."""
    ok = verdict_of(summary_of(outcome)) == Verdict.READY
    return dataclasses.replace(
        batch,
        complete=ok,
        failed_final=not ok,
        suspended=False,
        active=0,
        reason=None,
        message=outcome.error,
        failed=0 if ok else 1,
        start_time=_before(now, outcome.seconds),
        completion_time=now,
    )


def _before(now: str, seconds: float) -> str:
    """``now`` less the member's own seconds: status.releases then shows how long this adapter took, not the
    batch (the family's median, and so the GPU-minutes bound, rest on it)."""
    at = parse_time(now)
    return (at - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ") if at is not None else now


def summary_of(outcome: AdapterOutcome) -> TerminationSummary:
    """The member's outcome as the termination summary of a ``relora readapt`` of its own."""
    return TerminationSummary(
        command=Command.READAPT,
        status=RunStatus(outcome.status),
        exit_code=outcome.exit_code,
        error=outcome.error,
        quality=outcome.quality,
        threshold=outcome.threshold,
        adapter_uri=outcome.adapter_uri,
        result_uri=outcome.result_uri,
    )


def member_names(job: JobView) -> list[str]:
    return [adapter for _, adapter in job.members]
