"""Job manifests for the worker: the shared delta projection and the per-adapter re-adaptation.

Pure functions: inputs in, a ``batch/v1`` Job dict out (owner references are added by the caller with
``kopf.adopt``). The pod is locked down: non-root, read-only root filesystem with an emptyDir for /tmp and
HOME, no privilege escalation, no capabilities, RuntimeDefault seccomp, no service-account token. A pod of
several GPUs runs the command under ``relora launch`` (one process per GPU) with a memory-backed /dev/shm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from relora_contract import cli_args, environment, exit_codes
from relora_contract.cli_args import Flag
from relora_contract.summary import Command
from relora_operator import naming
from relora_operator.builders import pod_template
from relora_operator.models.adapter import TaskAdapterSpec
from relora_operator.redaction import redact
from relora_operator.settings import Settings

CONTAINER = "worker"
TERMINATION_LOG = "/dev/termination-log"
TMP = "/tmp"
# Exit codes of the worker contract that a retry cannot fix: bad input, below threshold after the budget.
FINAL_EXIT_CODES = tuple(int(code) for code in exit_codes.FINAL)
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
# Every key is optional: without the Secret the pod starts and boto3's default credential chain (IRSA, EKS Pod
# Identity, a profile file from the pod template, instance metadata) supplies the credentials.
S3_REQUIRED: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProjectionInputs:
    """Everything that defines one shared delta projection (its Job name is a hash of these)."""

    namespace: str
    family: str
    from_release: str
    from_model_uri: str
    to_release: str
    to_model_uri: str
    rank: int
    target_modules: tuple[str, ...]
    svd: str = "auto"
    gpus: int | None = None
    cpu: str | None = None
    memory: str | None = None
    # Identities (identity.py) of both releases: a release re-applied with other weights, or re-created, gets
    # a projection of its own, never the one computed from the weights it had before.
    from_identity: str = ""
    to_identity: str = ""
    active_deadline_seconds: int | None = None

    @property
    def job_name(self) -> str:
        return naming.projection_job_name(
            self.family, self.from_release, self.to_release, self.rank, self.target_modules, self.identities
        )

    @property
    def identities(self) -> str:
        return f"{self.from_identity}__{self.to_identity}" if self.from_identity or self.to_identity else ""

    def output_uri(self, settings: Settings) -> str:
        return naming.projection_uri(
            settings.artifact_root,
            self.family,
            self.from_release,
            self.to_release,
            self.rank,
            self.target_modules,
            self.identities,
        )


@dataclass(frozen=True)
class AdaptationInputs:
    """One re-adaptation: which adapter, from which release to which, with which delta."""

    namespace: str
    adapter: str
    job_name: str
    spec_hash: str
    target_release: str
    base_model_uri: str
    source_adapter_uri: str
    source_release: str
    output_uri: str
    projection_uri: str | None  # None for strategies that need no delta
    target_identity: str = ""  # identity of the target release (identity.py)
    active_deadline_seconds: int | None = None  # None: the operator's default


def _label_list(labels: list[str]) -> str:
    """--labels as the worker reads it: comma-separated, or a JSON array when a label itself has a comma."""
    return json.dumps(labels) if any("," in label for label in labels) else ",".join(labels)


def _labels(component: str, family: str, release: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    labels = {
        naming.LABEL_MANAGED: naming.MANAGED_BY,
        "app.kubernetes.io/name": "relora-worker",
        naming.LABEL_COMPONENT: component,
        naming.LABEL_FAMILY: naming.label_value(family),
        naming.LABEL_RELEASE: naming.label_value(release),
    }
    labels.update(extra or {})
    return labels


def _env(settings: Settings) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {
            "name": name,
            "valueFrom": {
                "secretKeyRef": {
                    "name": settings.s3_secret_name,
                    "key": name,
                    "optional": name not in S3_REQUIRED,
                }
            },
        }
        for name in S3_ENV
        if settings.s3_secret_name and not (name == "AWS_ENDPOINT_URL" and settings.worker_s3_endpoint)
    ]
    if settings.worker_s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": settings.worker_s3_endpoint})
    # The root filesystem is read-only: every cache goes to the /tmp emptyDir.
    env += [
        {"name": "HOME", "value": TMP},
        {"name": "TMPDIR", "value": TMP},
        {"name": "HF_HOME", "value": f"{TMP}/hf"},
        {"name": "XDG_CACHE_HOME", "value": f"{TMP}/cache"},
    ]
    return env


def _resources(settings: Settings, gpus: int, cpu: str | None, memory: str | None) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": cpu or settings.worker_cpu, "memory": memory or settings.worker_memory}
    limits: dict[str, Any] = {"memory": memory or settings.worker_memory}
    if gpus > 0:
        # Extended resources must have request == limit; quantities are strings (the API client rejects ints).
        requests[settings.gpu_resource_name] = str(gpus)
        limits[settings.gpu_resource_name] = str(gpus)
    return {"requests": requests, "limits": limits}


def launched(args: list[str], gpus: int) -> list[str]:
    """The worker's command line for a pod of ``gpus`` GPUs: on several, ``relora launch`` runs it on one
    process per GPU (the worker shards the base across them; rank 0 alone publishes and writes the summary)."""
    return [cli_args.LAUNCH, cli_args.NPROC_PER_NODE, str(gpus), *args] if gpus > 1 else args


def _container(settings: Settings, args: list[str], resources: dict[str, Any]) -> dict[str, Any]:
    """The worker container: locked down (no privilege, read-only root, every capability dropped), its summary
    written to the termination log that the operator reads back."""
    return {
        "name": CONTAINER,
        "image": settings.worker_image,
        "imagePullPolicy": settings.worker_image_pull_policy,
        "command": list(settings.worker_command),
        # Redacted like everything the operator writes: the CRDs refuse URIs with credentials, this
        # also covers objects stored before that rule (the Job spec is readable by many).
        "args": [redact(str(a)) for a in (*args, Flag.TERMINATION_MESSAGE_PATH, TERMINATION_LOG)],
        "env": _env(settings),
        "resources": resources,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": TMP}],
    }


def _pod_spec(
    settings: Settings,
    container: dict[str, Any],
    node_selector: dict[str, str] | None,
    tolerations: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The pod around the container: non-root, no service-account token, an emptyDir for /tmp, and the
    adapter's placement (or the operator's defaults when the adapter sets none)."""
    uid = settings.worker_run_as_user
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # required by podFailurePolicy; retries are new pods
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": settings.worker_tmp_size_limit}}],
    }
    selector = node_selector if node_selector is not None else dict(settings.default_node_selector)
    if selector:
        pod_spec["nodeSelector"] = selector
    tol = tolerations if tolerations is not None else [dict(t) for t in settings.default_tolerations]
    if tol:
        pod_spec["tolerations"] = tol
    return pod_spec


def _failure_policy() -> dict[str, Any]:
    """Kubernetes retry mechanics from the worker's exit code: a final code (bad input, below threshold) fails
    the Job at once; anything else is retried up to backoffLimit."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": list(FINAL_EXIT_CODES),
                },
            },
            # Evictions and preemptions are not the worker's fault: retry outside the backoff budget.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def _job_spec(
    settings: Settings,
    labels: dict[str, str],
    pod_spec: dict[str, Any],
    suspend: bool,
    active_deadline_seconds: int | None,
) -> dict[str, Any]:
    """The Job's spec: retries, the pod template, suspension (for Kueue) and the deadline."""
    spec: dict[str, Any] = {
        "backoffLimit": settings.job_backoff_limit,
        "podFailurePolicy": _failure_policy(),
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if suspend:
        spec["suspend"] = True
    deadline = active_deadline_seconds if active_deadline_seconds is not None else settings.job_active_deadline_seconds
    if deadline > 0:
        # A hung pod cannot hold a GPU forever: the Job fails with reason DeadlineExceeded.
        spec["activeDeadlineSeconds"] = deadline
    return spec


def _with_shm(settings: Settings, pod_spec: dict[str, Any]) -> dict[str, Any]:
    """A memory-backed /dev/shm for the processes of a multi-GPU pod (a container runtime's default is 64 MiB,
    too little for NCCL), unless the cluster's pod template mounts one of its own there."""
    mounts = settings.worker_pod_template.get("volumeMounts", [])
    if any(m["mountPath"].rstrip("/") == pod_template.SHM_MOUNT for m in mounts):
        return pod_spec
    volume = pod_template.SHM_VOLUME
    pod_spec["volumes"].append(
        {"name": volume, "emptyDir": {"medium": "Memory", "sizeLimit": settings.worker_shm_size_limit}}
    )
    for container in pod_spec["containers"]:
        container["volumeMounts"].append({"name": volume, "mountPath": pod_template.SHM_MOUNT})
    return pod_spec


def _with_rank_base_cache(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """The ranks of a multi-GPU pod share one download of each base (each rank fetches its inputs: without a
    cache, N copies of a 140 GB base in /tmp): ``RELORA_BASE_CACHE_DIR`` on the pod's /tmp, where the worker's
    cache lets one rank download while the others wait (relora_worker/base_cache.py). The pod template's own
    value (the chart's ``worker.baseCache``: a node-wide cache) replaces it."""
    for container in pod_spec["containers"]:
        container["env"].append({"name": environment.BASE_CACHE_DIR, "value": f"{TMP}/relora-base-cache"})
    return pod_spec


def _job(
    settings: Settings,
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    args: list[str],
    gpus: int,
    cpu: str | None,
    memory: str | None,
    node_selector: dict[str, str] | None,
    tolerations: list[dict[str, Any]] | None,
    suspend: bool,
    active_deadline_seconds: int | None = None,
) -> dict[str, Any]:
    """The whole Job: metadata, then its spec, then the operator's pod template merged in. A pod of several
    GPUs is still one pod (Kueue admits it whole), its command under ``relora launch``."""
    container = _container(settings, launched(args, gpus), _resources(settings, gpus, cpu, memory))
    pod_spec = _pod_spec(settings, container, node_selector, tolerations)
    if gpus > 1:
        pod_spec = _with_rank_base_cache(_with_shm(settings, pod_spec))
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": _job_spec(settings, labels, pod_spec, suspend, active_deadline_seconds),
    }
    return pod_template.apply(job, settings.worker_pod_template)


def build_projection_job(settings: Settings, inputs: ProjectionInputs) -> dict[str, Any]:
    """The shared delta-projection Job of one (from, to, target modules, rank)."""
    output = inputs.output_uri(settings)
    options = [
        (Flag.OLD_MODEL, inputs.from_model_uri),
        (Flag.NEW_MODEL, inputs.to_model_uri),
        (Flag.TARGET_MODULES, ",".join(sorted(inputs.target_modules))),
        (Flag.RANK, inputs.rank),
        (Flag.OUTPUT, output),
        (Flag.SVD, inputs.svd),
        (Flag.OLD_RELEASE, inputs.from_release),
        (Flag.NEW_RELEASE, inputs.to_release),
    ]
    args = [str(a) for a in (Command.PROJECT_DELTA, *(flag(value) for flag, value in options), Flag.JSON)]
    gpus = settings.projection_gpus if inputs.gpus is None else inputs.gpus
    extra = {naming.LABEL_FROM: naming.label_value(inputs.from_release)}
    # Projections take GPUs too: through Kueue like the adaptation Jobs (admitted by un-suspending them).
    queue = settings.projection_queue_name or settings.default_queue_name
    if queue:
        extra[naming.LABEL_QUEUE] = queue
    labels = _labels(naming.COMPONENT_PROJECTION, inputs.family, inputs.to_release, extra)
    return _job(
        settings,
        name=inputs.job_name,
        namespace=inputs.namespace,
        labels=labels,
        annotations={naming.ANNOTATION_OUTPUT: redact(output)},
        args=args,
        gpus=gpus,
        cpu=inputs.cpu,
        memory=inputs.memory,
        node_selector=None,
        tolerations=None,
        suspend=bool(queue),
        active_deadline_seconds=inputs.active_deadline_seconds,
    )


# spec.strategy field -> worker flag, for the optional knobs (unset: the worker's default applies).
KNOB_FLAGS = {
    "learning_rate": Flag.LR,
    "batch_size": Flag.BATCH_SIZE,
    "eval_every": Flag.EVAL_EVERY,
}


def readapt_args(spec: TaskAdapterSpec, inputs: AdaptationInputs) -> list[str]:
    """The `relora readapt` command line (docs/worker-contract.md). Every value is passed as ``--flag=value``:
    argparse would take a separate negative bound such as ``-2.0,1.0`` for an option."""
    task, strategy = spec.task, spec.strategy
    options: list[tuple[Flag, Any]] = [
        (Flag.BASE_MODEL, inputs.base_model_uri),
        (Flag.ADAPTER, inputs.source_adapter_uri),
        (Flag.PROJECTION, inputs.projection_uri),
        (Flag.OUTPUT, inputs.output_uri),
        (Flag.OLD_RELEASE, inputs.source_release),
        (Flag.NEW_RELEASE, inputs.target_release),
        (Flag.TASK, task.type),
        (Flag.TRAIN_DATA, task.train_data),
        (Flag.VAL_DATA, task.val_data),
        (Flag.EVAL_DATA, task.eval_data),
        (Flag.TEXT_FIELD, task.text_field),
        (Flag.LABEL_FIELD, task.label_field),
        (Flag.LABELS, _label_list(task.labels) if task.labels else None),
        (Flag.STRATEGY, strategy.name),
        (Flag.METRIC, spec.quality.metric),
        (Flag.THRESHOLD, repr(spec.quality.threshold)),
        (Flag.MAX_STEPS, strategy.max_steps),
        (Flag.SEARCH_BUDGET, strategy.search_budget),
        (Flag.ALPHA_BOUNDS, f"{strategy.alpha_min!r},{strategy.alpha_max!r}"),
        (Flag.BETA_BOUNDS, f"{strategy.beta_min!r},{strategy.beta_max!r}"),
        (Flag.SEED, strategy.seed),
        *((flag, getattr(strategy, attr)) for attr, flag in KNOB_FLAGS.items()),
    ]
    args: list[str] = [Command.READAPT, *(flag(value) for flag, value in options if value is not None)]
    if strategy.stop_at_ready:
        args.append(Flag.STOP_AT_READY)
    if strategy.improve_after_ready:
        args.append(Flag.IMPROVE_AFTER_READY)
        if strategy.improve_max_steps is not None:
            args.append(Flag.IMPROVE_MAX_STEPS(strategy.improve_max_steps))
    return [str(a) for a in (*args, Flag.JSON)]


def adapter_gpus(settings: Settings, spec: TaskAdapterSpec) -> int:
    """GPUs of the adapter's pod: its spec's, else the operator's default."""
    return settings.default_gpus if spec.resources.gpus is None else spec.resources.gpus


def adapter_tolerations(spec: TaskAdapterSpec) -> list[dict[str, Any]] | None:
    """The adapter's tolerations as the pod takes them; None: the operator's defaults apply."""
    if spec.tolerations is None:
        return None
    return [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]


def build_adaptation_job(settings: Settings, spec: TaskAdapterSpec, inputs: AdaptationInputs) -> dict[str, Any]:
    """The re-adaptation Job of one TaskAdapter for one release."""
    return adapter_job(
        settings,
        spec,
        name=inputs.job_name,
        namespace=inputs.namespace,
        target_release=inputs.target_release,
        extra_labels={
            naming.LABEL_ADAPTER: naming.label_value(inputs.adapter),
            naming.LABEL_FROM: naming.label_value(inputs.source_release),
        },
        annotations={
            naming.ANNOTATION_OUTPUT: redact(inputs.output_uri),
            naming.ANNOTATION_SPEC_HASH: inputs.spec_hash,
            naming.ANNOTATION_PRIORITY: str(spec.priority),
        },
        args=readapt_args(spec, inputs),
        active_deadline_seconds=spec.active_deadline_seconds,
    )


def adapter_job(
    settings: Settings,
    spec: TaskAdapterSpec,
    *,
    name: str,
    namespace: str,
    target_release: str,
    extra_labels: dict[str, str],
    annotations: dict[str, str],
    args: list[str],
    active_deadline_seconds: int | None,
) -> dict[str, Any]:
    """A re-adaptation worker Job shaped by an adapter's spec (one adapter's Job, or a batch's from its first
    member): its Kueue queue, GPUs, resources and placement."""
    queue = settings.queue_of(spec)
    labels = _labels(
        naming.COMPONENT_ADAPTATION,
        spec.family,
        target_release,
        {**extra_labels, **({naming.LABEL_QUEUE: queue} if queue else {})},
    )
    return _job(
        settings,
        name=name,
        namespace=namespace,
        labels=labels,
        annotations=annotations,
        args=args,
        gpus=adapter_gpus(settings, spec),
        cpu=spec.resources.cpu,
        memory=spec.resources.memory,
        node_selector=spec.node_selector,
        tolerations=adapter_tolerations(spec),
        suspend=bool(queue),  # Kueue admits a queued Job by un-suspending it
        active_deadline_seconds=active_deadline_seconds,
    )
