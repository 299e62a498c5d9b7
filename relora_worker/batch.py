"""``relora readapt-batch --plan URI``: many adapters of one base release and task kind in one process.

The base model is fetched and loaded once (relora_worker.base_session); each adapter then runs exactly as
``relora readapt`` would run it alone (same code, same seed, same result), is published through the same
path (manifest last) and recorded in the batch record at the plan's ``result`` URI the moment it is done.
One adapter's failure (bad input, storage, even an internal error) is that adapter's outcome; the next one
starts from the pristine base. A signal stops the batch: what finished stays published and recorded.

This module imports no torch at module level: the plan is read and every adapter's options are checked
(before any model is touched) by :func:`prepare`; :func:`run_batch` does the work.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relora_contract.batch import AdapterOutcome, BatchPlan, BatchRecord, PlannedAdapter, batch_exit_code
from relora_contract.errors import ContractError
from relora_contract.exit_codes import ExitCode
from relora_contract.result import ResultRecord, RunStatus
from relora_contract.summary import Command, TerminationSummary
from relora_worker.errors import BadInputError, ReloraError
from relora_worker.storage import check_output_apart, dumps_strict, fetch, pinned, put_bytes

logger = logging.getLogger(__name__)
NOT_RUN = -1  # an adapter's code in the summary before it has an outcome


@dataclass
class Prepared:
    """One adapter of the plan, ready to run (``inputs``/``config``) or already refused (``error``)."""

    item: PlannedAdapter
    inputs: Any = None  # readapt.ReadaptInputs
    config: Any = None  # config.ReadaptConfig
    error: ReloraError | None = None


def read_plan(uri: str) -> tuple[BatchPlan, str]:
    """The plan at ``uri`` and the sha256 of its bytes; BadInputError naming the field otherwise."""
    with fetch(uri, "batch plan") as path:
        data = path.read_bytes()
    try:
        value = json.loads(data)
    except ValueError as error:
        raise BadInputError(f"batch plan {uri}: not valid JSON ({error})") from error
    try:
        plan = BatchPlan.parse(value, f"batch plan {uri}")
    except ContractError as error:
        raise BadInputError(str(error)) from None
    for item in plan.adapters:
        check_output_apart(item.output, {"batch plan result": plan.result})
    return plan, hashlib.sha256(data).hexdigest()


def option_values(plan: BatchPlan, item: PlannedAdapter) -> dict[str, Any]:
    """The readapt options (underscored, as ``--config``) of one adapter: the plan's, then the adapter's own,
    then its inputs and outputs."""
    values: dict[str, Any] = {**plan.options, **item.options, "task": plan.task}
    values.update(
        base_model=plan.base_model,
        old_base_model=plan.old_base_model,
        projection=plan.projection,
        new_release=plan.new_release,
        base_name=item.base_name or plan.base_name,
        adapter=item.adapter,
        train_data=item.train_data,
        val_data=item.val_data,
        eval_data=item.eval_data,
        output=item.output,
        old_release=item.old_release,
        control_result=item.control_result,
    )
    if item.threshold is not None:
        values["threshold"] = item.threshold
    return values


def prepare(plan: BatchPlan, build: Callable[[dict[str, Any], str], tuple[Any, Any]]) -> list[Prepared]:
    """Each adapter's inputs and configuration from ``build(values, where)`` (the CLI's own parsing and
    checks); an adapter whose options are wrong is refused here, alone."""
    prepared = []
    for index, item in enumerate(plan.adapters):
        try:
            inputs, config = build(option_values(plan, item), f"batch plan adapters[{index}] ({item.key})")
            prepared.append(Prepared(item, inputs, config))
        except ReloraError as error:
            prepared.append(Prepared(item, error=error))
    return prepared


def _failed(item: PlannedAdapter, code: ExitCode, message: str, seconds: float) -> AdapterOutcome:
    return AdapterOutcome(
        key=item.key, exit_code=code, status=RunStatus.ERROR, error=message, output=item.output, seconds=seconds
    )


def _published(item: PlannedAdapter, record: ResultRecord, seconds: float) -> AdapterOutcome:
    code = record.verdict_code
    summary = TerminationSummary.readapt(record, code).with_uris(pinned)
    return AdapterOutcome(
        key=item.key,
        exit_code=code,
        status=record.status,
        quality=summary.quality,
        threshold=summary.threshold,
        output=item.output,
        adapter_uri=summary.adapter_uri,
        result_uri=summary.result_uri,
        seconds=seconds,
    )


def _run_one(job: Prepared, session: Any, progress: Any) -> AdapterOutcome:
    from relora_worker.readapt import run_readapt

    started = time.perf_counter()
    if job.error is not None:
        return _failed(job.item, ExitCode(job.error.exit_code), str(job.error), 0.0)
    try:
        record = ResultRecord.parse(run_readapt(job.inputs, job.config, progress, session))
    except ReloraError as error:
        return _failed(job.item, ExitCode(error.exit_code), str(error), time.perf_counter() - started)
    except Exception as error:  # a bug shows in this adapter's outcome; the pristine base serves the next one
        traceback.print_exc()
        message = f"internal error: {type(error).__name__}: {error}"
        return _failed(job.item, ExitCode.INTERNAL, message, time.perf_counter() - started)
    return _published(job.item, record, time.perf_counter() - started)


def _write(plan: BatchPlan, record: BatchRecord) -> None:
    put_bytes(plan.result, dumps_strict(record.model_dump(mode="json"), indent=2).encode(), "batch plan result")


def run_batch(plan: BatchPlan, sha256: str, jobs: list[Prepared], progress: Any = None) -> BatchRecord:
    """Runs every adapter in order on one base session; the batch record is rewritten after each one."""
    import torch

    from relora_worker.base_session import BaseSession

    record = BatchRecord(plan_sha256=sha256, base_model=plan.base_model, pending=[j.item.key for j in jobs])
    _write(plan, record)
    with contextlib.ExitStack() as stack:
        session = BaseSession(plan.base_model, stack, keep=True)
        for index, job in enumerate(jobs, 1):
            outcome = _run_one(job, session, progress)
            gc.collect()  # the finished adapter's model and optimizer, before the next copy of the base
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            record.adapters.append(outcome)
            record.pending.remove(job.item.key)
            record.counters = session.counters()
            if not record.pending:
                record.done = True
                record.exit_code = batch_exit_code(a.exit_code for a in record.adapters)
            _write(plan, record)
            logger.info(
                "adapter %d/%d %s: %s (exit %d%s)",
                index,
                len(jobs),
                job.item.key,
                outcome.status,
                outcome.exit_code,
                f": {outcome.error}" if outcome.error else "",
            )
    return record


def summarise(plan: BatchPlan, record: BatchRecord) -> TerminationSummary:
    """The termination summary (< 4 KiB for ~50 adapters): counts in codes, the first failure in ``error``;
    every adapter's detail is in the batch record."""
    codes = {a.key: int(a.exit_code) for a in record.adapters}
    code = record.exit_code if record.exit_code is not None else batch_exit_code(codes.values())
    status = {ExitCode.OK: RunStatus.READY, ExitCode.BELOW_THRESHOLD: RunStatus.BELOW_THRESHOLD}
    failures = [a for a in record.adapters if a.error]
    error = None
    if failures:
        error = f"{len(failures)} of {len(plan.adapters)} adapter(s) not published; {failures[0].key}: "
        error += str(failures[0].error)
    return TerminationSummary(
        command=Command.READAPT_BATCH,
        status=status.get(ExitCode(code), RunStatus.ERROR),
        exit_code=code,
        error=error,
        batch_uri=plan.result,
        adapter_codes=[codes.get(a.key, NOT_RUN) for a in plan.adapters],
        model_loads=record.counters.model_loads,
    )
