"""One re-adaptation, end to end: fetch inputs, build the start, fine-tune, publish (I/O at the edges).

The readiness clock starts once the inputs are loaded, just before the start is built (search included),
so every strategy is timed from the same moment; loading and publishing are reported separately.
"""

from __future__ import annotations

import contextlib
import platform
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from relora_contract.result import Artifact, ResultRecord, record_fields
from relora_worker import distributed
from relora_worker.adapters import lora_slots, snapshot
from relora_worker.auto import AutoResult, run_auto
from relora_worker.base_session import BaseSession
from relora_worker.config import DELTA_STRATEGIES, ReadaptConfig
from relora_worker.data import build_task_data
from relora_worker.errors import BadInputError
from relora_worker.finetune import FinetuneResult, finetune, memory_report, prepare_training
from relora_worker.model_card import card_facts, render_model_card
from relora_worker.modelio import ADAPTER_WEIGHTS, attach_adapter, read_adapter, save_adapter
from relora_worker.portable import vllm_problems
from relora_worker.project import Projection, compute_projection, resolve_device
from relora_worker.readiness import Readiness, ReadyAt, describe, report_interval
from relora_worker.search import SearchResult, run_search, warm_up
from relora_worker.sharded_load import base_weight_bytes, load_sharded_model
from relora_worker.sharded_projection import projection_on_every_rank
from relora_worker.sharded_task import ShardedTask
from relora_worker.storage import (
    dumps_strict,
    fetch,
    new_version,
    parse_uri,
    publish_folder,
    read_json,
    version_uri,
)
from relora_worker.strategies import ANCHORED, FUSED, TRAINED, FusedStart, randomise_like
from relora_worker.tasks import build_task, precision_context, probe_rows

Progress = Callable[[str, int, int | None], None]  # (stage, done, total)
READY_SUFFIX = "-ready"


def ready_uri(output: str) -> str:
    """Where the first version that met the readiness rule is published when improving after Ready: beside
    the output (a sibling, so publishing the final adapter never replaces it). The operator reads it there."""
    return output.rstrip("/") + READY_SUFFIX


@dataclass
class ReadaptInputs:
    base_model: str
    adapter: str
    output: str
    train_data: str
    val_data: str | None = None
    eval_data: str | None = None
    old_base_model: str | None = None
    projection: str | None = None
    old_release: str = ""
    new_release: str = ""
    base_name: str = ""  # how readers name the new base; default: base_model's URI (never the local download)
    control_result: str | None = None  # result.json of a random-init run, for the model card

    def base_model_name(self) -> str:
        """``base_model_name_or_path`` of the published adapter: ``base_name``, else the base model's URI (a
        local path made absolute). Never the folder the worker read it from: that is a temporary download."""
        if self.base_name:
            return self.base_name
        location = parse_uri(self.base_model, "--base-model")
        return location.uri.rstrip("/") if location.scheme == "s3" else str(location.path)


def library_versions() -> dict[str, str]:
    import botorch
    import peft
    import transformers

    from relora_worker.version import installed_version

    return {
        "relora": installed_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "botorch": botorch.__version__,
    }


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def _check_inputs(inputs: ReadaptInputs, config: ReadaptConfig) -> None:
    parse_uri(inputs.output, "--output")
    if config.strategy in DELTA_STRATEGIES and not (inputs.projection or inputs.old_base_model):
        raise BadInputError(f"strategy {config.strategy} needs --projection or --old-base-model (for Π_r(ΔΘ))")


def read_control(uri: str, eval_source: dict[str, Any], metric: str) -> dict[str, Any]:
    """The random-init control's result (``--control-result``), checked to be comparable with this run: a
    random-init run that measured the same metric on the same evaluation rows."""
    result = ResultRecord.view(read_json(uri, "control result"))
    where = f"control result {uri}"
    if result.strategy != "random-init":
        raise BadInputError(f"{where}: strategy {result.strategy!r}; expected a random-init run's result.json")
    if result.metric != metric:
        raise BadInputError(f"{where}: metric {result.metric!r}; this run measures {metric!r}")
    theirs = (result.eval_data or {}).get("examples_sha256")
    if theirs != eval_source["examples_sha256"]:
        raise BadInputError(
            f"{where}: evaluated on rows with sha256 {theirs}; this run's evaluation rows have sha256 "
            f"{eval_source['examples_sha256']} (the control must use the same evaluation data)"
        )
    return record_fields(
        result_uri=uri,
        strategy="random-init",
        metric=metric,
        quality=result.quality,
        status=result.status,
        time_to_readiness_s=result.time_to_readiness_s,
    )


def _projection(inputs: ReadaptInputs, config: ReadaptConfig, session: BaseSession, adapter: Any) -> Projection:
    """The adapter's Π_r: read (or computed) once per session for each source, rank and targets."""
    targets = adapter.target_modules
    source = inputs.projection or inputs.old_base_model
    key = (source, adapter.rank, targets if isinstance(targets, str) else tuple(targets), repr(config.projection))
    projection = session.projection(key, lambda: _build_projection(inputs, config, session.folder(), adapter))
    if inputs.projection and projection.meta.get("rank") != adapter.rank:
        raise BadInputError(
            f"projection {inputs.projection} has rank {projection.meta.get('rank')}; the adapter has r={adapter.rank}"
        )
    return projection


def _build_projection(inputs: ReadaptInputs, config: ReadaptConfig, new_base: Path, adapter: Any) -> Projection:
    if inputs.projection:
        with fetch(inputs.projection, "projection") as folder:
            return Projection.load(folder)
    assert inputs.old_base_model is not None
    projection_config = config.projection.__class__(**{**asdict(config.projection), "rank": adapter.rank})
    releases = (inputs.old_release, inputs.new_release)
    if distributed.current().active:  # torchrun: each rank projects a share of the modules (issue 18)
        return projection_on_every_rank(
            inputs.old_base_model, new_base, adapter.target_modules, projection_config, releases
        )
    with fetch(inputs.old_base_model, "old base model") as old_base:
        return compute_projection(old_base, new_base, adapter.target_modules, projection_config, releases)


def run_readapt(
    inputs: ReadaptInputs, config: ReadaptConfig, progress: Progress | None = None, session: BaseSession | None = None
) -> dict:
    """Re-adapts one adapter and publishes it; returns the full record (what ``result.json`` holds).

    ``session`` shares the base model (and projections) of ``inputs.base_model`` with other adapters of a
    batch (relora_worker.batch); without one the base is fetched and loaded for this adapter alone."""
    started = time.perf_counter()
    _check_inputs(inputs, config)
    world = distributed.current()  # torchrun's ranks (issue 18): a world of one outside torchrun
    device = distributed.rank_device(resolve_device(config.device))
    torch.manual_seed(config.finetune.seed)
    warming = None
    if config.strategy in DELTA_STRATEGIES and config.search.method == "bayesian":
        warming = threading.Thread(target=warm_up, name="gp-warm-up", daemon=True)
        warming.start()  # overlaps model loading; joined before the readiness clock starts
    with contextlib.ExitStack() as stack:
        adapter_dir = stack.enter_context(fetch(inputs.adapter, "adapter"))
        adapter = read_adapter(adapter_dir)
        data = build_task_data(
            config.task, inputs.train_data, inputs.val_data, inputs.eval_data, labels=adapter.task.get("labels")
        )
        control = None
        if inputs.control_result:  # checked before any training: a mismatched control is refused up front
            control = read_control(inputs.control_result, data.eval_source, config.task.metric)
        if session is None:
            session = BaseSession(inputs.base_model, stack)
        tokenizer = session.tokenizer()
        projection = _projection(inputs, config, session, adapter) if config.uses_delta else None
        weights = base_weight_bytes(session.folder(), device) if world.active else 0
        sharded, shard_reason = distributed.shard_decision(config.shard_base, device, weights)
        if sharded and config.task.metric == "exact-match":
            raise BadInputError(
                "--metric exact-match does not run on a sharded base (--shard-base): each rank's generation stops "
                "when its own rows are done, and a sharded forward pass needs every rank; use --metric accuracy "
                "or --shard-base never"
            )
        load_weights = config.strategy != "scratch"
        if sharded:  # FSDP2: each rank loads and keeps 1/N of the frozen weights (issue 18)
            loading = time.perf_counter()
            model = load_sharded_model(session.folder(), config.task.task, len(data.labels),
                                       tokenizer.pad_token_id, device, adapter, load_weights)  # fmt: skip
            session.model_loads += 1  # counted as the session counts its own loads (result.json's base)
            session.seconds["load"] += time.perf_counter() - loading
        else:
            base = session.model(config.task.task, len(data.labels), tokenizer.pad_token_id, device)
            model = attach_adapter(base, adapter, config.task.task, load_weights=load_weights)
            model.to(device)
        frozen_local = distributed.frozen_bytes_local(model)  # as loaded: FSDP2 keeps a root unit gathered later
        slots = lora_slots(model)
        task = build_task(config.task.task, data, tokenizer, config.finetune.max_length, device, config.task.metric)
        parameters = sum(p.numel() for p in model.parameters())
        task.limit_probe(probe_rows(task.val.lengths, parameters, config.search.probe_flops))
        if world.active:  # each rank scores (and trains on) its share of the rows; totals are all-reduced
            counted = distributed.first_block(model) if sharded else None  # sharded: equal pass counts
            task = ShardedTask(task, world, config.finetune.batch_size, counted)
        training_plan = prepare_training(model, config.finetune, device)
        if warming is not None:
            warming.join()
        loaded = time.perf_counter()

        output = parse_uri(inputs.output, "--output")
        ready_version: dict[str, Any] = {}
        improve = config.improve_after_ready

        def publish_first(at: ReadyAt) -> None:
            """Publishes the adapter as it stands (the first version that met the rule) beside the output."""
            clock_start = time.perf_counter()
            uri = ready_uri(output.uri)
            version = new_version()  # known in advance: the record names the immutable version it lives in
            pinned_uri = version_uri(uri, version).rstrip("/")
            first = {
                "format": "relora-result/v1",
                "version": "first-ready",
                "status": "ready",
                "strategy": config.strategy,
                "metric": config.task.metric,
                "threshold": config.task.threshold,
                "quality": at.quality,
                **record_fields(
                    quality_interval=report_interval(at.quality, len(data.eval)),
                    readiness_rule=describe(config.readiness),
                    time_to_readiness_s=at.seconds,
                    adapter_uri=pinned_uri,
                    result_uri=pinned_uri + "/result.json",
                    final_adapter_uri=output.uri,
                    eval_data=data.eval_source,
                ),
                "readiness_lower_bound": at.lower_bound,
                "phase": at.phase,
                "location": uri,
                "inputs": asdict(inputs),
                "task": config.task.task,
                "labels": data.labels,
                "alpha": search.alpha if search else None,
                "beta": search.beta if search else None,
                "control": control,
                "versions": library_versions(),
            }
            if world.is_publisher:
                _publish(model, data, config, inputs, first, uri, version)
            ready_version.update(first, publish_seconds=time.perf_counter() - clock_start)

        readiness = Readiness(
            config.readiness, config.task.threshold, len(data.eval), on_ready=publish_first if improve else None
        )
        clock = time.perf_counter()
        search: SearchResult | None = None
        truncation_error = None
        auto: AutoResult | None = None
        if config.uses_delta:
            assert projection is not None
            start = FusedStart(slots, projection)

            def objective(alpha: float, beta: float) -> float:
                start.apply(alpha, beta)
                with precision_context(device, config.search.probe_precision):
                    loss = task.val_loss(model)
                if progress:
                    progress("search", 1, config.search.budget)
                return loss

        if config.strategy == "auto":
            on_step = (lambda step, _q: progress("finetune", 1, None)) if progress else None
            auto = run_auto(model, task, slots, start, objective, config, readiness, on_step)
            search = auto.search
            truncation_error = start.truncation_error
        elif config.strategy in FUSED:
            # Taken on rank 0 alone (the others serve its probes), so every rank fuses the same (α*, β*).
            search = distributed.decided_on_publisher(objective, lambda probe: run_search(probe, config.search))
            start.apply(search.alpha, search.beta)
            truncation_error = start.truncation_error
        elif config.strategy == "random-init":
            randomise_like(slots, config.finetune.seed)
        if auto is not None:
            tuned = _auto_finetune_record(auto, readiness)
            search_seconds = sum(p["ended_s"] - p["started_s"] for p in auto.phases if p["phase"].startswith("search"))
        else:
            search_seconds = time.perf_counter() - clock
            distributed.broadcast_parameters([p for p in model.parameters() if p.requires_grad])
            anchors = snapshot(slots) if config.strategy in ANCHORED else None
            budget = (
                config.finetune
                if config.strategy in TRAINED
                else config.finetune.__class__(**{**asdict(config.finetune), "max_steps": 0})
            )
            tuned = finetune(
                model,
                task,
                slots,
                budget,
                config.task.threshold,
                anchors,
                clock_offset=search_seconds,
                stop_at_ready=config.stop_at_ready and not improve,
                on_step=(lambda step, _q: progress("finetune", 1, budget.max_steps)) if progress else None,
                readiness=readiness,
            )
        trained = time.perf_counter()
        ready = readiness.ready
        final_interval = report_interval(tuned.final_quality, len(data.eval))
        # Improving never regresses: the adapter to serve is the final one unless the first ready version
        # measured higher (then the summary points at that one).
        serve_first = bool(ready_version) and ready_version["quality"] > tuned.final_quality
        record = {
            "format": "relora-result/v1",
            "status": "ready" if ready else "below-threshold",
            "strategy": config.strategy,
            "task": config.task.task,
            "metric": config.task.metric,
            "threshold": config.task.threshold,
            "quality": tuned.final_quality,
            **record_fields(
                quality_interval=final_interval,
                time_to_readiness_s=readiness.first.seconds if readiness.first else None,
                eval_data=data.eval_source,
                ready_version=ready_version or None,
            ),
            "initial_quality": tuned.initial_quality,
            "best_quality": max(p.quality for p in tuned.trajectory),
            "ready_step": tuned.ready_step,
            "readiness": {
                "rule": asdict(config.readiness),
                "described": describe(config.readiness),
                "first": asdict(readiness.first) if readiness.first else None,
                "eval_rows": len(data.eval),
            },
            "serve": "first-ready" if serve_first else "final",
            "auto": _auto_record(auto) if auto else None,
            "alpha": search.alpha if search else None,
            "beta": search.beta if search else None,
            "search": search.to_dict() if search else None,
            "fusion_truncation_error": truncation_error,
            "finetune": tuned.to_dict(),
            "seconds": {
                "load": loaded - started,
                "search": search_seconds,
                "finetune": tuned.train_seconds,
                "evaluation": tuned.eval_seconds,
                "readapt": trained - clock,
            },
            "labels": data.labels,
            "sizes": {"train": len(data.train), "val": len(data.val), "eval": len(data.eval), "probe": len(task.probe)},
            "control": control,
            "adapter": {
                "r": adapter.rank,
                "lora_alpha": adapter.config["lora_alpha"],
                "use_rslora": bool(adapter.config.get("use_rslora")),
                "target_modules": adapter.target_modules,
                "modules": len(slots),
            },
            "projection": projection.meta if projection else None,
            "inputs": asdict(inputs),
            "config": asdict(config),
            "device": {"type": device.type, "name": _device_name(device)},
            "versions": library_versions(),
        }
        record.update(
            record_fields(
                adapter_uri=output.uri,
                result_uri=output.child("result.json").uri,
                final_adapter_uri=output.uri,
                final_quality=tuned.final_quality,
            )
        )
        record["final_quality_interval"] = final_interval
        if serve_first:
            # What to serve (the summary's and so the operator's adapter_uri): the better, earlier version.
            earlier = ResultRecord.view(ready_version)
            record.update(
                record_fields(
                    adapter_uri=earlier.adapter_uri, quality=earlier.quality, quality_interval=earlier.quality_interval
                )
            )
        record["memory"] = memory_report(device, training_plan, model)
        record["base"] = session.counters().model_dump()  # downloads, loads and restores so far (shared across a batch)
        record["seconds"]["end_to_end"] = time.perf_counter() - started
        record["world"] = _world_record(world, config, model, task, (sharded, shard_reason, frozen_local), device)
        if world.is_publisher:  # one version per run, whatever the number of ranks
            _publish(model, data, config, inputs, record, output.uri)
        return record


def _world_record(
    world: distributed.World,
    config: ReadaptConfig,
    model: Any,
    task: Any,
    sharding: tuple[bool, str, int],
    device: torch.device,
) -> dict[str, Any]:
    """result.json's ``world``: the ranks, whether the base was sharded and why, and each rank's frozen bytes
    as loaded (``sharding``: decision, reason, this rank's bytes; collective: every rank calls it here)."""
    record: dict[str, Any] = {"processes": world.size, "rank": world.rank}
    if not world.active:
        return record
    sharded, reason, frozen_local = sharding
    local = distributed.gathered(float(frozen_local), device)
    if device.type == "cuda":  # each GPU's peak, for the per-GPU memory goal (result.json's memory is rank 0's)
        for key, peak in (("peak_device_allocated_bytes", torch.cuda.max_memory_allocated(device)),
                          ("peak_device_reserved_bytes", torch.cuda.max_memory_reserved(device))):  # fmt: skip
            record[key] = [int(x) for x in distributed.gathered(float(peak), device)]
    return {
        **record,
        "shard_base": config.shard_base,
        "sharded": sharded,
        "shard_reason": reason,
        "frozen_bytes_local": [int(x) for x in local],
        "frozen_bytes_total": sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad),
        "filler_passes": int(sum(distributed.gathered(float(getattr(task, "filler_passes", 0)), device))),
    }


def _publish(
    model: Any,
    data: Any,
    config: ReadaptConfig,
    inputs: ReadaptInputs,
    record: dict,
    uri: str,
    version: str | None = None,
) -> None:
    """Saves the model's adapter with ``record`` as result.json and its model card as README.md, and publishes
    the folder at ``uri`` (as ``version`` when the record must name it)."""
    from safetensors import safe_open

    with tempfile.TemporaryDirectory(prefix="relora-out-") as tmp:
        folder = Path(tmp)
        adapter_config = save_adapter(
            model,
            folder,
            {
                "task": config.task.task,
                "labels": data.labels,
                "text_field": config.task.text_field,
                "label_field": config.task.label_field,
                "release": inputs.new_release,
            },
            inputs.base_model_name(),
        )
        with safe_open(str(folder / ADAPTER_WEIGHTS), framework="pt") as handle:
            problems = vllm_problems(adapter_config, handle.keys())
        # What a serving hand-off needs to know without reading the folder (issue 13's integrations).
        record["artifact"] = Artifact(
            base_model_name_or_path=adapter_config["base_model_name_or_path"],
            modules_to_save=adapter_config.get("modules_to_save"),
            vllm_compatible=not problems,
            vllm_problems=problems,
        ).model_dump()
        # Replaces PEFT's empty template card.
        (folder / "README.md").write_text(render_model_card(card_facts(record, adapter_config, problems)))
        ResultRecord.parse(record, "result.json being published")  # the contract's fields, before they go out
        (folder / "result.json").write_text(dumps_strict(record, indent=2))  # strict JSON: NaN -> null
        publish_folder(
            folder,
            uri,
            {"kind": "adapter", "strategy": config.strategy, "release": inputs.new_release, "status": record["status"]},
            version=version,
        )


def _auto_finetune_record(auto: AutoResult, readiness: Readiness) -> FinetuneResult:
    """The ``finetune`` section of result.json for ``auto``: its phases' trajectory on one clock."""
    first = readiness.first
    return FinetuneResult(
        trajectory=auto.trajectory,
        time_to_readiness_s=first.seconds if first else None,
        ready_step=auto.ready_step,
        final_quality=auto.final_quality,
        initial_quality=auto.transfer_quality,
        train_seconds=auto.train_seconds,
        eval_seconds=auto.eval_seconds,
        steps=auto.steps,
        stopped_at_ready=False,
    )


def _auto_record(auto: AutoResult) -> dict[str, Any]:
    out = auto.to_dict()
    del out["trajectory"], out["search"]  # both are in the record already (finetune.trajectory, search)
    return out
