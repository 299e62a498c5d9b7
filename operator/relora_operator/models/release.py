"""BaseModelRelease: one released version of a base model family."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from relora_operator.models.adapter import MAX_DEADLINE_SECONDS, NODE_SELECTOR_RULE, LabelValue
from relora_operator.models.common import (
    NAME_PATTERN,
    Condition,
    CrdModel,
    Uri,
    cel,
    immutable,
    quantity_field,
    uri_field,
)


class ProjectionSettings(CrdModel):
    """How the shared delta projections of this release are computed."""

    svd: Literal["auto", "exact", "randomized"] = Field(
        default="auto",
        description="Truncated SVD method: auto (the worker's default: randomized for rank <= 64, else exact), "
        "exact, or randomized (faster on large matrices).",
    )
    gpus: int | None = Field(
        default=None,
        ge=0,
        le=16,
        description="GPUs of each projection pod; unset uses the operator's RELORA_PROJECTION_GPUS.",
    )
    cpu: str | None = quantity_field('CPU request of each projection pod (a quantity: "4", "500m").')
    memory: str | None = quantity_field("Memory request and limit of each projection pod (a quantity: 64Gi).")
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DEADLINE_SECONDS,
        description="activeDeadlineSeconds of each projection Job; unset uses the operator's "
        "RELORA_JOB_ACTIVE_DEADLINE_SECONDS (chart value worker.activeDeadlineSeconds).",
    )


class CanarySpec(CrdModel):
    """Adapt a part of the family first; the rest follows only if enough of it became Ready."""

    model_config = CrdModel.model_config | {
        "json_schema_extra": cel(
            {"rule": "has(self.selector) || has(self.percent)", "message": "a canary needs a selector or a percent"},
        )
    }

    selector: dict[str, LabelValue] | None = Field(
        default=None,
        max_length=32,
        json_schema_extra=cel(NODE_SELECTOR_RULE | {"message": "every selector key must be a label key"}),
        description="Labels (all must match) of the TaskAdapters in the canary; unset: every adapter of the family.",
    )
    percent: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Percentage of the adapters the selector matches (all of them when unset) that form the "
        "canary, rounded up: the first ones in an order fixed by a hash of the release's and the adapter's uid.",
    )
    success_fraction: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Fraction of the canary that must become Ready for the release; when that can no longer "
        "happen the rollout halts (condition CanaryPassed=False, reason CanaryFailed, naming the failures).",
    )


class RolloutSpec(CrdModel):
    """How the operator rolls this release out to its family's TaskAdapters."""

    paused: bool = Field(
        default=False,
        description="No new re-adaptation or projection Jobs while true; running ones finish.",
    )
    dry_run: bool = Field(
        default=False,
        description="Plan only: no Jobs; status.rollout.plan lists what would be adapted, with estimated GPU-hours "
        "from the family's finished Jobs.",
    )
    max_concurrent: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Re-adaptation Jobs of this release running at once; unset uses the operator's "
        "RELORA_MAX_CONCURRENT_JOBS_PER_RELEASE (the operator-wide RELORA_MAX_CONCURRENT_JOBS still applies).",
    )
    canary: CanarySpec | None = Field(
        default=None,
        description="Adapt these adapters first; the others are adapted, and adapters Ready for this release "
        "are served, only once the canary gate passed.",
    )


class BatchingSpec(CrdModel):
    """Many adapters per Job: adapters that share this release, task kind and resources are re-adapted one after
    another in one worker Job (``relora readapt-batch``), so the base model is downloaded and loaded once."""

    max_adapters_per_job: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Adapters re-adapted by one worker Job at most; 1 is one Job per adapter. Unset uses the "
        "operator's RELORA_BATCH_MAX_ADAPTERS_PER_JOB (chart value batching.maxAdaptersPerJob, default 1).",
    )
    max_gpu_minutes_per_job: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="GPU-minutes one batch Job may be expected to take (its adapters x their GPUs x the median "
        "re-adaptation time of the family's finished runs; no bound while no run has finished). Unset uses the "
        "operator's RELORA_BATCH_MAX_GPU_MINUTES_PER_JOB (0: no bound).",
    )


class BaseModelReleaseSpec(CrdModel):
    """A base model release; applying one rolls every TaskAdapter of its family over to it."""

    model_config = CrdModel.model_config | {
        "json_schema_extra": cel(
            {
                "rule": "!has(self.supersedes) || self.supersedes != self.version",
                "message": "a release cannot supersede itself",
            },
        )
    }

    family: str = Field(
        description="Base model family, e.g. llama-3.1-8b; its TaskAdapters (same namespace) follow it.",
        min_length=1,
        max_length=63,
        pattern=NAME_PATTERN,
        json_schema_extra=cel(immutable("family")),
    )
    version: str = Field(
        description="Version of this release within the family, e.g. v2; used in artifact paths.",
        min_length=1,
        max_length=40,
        pattern=NAME_PATTERN,
        json_schema_extra=cel(immutable("version")),
    )
    model_uri: Uri = uri_field(
        "URI of the model (Hugging Face format folder), s3:// or file://.",
    )
    supersedes: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        pattern=NAME_PATTERN,
        description="Version this release replaces; default: the family's newest completed release.",
    )
    projection: ProjectionSettings = Field(
        default_factory=ProjectionSettings,
        json_schema_extra={"default": {}},
        description="Settings of the shared delta projections (W' - W, truncated to each adapter's rank).",
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec,
        json_schema_extra={"default": {}},
        description="Steering of the rollout: pause, dry run, concurrency, canary.",
    )
    batching: BatchingSpec = Field(
        default_factory=BatchingSpec,
        json_schema_extra={"default": {}},
        description="Many adapters per Job: how many adapters one worker Job re-adapts on one load of the base.",
    )


class ProjectionStatus(CrdModel):
    """One shared delta projection of this release."""

    from_release: str = Field(description="Release the delta starts from.")
    rank: int = Field(description="Rank of the projection.")
    target_modules: list[str] = Field(description="Modules the projection covers.")
    job: str = Field(description="Name of the projection Job.")
    uri: str = Field(description="Where the projection is written.")
    state: str = Field(description="Pending, Running, Succeeded or Failed.")
    message: str | None = Field(default=None, description="Failure message of the Job, if any.")


class AdapterCounts(CrdModel):
    """Counts of this family's TaskAdapters by state, for this release."""

    total: int = Field(default=0, description="TaskAdapters of the family in this namespace.")
    ready: int = Field(default=0, description="Ready for this release.")
    degraded: int = Field(
        default=0,
        description="Below their threshold after the budget (previous adapter kept), or rolled back "
        "(spec.pinnedRelease).",
    )
    failed: int = Field(default=0, description="Failed (bad input or a worker error after retries).")
    running: int = Field(default=0, description="With a re-adaptation Job running.")
    queued: int = Field(default=0, description="Waiting for a projection or a free slot.")


class CanaryStatus(CrdModel):
    """The canary gate of the release."""

    state: str = Field(description="Pending, Passed (the rest of the family follows) or Failed (rollout halted).")
    adapters: int = Field(default=0, description="TaskAdapters in the canary.")
    members: list[str] | None = Field(default=None, description="Their names (the first 20, sorted).")
    ready: int = Field(default=0, description="Of them, Ready for this release.")
    required: int = Field(default=0, description="Ready ones needed to pass (successFraction x adapters, rounded up).")
    failed: int = Field(default=0, description="Of them, Degraded or Failed for this release.")
    failures: list[str] | None = Field(default=None, description="'name (reason)' of those (the first 20).")
    message: str | None = Field(default=None, description="The gate in words.")


class PlanEntry(CrdModel):
    """One re-adaptation a dry run would start."""

    adapter: str = Field(description="TaskAdapter name.")
    from_release: str = Field(description="Release of the adapter it would start from.")
    strategy: str = Field(description="Strategy of the TaskAdapter.")
    gpus: int = Field(description="GPUs of its pod.")
    estimated_gpu_hours: str = Field(description="Median Job duration of the family x gpus, or unknown.")


class PlanStatus(CrdModel):
    """What a dry run would do (spec.rollout.dryRun)."""

    adapters: list[PlanEntry] | None = Field(default=None, description="Re-adaptations it would start (first 50).")
    total: int = Field(default=0, description="How many re-adaptations it would start.")
    estimated_gpu_hours: str = Field(
        description="Sum of the entries' estimates (all of them, not only those listed), or unknown when no Job of "
        "the family has finished yet."
    )
    basis: str = Field(description="What the estimate rests on.")


class RolloutStatus(CrdModel):
    """The steering in force (spec.rollout) and what it decided."""

    paused: bool = Field(default=False, description="spec.rollout.paused as last reconciled.")
    dry_run: bool = Field(default=False, description="spec.rollout.dryRun as last reconciled.")
    max_concurrent: int | None = Field(default=None, description="Limit of this release's running Jobs in force.")
    canary: CanaryStatus | None = Field(default=None, description="The canary gate, when spec.rollout.canary is set.")
    plan: PlanStatus | None = Field(default=None, description="The dry run's plan, when spec.rollout.dryRun is true.")


class BaseModelReleaseStatus(CrdModel):
    """Observed state of the release's rollout."""

    model_config = CrdModel.model_config | {"extra": "ignore"}

    phase: str | None = Field(
        default=None,
        description="Pending, Projecting, RollingOut, Paused, DryRun, Halted (canary failed), Complete or Superseded.",
    )
    supersedes: str | None = Field(default=None, description="The release this one replaces, as resolved.")
    projections: list[ProjectionStatus] | None = Field(default=None, description="Shared delta projections.")
    adapters: AdapterCounts | None = Field(default=None, description="Counts of TaskAdapters by state.")
    rollout: RolloutStatus | None = Field(default=None, description="Steering of the rollout and its canary gate.")
    start_time: str | None = Field(default=None, description="When the rollout started (RFC 3339).")
    finish_time: str | None = Field(default=None, description="When every TaskAdapter reached a final state.")
    rollout_duration_seconds: float | None = Field(default=None, description="finishTime - startTime.")
    rollout_duration: str | None = Field(default=None, description="rolloutDurationSeconds humanised (4m12s).")
    pending_adapters: list[str] | None = Field(
        default=None, description="Adapters not yet Ready, Degraded or Failed for this release (the first 20, sorted)."
    )
    failed_adapters: list[str] | None = Field(
        default=None, description="'name (reason)' of the adapters Degraded or Failed for this release (the first 20)."
    )
    model_digest: str | None = Field(
        default=None,
        description="Digest of the model's weights as last read from storage: sha256 of its manifest.json, else "
        "of its file listing (names, sizes, ETags); empty when the folder could not be read yet.",
    )
    model_digest_uri: str | None = Field(default=None, description="The model URI modelDigest was read from.")
    identity: str | None = Field(
        default=None,
        description="Identity of this release (hash of uid, model URI and model digest): adapters are Ready for "
        "it, projections and history entries are keyed by it, never by the version string alone.",
    )
    conditions: list[Condition] | None = Field(
        default=None, description="Ready, Progressing, Degraded, StorageAvailable, CanaryPassed (with a canary)."
    )
    observed_generation: int | None = Field(default=None, description="metadata.generation last reconciled.")
