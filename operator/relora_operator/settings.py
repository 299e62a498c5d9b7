"""The operator's settings: environment variables, each with a default and a description.

The one place where settings are defined; `docs/operator.md` and the Helm chart follow
`Settings` (``python -m relora_operator.settings`` prints the table).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


def _setting(env: str, default: Any, description: str) -> Any:
    # The env name and description ride on the dataclass field, so the docs table cannot drift from the code.
    meta = {"env": env, "description": description, "default": default}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Operator settings; build with :meth:`from_env`."""

    namespaces: tuple[str, ...] = _setting(
        "RELORA_NAMESPACES",
        (),
        "Comma-separated namespaces to watch; empty means all namespaces (cluster-wide).",
    )
    artifact_root: str = _setting(
        "RELORA_ARTIFACT_ROOT",
        "s3://relora/artifacts",
        "Storage root (s3://bucket/prefix or file:///path) under which deltas/ and adapters/ are written.",
    )
    worker_image: str = _setting(
        "RELORA_WORKER_IMAGE",
        "ghcr.io/relora-operator/relora-worker:0.1.0",
        "Container image of the worker (`relora` CLI) run by every Job.",
    )
    worker_image_pull_policy: str = _setting(
        "RELORA_WORKER_IMAGE_PULL_POLICY", "IfNotPresent", "imagePullPolicy of the worker container."
    )
    worker_command: tuple[str, ...] = _setting(
        "RELORA_WORKER_COMMAND",
        ("relora",),
        "Command of the worker container, split like a shell (e.g. `python -m relora_worker`).",
    )
    worker_run_as_user: int = _setting(
        "RELORA_WORKER_RUN_AS_USER", 1000, "Non-root UID (and GID) the worker pods run as."
    )
    worker_tmp_size_limit: str = _setting(
        "RELORA_WORKER_TMP_SIZE", "50Gi", "sizeLimit of the worker's /tmp emptyDir (also its HOME)."
    )
    worker_shm_size_limit: str = _setting(
        "RELORA_WORKER_SHM_SIZE",
        "8Gi",
        "sizeLimit of the memory-backed emptyDir at /dev/shm of a worker pod with several GPUs (NCCL and the "
        "launcher's processes share memory through it; a container runtime gives 64 MiB); what it holds counts "
        "against the pod's memory limit.",
    )
    worker_cpu: str = _setting(
        "RELORA_WORKER_CPU", "2", "Default CPU request of a worker pod (spec.resources.cpu overrides)."
    )
    worker_memory: str = _setting(
        "RELORA_WORKER_MEMORY", "16Gi", "Default memory request and limit of a worker pod (spec overrides)."
    )
    gpu_resource_name: str = _setting("RELORA_GPU_RESOURCE", "nvidia.com/gpu", "Extended resource name used for GPUs.")
    default_gpus: int = _setting(
        "RELORA_DEFAULT_GPUS", 1, "GPUs per worker pod when the resource does not say (0 runs on CPU)."
    )
    projection_gpus: int = _setting(
        "RELORA_PROJECTION_GPUS", 1, "GPUs of a delta-projection pod when the release does not say."
    )
    default_node_selector: Mapping[str, str] = _setting(
        "RELORA_DEFAULT_NODE_SELECTOR",
        {},
        "JSON object: nodeSelector for worker pods when the spec has none.",
    )
    default_tolerations: tuple[Mapping[str, Any], ...] = _setting(
        "RELORA_DEFAULT_TOLERATIONS", (), "JSON list: tolerations for worker pods when the spec has none."
    )
    s3_secret_name: str = _setting(
        "RELORA_S3_SECRET",
        "relora-s3",
        "Secret (in the resource's namespace) with keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional "
        "AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, passed to worker pods as env variables of the same names. "
        "Optional: without the Secret (or with this empty) the pods use the default AWS credential chain "
        "(IRSA, EKS Pod Identity, a profile file, instance metadata).",
    )
    worker_s3_endpoint: str = _setting(
        "RELORA_S3_ENDPOINT",
        "",
        "S3 endpoint URL given to worker pods as AWS_ENDPOINT_URL, overriding the Secret's key; empty: the "
        "Secret's AWS_ENDPOINT_URL if it has one, else AWS.",
    )
    default_queue_name: str = _setting(
        "RELORA_DEFAULT_QUEUE_NAME",
        "",
        "Kueue LocalQueue for TaskAdapters without spec.queueName; empty: only adapters that name a queue "
        "go through Kueue, the others are limited by the operator's concurrency settings.",
    )
    projection_queue_name: str = _setting(
        "RELORA_PROJECTION_QUEUE_NAME",
        "",
        "Kueue LocalQueue of delta-projection Jobs (created suspended, admitted by Kueue like adaptation "
        "Jobs); empty: RELORA_DEFAULT_QUEUE_NAME; both empty: projections do not go through Kueue.",
    )
    worker_pod_template: Mapping[str, Any] = _setting(
        "RELORA_WORKER_POD_TEMPLATE",
        {},
        "JSON object laid over every worker pod (builders/pod_template.py): serviceAccountName, "
        "imagePullSecrets, labels, annotations, affinity, priorityClassName, env, envFrom, volumes, volumeMounts. "
        "Validated at start-up; the operator's labels, /tmp volume and security settings always win.",
    )
    max_concurrent_jobs: int = _setting(
        "RELORA_MAX_CONCURRENT_JOBS",
        16,
        "Operator-wide limit of re-adaptation Jobs running at once (Jobs of TaskAdapters with a Kueue queue "
        "are not counted: Kueue's quotas apply).",
    )
    max_concurrent_jobs_per_release: int = _setting(
        "RELORA_MAX_CONCURRENT_JOBS_PER_RELEASE",
        8,
        "Limit of re-adaptation Jobs running at once per release.",
    )
    batch_max_adapters_per_job: int = _setting(
        "RELORA_BATCH_MAX_ADAPTERS_PER_JOB",
        1,
        "Adapters of one release, task kind and resources re-adapted by one worker Job (`relora readapt-batch`: "
        "the base is loaded once) unless the release's spec.batching.maxAdaptersPerJob says; 1: one Job per adapter.",
    )
    batch_max_gpu_minutes_per_job: int = _setting(
        "RELORA_BATCH_MAX_GPU_MINUTES_PER_JOB",
        0,
        "Expected GPU-minutes of one batch Job at most (adapters x GPUs x the family's median re-adaptation time) "
        "unless the release's spec.batching.maxGpuMinutesPerJob says; 0: no bound.",
    )
    job_backoff_limit: int = _setting(
        "RELORA_JOB_BACKOFF_LIMIT",
        2,
        "Retries of a failed worker pod (exit codes 2 and 3 are never retried: podFailurePolicy FailJob).",
    )
    job_active_deadline_seconds: int = _setting(
        "RELORA_JOB_ACTIVE_DEADLINE_SECONDS",
        43200,
        "activeDeadlineSeconds of worker Jobs unless the TaskAdapter (spec.activeDeadlineSeconds) or the release "
        "(spec.projection.activeDeadlineSeconds) says: a hung pod cannot hold a GPU longer (reason "
        "DeadlineExceeded); 0 means none.",
    )
    allow_tolerate_all: bool = _setting(
        "RELORA_ALLOW_TOLERATE_ALL",
        False,
        "Whether a TaskAdapter may have a toleration with operator Exists and no key (it tolerates every taint, "
        "NoExecute ones included); false: such an adapter gets Ready=False, reason InvalidSpec.",
    )
    s3_connect_timeout: float = _setting(
        "RELORA_S3_CONNECT_TIMEOUT", 5.0, "Seconds the operator waits to connect to S3 (per attempt)."
    )
    s3_read_timeout: float = _setting(
        "RELORA_S3_READ_TIMEOUT", 15.0, "Seconds the operator waits for an S3 answer (per attempt)."
    )
    s3_retries: int = _setting(
        "RELORA_S3_RETRIES",
        2,
        "Retries of a failed or timed-out S3 call of the operator; then the resource gets StorageUnavailable.",
    )
    s3_workers: int = _setting(
        "RELORA_S3_WORKERS",
        4,
        "Threads for the operator's S3 calls (separate from RELORA_API_WORKERS: a hanging store cannot take "
        "the threads that Kubernetes calls need).",
    )
    model_digest_refresh_seconds: float = _setting(
        "RELORA_MODEL_DIGEST_REFRESH_SECONDS",
        60.0,
        "How often the operator re-reads the digest of each release's model (a change re-adapts its adapters).",
    )
    resync_seconds: float = _setting(
        "RELORA_RESYNC_SECONDS",
        10.0,
        "Interval of the level-triggered reconcile of every TaskAdapter and BaseModelRelease.",
    )
    history_limit: int = _setting(
        "RELORA_HISTORY_LIMIT",
        5,
        "Entries kept in a TaskAdapter's status.releases (one per release; the oldest pruned first, never the "
        "served one).",
    )
    serving_recheck_seconds: float = _setting(
        "RELORA_SERVING_RECHECK_SECONDS",
        300.0,
        "How often a serving target that reported the hand-off done (Served=True) is read again, to put back "
        "a target edited or deleted by hand; one still pending is read every resync, a failed one every six.",
    )
    api_workers: int = _setting(
        "RELORA_API_WORKERS", 16, "Threads used for Kubernetes and S3 calls (Job creation, result reading)."
    )
    shards: int = _setting(
        "RELORA_SHARDS",
        1,
        "Shards the work is split into (by a hash of namespace and family), each held by one replica through a "
        "Lease; 1: no sharding, no Leases (one replica does everything).",
    )
    shard_lease_seconds: float = _setting(
        "RELORA_SHARD_LEASE_SECONDS",
        15.0,
        "Duration of a shard's Lease: a dead replica's shards are taken over within about 1.3 times this.",
    )
    lease_namespace: str = _setting(
        "RELORA_LEASE_NAMESPACE",
        "",
        "Namespace of the shard Leases; empty: the operator's own (POD_NAMESPACE), else `default`.",
    )
    metrics_port: int = _setting(
        "RELORA_METRICS_PORT", 8080, "Port of the Prometheus /metrics endpoint; 0 disables it."
    )
    metrics_max_families: int = _setting(
        "RELORA_METRICS_MAX_FAMILIES",
        500,
        "Families (namespace, family) with per-family metric series of their own, those with the most "
        "TaskAdapters; the rest are summed into family `_other` (bounds the series count).",
    )
    liveness_port: int = _setting(
        "RELORA_LIVENESS_PORT", 8081, "Port of the liveness endpoint (GET /healthz); 0 disables it."
    )
    log_format: str = _setting("RELORA_LOG_FORMAT", "json", "Log format: json or text.")
    log_level: str = _setting("RELORA_LOG_LEVEL", "INFO", "Log level: DEBUG, INFO, WARNING, ERROR.")

    def queue_of(self, spec: Any) -> str:
        """The Kueue queue a TaskAdapter's Jobs go to: its spec.queueName, else the default ('' = none)."""
        return (getattr(spec, "queue_name", None) or self.default_queue_name) if spec is not None else ""

    def lease_namespace_or_default(self) -> str:
        return self.lease_namespace or os.environ.get("POD_NAMESPACE") or "default"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Reads every setting from ``environ`` (default: the process environment); unset means default."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, f.metadata["default"], raw, f.metadata["env"])
        return cls(**values)


def _parse(name: str, default: Any, raw: str, env: str) -> Any:
    if name == "worker_pod_template":
        return _pod_template(raw)
    try:
        if name == "worker_command":
            return tuple(shlex.split(raw))
        if name == "namespaces":
            return tuple(ns.strip() for ns in raw.split(",") if ns.strip())
        if isinstance(default, bool):
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Mapping):
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
        if isinstance(default, tuple):
            value = json.loads(raw)
            if not isinstance(value, list):
                raise ValueError("expected a JSON list")
            return tuple(value)
        return raw
    except ValueError as exc:
        raise ValueError(f"{env}={raw!r}: {exc}") from exc


def _pod_template(raw: str) -> dict[str, Any]:
    from relora_operator.builders import pod_template  # the builders import this module

    try:
        value = json.loads(raw)
    except ValueError as exc:  # the text is not echoed: env values in it may be secret
        raise ValueError(f"{pod_template.ENV}: not valid JSON ({exc.msg} at character {exc.pos})") from None
    return pod_template.parse(value)


def settings_table() -> str:
    """Markdown table of every setting (kept in docs/operator.md; a test checks it is current)."""
    rows = ["| Variable | Default | Description |", "| --- | --- | --- |"]
    for f in fields(Settings):
        default = f.metadata["default"]
        if isinstance(default, tuple) and f.name == "worker_command":
            shown = " ".join(default)
        elif isinstance(default, (tuple, dict)):
            shown = json.dumps(list(default) if isinstance(default, tuple) else default) if default else ""
        else:
            shown = str(default)
        rows.append(f"| `{f.metadata['env']}` | `{shown}` | {f.metadata['description']} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
