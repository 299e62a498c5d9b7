"""BaseModelRelease: one released version of a base model family."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from relora_operator.models.adapter import MAX_DEADLINE_SECONDS
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
    degraded: int = Field(default=0, description="Below their threshold after the budget (previous adapter kept).")
    failed: int = Field(default=0, description="Failed (bad input or a worker error after retries).")
    running: int = Field(default=0, description="With a re-adaptation Job running.")
    queued: int = Field(default=0, description="Waiting for a projection or a free slot.")


class BaseModelReleaseStatus(CrdModel):
    """Observed state of the release's rollout."""

    model_config = CrdModel.model_config | {"extra": "ignore"}

    phase: str | None = Field(default=None, description="Pending, Projecting, RollingOut, Complete or Superseded.")
    supersedes: str | None = Field(default=None, description="The release this one replaces, as resolved.")
    projections: list[ProjectionStatus] | None = Field(default=None, description="Shared delta projections.")
    adapters: AdapterCounts | None = Field(default=None, description="Counts of TaskAdapters by state.")
    start_time: str | None = Field(default=None, description="When the rollout started (RFC 3339).")
    finish_time: str | None = Field(default=None, description="When every TaskAdapter reached a final state.")
    rollout_duration_seconds: float | None = Field(default=None, description="finishTime - startTime.")
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
    conditions: list[Condition] | None = Field(default=None, description="Ready, Progressing, Degraded.")
    observed_generation: int | None = Field(default=None, description="metadata.generation last reconciled.")
