"""What should exist: pure decisions from the cluster's state (views) to Jobs to create.

Level-triggered: nothing here remembers the past; every call recomputes the desired state from the current
releases, adapters and Jobs, so a restarted operator reaches the same decisions. The routing rules live here
too (which Job to create now, whether a Job's end is already recorded, which watch event starts which pass);
``reconcile`` and ``controller`` only read the caches, call these and do the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from relora_operator import adapter_releases, identity, improve, naming, rollout
from relora_operator.builders.jobs import AdaptationInputs, ProjectionInputs
from relora_operator.conditions import ready_reason
from relora_operator.models.adapter import STRATEGIES_WITH_DELTA, TaskAdapterSpec
from relora_operator.settings import Settings
from relora_operator.views import AdapterView, JobView, PodView, ReleaseView

# Spec fields that change what a re-adaptation produces; scheduling fields (resources, nodeSelector,
# tolerations, priority, queueName) do not, so changing them never re-runs a finished adaptation.
RESULT_FIELDS = (
    "family",
    "adapter_uri",
    "trained_on_release",
    "target_modules",
    "rank",
    "task",
    "quality",
    "strategy",
)


def spec_hash(spec: TaskAdapterSpec) -> str:
    return naming.digest(spec.model_dump(mode="json", include=set(RESULT_FIELDS)), 10)


def newest_release(releases: Iterable[ReleaseView]) -> ReleaseView | None:
    return max(releases, key=lambda r: r.order, default=None)


def is_newest(release: ReleaseView, family: Iterable[ReleaseView]) -> bool:
    """Whether ``release`` is its family's newest: only that one's pass creates Jobs and syncs the adapters."""
    newest = newest_release(family)
    return newest is not None and newest.uid == release.uid


def resolve_supersedes(release: ReleaseView, family: Iterable[ReleaseView]) -> str | None:
    """spec.supersedes, else the family's newest *completed* older release, else its newest older one."""
    if release.supersedes:
        return release.supersedes
    older = [r for r in family if r.order < release.order and r.version != release.version]
    completed = [r for r in older if r.status.get("phase") == "Complete"]
    best = newest_release(completed) or newest_release(older)
    return best.version if best else None


@dataclass(frozen=True)
class AdapterPlan:
    """What one TaskAdapter needs now."""

    # NoRelease | Invalid | Verifying | UpToDate | AsGiven | ReleaseChanged | Restored | MissingRelease | JobLost
    # | Adapt | Pinned | PinMissing (spec.pinnedRelease: a rollback)
    kind: str
    target: ReleaseView | None = None
    spec_hash: str = ""
    adaptation: AdaptationInputs | None = None
    projection: ProjectionInputs | None = None
    message: str = ""
    restored: dict | None = None  # Restored, Pinned: the status.releases entry whose adapter serves the target again
    target_identity: str = ""  # identity of the target release (identity.py)


def ready_in_releases(entries: Sequence[dict] | None, release_identity: str, shash: str) -> dict | None:
    """The status.releases entry of an adapter produced for the release with this identity (its weights, not
    only its version) from this spec that met its threshold."""
    for entry in entries or []:
        if (
            entry.get("releaseIdentity") == release_identity
            and entry.get("phase") == "Ready"
            and entry.get("adapterUri")
            and entry.get("specHash") == shash
        ):
            return entry
    return None


def spec_problem(spec: TaskAdapterSpec, settings: Settings) -> str | None:
    """A problem of the spec that depends on the operator's settings (the CRD cannot know them), naming the
    field; None when there is none."""
    if not settings.allow_tolerate_all:
        for i, tol in enumerate(spec.tolerations or []):
            if not tol.key and tol.operator == "Exists":
                return (
                    f"spec.tolerations[{i}]: operator Exists without a key tolerates every taint (NoExecute "
                    "included); name the taint's key, or allow it with the operator setting "
                    "RELORA_ALLOW_TOLERATE_ALL=true (chart value worker.allowTolerateAllTaints)"
                )
    return None


def _served_for(served: dict, target: ReleaseView, target_id: str) -> bool:
    """Whether the served adapter is for the target release's weights. Entries written before identities
    existed (no releaseIdentity) count by version once; the next status write records the identity."""
    if served.get("release") != target.version:
        return False
    return served.get("releaseIdentity") in (None, target_id)


def was_running(adapter: AdapterView, job_name: str) -> bool:
    """The status says Job ``job_name`` was running (or queued in Kueue, or already found lost): if it has to be
    created now, it disappeared before it finished and this is a re-creation."""
    status = adapter.status
    if status.get("job") != job_name:
        return False
    return status.get("phase") == "Adapting" or ready_reason(status) in ("QueuedInKueue", "JobDeleted")


def recreation_allowed(adapter: AdapterView, job_name: str, settings: Settings) -> bool:
    """Whether creating ``job_name`` is allowed: a first creation always, a re-creation of a lost Job while the
    adapter has re-created fewer than RELORA_JOB_BACKOFF_LIMIT of them."""
    if not was_running(adapter, job_name):
        return True
    return int(adapter.status.get("lostJobs") or 0) < settings.job_backoff_limit


def lost_job(adapter: AdapterView, job_name: str) -> bool:
    """Whether the adapter's Job ``job_name`` was lost so often that it is not re-created any more."""
    status = adapter.status
    if status.get("job") != job_name:
        return False
    return ready_reason(status) == "JobLost"


def plan_adapter(adapter: AdapterView, family: Sequence[ReleaseView], settings: Settings) -> AdapterPlan:
    """The re-adaptation (if any) that brings ``adapter`` to the newest release of its family."""
    spec = adapter.spec
    if spec is None:
        return AdapterPlan("Invalid", message=f"spec is invalid: {adapter.error}")
    target = newest_release(family)
    problem = spec_problem(spec, settings)
    if problem:
        # With its target, so that the release counts it (as failed) and its rollout can complete.
        return AdapterPlan("Invalid", target, message=problem)
    if target is None:
        return AdapterPlan(
            "NoRelease",
            message=f"no BaseModelRelease of family {spec.family} in namespace {adapter.namespace}",
        )
    shash = spec_hash(spec)
    if spec.pinned_release:
        return _pinned(adapter, spec, target, shash)
    target_id = identity.identity_of(target)
    if target_id is None:
        return _verifying(target, target, shash)
    current = _plan_without_job(adapter, spec, target, target_id, shash)
    return current or _readaptation(adapter, spec, family, target, target_id, shash, settings)


def _verifying(release: ReleaseView, target: ReleaseView, shash: str) -> AdapterPlan:
    """Nothing can be decided before ``release``'s identity (the digest of its weights) is known."""
    return AdapterPlan(
        "Verifying",
        target,
        shash,
        message=f"reading the identity of release {release.version} (the digest of its model's weights)",
    )


def _plan_without_job(
    adapter: AdapterView, spec: TaskAdapterSpec, target: ReleaseView, target_id: str, shash: str
) -> AdapterPlan | None:
    """The plans that need no Job: already served for the target's weights (UpToDate), declared trained on the
    target (AsGiven, or ReleaseChanged when its weights changed since), or an artifact made for the target
    earlier serves again (Restored, a rollback); None when a re-adaptation is needed."""
    served = adapter.status.get("served") or {}
    if _served_for(served, target, target_id) and served.get("specHash") == shash:
        return AdapterPlan("UpToDate", target, shash, target_identity=target_id)
    if spec.trained_on_release == target.version:
        return _as_given(spec, served, target, target_id, shash)
    # A rollback (the newest release deleted): an adapter already produced for the new target serves again.
    earlier = ready_in_releases(adapter_releases.entries_of(adapter.status), target_id, shash)
    if earlier is not None:
        return AdapterPlan("Restored", target, shash, restored=earlier, target_identity=target_id)
    return None


def _as_given(
    spec: TaskAdapterSpec, served: Mapping[str, Any], target: ReleaseView, target_id: str, shash: str
) -> AdapterPlan:
    """The adapter as given was declared trained on the target's version; if the version's weights changed since
    it was first served, it is not trained on them (and the old weights for a delta are not known)."""
    check = identity.check_of(target)
    old_digest, new_digest = served.get("modelDigest"), check.digest if check else ""
    as_given_before = served.get("release") == target.version and not served.get("job")
    if as_given_before and old_digest and new_digest and old_digest != new_digest:
        return AdapterPlan(
            "ReleaseChanged",
            target,
            shash,
            message=f"release {target.version} now has other weights (model digest {old_digest[:19]} -> "
            f"{new_digest[:19]}) than the ones {spec.adapter_uri} was trained on: set adapterUri and "
            "trainedOnRelease to an adapter trained on the new weights, or publish them as a new version",
            target_identity=target_id,
        )
    return AdapterPlan(
        "AsGiven", target, shash, message=f"the adapter was trained on {target.version}", target_identity=target_id
    )


def _start_of(
    adapter: AdapterView, spec: TaskAdapterSpec, family: Sequence[ReleaseView], target: ReleaseView
) -> tuple[str, str, ReleaseView | None]:
    """Where the re-adaptation starts: (adapter URI, its release's version, that release if it exists). The
    adapter being served, unless it is already for the target (then the spec changed and the original adapter is
    the start again) or its release was deleted (then the adapter as given, if its release exists)."""
    served = adapter.status.get("served") or {}
    if served and served.get("release") != target.version:
        source_uri, source_release = served["adapterUri"], served["release"]
    else:
        source_uri, source_release = spec.adapter_uri, spec.trained_on_release
    by_version = {r.version: r for r in family}
    source = by_version.get(source_release)
    if source is None and source_release != spec.trained_on_release:
        source_uri, source_release = spec.adapter_uri, spec.trained_on_release
        source = by_version.get(source_release)
    return source_uri, source_release, source


def _readaptation(
    adapter: AdapterView,
    spec: TaskAdapterSpec,
    family: Sequence[ReleaseView],
    target: ReleaseView,
    target_id: str,
    shash: str,
    settings: Settings,
) -> AdapterPlan:
    """The re-adaptation Job (and the shared projection it needs) from where the adapter starts to the target;
    JobLost when that very Job was lost too often; MissingRelease/Verifying when the start is not known yet."""
    source_uri, source_release, source = _start_of(adapter, spec, family, target)
    if source is None:
        return AdapterPlan(
            "MissingRelease",
            target,
            shash,
            message=f"release {source_release} of family {spec.family} (the adapter's current "
            f"release) not found in namespace {adapter.namespace}",
        )
    source_id = identity.identity_of(source)
    if source_id is None:
        return _verifying(source, target, shash)
    projection = None
    if spec.strategy.name in STRATEGIES_WITH_DELTA:
        projection = _projection_inputs(adapter, spec, source, target, source_id, target_id)
    start = (source_uri, source_release)
    adaptation = _adaptation_inputs(adapter, spec, target, target_id, start, shash, projection, settings)
    if lost_job(adapter, adaptation.job_name):
        return AdapterPlan(
            "JobLost",
            target,
            shash,
            adaptation,
            projection,
            message=adapter.status.get("message") or "",
            target_identity=target_id,
        )
    return AdapterPlan("Adapt", target, shash, adaptation, projection, target_identity=target_id)


def _projection_inputs(
    adapter: AdapterView,
    spec: TaskAdapterSpec,
    source: ReleaseView,
    target: ReleaseView,
    source_id: str,
    target_id: str,
) -> ProjectionInputs:
    """The delta projection source->target for the adapter's rank and target modules: adapters that share
    these share one projection Job (its name comes from them)."""
    return ProjectionInputs(
        namespace=adapter.namespace,
        family=spec.family,
        from_release=source.version,
        from_model_uri=source.model_uri,
        to_release=target.version,
        to_model_uri=target.model_uri,
        rank=spec.rank,
        target_modules=tuple(sorted(set(spec.target_modules))),
        svd=target.svd,
        gpus=target.gpus,
        cpu=target.cpu,
        memory=target.memory,
        from_identity=source_id,
        to_identity=target_id,
        active_deadline_seconds=target.active_deadline_seconds,
    )


def _adaptation_inputs(
    adapter: AdapterView,
    spec: TaskAdapterSpec,
    target: ReleaseView,
    target_id: str,
    start: tuple[str, str],
    shash: str,
    projection: ProjectionInputs | None,
    settings: Settings,
) -> AdaptationInputs:
    """The re-adaptation Job's inputs, from ``start`` (adapter URI, its release). Its name and output URI digest
    everything that makes the result differ, so a restarted operator finds the same Job and a changed input gets
    a new one."""
    source_uri, source_release = start
    inputs = {
        "ns": adapter.namespace,
        "name": adapter.name,
        "uid": adapter.uid,
        "to": target.version,
        "model": target.model_uri,
        "identity": target_id,
        "source": source_uri,
        "from": source_release,
        "spec": shash,
    }
    run_id = naming.digest(inputs)
    return AdaptationInputs(
        namespace=adapter.namespace,
        adapter=adapter.name,
        job_name=naming.adaptation_job_name(adapter.name, target.version, inputs),
        spec_hash=shash,
        target_release=target.version,
        base_model_uri=target.model_uri,
        source_adapter_uri=source_uri,
        source_release=source_release,
        output_uri=naming.adapter_output_uri(
            settings.artifact_root, adapter.namespace, adapter.name, target.version, run_id
        ),
        projection_uri=projection.output_uri(settings) if projection else None,
        target_identity=target_id,
        active_deadline_seconds=spec.active_deadline_seconds,
    )


def pinned_entry(adapter: AdapterView, spec: TaskAdapterSpec, shash: str) -> dict | None:
    """The status.releases entry spec.pinnedRelease names: the newest Ready one with an artifact for that
    release, else the adapter as given when the pin is its trainedOnRelease."""
    for entry in adapter_releases.entries_of(adapter.status):
        if entry.get("release") == spec.pinned_release and entry.get("phase") == "Ready" and entry.get("adapterUri"):
            return entry
    if spec.pinned_release == spec.trained_on_release:
        return {
            "release": spec.trained_on_release,
            "phase": "Ready",
            "reason": "TrainedOnRelease",
            "adapterUri": spec.adapter_uri,
            "threshold": spec.quality.threshold,
            "specHash": shash,
        }
    return None


def _pinned(adapter: AdapterView, spec: TaskAdapterSpec, target: ReleaseView, shash: str) -> AdapterPlan:
    entry = pinned_entry(adapter, spec, shash)
    if entry is None:
        have = ", ".join(
            sorted(
                {
                    str(e.get("release"))
                    for e in adapter_releases.entries_of(adapter.status)
                    if e.get("phase") == "Ready"
                }
            )
        )
        return AdapterPlan(
            "PinMissing",
            target,
            shash,
            message=f"spec.pinnedRelease {spec.pinned_release}: no Ready artifact for that release in status.releases "
            f"(Ready ones: {have or 'none'}); unset it or name one of those",
        )
    return AdapterPlan("Pinned", target, shash, restored=entry, target_identity=identity.identity_of(target) or "")


def projection_groups(plans: Iterable[AdapterPlan]) -> dict[str, ProjectionInputs]:
    """One shared projection per distinct (from, to, target modules, rank): keyed by its Job name."""
    groups: dict[str, ProjectionInputs] = {}
    for plan in plans:
        if plan.projection is not None:
            groups.setdefault(plan.projection.job_name, plan.projection)
    return groups


@dataclass(frozen=True)
class Candidate:
    """A re-adaptation whose prerequisites are met and whose Job does not exist yet."""

    adapter: AdapterView
    plan: AdapterPlan
    queue: str = ""  # the Kueue queue its Job goes to (Settings.queue_of), '' = the operator's limits apply

    @property
    def kueue(self) -> bool:
        return bool(self.queue or (self.adapter.spec and self.adapter.spec.queue_name))

    @property
    def sort_key(self) -> tuple[int, str, str, str]:
        priority = self.adapter.spec.priority if self.adapter.spec else 0
        return (-priority, self.adapter.created, self.adapter.namespace, self.adapter.name)


def running_adaptations(jobs: Iterable[JobView], release: str | None = None) -> int:
    """Unfinished re-adaptation Jobs that count against the operator's limits (Kueue's ones do not)."""
    return sum(
        1
        for j in jobs
        if j.component == naming.COMPONENT_ADAPTATION
        and not j.finished
        and not j.kueue
        and (release is None or j.release == naming.label_value(release))
    )


def steer(plans: Mapping[str, AdapterPlan], release: ReleaseView, gate: rollout.Gate) -> dict[str, AdapterPlan]:
    """The adapters' plans spec.rollout lets through now (their Jobs, and the projections they need, may be
    created): none in a dry run or while paused, only the canary's until its gate passed, none once it failed."""
    return {name: plan for name, plan in plans.items() if rollout.hold_of(release, gate, name) is None}


def admit(
    candidates: Iterable[Candidate],
    running_total: int,
    running_release: int,
    settings: Settings,
    release_limit: int | None = None,
) -> list[Candidate]:
    """Candidates to create now: Kueue-queued ones all (Kueue holds them), the others by priority up to the
    free slots of the operator-wide and per-release limits; ``release_limit`` (the release's
    spec.rollout.maxConcurrent) replaces RELORA_MAX_CONCURRENT_JOBS_PER_RELEASE for its release."""
    per_release = release_limit if release_limit is not None else settings.max_concurrent_jobs_per_release
    free = max(0, min(settings.max_concurrent_jobs - running_total, per_release - running_release))
    admitted: list[Candidate] = []
    for cand in sorted(candidates, key=lambda c: c.sort_key):
        if cand.kueue:
            admitted.append(cand)
        elif free > 0:
            admitted.append(cand)
            free -= 1
    return admitted


def adaptation_due(
    adapter: AdapterView, plan: AdapterPlan, exists: bool, projection: JobView | None, settings: Settings
) -> bool:
    """Whether ``plan``'s re-adaptation Job is a candidate for admission now (the limits decide after):
    the plan adapts, its Job does not ``exist`` (in the index, in flight, or refused by the API server), a lost
    Job may still be re-created (else the adapter's own pass says JobLost), and the projection it starts from,
    if it needs one, has completed."""
    if plan.kind != "Adapt" or plan.adaptation is None or exists:
        return False
    if not recreation_allowed(adapter, plan.adaptation.job_name, settings):
        return False
    return plan.projection is None or (projection is not None and projection.complete)


def result_recorded(status: Mapping[str, Any], job: JobView | None) -> bool:
    """Whether the adapter's status already records how ``job`` ended, so its result is not read again: the Job
    is the status's and the phase final — unless Ready early while the Job still improves the adapter."""
    return (
        job is not None
        and status.get("job") == job.name
        and status.get("phase") in ("Ready", "Degraded", "Failed")
        and not improve.is_improving(status)
    )


def waiting_on(job: JobView | None, projection: JobView | None) -> JobView | None:
    """The unfinished Job the adapter waits on now (its adaptation, else its projection), whose stuck pod
    (missing Secret, image pull) is the user's to fix; None when neither is running."""
    current = job if job is not None and not job.finished else projection
    return current if current is not None and not current.finished else None


def adapter_event(old: AdapterView | None, new: AdapterView | None) -> Literal["forget", "sync"] | None:
    """What a TaskAdapter watch event asks for: ``forget`` a deleted adapter, ``sync`` one created or edited (a
    new generation); a status or metadata change (often our own write) is left to the periodic resync."""
    if new is None:
        return "forget" if old is not None else None
    if old is not None and old.generation == new.generation:
        return None
    return "sync"


def job_event(old: JobView | None, new: JobView | None) -> Literal["family", "adapter"] | None:
    """What a Job watch event asks for when the Job has just finished: its family's pass (a projection: the
    adaptations waiting on it may start) or its adapter's sync (an adaptation: its result can be read, once the
    pod's final status is there too)."""
    if new is None or not new.finished or (old is not None and old.finished):
        return None
    if new.component == naming.COMPONENT_PROJECTION:
        return "family"
    if new.component == naming.COMPONENT_ADAPTATION:
        return "adapter"
    return None


def pod_just_ended(old: PodView | None, new: PodView | None) -> bool:
    """Whether this pod event first shows the pod's exit code: the Job's end may arrive before it (separate
    watch streams), and then this is the moment the adapter's result can be read."""
    return new is not None and new.exit_code is not None and (old is None or old.exit_code is None)
