"""The termination summary: one line of JSON (< 4 KiB) the worker writes on every exit, and the operator reads
from the pod's status (``terminationMessagePath``).

Both sides go through :class:`TerminationSummary`: the worker builds it (``readapt``, ``failed``) and writes
:meth:`TerminationSummary.encode`; the operator reads it with :func:`parse_message`. The summary carries its
``schema_version``; one without it was written by a worker from before the field existed and is version 1
(the same keys). A summary of a newer version than this one reads is refused with a ContractError that says
so — the operator then has no summary (its verdict is unknown, relora_contract.verdict) — never misread.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from relora_contract.errors import ContractError, explain
from relora_contract.exit_codes import ExitCode
from relora_contract.result import ResultRecord, RunStatus, described
from relora_contract.strategies import Strategy

SCHEMA_VERSION = 1
LIMIT = 4096  # bytes: Kubernetes keeps at most 4 KiB of a termination message


class Command(StrEnum):
    READAPT = "readapt"
    READAPT_BATCH = "readapt-batch"
    PROJECT_DELTA = "project-delta"
    EVALUATE = "evaluate"
    DEMO = "demo"
    RELORA = "relora"  # the command line itself was refused before a command was known


class TerminationSummary(BaseModel):
    """The summary's keys. Readapt fills the outcome; project-delta the projection; a failure ``error``.
    ``evaluate`` and ``demo`` add their own report keys (kept as extra keys: nothing branches on them)."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="null", use_enum_values=True)

    schema_version: int = described(SCHEMA_VERSION, "version of these keys (absent before it existed: 1)")
    command: Command = described(
        ..., "readapt, readapt-batch, project-delta, evaluate, demo (relora: the command line was refused)"
    )
    status: RunStatus = described(..., "ready, below-threshold, ok, error or terminated")
    exit_code: ExitCode | None = described(None, "the process's exit code (relora_contract.exit_codes)")
    error: str | None = described(None, "why nothing (or not everything) was published; null on success")
    reason: str | None = described(None, "Terminated when a signal stopped the run")
    strategy: Strategy | None = described(None, "readapt: the strategy that ran")
    quality: float | None = described(None, "readapt: the metric on D_eval of the adapter to serve")
    threshold: float | None = described(None, "readapt: the service-quality threshold")
    time_to_readiness_s: float | None = described(None, "readapt: seconds until the readiness rule held (null: never)")
    alpha: float | None = described(None, "readapt: the fusion coefficient α* of a fused start")
    beta: float | None = described(None, "readapt: the fusion coefficient β* of a fused start")
    adapter_uri: str | None = described(None, "readapt: the immutable published version to serve")
    result_uri: str | None = described(None, "readapt: its result.json")
    quality_interval: tuple[float, float] | None = described(None, "readapt: [low, high], two-sided 95 % Wilson")
    ready_adapter_uri: str | None = described(None, "readapt --improve-after-ready: the first ready version")
    final_quality: float | None = described(None, "readapt: the quality of the final version")
    vllm_compatible: bool | None = described(None, "readapt: whether vLLM's LoRA loader takes the adapter as it is")
    eval_data_sha256: str | None = described(None, "readapt: sha256 of the evaluation data file")
    projection_uri: str | None = described(None, "project-delta: the published projection")
    modules: int | None = described(None, "project-delta: modules projected")
    seconds: float | None = described(None, "project-delta: seconds the projection took")
    batch_uri: str | None = described(None, "readapt-batch: the batch record (every adapter's outcome in full)")
    adapter_codes: list[int] | None = described(
        None, "readapt-batch: each adapter's exit code in the plan's order (-1: not run)"
    )
    model_loads: int | None = described(None, "readapt-batch: times the base model was loaded from its files")

    @classmethod
    def readapt(cls, record: ResultRecord, exit_code: ExitCode) -> TerminationSummary:
        """The summary of a finished re-adaptation, from its result.json record."""
        interval = record.quality_interval
        ready = record.ready_version
        return cls(
            command=Command.READAPT,
            status=record.status,
            exit_code=exit_code,
            strategy=record.strategy,
            quality=record.quality,
            threshold=record.threshold,
            time_to_readiness_s=record.time_to_readiness_s,
            alpha=record.alpha,
            beta=record.beta,
            adapter_uri=record.adapter_uri,
            result_uri=record.result_uri,
            quality_interval=(interval.low, interval.high) if interval else None,
            ready_adapter_uri=ready.adapter_uri if ready else None,
            final_quality=record.final_quality,
            vllm_compatible=record.artifact.vllm_compatible if record.artifact else None,
            eval_data_sha256=(record.eval_data or {}).get("sha256"),
        )

    @classmethod
    def failed(cls, command: str, message: str, exit_code: ExitCode, reason: str | None = None) -> TerminationSummary:
        """Nothing published: ``error`` says why; a signal's stop is ``terminated`` with its ``reason``."""
        known = Command(command) if command in {c.value for c in Command} else Command.RELORA
        if reason:
            return cls(command=known, status=RunStatus.TERMINATED, exit_code=exit_code, error=message, reason=reason)
        return cls(command=known, status=RunStatus.ERROR, exit_code=exit_code, error=message)

    def with_uris(self, pin: Callable[[str], str]) -> TerminationSummary:
        """A copy whose URIs went through ``pin`` (the worker names immutable versions, not moving pointers)."""
        uris = {name: pin(value) for name, value in self.fields().items() if name.endswith("_uri") and value}
        return self.model_copy(update=uris)

    def fields(self) -> dict[str, Any]:
        """Every key with its value, the declared ones and a command's own report keys."""
        return {**{name: getattr(self, name) for name in type(self).model_fields}, **(self.model_extra or {})}

    def as_json(self) -> dict[str, Any]:
        """Strict JSON values (a non-finite number is null): the keys the command set, ``error`` always."""
        value = json.loads(self.model_dump_json(exclude_unset=True))
        return {"schema_version": self.schema_version, **value, "error": self.error}

    def report(self) -> dict[str, Any]:
        """What a person reads at the end of a run: the values that say something, without the bookkeeping."""
        hidden = {"schema_version", "command", "exit_code"}
        return {k: v for k, v in self.as_json().items() if v is not None and k not in hidden}

    def encode(self) -> str:
        """Compact JSON under LIMIT bytes: a long error message is shortened so that the whole line fits."""
        value = self.as_json()
        text = json.dumps(value, separators=(",", ":"))
        overflow = len(text.encode()) - LIMIT
        if overflow <= 0:
            return text
        message = str(value.get("error") or "")
        value["error"] = message[: max(0, len(message) - overflow - 16)] + "…"
        return json.dumps(value, separators=(",", ":"))[:LIMIT]

    @classmethod
    def parse(cls, value: Mapping[str, Any]) -> TerminationSummary:
        """A summary from its JSON object; a ContractError that names the problem when this version cannot
        read it (a newer ``schema_version``, a missing key, a value of the wrong kind)."""
        version = value.get("schema_version", 1)  # summaries from before the field are version 1
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ContractError(
                f"termination summary schema_version {version!r} is newer than this version reads "
                f"({SCHEMA_VERSION}): upgrade the operator to read workers of that version"
            )
        try:
            return cls.model_validate({**value, "schema_version": version})
        except ValidationError as error:
            raise ContractError(f"termination summary: {explain(error)}") from None


def parse_message(message: str | None) -> TerminationSummary | None:
    """The worker's summary in a termination message, None when it holds none. With FallbackToLogsOnError the
    message may be a log tail, so the last line that parses as a JSON object wins. Raises ContractError for a
    summary this version cannot read."""
    for line in reversed((message or "").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return TerminationSummary.parse(value)
    return None


def outcome(summary: TerminationSummary | None, result: ResultRecord | None) -> TerminationSummary | None:
    """The worker's numbers: the summary's, filled from result.json where the summary lacks them (its pod and
    message may be gone, or an older worker's message may not carry them)."""
    if result is None:
        return summary
    from_result = TerminationSummary.readapt(result, ExitCode.OK).model_copy(update={"exit_code": None})
    if summary is None:
        return from_result
    filled = {k: v for k, v in from_result.fields().items() if getattr(summary, k, None) is None and _known(v)}
    return summary.model_copy(update=filled)


def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
