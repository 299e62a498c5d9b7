"""The I/O of batch Jobs (spec.batching): their records read from storage, their members' outcomes for the
status code, and the creation of a batch (its plan's ConfigMap, then its Job).

A batch Job's record (relora_contract.batch.BatchRecord at the Job's ``relora.dev/output-uri``) is rewritten by
the worker after every adapter: while the Job runs it is read again at most every half resync (every member's
pass shares that read), once the Job is over it is read once more and kept. Storage errors go through
``storage.call`` (timeouts, its own thread pool): a member whose record cannot be read shows StorageUnavailable
and the next pass tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relora_contract.batch import BatchRecord
from relora_contract.errors import ContractError
from relora_operator import batching, kube, refusals, storage
from relora_operator.builders.batch_job import Member, build_batch_job, build_plan_configmap
from relora_operator.conditions import now_iso
from relora_operator.decisions import Candidate
from relora_operator.redaction import redact
from relora_operator.settings import Settings
from relora_operator.views import JobView, parse_result

logger = logging.getLogger(__name__)
RETRY_SECONDS = 60.0  # after a plan's ConfigMap was refused: one Job per adapter, then batches are tried again


@dataclass(frozen=True)
class Read:
    record: BatchRecord | None
    error: str | None  # storage did not answer
    at: float
    final: bool  # read after the Job ended: the record will not change again


class BatchRecords:
    """The batch records this process read, per batch Job (kept in the OperatorState)."""

    def __init__(self) -> None:
        self._reads: dict[tuple[str, str], Read] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._refused_at: float | None = None  # when a plan's ConfigMap was last refused (RBAC, policy)

    def allowed(self) -> bool:
        """Whether batches may be planned: not for RETRY_SECONDS after a plan's ConfigMap was refused, so that
        every adapter gets a Job of its own meanwhile (one per slot), not one per pass."""
        return self._refused_at is None or time.monotonic() - self._refused_at > RETRY_SECONDS

    def refused(self) -> None:
        self._refused_at = time.monotonic()

    async def of(self, job: JobView, settings: Settings) -> Read:
        """The batch Job's record, from storage unless a fresh enough read is remembered."""
        key = (job.namespace, job.name)
        async with self._locks.setdefault(key, asyncio.Lock()):
            hit = self._reads.get(key)
            fresh = max(1.0, settings.resync_seconds / 2)
            if hit is not None and (hit.final or (not job.finished and time.monotonic() - hit.at < fresh)):
                return hit
            read = await _read(job, settings)
            self._reads[key] = read
            return read

    def forget(self, namespace: str, name: str) -> None:
        """Job ``name`` is gone: drop its remembered record."""
        self._reads.pop((namespace, name), None)
        self._locks.pop((namespace, name), None)


async def _read(job: JobView, settings: Settings) -> Read:
    uri = job.output_uri or ""
    try:
        raw = await storage.call(storage.read_json, uri, settings=settings)
    except Exception as exc:  # StorageUnavailable, or anything else the client library raises
        error = str(exc if isinstance(exc, storage.StorageUnavailable) else storage.StorageUnavailable(uri, exc))
        return Read(None, error, time.monotonic(), False)
    record = None
    if raw is not None:
        try:
            record = BatchRecord.parse(raw, f"batch record {uri}")
        except ContractError as error:  # not one this version reads: its members get Jobs of their own
            logger.warning("Job %s/%s: ignoring its batch record: %s", job.namespace, job.name, error)
    return Read(record, None, time.monotonic(), job.finished)


async def member(records: BatchRecords, job: JobView, adapter: str, settings: Settings) -> batching.MemberView:
    """The batch Job ``job`` as its member ``adapter`` should see it."""
    read = await records.of(job, settings)
    return batching.member_view(job, adapter, read.record, read.error, read.error is None, now_iso())


async def own_job_exists(
    records: BatchRecords, jobs: Mapping[Any, Any], key: tuple[str, str], adapter: str, settings: Settings
) -> bool:
    """Whether the adapter has a Job for its plan: its own, or a batch that has not left it unfinished."""
    found = next(iter(jobs.get(key, ())), None)
    if found is None or not found.members:
        return found is not None
    return (await member(records, found, adapter, settings)).job is not None


async def member_result(view: batching.MemberView, settings: Settings) -> Any:
    """The member's result.json (its published version's), for the numbers its outcome lacks (strategy, α, β,
    time to readiness); None when it published nothing or storage cannot say now (its outcome has the quality)."""
    uri = view.summary.result_uri if view.summary is not None else None
    if not uri:
        return None
    try:
        raw = await storage.call(storage.read_json, uri, settings=settings)
    except Exception as exc:
        logger.warning("reading %s: %s", uri, exc)
        return None
    return parse_result(raw, uri)


def members_of(unit: list[Candidate]) -> list[Member]:
    out = []
    for cand in unit:
        assert cand.adapter.spec is not None and cand.plan.adaptation is not None
        out.append(Member(cand.adapter.name, cand.adapter.spec, cand.plan.adaptation))
    return out


async def prepare(
    records: BatchRecords, unit: list[Candidate], owner: Mapping[str, Any], settings: Settings
) -> dict[str, Any] | None:
    """Creates the plan's ConfigMap of the batch ``unit`` (owned by the release, created before its Job so the
    pod never waits for it; a 409 is this very plan: its name digests its members) and returns the batch Job
    to create; None when the ConfigMap cannot be created (said in the log: the leader gets its own Job, and no
    batch is planned for RETRY_SECONDS)."""
    import kopf  # kept out of the pure modules' imports

    members = members_of(unit)
    configmap = build_plan_configmap(settings, members)
    kopf.adopt(configmap, owner=dict(owner))
    try:
        await asyncio.to_thread(kube.create_configmap_if_absent, configmap, settings.api_workers)
    except Exception as exc:
        records.refused()
        logger.warning(
            "batch %s: cannot create its plan ConfigMap (%s): one Job per adapter for %.0f s (grant create on "
            "configmaps: chart value batching.rbac)",
            configmap["metadata"]["name"],
            redact(refusals.api_message(exc))[:500],
            RETRY_SECONDS,
        )
        return None
    job = build_batch_job(settings, members)
    kopf.adopt(job, owner=dict(owner))
    return job
