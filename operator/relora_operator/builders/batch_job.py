"""The batch Job of many adapters (spec.batching): its plan, the ConfigMap that carries the plan to the pod, and
the Job running ``relora readapt-batch --plan <the mounted file>``.

Pure functions. Each adapter's entry in the plan holds exactly the options ``readapt_args`` gives its Job of its
own (read back from that command line, so the two can never differ): the worker parses a plan's options like
``--config`` values, a string by the option's own type, as on the command line. The pod is the single Job's
(``jobs._job``: non-root, read-only root, no service-account token, the cluster's pod template), plus the plan
mounted read-only; the batch Job never retries its pod (backoffLimit 0, evictions included): a rerun would
re-adapt the adapters already published, so the operator gives each unfinished adapter a Job of its own instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from relora_contract.batch import BatchPlan, PlannedAdapter
from relora_contract.cli_args import Flag
from relora_contract.summary import Command
from relora_operator import naming
from relora_operator.builders.jobs import AdaptationInputs, _labels, adapter_gpus, adapter_job, readapt_args
from relora_operator.models.adapter import TaskAdapterSpec
from relora_operator.redaction import redact, redact_obj
from relora_operator.settings import Settings

PLAN_VOLUME = "relora-batch-plan"
PLAN_DIR = "/etc/relora/plan"
PLAN_FILE = "plan.json"
# readapt options the plan holds once, at its top level (one base load serves every adapter) ...
TOP_LEVEL = ("base_model", "projection", "new_release", "task")
# ... and those it holds as each adapter's own fields; every other option goes to the adapter's ``options``.
OWN_FIELDS = ("adapter", "train_data", "val_data", "eval_data", "output", "old_release")
NOT_OPTIONS = (Flag.JSON.dest, Flag.TERMINATION_MESSAGE_PATH.dest)


@dataclass(frozen=True)
class Member:
    """One adapter of a batch: its spec and the inputs of the Job it would have alone."""

    adapter: str
    spec: TaskAdapterSpec
    inputs: AdaptationInputs


def _options(args: list[str]) -> dict[str, Any]:
    """A ``relora readapt`` command line (``--flag=value`` and bare switches) as underscored options."""
    values: dict[str, Any] = {}
    for arg in args[1:]:  # args[0] is the command
        flag, sep, value = arg.partition("=")
        values[Flag(flag).dest] = value if sep else True
    for name in NOT_OPTIONS:
        values.pop(name, None)
    return values


def job_name(members: list[Member]) -> str:
    return naming.batch_job_name(members[0].inputs.target_release, [m.inputs.job_name for m in members])


def record_uri(settings: Settings, members: list[Member]) -> str:
    first = members[0].inputs
    return naming.batch_record_uri(settings.artifact_root, first.namespace, first.target_release, job_name(members))


def build_plan(settings: Settings, members: list[Member]) -> BatchPlan:
    """The plan of ``members`` (one release, one task kind: a ValueError names what differs otherwise)."""
    top: dict[str, Any] | None = None
    adapters = []
    for member in members:
        values = _options(readapt_args(member.spec, member.inputs))
        shared = {name: values.pop(name, None) for name in TOP_LEVEL}
        if top is not None and shared != top:
            differ = sorted(k for k in TOP_LEVEL if shared[k] != top[k])
            raise ValueError(f"adapter {member.adapter} differs from the batch's first adapter in {differ}")
        top = shared
        own = {name: values.pop(name) for name in OWN_FIELDS if values.get(name) is not None}
        threshold = values.pop("threshold", None)
        adapters.append(
            PlannedAdapter(
                key=naming.batch_member_key(member.inputs.namespace, member.adapter),
                threshold=float(threshold) if threshold is not None else None,
                options=values,
                **own,
            )
        )
    assert top is not None, "a batch has members"
    return BatchPlan(
        base_model=top["base_model"],
        projection=top["projection"],
        new_release=top["new_release"] or "",
        task=top["task"],
        result=record_uri(settings, members),
        adapters=adapters,
    )


def plan_json(plan: BatchPlan) -> str:
    # Redacted like the Job's arguments (the CRDs refuse URIs with credentials; this covers older objects).
    return json.dumps(redact_obj(plan.model_dump(mode="json")), indent=1, sort_keys=True)


def build_plan_configmap(settings: Settings, members: list[Member]) -> dict[str, Any]:
    """The ConfigMap holding the plan, named like the Job (created first: the pod never waits for its plan)."""
    first = members[0]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": job_name(members),
            "namespace": first.inputs.namespace,
            "labels": _labels(naming.COMPONENT_ADAPTATION, first.spec.family, first.inputs.target_release),
        },
        "data": {PLAN_FILE: plan_json(build_plan(settings, members))},
    }


def _deadline(settings: Settings, members: list[Member]) -> int:
    """activeDeadlineSeconds of the batch: the sum of its members' own (none when any has none): no adapter
    gets less time than alone."""
    each = [
        m.inputs.active_deadline_seconds
        if m.inputs.active_deadline_seconds is not None
        else settings.job_active_deadline_seconds
        for m in members
    ]
    return 0 if any(d <= 0 for d in each) else sum(each)


def build_batch_job(settings: Settings, members: list[Member]) -> dict[str, Any]:
    """The Job re-adapting ``members`` one after another on one load of the base (they share release, task kind
    and resources: batching.group_key)."""
    first = members[0]
    spec, inputs = first.spec, first.inputs
    if adapter_gpus(settings, spec) > 1:  # batching.units gives them Jobs of their own
        raise ValueError(f"adapter {first.adapter}: readapt-batch runs one process; several GPUs need their own Job")
    args = [str(a) for a in (Command.READAPT_BATCH, Flag.PLAN(f"{PLAN_DIR}/{PLAN_FILE}"), Flag.JSON)]
    job = adapter_job(
        settings,
        spec,
        name=job_name(members),
        namespace=inputs.namespace,
        target_release=inputs.target_release,
        extra_labels={},
        annotations={
            naming.ANNOTATION_OUTPUT: redact(record_uri(settings, members)),
            naming.ANNOTATION_PRIORITY: str(max(m.spec.priority for m in members)),
            naming.ANNOTATION_BATCH_MEMBERS: json.dumps(
                {m.inputs.job_name: m.adapter for m in members}, sort_keys=True, separators=(",", ":")
            ),
        },
        args=args,
        active_deadline_seconds=_deadline(settings, members),
    )
    return _with_plan(_no_pod_retries(job), job_name(members))


def _no_pod_retries(job: dict[str, Any]) -> dict[str, Any]:
    """One pod only: a failed or evicted pod ends the Job, and the adapters it did not finish get Jobs of their
    own (a second pod would run the whole plan again, re-adapting the ones already published)."""
    spec = job["spec"]
    spec["backoffLimit"] = 0
    rules = spec["podFailurePolicy"]["rules"]
    spec["podFailurePolicy"]["rules"] = [r for r in rules if r.get("action") != "Ignore"]
    return job


def _with_plan(job: dict[str, Any], configmap: str) -> dict[str, Any]:
    pod = job["spec"]["template"]["spec"]
    pod["volumes"].append(
        {"name": PLAN_VOLUME, "configMap": {"name": configmap, "items": [{"key": PLAN_FILE, "path": PLAN_FILE}]}}
    )
    for container in pod["containers"]:
        container["volumeMounts"].append({"name": PLAN_VOLUME, "mountPath": PLAN_DIR, "readOnly": True})
    return job
