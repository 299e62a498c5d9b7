"""result.json: the full record of one re-adaptation, published beside the adapter.

The worker assembles the record and checks it against :class:`ResultRecord` before it writes the file; the
operator reads it through the same model (when the termination message is gone, and for the first ready
version of ``--improve-after-ready``). The fields declared here are the ones the operator and the summary
rely on; the rest of the record (trajectory, search, timings, configuration, library versions…) is kept as it
is (``extra="allow"``) and described in docs/worker-contract.md.

The record's version is its ``format``: ``relora-result/v1``. A record of another format is refused with a
:class:`~relora_contract.errors.ContractError` that names it, never taken for something it is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from relora_contract.errors import parse_versioned
from relora_contract.exit_codes import ExitCode
from relora_contract.strategies import Strategy

FORMAT = "relora-result/v1"
FIRST_READY = "first-ready"  # ``version`` of the first ready version published at ``<output>-ready``


def described(default: Any, description: str) -> Any:
    """A model field with its meaning (the docs' tables of the summary's and result.json's keys show it)."""
    return Field(default, description=description)


class RunStatus(StrEnum):
    """How a worker's run ended: ``status`` of the termination summary and of result.json."""

    READY = "ready"  # readapt met its threshold (exit 0)
    BELOW_THRESHOLD = "below-threshold"  # readapt published below its threshold (exit 3)
    OK = "ok"  # project-delta, evaluate, demo: done (exit 0)
    ERROR = "error"  # nothing published; ``error`` says why
    TERMINATED = "terminated"  # SIGTERM/SIGINT: nothing of the run published


class Interval(BaseModel):
    """A quality with its two-sided Wilson interval (relora_worker.readiness.report_interval)."""

    model_config = ConfigDict(extra="allow")

    value: float | None = None
    low: float
    high: float
    level: float | None = None
    n: int | None = None
    method: str | None = None


class Artifact(BaseModel):
    """What a serving hand-off needs to know without reading the published folder (issue 13)."""

    model_config = ConfigDict(extra="allow")

    base_model_name_or_path: str | None = None
    modules_to_save: list[str] | None = None
    vllm_compatible: bool | None = None
    vllm_problems: list[str] = []


class ResultRecord(BaseModel):
    """The typed part of result.json (``format`` ``relora-result/v1``); other keys pass through unchanged."""

    model_config = ConfigDict(extra="allow", use_enum_values=True)

    format: Literal["relora-result/v1"] = described(FORMAT, "the record's version")
    version: Literal["first-ready"] | None = described(None, "first-ready on the first ready version only")
    status: Literal["ready", "below-threshold"] = described(..., "ready or below-threshold")
    strategy: Strategy = described(..., "the strategy that ran (relora_contract.strategies)")
    metric: str | None = described(None, "accuracy or exact-match")
    threshold: float | None = described(None, "the service-quality threshold")
    quality: float | None = described(None, "the metric on D_eval of the adapter to serve")
    quality_interval: Interval | None = described(None, "the quality with its two-sided 95 % Wilson interval")
    time_to_readiness_s: float | None = described(None, "seconds until the readiness rule held (null: never)")
    readiness_rule: str | None = described(None, "the readiness rule in words (first ready version)")
    alpha: float | None = described(None, "α* of a fused start")
    beta: float | None = described(None, "β* of a fused start")
    adapter_uri: str | None = described(None, "the immutable version to serve (the better of first-ready and final)")
    result_uri: str | None = described(None, "this record")
    final_adapter_uri: str | None = described(None, "the output the final version is published at")
    final_quality: float | None = described(None, "the quality of the final version")
    ready_version: ResultRecord | None = described(None, "the first ready version's record, when one was published")
    artifact: Artifact | None = described(None, "base_model_name_or_path, modules_to_save, vllm_compatible, …")
    eval_data: dict[str, Any] | None = described(None, "digests of the evaluation data (sha256, examples_sha256)")

    @classmethod
    def parse(cls, value: Mapping[str, Any], where: str = "result.json") -> ResultRecord:
        """The record in ``value``; a ContractError naming ``where`` and what is wrong otherwise."""
        return parse_versioned(cls, value, where, FORMAT)

    @classmethod
    def view(cls, value: Mapping[str, Any]) -> ResultRecord:
        """``value``'s declared fields by name (absent: their default), not validated: a record still being
        assembled, or one a reader takes as it is (the model card of a partial record). Nested values stay
        as they are (an interval stays a dict)."""
        return cls.model_construct(**value)

    @property
    def verdict_code(self) -> ExitCode:
        """The exit code of a published record: 0 when ready, 3 when below its threshold."""
        return ExitCode.OK if self.status == RunStatus.READY else ExitCode.BELOW_THRESHOLD

    @property
    def is_first_ready(self) -> bool:
        return self.version == FIRST_READY and self.status == RunStatus.READY


def record_fields(**values: Any) -> dict[str, Any]:
    """result.json keys that ResultRecord declares, named by keyword (the model's own field names): a module
    that assembles the whole record (relora_worker.readapt) writes them through this, so that a renamed or
    misspelt field fails at once instead of writing a key no reader looks for."""
    unknown = sorted(set(values) - set(ResultRecord.model_fields))
    if unknown:
        raise TypeError(f"result.json: {unknown} are not fields of ResultRecord")
    return values
