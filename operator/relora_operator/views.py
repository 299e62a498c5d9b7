"""Small immutable views of cluster objects, built by the kopf indexers from watch events.

The decision and status code works on these instead of raw bodies: they hold only what the operator needs
(memory stays flat with thousands of objects) and they make the pure functions easy to test.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relora_contract.errors import ContractError
from relora_contract.result import ResultRecord
from relora_contract.summary import TerminationSummary, parse_message
from relora_operator import naming
from relora_operator.models.adapter import TaskAdapterSpec
from relora_operator.models.release import BatchingSpec, RolloutSpec
from relora_operator.redaction import redact

logger = logging.getLogger(__name__)


def _owner(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata", {})
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
    }


@dataclass(frozen=True)
class ReleaseView:
    namespace: str
    name: str
    uid: str
    family: str
    version: str
    model_uri: str
    supersedes: str | None
    created: str
    generation: int = 1
    svd: str = "exact"
    gpus: int | None = None
    cpu: str | None = None
    memory: str | None = None
    active_deadline_seconds: int | None = None
    status: Mapping[str, Any] = field(default_factory=dict)
    owner: Mapping[str, Any] = field(default_factory=dict)
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    batching: BatchingSpec = field(default_factory=BatchingSpec)

    @property
    def order(self) -> tuple[str, str]:
        # Newest = created last; the name breaks ties of the one-second timestamps.
        return (self.created, self.name)


@dataclass(frozen=True)
class AdapterView:
    namespace: str
    name: str
    uid: str
    created: str
    generation: int
    spec: TaskAdapterSpec | None  # None when the stored object does not parse (should not pass the CRD)
    status: Mapping[str, Any] = field(default_factory=dict)
    owner: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)  # a release's canary selects by them

    @property
    def family(self) -> str:
        return self.spec.family if self.spec else ""


@dataclass(frozen=True)
class JobView:
    namespace: str
    name: str
    component: str
    release: str
    adapter: str
    suspended: bool
    active: int
    succeeded: int
    failed: int
    complete: bool
    failed_final: bool
    reason: str | None
    message: str | None
    created: str | None
    start_time: str | None
    completion_time: str | None
    output_uri: str | None
    kueue: bool = False
    active_deadline_seconds: int | None = None
    # A batch Job (many adapters, builders/batch_job.py): (Job name the adapter would have alone, adapter name)
    # of each member, sorted; empty for every other Job.
    members: tuple[tuple[str, str], ...] = ()

    @property
    def state(self) -> str:
        if self.complete:
            return "Succeeded"
        if self.failed_final:
            return "Failed"
        if self.suspended:
            return "Suspended"
        return "Running"

    @property
    def finished(self) -> bool:
        return self.complete or self.failed_final


@dataclass(frozen=True)
class PodView:
    namespace: str
    name: str
    job: str
    phase: str
    exit_code: int | None
    termination_message: str | None
    finished_at: str | None
    waiting: str | None = None  # "Reason: message" while the container cannot start
    ended: str | None = None  # how the container ended, in words (OOMKilled, Error): said when it left no summary


def release_view(body: Mapping[str, Any]) -> ReleaseView:
    meta, spec = body.get("metadata", {}), body.get("spec", {})
    proj = spec.get("projection") or {}
    return ReleaseView(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        uid=meta.get("uid", ""),
        family=spec.get("family", ""),
        version=spec.get("version", ""),
        model_uri=spec.get("modelUri", ""),
        supersedes=spec.get("supersedes"),
        created=meta.get("creationTimestamp", ""),
        generation=meta.get("generation", 1),
        svd=proj.get("svd", "auto"),
        gpus=proj.get("gpus"),
        cpu=proj.get("cpu"),
        memory=proj.get("memory"),
        active_deadline_seconds=proj.get("activeDeadlineSeconds"),
        status=dict(body.get("status") or {}),
        owner=_owner(body),
        rollout=_rollout(spec.get("rollout")),
        batching=_batching(spec.get("batching")),
    )


def _rollout(raw: Any) -> RolloutSpec:
    # The CRD validates spec.rollout; an object stored before a rule existed is read field by field rather
    # than dropped, so that a pause is never lost to an unrelated bad field.
    try:
        return RolloutSpec.model_validate(dict(raw or {}))
    except ValueError:
        raw = dict(raw or {})
        return RolloutSpec(paused=bool(raw.get("paused")), dry_run=bool(raw.get("dryRun")))


def _batching(raw: Any) -> BatchingSpec:
    # Like spec.rollout: a value the CRD would refuse today falls back to the operator's defaults.
    try:
        return BatchingSpec.model_validate(dict(raw or {}))
    except ValueError:
        return BatchingSpec()


def adapter_view(body: Mapping[str, Any]) -> AdapterView:
    meta = body.get("metadata", {})
    spec: TaskAdapterSpec | None
    error = None
    try:
        spec = TaskAdapterSpec.model_validate(dict(body.get("spec") or {}))
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        spec, error = None, spec_errors(exc)
    return AdapterView(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        uid=meta.get("uid", ""),
        created=meta.get("creationTimestamp", ""),
        generation=meta.get("generation", 1),
        spec=spec,
        status=dict(body.get("status") or {}),
        owner=_owner(body),
        error=error,
        labels=dict(meta.get("labels") or {}),
    )


def spec_errors(exc: ValueError) -> str:
    """A validation error as ``spec.<field path>: <what is wrong>`` (each problem once), so InvalidSpec names
    the field; pydantic's own text starts with a count line that names nothing."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc).splitlines()[0]
    parts = []
    for err in errors(include_url=False):
        path = ".".join(str(p) for p in ("spec", *_camel(err.get("loc", ()))))
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        value = err.get("input")
        shown = f" (got {value!r})" if isinstance(value, (str, int, float)) and len(repr(value)) <= 200 else ""
        parts.append(f"{path}: {message}{shown}")
    return redact("; ".join(dict.fromkeys(parts)))


def _camel(loc: Any) -> list[str]:
    out = []
    for part in loc:
        if isinstance(part, int):
            out[-1:] = [f"{out[-1]}[{part}]"] if out else [f"[{part}]"]
        else:
            head, *rest = str(part).split("_")
            out.append(head + "".join(w.title() for w in rest))
    return out


def job_view(body: Mapping[str, Any]) -> JobView:
    meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    final = conditions.get("Failed") or conditions.get("Complete") or {}
    return JobView(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        component=labels.get(naming.LABEL_COMPONENT, ""),
        release=labels.get(naming.LABEL_RELEASE, ""),
        adapter=labels.get(naming.LABEL_ADAPTER, ""),
        suspended=bool(spec.get("suspend")),
        active=status.get("active", 0) or 0,
        succeeded=status.get("succeeded", 0) or 0,
        failed=status.get("failed", 0) or 0,
        complete="Complete" in conditions,
        failed_final="Failed" in conditions,
        reason=final.get("reason"),
        message=final.get("message"),
        created=meta.get("creationTimestamp"),
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
        output_uri=annotations.get(naming.ANNOTATION_OUTPUT),
        kueue=naming.LABEL_QUEUE in labels,
        active_deadline_seconds=spec.get("activeDeadlineSeconds"),
        members=_members(annotations.get(naming.ANNOTATION_BATCH_MEMBERS)),
    )


def _members(raw: str | None) -> tuple[tuple[str, str], ...]:
    """The batch Job's members annotation ({Job name an adapter would have alone: adapter name}); () otherwise."""
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in value.items())) if isinstance(value, dict) else ()


def pod_view(body: Mapping[str, Any]) -> PodView:
    meta, status = body.get("metadata", {}), body.get("status") or {}
    labels = meta.get("labels") or {}
    exit_code = message = finished = waiting = ended = None
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        wait = state.get("waiting") or {}
        if wait.get("reason") and wait["reason"] not in ("ContainerCreating", "PodInitializing"):
            waiting = f"{wait['reason']}: {wait.get('message') or ''}".rstrip(": ")
        terminated = state.get("terminated") or {}
        if terminated:
            exit_code, message, finished = (
                terminated.get("exitCode"),
                terminated.get("message"),
                terminated.get("finishedAt"),
            )
            ended = f"{terminated.get('reason') or 'terminated'}, exit code {exit_code}"
    job = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name") or ""
    return PodView(
        namespace=meta.get("namespace", ""),
        name=meta["name"],
        job=job,
        phase=status.get("phase", "Pending"),
        exit_code=exit_code,
        termination_message=message,
        finished_at=finished,
        waiting=waiting,
        ended=ended,
    )


def parse_summary(message: str | None, pod: str = "pod") -> TerminationSummary | None:
    """The worker's one-line JSON summary (relora_contract.summary), None when the message holds none or one
    this version cannot read (said in the log: the verdict is then unknown, and the status says how the pod
    ended)."""
    try:
        return parse_message(message)
    except ContractError as error:
        logger.warning("%s: ignoring its termination message: %s", pod, error)
        return None


def parse_result(value: Mapping[str, Any] | None, where: str) -> ResultRecord | None:
    """A result.json read from storage (relora_contract.result), None when absent or not readable by this
    version (said in the log, naming the file and the field)."""
    if value is None:
        return None
    try:
        return ResultRecord.parse(value, where)
    except ContractError as error:
        logger.warning("ignoring a result the operator cannot read: %s", error)
        return None
