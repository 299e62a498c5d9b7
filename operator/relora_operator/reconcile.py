"""The two reconcile passes, between kopf's handlers (thin) and the pure decisions/status code.

* ``release_pass``: for the newest release of a family, create the shared projection Jobs and admit
  re-adaptation Jobs under the concurrency limits (one place sees all candidates, so priority order holds);
  compute the release's status.
* ``adapter_pass``: for one TaskAdapter, read its Jobs (from the indices) and compute its status.

Neither keeps state of its own: what must be remembered across calls (Jobs created but not yet in the index, so
the limits are not overshot meanwhile; the statuses we wrote; the locks that keep passes of one family, and the
status writes of one adapter, in order) is in the ``OperatorState`` every pass is given (``state``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relora_contract.result import ResultRecord
from relora_contract.summary import TerminationSummary
from relora_operator import (
    adapter_releases,
    batch_results,
    batching,
    decisions,
    identity,
    improve,
    kube,
    metrics,
    naming,
    refusals,
    rollout,
    storage,
)
from relora_operator.builders.jobs import build_adaptation_job, build_projection_job
from relora_operator.conditions import now_iso
from relora_operator.models import GROUP, VERSION
from relora_operator.outcome import Observed, Outcome, needs_result
from relora_operator.release_status import Steering, projection_entries, release_status
from relora_operator.serving import handoff
from relora_operator.settings import Settings
from relora_operator.state import OperatorState
from relora_operator.status import WAITING, adapter_status, status_patch, transition_event, with_switch
from relora_operator.views import AdapterView, JobView, PodView, ReleaseView, parse_result, parse_summary

Index = Mapping[Any, Iterable[Any]]
logger = logging.getLogger(__name__)


def first(index: Index, key: Any) -> Any:
    return next(iter(index.get(key, ())), None)


def all_values(index: Index) -> list[Any]:
    return [value for store in list(index.values()) for value in list(store)]


@dataclass
class ReleaseResult:
    status: dict[str, Any]
    created: list[str] = field(default_factory=list)


def _adopt(job: dict[str, Any], owner: Mapping[str, Any]) -> dict[str, Any]:
    import kopf  # kept out of the pure modules' imports

    kopf.adopt(job, owner=dict(owner))
    return job


def _batch_vanished(state: OperatorState, adapter: AdapterView, own_key: tuple[str, str]) -> bool:
    """The adapter's status names the batch Job it was running in, and that Job is gone before it finished
    (deleted by hand): the adapter gets a Job of its own (whose losses count against RELORA_JOB_BACKOFF_LIMIT
    like any other Job's) instead of the same batch being planned again, under the same name, for as long as
    someone deletes it."""
    job = str(adapter.status.get("job") or "")
    return naming.is_batch_job_name(job) and decisions.was_running(adapter, job) and not state.is_in_flight(*own_key)


async def _create_all(state: OperatorState, jobs: list[dict[str, Any]], settings: Settings) -> list[str]:
    sem = asyncio.Semaphore(settings.api_workers)

    async def one(job: dict[str, Any]) -> str | None:
        async with sem:
            try:
                created = await asyncio.to_thread(kube.create_job_if_absent, job, settings.api_workers)
            except Exception as exc:
                # A value the API server refuses (422) or a verb our RBAC lacks (403): that adapter's (or
                # projection's) condition says so; the other Jobs of the pass are created all the same.
                if state.refusals.record(job, exc) is None:
                    raise
                return None
        state.refusals.clear(job["metadata"]["namespace"], job["metadata"]["name"])
        state.created(job["metadata"]["namespace"], job["metadata"]["name"])
        if created:
            metrics.JOBS_CREATED.labels(job["metadata"]["labels"]["app.kubernetes.io/component"]).inc()
            return job["metadata"]["name"]
        return None

    names = await asyncio.gather(*(one(job) for job in jobs))
    return [n for n in names if n]


async def release_pass(
    state: OperatorState,
    release: ReleaseView,
    releases: Index,
    adapters: Index,
    jobs: Index,
    pods: Index,
    settings: Settings,
) -> ReleaseResult:
    """A release's pass: for the newest of its family, its Jobs and every member's status; its own status."""
    key = (release.namespace, release.family)
    state.identities.refresh(release, settings)  # the digest of its weights, read in the background
    state.in_flight(jobs)  # forget creations the index has seen: a Job deleted later is then re-created
    family: list[ReleaseView] = list(releases.get(key, ()))
    members: list[AdapterView] = list(adapters.get(key, ()))
    is_newest = decisions.is_newest(release, family)
    supersedes = decisions.resolve_supersedes(release, family)
    created: list[str] = []
    projections: list[dict[str, Any]] = []
    plan: dict[str, Any] | None = None
    if is_newest:
        created, projections, plan = await _create_jobs(state, release, family, members, jobs, settings)
        # The release's timer is the periodic, level-triggered pass over its family's adapters too: one
        # timer per release instead of one per adapter keeps the operator small with thousands of adapters.
        members = await sync_adapters(state, members, releases, jobs, pods, settings)
    status = release_status(
        release,
        newest=is_newest,
        supersedes=supersedes,
        adapters=members,
        projections=projections,
        now=now_iso(),
        model=state.identities.check(release),
        identity=identity.identity_of(state.identities.known(release)),
        steering=Steering(
            rollout.canary_gate(release, members) if is_newest else None,
            plan,
            release.rollout.max_concurrent or settings.max_concurrent_jobs_per_release,
        ),
    )
    return ReleaseResult(status, created)


async def _create_jobs(
    state: OperatorState,
    release: ReleaseView,
    family: list[ReleaseView],
    members: list[AdapterView],
    jobs: Index,
    settings: Settings,
) -> tuple[list[str], list[dict[str, Any]], dict[str, Any] | None]:
    """The newest release's Jobs: the shared projections its steered adapters need, then the re-adaptations
    admitted under the limits. Returns the Jobs created, the release's status.projections and the dry run's plan.
    Planning and creating under the family's lock: a second pass (timer, a projection Job's end) starts from the
    Jobs the first one created. The status writes need no such lock (see sync_adapters)."""
    created: list[str] = []
    async with state.family_lock(release.namespace, release.family):
        known = [state.identities.known(r) for r in family]  # with the digests this process read
        plans = {a.name: decisions.plan_adapter(a, known, settings) for a in members}
        gate = rollout.canary_gate(release, members)
        # spec.rollout: held adapters get no Job, and no projection is made for them alone.
        steered = decisions.steer(plans, release, gate)
        groups = decisions.projection_groups(steered.values())
        job_of = {name: first(jobs, (release.namespace, name)) for name in groups}
        missing = [
            build_projection_job(settings, p)
            for n, p in groups.items()
            if job_of[n] is None
            and not state.is_in_flight(release.namespace, n)
            and not state.refusals.blocked(release.namespace, n, settings)
        ]
        created += await _create_all(state, [_adopt(j, release.owner) for j in missing], settings)
        projections = projection_entries(groups, {n: j for n, j in job_of.items() if j}, settings)
        created += await _admit(state, release, members, steered, jobs, settings)
        plan = rollout.dry_run_plan(members, plans, settings.default_gpus) if release.rollout.dry_run else None
    return created, projections, plan


async def _admit(
    state: OperatorState,
    release: ReleaseView,
    members: list[AdapterView],
    plans: Mapping[str, decisions.AdapterPlan],
    jobs: Index,
    settings: Settings,
) -> list[str]:
    by_name = {a.name: a for a in members}
    candidates = []
    alone: set[str] = set()  # left unfinished by a batch Job: a Job of their own now
    for name, plan in plans.items():
        if plan.adaptation is None:
            continue
        job_key = (release.namespace, plan.adaptation.job_name)
        has_job = await batch_results.own_job_exists(state.batches, jobs, job_key, name, settings)
        if not has_job and (jobs.get(job_key) or _batch_vanished(state, by_name[name], job_key)):
            alone.add(name)
        exists = has_job or state.is_in_flight(*job_key) or state.refusals.blocked(*job_key, settings)
        proj = first(jobs, (release.namespace, plan.projection.job_name)) if plan.projection else None
        if decisions.adaptation_due(by_name[name], plan, exists, proj, settings):
            candidates.append(decisions.Candidate(by_name[name], plan, settings.queue_of(by_name[name].spec)))
    if not candidates:
        return []
    async with state.admission:  # one admission at a time across releases: the limits are operator-wide
        everything: list[JobView] = all_values(jobs)
        in_flight = state.in_flight(jobs)
        running_total = decisions.running_adaptations(everything) + len(in_flight)
        running_release = decisions.running_adaptations(everything, release.version) + len(in_flight)
        limits = batching.limits_of(release, settings, rollout.median_job_seconds(members)[0])
        limits = limits if state.batches.allowed() else batching.Limits()  # a plan was refused a moment ago
        units = {id(u[0]): u for u in batching.units(candidates, limits, settings, frozenset(alone))}
        leaders = [u[0] for u in units.values()]
        admitted = decisions.admit(leaders, running_total, running_release, settings, release.rollout.max_concurrent)
        manifests = []
        for cand in admitted:
            unit = units[id(cand)]
            batch = await batch_results.prepare(state.batches, unit, release.owner, settings) if len(unit) > 1 else None
            if batch is not None:  # spec.batching: one Job for the unit; its members are in flight with it
                for member in unit:
                    assert member.plan.adaptation is not None
                    state.created(release.namespace, member.plan.adaptation.job_name)
                manifests.append(batch)
                continue
            assert cand.adapter.spec is not None and cand.plan.adaptation is not None
            job = build_adaptation_job(settings, cand.adapter.spec, cand.plan.adaptation)
            if decisions.was_running(cand.adapter, cand.plan.adaptation.job_name):
                state.refusals.note_recreated(release.namespace, cand.plan.adaptation.job_name)  # counted in its status
            manifests.append(_adopt(job, cand.adapter.owner))
        return await _create_all(state, manifests, settings)


def _just_created(adapter: AdapterView, name: str, settings: Settings) -> JobView:
    kueue = bool(settings.queue_of(adapter.spec))
    return JobView(
        namespace=adapter.namespace,
        name=name,
        component="adaptation",
        release="",
        adapter=adapter.name,
        suspended=kueue,
        active=0,
        succeeded=0,
        failed=0,
        complete=False,
        failed_final=False,
        reason=None,
        message=None,
        created=None,
        start_time=None,
        completion_time=None,
        output_uri=None,
        kueue=kueue,
    )


def _pod_problem(pods: Index, namespace: str, job: str) -> str | None:
    return next((p.waiting for p in pods.get((namespace, job), ()) if p.waiting), None)


async def _observe(
    state: OperatorState,
    adapter: AdapterView,
    plan: decisions.AdapterPlan,
    jobs: Index,
    pods: Index,
    settings: Settings,
    steer: Mapping[str, Any],
) -> Observed:
    """What the adapter's Jobs show for a plan that adapts: the Job (or the one created a moment ago), its
    projection, how they ended, a stuck pod, the first ready version while the Job improves, and refusals."""
    assert plan.adaptation is not None
    found: JobView | None = first(jobs, (adapter.namespace, plan.adaptation.job_name))
    member = None
    if found is not None and found.members:  # a batch Job (spec.batching): this adapter's part of it
        member = await batch_results.member(state.batches, found, adapter.name, settings)
    job = member.job if member is not None else found
    if job is None and state.is_in_flight(adapter.namespace, plan.adaptation.job_name):
        # Created a moment ago, not in the index yet: it is starting (or held by Kueue).
        job = _just_created(adapter, plan.adaptation.job_name, settings)
    proj = first(jobs, (adapter.namespace, plan.projection.job_name)) if plan.projection else None
    if member is not None:  # one adapter of a batch Job: its outcome in the batch record
        ended = await _member_end(adapter, job, member, settings)
    else:
        ended = await _job_end(adapter, job, plan.adaptation.output_uri, pods, settings)
    proj_summary = None
    if proj is not None and proj.failed_final:
        pod = _last_pod(pods, adapter.namespace, proj.name)
        proj_summary = parse_summary(pod.termination_message, pod.name) if pod else None
    # A pod stuck before its process starts (missing Secret, image pull) is the user's to fix: say so.
    current = decisions.waiting_on(job, proj)
    problem = _pod_problem(pods, adapter.namespace, current.name) if current is not None else None
    early = None
    if job is not None and not job.finished and improve.wanted(adapter.spec):
        # Ready early, improve after: the worker's first ready version, while the Job trains on.
        early = await asyncio.to_thread(improve.read_early, plan.adaptation.output_uri)
    return Observed(
        pod_problem=problem,
        early=early,
        job=job,
        projection=proj,
        summary=ended.summary,
        result=ended.result,
        projection_summary=proj_summary,
        pod_end=ended.pod_end,
        refusal=state.refusals.for_plan(
            adapter.namespace, plan.adaptation.job_name, plan.projection.job_name if plan.projection else None
        ),
        storage_error=ended.storage_error,
        lost_limit=settings.job_backoff_limit,
        recreated=state.refusals.take_recreated(adapter.namespace, plan.adaptation.job_name),
        batch_left=found.name if found is not None and member is not None and member.again else None,
        **steer,
    )


@dataclass
class JobEnd:
    """How a finished adaptation Job ended, as far as this pass needs to know (all None: not to be read)."""

    summary: TerminationSummary | None = None
    pod_end: str | None = None
    result: ResultRecord | None = None
    storage_error: str | None = None


async def _job_end(
    adapter: AdapterView, job: JobView | None, output_uri: str, pods: Index, settings: Settings
) -> JobEnd:
    """The finished Job's summary from its pod's termination message, read once (not when the status already
    records it); its result.json in storage only for the numbers the summary lacks (outcome.needs_result)."""
    ended = JobEnd()
    if job is None or not job.finished or decisions.result_recorded(adapter.status, job):
        return ended
    pod = _last_pod(pods, adapter.namespace, job.name)
    ended.summary = parse_summary(pod.termination_message, pod.name) if pod else None
    ended.pod_end = pod.ended if pod else None
    if needs_result(job, ended.summary):
        # An older worker's summary without the numbers, or the pod (and its summary) gone after the Job
        # succeeded, e.g. garbage collected or its node lost: the record in storage has them.
        raw, ended.storage_error = await storage.read_result(output_uri, settings)
        ended.result = parse_result(raw, f"result.json of {output_uri}")
    return ended


async def _member_end(
    adapter: AdapterView, job: JobView | None, member: batching.MemberView, settings: Settings
) -> JobEnd:
    """How the adapter ended inside its batch Job (read once, like a Job of its own: not when recorded)."""
    if job is None or not job.finished or decisions.result_recorded(adapter.status, job):
        return JobEnd()
    result = await batch_results.member_result(member, settings)
    return JobEnd(summary=member.summary, result=result, storage_error=member.storage_error)


def has_finished_pod(pods: Index, namespace: str, job: str) -> bool:
    """Whether the pods index already shows how the Job's pod ended (its watch stream may lag the Jobs')."""
    return _last_pod(pods, namespace, job) is not None


def _last_pod(pods: Index, namespace: str, job: str) -> PodView | None:
    finished = [p for p in pods.get((namespace, job), ()) if p.exit_code is not None]
    return max(finished, key=lambda p: p.finished_at or "", default=None)


async def adapter_pass(
    state: OperatorState,
    adapter: AdapterView,
    releases: Index,
    jobs: Index,
    pods: Index,
    settings: Settings,
    gate: rollout.Gate | None = None,
) -> tuple[dict[str, Any], Outcome, decisions.AdapterPlan]:
    """One adapter's new status from its plan and what its Jobs show. ``gate``: the canary gate of the family's
    newest release (rollout.canary_gate)."""
    family = [state.identities.known(r) for r in releases.get((adapter.namespace, adapter.family), ())]
    plan = decisions.plan_adapter(adapter, family, settings)
    gate = gate or rollout.Gate()
    steer = {
        "hold": rollout.hold_of(plan.target, gate, adapter.name) if plan.target is not None else None,
        "promotion_held": rollout.promotion_held(gate, adapter.name),
    }
    seen = Observed(**steer)
    if plan.kind == "Adapt" and plan.adaptation is not None:
        seen = await _observe(state, adapter, plan, jobs, pods, settings, steer)
    status, outcome = adapter_status(adapter, plan, seen, now_iso(), settings.history_limit)
    return status, outcome, plan


def _gates(members: list[AdapterView], releases: Index, family: Index | None) -> dict[tuple[str, str], rollout.Gate]:
    """The canary gate of each family's newest release, from all of the family's adapters (``family``: the
    adapters index; without it ``members`` are the whole family)."""
    gates = {}
    for key in {(a.namespace, a.family) for a in members}:
        newest = decisions.newest_release(releases.get(key, ()))
        if newest is not None and newest.rollout.canary is not None:
            everyone = list(family.get(key, ())) if family is not None else [a for a in members if a.family == key[1]]
            gates[key] = rollout.canary_gate(newest, everyone)
    return gates


async def sync_adapters(
    state: OperatorState,
    members: list[AdapterView],
    releases: Index,
    jobs: Index,
    pods: Index,
    settings: Settings,
    family: Index | None = None,
) -> list[AdapterView]:
    """Computes every adapter's status, writes the changed ones and posts their Events; returns the views
    with the new statuses (for the release's counts). ``family``: the adapters index, for the canary gates
    when ``members`` are not whole families."""
    sem = asyncio.Semaphore(settings.api_workers)
    gates = _gates(members, releases, family)

    async def one(adapter: AdapterView) -> AdapterView:
        # One adapter's compute-and-write at a time: two passes (the release timer, an event) must not send
        # their patches out of order, or the cluster would keep the older status while state.written has the newer.
        # The status is computed when a write slot is free, not when the pass starts: with thousands of
        # adapters the writes queue for seconds, and a status computed early would be written stale (e.g.
        # "waiting for the projection" after its Job had finished), to be overwritten by the next pass.
        async with state.adapter_lock(adapter.uid), sem:
            return await _sync_one(adapter)

    async def _sync_one(adapter: AdapterView) -> AdapterView:
        # Compute from the freshest status we know: the watch stream may not have echoed our last write yet,
        # and a stale base would move lastTransitionTime and write the same state again and again.
        old = freshest_status(state, adapter)
        adapter = dataclasses.replace(adapter, status=old)
        gate = gates.get((adapter.namespace, adapter.family))
        new, outcome, _plan = await adapter_pass(state, adapter, releases, jobs, pods, settings, gate)
        # Hand-off to serving (spec.serving): the target follows new["served"]; the Served condition says how.
        family_releases = releases.get((adapter.namespace, adapter.family), ())
        new = await handoff.sync(state, adapter, old, new, family_releases, settings)
        patch = status_patch(old, new)
        if patch:
            logger.debug("status of %s/%s: writing %s", adapter.namespace, adapter.name, sorted(patch))
            if not await write_status(state, "taskadapters", adapter, new, patch, settings):
                return adapter
            announce(state, adapter.owner, old, new)
            if outcome.reason == "Readapted" and new.get("timeToReadinessSeconds") and old.get("phase") != "Ready":
                metrics.TIME_TO_READINESS.observe(float(new["timeToReadinessSeconds"]))
        return dataclasses.replace(adapter, status=new)

    return list(await asyncio.gather(*(one(a) for a in members)))


def freshest_status(state: OperatorState, obj: AdapterView | ReleaseView) -> Mapping[str, Any]:
    """``obj``'s status as we last wrote it, unless the cache already shows that write or a newer one: our
    write is newer than the index's copy until the index shows it (or something else changed it). Comparing
    with it also avoids writing the same status twice; after a restart the index is all there is."""
    written, indexed = state.written.get(obj.uid), obj.status
    if written is not None and written.get("observedGeneration", 0) >= indexed.get("observedGeneration", 0):
        return written
    return indexed


def announce(state: OperatorState, body: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Posts the Kubernetes Event of this status transition, if it is one; True if it was."""
    event = transition_event(old, new)
    if event is not None and new.get("phase") == "Adapting" and old.get("phase") in WAITING:
        # A Job starting is not an Event per adapter: the release's JobsCreated Event reports the Jobs of a
        # pass at once (at 10,000 adapters one POST per start was a sixth of the operator's API writes).
        event = None
    # A switch of the served artifact rides on the transition's Event (one write per adapter, not two); alone,
    # it is an ArtifactSwitched Event.
    event = with_switch(event, adapter_releases.switch_event(old, new), new)
    if event is None:
        return False
    kind, reason, message = event
    state.events.post(body, kind, reason, message)
    return True


def warn(state: OperatorState, body: Mapping[str, Any], reason: str, message: str) -> None:
    """Posts a Warning Event on ``body`` (a problem no status write can report)."""
    state.events.post(body, "Warning", reason, message)


def report_refused(state: OperatorState, release: ReleaseView, messages: list[str]) -> None:
    """A Warning Event on ``release`` naming what the operator may not list/watch (at most once a minute)."""
    if state.refusals.event_due(release.uid, "list-watch"):
        warn(state, release.owner, "Forbidden", refusals.redact("; ".join(messages)))


async def write_status(
    state: OperatorState,
    plural: str,
    obj: AdapterView | ReleaseView,
    new: Mapping[str, Any],
    patch: dict[str, Any],
    settings: Settings,
) -> bool:
    """Merge-patches ``obj``'s status subresource to ``new`` (``patch`` from its freshest status) and remembers
    ``new`` for ``freshest_status``; False when RBAC forbids it, said by a Warning Event on ``obj`` (no status can
    say it: that is what is forbidden), at most once a minute. Other errors propagate. Either way a write that did
    not happen is forgotten: the cluster keeps the old status."""
    state.written[obj.uid] = dict(new)
    try:
        await asyncio.to_thread(
            kube.patch_status, GROUP, VERSION, plural, obj.namespace, obj.name, patch, settings.api_workers
        )
        return True
    except Exception as exc:
        state.written.pop(obj.uid, None)
        if getattr(exc, "status", None) != 403:
            raise
        resource = f"{plural}.{GROUP}/status"
        message = refusals.permission_message("patch", resource, obj.namespace, refusals.api_message(exc))
        if state.refusals.event_due(obj.uid, "patch-status"):
            logger.error("%s/%s: %s", obj.namespace, obj.name, message)
            warn(state, obj.owner, "Forbidden", message)
        return False
