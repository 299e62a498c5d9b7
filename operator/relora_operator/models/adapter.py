"""TaskAdapter: one task's LoRA adapter, kept ready for the newest release of its base model family."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from relora_contract import strategies
from relora_operator.models.common import (
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    NAME_PATTERN,
    Condition,
    CrdModel,
    Uri,
    cel,
    immutable,
    quantity_field,
    uri_field,
)
from relora_operator.models.serving import Serving

Strategy = Literal[*strategies.NAMES]  # type: ignore[valid-type]  # the contract's names (relora_contract)
# The strategies that read the projected release delta: they get a projection Job ("auto" may choose a fused
# start, so it gets the delta too).
STRATEGIES_WITH_DELTA = strategies.USES_DELTA
# A worker Job may run at most this long (activeDeadlineSeconds); 30 days is beyond any sane re-adaptation.
MAX_DEADLINE_SECONDS = 30 * 24 * 3600
ModuleName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.*-]+$")]
LabelName = Annotated[str, Field(min_length=1, max_length=256)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
_LABEL_KEY = re.compile(LABEL_KEY_PATTERN)
NODE_SELECTOR_RULE = {
    "rule": "self.all(k, k.size() <= 253 && k.matches('" + LABEL_KEY_PATTERN.replace("\\", "\\\\") + "'))",
    "message": "every nodeSelector key must be a label key: [prefix/]name, name of at most 63 letters, digits, "
    "'-', '_', '.' starting and ending with a letter or digit",
}


class TaskData(CrdModel):
    """The task and its data (JSON Lines, one example per line)."""

    type: Literal["seq-cls", "causal-lm"] = Field(
        description="seq-cls: sequence classification; causal-lm: prompt -> completion."
    )
    train_data: Uri = uri_field("Training data URI (JSONL), s3:// or file://.")
    val_data: Uri | None = uri_field("Validation data URI; default: held out from trainData.", default=None)
    eval_data: Uri | None = uri_field("Evaluation data URI; default: held out from trainData.", default=None)
    text_field: str = Field(
        default="text",
        min_length=1,
        max_length=128,
        description="Field of each example holding the input text (the prompt).",
    )
    label_field: str = Field(
        default="label", min_length=1, max_length=128, description="Field holding the label (the completion)."
    )
    labels: list[LabelName] | None = Field(
        default=None,
        min_length=2,
        max_length=1000,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="The label set, in the order of the classifier head; default: read from the data.",
    )


class QualityGate(CrdModel):
    """When an adapter is good enough to serve."""

    metric: Literal["accuracy", "exact-match"] = Field(
        default="accuracy", description="Quality metric on the evaluation data (exact-match needs causal-lm)."
    )
    threshold: float = Field(
        gt=0,
        le=1,
        json_schema_extra=cel({"rule": "self > 0.0 && self <= 1.0", "message": "threshold must be in (0, 1]"}),
        description="The adapter is Ready once its quality reaches this value, in (0, 1].",
    )


class StrategySpec(CrdModel):
    """How the adapter is re-adapted and with which budget."""

    model_config = CrdModel.model_config | {
        "json_schema_extra": cel(
            {"rule": "self.alphaMin < self.alphaMax", "message": "alphaMin must be less than alphaMax"},
            {"rule": "self.betaMin < self.betaMax", "message": "betaMin must be less than betaMax"},
            {
                "rule": "self.alphaMin <= 0.0 && self.alphaMax >= 0.0 && self.betaMin <= 1.0 && self.betaMax >= 1.0",
                "message": "the search bounds must contain the transfer point alpha=0, beta=1",
            },
        )
    }

    name: Strategy = Field(
        default="auto",
        description="relora (projected delta + BO search + regularised fine-tune), relora-noreg, transfer "
        "(old adapter as is), transfer-ft, scratch, random-init (control), or auto (the worker chooses).",
    )
    search_budget: int = Field(
        default=20,
        ge=1,
        le=200,
        description="Evaluations of the (alpha, beta) Bayesian search, seeds included.",
    )
    alpha_min: float = Field(default=-2.0, ge=-100, le=100, description="Lower bound of alpha (delta weight).")
    alpha_max: float = Field(default=1.0, ge=-100, le=100, description="Upper bound of alpha.")
    beta_min: float = Field(default=0.0, ge=-100, le=100, description="Lower bound of beta (old adapter weight).")
    beta_max: float = Field(default=3.0, ge=-100, le=100, description="Upper bound of beta.")
    max_steps: int = Field(default=300, ge=0, le=1_000_000, description="Fine-tuning step budget.")
    stop_at_ready: bool = Field(
        default=True,
        description="Stop as soon as the threshold is reached (fast rollout) instead of "
        "finishing the budget (best quality).",
    )
    improve_after_ready: bool = Field(
        default=True,
        description="Ready early, improve after: mark the adapter Ready at the first version that meets the "
        "threshold and keep training to the budget; the better version replaces it when the Job ends.",
    )
    improve_max_steps: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="At most this many training steps after Ready (default: until maxSteps).",
    )
    learning_rate: float | None = Field(default=None, gt=0, le=1, description="Peak learning rate (default 5e-4).")
    batch_size: int | None = Field(default=None, ge=1, le=4096, description="Batch size (default 32).")
    eval_every: int | None = Field(
        default=None, ge=1, le=100_000, description="Evaluate the quality every this many steps (default 10)."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Random seed of the search and fine-tuning.")


class Resources(CrdModel):
    """Compute for the re-adaptation pod."""

    gpus: int | None = Field(
        default=None, ge=0, le=16, description="GPUs per pod; unset uses the operator's RELORA_DEFAULT_GPUS."
    )
    cpu: str | None = quantity_field('CPU request (a quantity: "4", "500m").')
    memory: str | None = quantity_field("Memory request and limit (a quantity: 32Gi, 512Mi).")


class Toleration(CrdModel):
    """A core/v1 Toleration."""

    model_config = CrdModel.model_config | {
        "json_schema_extra": cel(
            {
                "rule": "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                "message": "value must be empty when operator is Exists",
            },
            {
                "rule": "has(self.key) || (has(self.operator) && self.operator == 'Exists')",
                "message": "a toleration without a key must have operator Exists",
            },
            {
                "rule": "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "message": "tolerationSeconds needs effect NoExecute",
            },
        )
    }

    key: str | None = Field(
        default=None,
        max_length=253,
        pattern=LABEL_KEY_PATTERN,
        description="Taint key to tolerate (a label key). Without a key, operator Exists tolerates every taint: "
        "the operator refuses that unless its setting RELORA_ALLOW_TOLERATE_ALL (chart value "
        "worker.allowTolerateAllTaints) is true.",
    )
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal.")
    value: str | None = Field(
        default=None, max_length=63, pattern=LABEL_VALUE_PATTERN, description="Taint value for Equal."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty: all."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, le=MAX_DEADLINE_SECONDS, description="For NoExecute: how long to stay bound."
    )


class TaskAdapterSpec(CrdModel):
    """A task's LoRA adapter; the operator keeps it ready for the newest release of its family."""

    model_config = CrdModel.model_config | {
        "json_schema_extra": cel(
            {
                "rule": "self.quality.metric != 'exact-match' || self.task.type == 'causal-lm'",
                "message": "metric exact-match needs task.type causal-lm",
            },
        )
    }

    family: str = Field(
        min_length=1,
        max_length=63,
        pattern=NAME_PATTERN,
        json_schema_extra=cel(immutable("family")),
        description="Base model family this adapter serves (a BaseModelRelease family, same namespace).",
    )
    adapter_uri: Uri = uri_field("URI of the PEFT adapter folder (adapter_config.json + safetensors).")
    trained_on_release: str = Field(
        min_length=1,
        max_length=40,
        pattern=NAME_PATTERN,
        description="Version of the family's release the adapter at adapterUri was trained on.",
    )
    target_modules: list[ModuleName] = Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="LoRA target modules (as in the adapter_config.json), e.g. [q_proj, v_proj].",
    )
    rank: int = Field(ge=1, le=1024, description="LoRA rank r of the adapter (as in its adapter_config.json).")
    task: TaskData = Field(description="The task and its data.")
    quality: QualityGate = Field(description="Quality metric and service threshold.")
    strategy: StrategySpec = Field(
        default_factory=StrategySpec,
        # The full default, not {}: the API server checks the CEL rules against the default as written.
        json_schema_extra={"default": StrategySpec().model_dump(by_alias=True, exclude_none=True)},
        description="Re-adaptation strategy, search bounds and budget.",
    )
    resources: Resources = Field(
        default_factory=Resources,
        json_schema_extra={"default": {}},
        description="GPUs, CPU and memory of the re-adaptation pod.",
    )
    node_selector: dict[str, LabelValue] | None = Field(
        default=None,
        max_length=64,
        json_schema_extra=cel(NODE_SELECTOR_RULE),
        description="nodeSelector of the pod (label keys and values); unset uses the operator's default.",
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=32, description="Tolerations of the pod; unset uses the operator's default."
    )
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="Higher runs first when the concurrency limit holds Jobs back.",
    )
    queue_name: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Kueue LocalQueue: the Job is created suspended, labelled kueue.x-k8s.io/queue-name.",
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DEADLINE_SECONDS,
        description="activeDeadlineSeconds of the re-adaptation Job: a pod still running after this long is "
        "stopped and the adapter gets reason DeadlineExceeded; unset uses the operator's "
        "RELORA_JOB_ACTIVE_DEADLINE_SECONDS (chart value worker.activeDeadlineSeconds).",
    )
    serving: Serving | None = Field(
        default=None,
        description="Hand-off to the serving stack (off when unset): the operator keeps one integration's target "
        "pointing at status.served, and reports the result in the Served condition.",
    )

    pinned_release: str | None = Field(
        default=None,
        min_length=1,
        max_length=40,
        pattern=NAME_PATTERN,
        description="A rollback: serve the adapter of this release from status.releases (the newest Ready entry "
        "for it, or the adapter as given when it is trainedOnRelease) instead of the newest release's; no Job runs "
        "while it is set. Unset it to serve the newest release's adapter again. `kubectl relora rollback` sets it.",
    )

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # The CRD checks the keys with CEL; this is the same check for objects stored before that rule.
        for key in value or {}:
            if len(key) > 253 or not _LABEL_KEY.match(key):
                raise ValueError(f"key {key!r}: {NODE_SELECTOR_RULE['message']}")
        return value


class Served(CrdModel):
    """The adapter to serve now."""

    release: str = Field(description="Release the served adapter is for.")
    adapter_uri: str = Field(description="URI of the served adapter.")
    job: str | None = Field(default=None, description="Job that produced it (none: as given in the spec).")
    spec_hash: str | None = Field(default=None, description="Hash of the spec it was produced for.")
    release_identity: str | None = Field(
        default=None,
        description="Identity of the release it is for (hash of the release's uid, model URI and model digest): "
        "it is served as ready only while the family's newest release has this identity.",
    )
    model_digest: str | None = Field(
        default=None,
        description="Digest of the release's model weights when it was served as given (trainedOnRelease).",
    )


class ReleaseEntry(CrdModel):
    """The adapter's artifact for one release (status.releases[])."""

    model_config = CrdModel.model_config | {"extra": "ignore"}

    release: str = Field(description="Release version it is for.")
    release_identity: str | None = Field(
        default=None, description="Identity of the release it was produced for (a rollback matches on it)."
    )
    phase: str = Field(description="Ready (met its threshold), Degraded (below it) or Failed.")
    reason: str | None = Field(
        default=None,
        description="Readapted, TrainedOnRelease (the adapter as given), WaitingForCanary (Ready, not served until "
        "the canary passes), Improved, BelowThreshold, JobFailed, BadInput, ...",
    )
    current: bool | None = Field(default=None, description="True on the entry for the family's newest release.")
    served: bool | None = Field(default=None, description="True on the entry being served (status.served).")
    job: str | None = Field(default=None, description="Job that produced it (none: the adapter as given).")
    adapter_uri: str | None = Field(default=None, description="The artifact (none when the Job failed).")
    quality: float | None = Field(default=None, description="Measured quality.")
    threshold: float | None = Field(default=None, description="The threshold it was measured against.")
    time_to_readiness_seconds: float | None = Field(default=None, description="Time to readiness.")
    time_to_readiness: str | None = Field(default=None, description="Time to readiness, humanised (4m12s).")
    spec_hash: str | None = Field(
        default=None, description="Hash of the spec it was produced for (it is served again only if equal)."
    )
    started_at: str | None = Field(default=None, description="When the Job started (dry runs estimate from it).")
    finished_at: str | None = Field(default=None, description="When the Job finished.")
    message: str | None = Field(default=None, description="Error message, if any.")


class HistoryEntry(CrdModel):
    """Deprecated: one re-adaptation attempt's outcome (read once into status.releases, then removed)."""

    model_config = CrdModel.model_config | {"extra": "ignore"}

    release: str = Field(description="Target release.")
    outcome: str = Field(description="Ready, BelowThreshold or Failed.")
    job: str = Field(description="Job name.")
    quality: float | None = Field(default=None, description="Measured quality.")
    time_to_readiness_seconds: float | None = Field(default=None, description="Time to readiness.")
    adapter_uri: str | None = Field(default=None, description="Adapter written.")
    spec_hash: str | None = Field(
        default=None, description="Hash of the spec it was produced for (a rollback serves it again only if equal)."
    )
    release_identity: str | None = Field(
        default=None, description="Identity of the release it was produced for (a rollback matches on it)."
    )
    started_at: str | None = Field(default=None, description="When the Job started (dry runs estimate from it).")
    finished_at: str | None = Field(default=None, description="When the Job finished.")
    message: str | None = Field(default=None, description="Error message, if any.")


class TaskAdapterStatus(CrdModel):
    """Observed state of the adapter."""

    model_config = CrdModel.model_config | {"extra": "ignore"}

    phase: str | None = Field(
        default=None,
        description="Pending, WaitingForProjection, Queued, Adapting, Ready, Degraded, Failed or RolledBack "
        "(spec.pinnedRelease).",
    )
    target_release: str | None = Field(default=None, description="Newest release of the family (the goal).")
    ready_release: str | None = Field(default=None, description="Release the served adapter is ready for.")
    served: Served | None = Field(default=None, description="The adapter to serve (kept when below threshold).")
    adapter_uri: str | None = Field(default=None, description="URI of the adapter to serve (= served.adapterUri).")
    quality: float | None = Field(default=None, description="Quality measured by the last re-adaptation.")
    time_to_readiness_seconds: float | None = Field(default=None, description="Its time to readiness.")
    time_to_readiness: str | None = Field(default=None, description="timeToReadinessSeconds humanised (4m12s).")
    alpha: float | None = Field(default=None, description="Chosen alpha (delta weight).")
    beta: float | None = Field(default=None, description="Chosen beta (old adapter weight).")
    strategy: str | None = Field(default=None, description="Strategy of the last re-adaptation.")
    job: str | None = Field(default=None, description="Current or last re-adaptation Job.")
    projection_uri: str | None = Field(default=None, description="Delta projection used.")
    result_uri: str | None = Field(default=None, description="result.json of the last re-adaptation.")
    message: str | None = Field(default=None, description="Human-readable state.")
    lost_jobs: int | None = Field(
        default=None,
        description="Times the current re-adaptation Job disappeared before it finished (deleted, TTL, node "
        "drain): it is re-created up to RELORA_JOB_BACKOFF_LIMIT times, then the adapter fails with JobLost.",
    )
    releases: list[ReleaseEntry] | None = Field(
        default=None,
        description="One entry per release the adapter has an artifact for, newest first; at most "
        "RELORA_HISTORY_LIMIT, the oldest pruned first, never the served one.",
    )
    rollback_release: str | None = Field(
        default=None,
        description="The release `kubectl relora rollback ADAPTER` pins without --to: that of the newest Ready "
        "entry of releases[] with an artifact that is not served.",
    )
    history: list[HistoryEntry] | None = Field(
        default=None,
        description="Deprecated (kept in the schema so that the operator can read it once): the per-Job history "
        "written before status.releases; moved into releases on the next status write.",
    )
    conditions: list[Condition] | None = Field(
        default=None, description="Ready, Progressing, Degraded, Promoted; Served with spec.serving."
    )
    observed_generation: int | None = Field(default=None, description="metadata.generation last reconciled.")


def parse_spec(spec: Any) -> TaskAdapterSpec:
    return TaskAdapterSpec.model_validate(dict(spec))
