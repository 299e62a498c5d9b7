"""Many adapters per Job (issue 15): the plan the operator hands ``relora readapt-batch`` and the batch record
the worker writes back, one adapter at a time.

* :class:`BatchPlan` (``format`` ``relora-batch-plan/v1``): one base release, one task kind, and the adapters to
  re-adapt against it, each with its own adapter, data, threshold, output and options. Unknown fields are
  refused by name (a misspelt ``thresold`` must not silently fall back to a default).
* :class:`BatchRecord` (``format`` ``relora-batch-result/v1``): written to the plan's ``result`` URI after every
  adapter (atomically: whole or not at all), so a reader maps each finished adapter (``key``, as the plan gave
  it) to its exit code, quality and published version while the rest of the batch still runs.
* :func:`batch_exit_code`: the Job's exit code from the adapters' codes (docs/worker-contract.md).

Standard library and pydantic only (the operator imports it), never torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from relora_contract.errors import parse_versioned
from relora_contract.exit_codes import ExitCode
from relora_contract.result import RunStatus, described

PLAN_FORMAT = "relora-batch-plan/v1"
RECORD_FORMAT = "relora-batch-result/v1"
# Options the plan fixes for the whole batch: one base load serves one task kind.
BATCH_WIDE = ("task", "base_model", "old_base_model", "projection", "new_release")


class PlannedAdapter(BaseModel):
    """One adapter of the batch: what ``relora readapt`` would get on its command line for it."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, description="the caller's name for this adapter (e.g. namespace/name); unique")
    adapter: str = Field(min_length=1, description="URI of the old PEFT adapter folder")
    train_data: str = Field(min_length=1, description="URI of the training data")
    val_data: str | None = described(None, "URI of D_val (default: carved from train)")
    eval_data: str | None = described(None, "URI of D_eval (default: carved from train)")
    output: str = Field(min_length=1, description="where to publish the new adapter; unique within the plan")
    threshold: float | None = described(None, "the service-quality threshold (default: the plan's options)")
    old_release: str = described("", "the release the adapter was trained on")
    base_name: str = described("", "the new base's name as readers know it (default: the plan's)")
    control_result: str | None = described(None, "result.json of a random-init control run")
    options: dict[str, Any] = described({}, "readapt options for this adapter (underscored, as --config)")

    @field_validator("options")
    @classmethod
    def _no_batch_wide(cls, value: dict[str, Any]) -> dict[str, Any]:
        fixed = sorted(set(value) & set(BATCH_WIDE))
        if fixed:
            raise ValueError(f"{fixed} are fixed for the whole batch (set them once at the plan's top level)")
        return value


class BatchPlan(BaseModel):
    """``relora readapt-batch --plan URI``: adapters of one base release and task kind, run one after another
    on one load of the base (and of the projection when the strategy needs it)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["relora-batch-plan/v1"] = described(PLAN_FORMAT, "the plan's version")
    base_model: str = Field(min_length=1, description="URI of the NEW base model, loaded once")
    old_base_model: str | None = described(None, "URI of the OLD base (Π_r computed once per rank and targets)")
    projection: str | None = described(None, "URI of a projection published by project-delta, read once")
    new_release: str = described("", "name of the new release")
    base_name: str = described("", "the new base's name as readers know it")
    task: str = described("seq-cls", "the task kind every adapter of the batch shares (seq-cls or causal-lm)")
    options: dict[str, Any] = described({}, "readapt options for every adapter (underscored, as --config)")
    result: str = Field(min_length=1, description="URI the batch record is written to after each adapter")
    adapters: list[PlannedAdapter] = Field(min_length=1, description="the adapters, in the order they run")

    @field_validator("options")
    @classmethod
    def _no_fixed(cls, value: dict[str, Any]) -> dict[str, Any]:
        fixed = sorted(set(value) & set(BATCH_WIDE))
        if fixed:
            raise ValueError(f"{fixed} are the plan's own fields; set them at the top level, not in options")
        return value

    @model_validator(mode="after")
    def _unique(self) -> BatchPlan:
        for field in ("key", "output"):
            seen: set[str] = set()
            for index, adapter in enumerate(self.adapters):
                value = getattr(adapter, field)
                if value in seen:
                    raise ValueError(f"adapters[{index}].{field} {value!r} repeats an earlier adapter's")
                seen.add(value)
        return self

    @classmethod
    def parse(cls, value: Any, where: str = "batch plan") -> BatchPlan:
        """The plan in ``value``; a ContractError naming ``where``, the field and what was expected otherwise."""
        return parse_versioned(cls, value, where, PLAN_FORMAT)


class AdapterOutcome(BaseModel):
    """How one adapter of the batch ended."""

    model_config = ConfigDict(extra="allow", use_enum_values=True, ser_json_inf_nan="null")

    key: str = described(..., "the plan's key for the adapter")
    exit_code: ExitCode = described(..., "what `relora readapt` would have exited with for this adapter alone")
    status: RunStatus = described(..., "ready, below-threshold or error")
    error: str | None = described(None, "why this adapter was not published (null when it was)")
    quality: float | None = described(None, "the metric on D_eval of the adapter to serve")
    threshold: float | None = described(None, "the service-quality threshold")
    output: str = described(..., "the plan's output URI")
    adapter_uri: str | None = described(None, "the immutable published version to serve")
    result_uri: str | None = described(None, "its result.json")
    seconds: float = described(0.0, "seconds this adapter took, base restore included")


class BaseCounters(BaseModel):
    """What loading the base cost the batch (the fleet benchmark's numbers: loads = adapters / batch size)."""

    model_config = ConfigDict(extra="forbid")

    base_bytes_downloaded: int = described(0, "bytes of the base model fetched from object storage")
    model_loads: int = described(0, "times the base model was loaded from its files")
    restores: int = described(0, "times the pristine base was restored in memory instead of loaded")
    projection_loads: int = described(0, "projections read or computed")
    seconds: dict[str, float] = described({}, "seconds per phase: fetch, load, restore, projection")


class BatchRecord(BaseModel):
    """The batch record at the plan's ``result`` URI: rewritten whole after each adapter."""

    model_config = ConfigDict(extra="allow", use_enum_values=True, ser_json_inf_nan="null")

    format: Literal["relora-batch-result/v1"] = described(RECORD_FORMAT, "the record's version")
    plan_sha256: str = described(..., "sha256 of the plan's bytes: which plan this record answers")
    base_model: str = described(..., "the plan's base model")
    adapters: list[AdapterOutcome] = described([], "the finished adapters, in the order they finished")
    pending: list[str] = described([], "keys of the adapters not finished yet")
    done: bool = described(False, "true once every adapter has an outcome")
    exit_code: ExitCode | None = described(None, "the Job's exit code (batch_exit_code), once done")
    counters: BaseCounters = described(BaseCounters(), "base downloads, loads, restores and seconds per phase")

    @classmethod
    def parse(cls, value: Any, where: str = "batch record") -> BatchRecord:
        """The record in ``value``; a ContractError naming ``where`` and what is wrong otherwise."""
        return parse_versioned(cls, value, where, RECORD_FORMAT)

    def outcome(self, key: str) -> AdapterOutcome | None:
        return next((a for a in self.adapters if a.key == key), None)


RETRYABLE = (ExitCode.STORAGE, ExitCode.INTERNAL)  # in this order: a storage failure is named first


def batch_exit_code(codes: Iterable[int]) -> ExitCode:
    """The Job's exit code from its adapters' (docs/worker-contract.md, "Exit codes of readapt-batch"):
    a retryable failure (4, then 1) wins, so that the Job's retry policy gets its chance; otherwise 2 when no
    adapter was published (every one was bad input); otherwise 3 when any adapter is not ready (below its
    threshold or bad input: the others are published); 0 when every adapter is ready."""
    found = [ExitCode(c) for c in codes]
    for code in RETRYABLE:
        if code in found:
            return code
    if found and all(c == ExitCode.BAD_INPUT for c in found):
        return ExitCode.BAD_INPUT
    if any(c != ExitCode.OK for c in found):
        return ExitCode.BELOW_THRESHOLD
    return ExitCode.OK
