"""The ``relora`` command line: project-delta, readapt, readapt-batch, evaluate, demo (launch: one on N processes).

Exit codes: 0 success (readapt: threshold reached); 3 readapt finished below its threshold (the adapter and
result are still published); 2 bad input (nothing published); 4 storage unreachable or access denied;
1 unexpected internal error; 143 (130 for SIGINT) terminated by a signal (nothing published). Arguments
are checked before torch is imported (:mod:`relora_worker.precheck`). With ``--termination-message-path``
a one-line JSON summary is written on every exit (Kubernetes reads it into the Pod's status).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from relora_contract import cli_args
from relora_contract.cli_args import Flag
from relora_contract.result import ResultRecord, RunStatus
from relora_contract.summary import Command, TerminationSummary
from relora_worker import distributed, precheck, signals
from relora_worker.cli_options import add_options, config_from
from relora_worker.config import (
    EVALUATE,
    PROJECT_DELTA,
    READAPT,
    STRATEGIES,
    TASK_TYPES,
    ProjectionConfig,
    ReadaptConfig,
    TaskConfig,
)
from relora_worker.errors import EXIT_BELOW_THRESHOLD, EXIT_INTERNAL, EXIT_OK, BadInputError, ReloraError, Terminated
from relora_worker.storage import dumps_strict, pinned
from relora_worker.summary import write_termination_message

EPILOG = """exit codes:
  0  success (readapt: the adapter reached its threshold)
  3  readapt finished its budget below the threshold (adapter and result.json are published)
  2  bad input: a file, field, option or URI is wrong (nothing is published)
  4  object storage unreachable, timed out or access denied (after bounded retries), or a racing publish won
  143  terminated by SIGTERM (130: SIGINT) before finishing: nothing of this run is published
  1  unexpected internal error
URIs: a local path, file:///abs/path or s3://bucket/key (AWS_* variables, AWS_ENDPOINT_URL for S3-compatible)."""
LAUNCH_EPILOG = """

relora launch --nproc-per-node N COMMAND …: runs COMMAND on N local processes (one per GPU) and exits with
rank 0's code (the same as python -m relora_worker.launch)."""
BATCH_EPILOG = """

readapt-batch: each adapter's outcome (its own exit code above) is in the plan's result record; the process
exits 4 or 1 if any adapter failed so (storage first), else 2 if no adapter was published, else 3 if any
adapter is not ready (below threshold or bad input), else 0."""


class _Parser(argparse.ArgumentParser):
    """argparse that exits with our bad-input code (2 is also argparse's own, kept on purpose)."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(Flag.JSON, action="store_true", help="print a machine-readable JSON summary on stdout")
    parser.add_argument(
        Flag.TERMINATION_MESSAGE_PATH,
        metavar="PATH",
        help="also write a one-line JSON summary (<4 KiB) here, e.g. /dev/termination-log",
    )
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda or cuda:N")
    parser.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="progress bars on stderr (auto: only when stderr is a terminal)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and full tracebacks")


def _add_project(sub: Any) -> None:
    p = sub.add_parser(
        "project-delta",
        help="compute Π_r(W'−W) once per release pair, targets and rank",
        description="Compute the best rank-r approximation of the base-model delta for every "
        "targeted module, saved as LoRA-shaped factors plus a manifest.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(Flag.OLD_MODEL, required=True, metavar="URI", help="the old release (HF folder, safetensors)")
    p.add_argument(Flag.NEW_MODEL, required=True, metavar="URI", help="the new release (HF folder, safetensors)")
    p.add_argument(
        Flag.TARGET_MODULES,
        required=True,
        help="comma-separated module names (suffix match, as PEFT) or a regex if it starts with 're:'",
    )
    add_options(p, ProjectionConfig, PROJECT_DELTA)
    p.add_argument(Flag.OLD_RELEASE, default="", help="name of the old release (recorded in the manifest)")
    p.add_argument(Flag.NEW_RELEASE, default="", help="name of the new release (recorded in the manifest)")
    p.add_argument(Flag.OUTPUT, required=True, metavar="URI", help="where to publish the projection folder")
    _common(p)


def _add_readapt(sub: Any) -> None:
    p = sub.add_parser(
        "readapt",
        help="re-adapt one adapter to a new base-model release",
        description="Re-adapt a LoRA adapter trained on an old base model to a new release and "
        "publish the new adapter with result.json.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="JSON file with any of these options (underscored keys); flags on the command line win",
    )
    io = p.add_argument_group("inputs and outputs")
    io.add_argument(Flag.BASE_MODEL, metavar="URI", help="the NEW base model (HF folder, safetensors)")
    io.add_argument(Flag.ADAPTER, metavar="URI", help="the old PEFT adapter folder")
    io.add_argument("--old-base-model", metavar="URI", help="the OLD base model (to compute Π_r when no --projection)")
    io.add_argument(Flag.PROJECTION, metavar="URI", help="a projection published by project-delta")
    io.add_argument(Flag.TRAIN_DATA, metavar="URI", help="training data (.jsonl, .csv or .parquet)")
    io.add_argument(Flag.VAL_DATA, metavar="URI", help="validation data D_val (default: carved from train)")
    io.add_argument(Flag.EVAL_DATA, metavar="URI", help="evaluation data D_eval (default: carved from train)")
    io.add_argument(Flag.OUTPUT, metavar="URI", help="where to publish the new adapter and result.json")
    io.add_argument(Flag.OLD_RELEASE, default="", help="name of the release the adapter was trained on")
    io.add_argument(Flag.NEW_RELEASE, default="", help="name of the new release")
    io.add_argument(
        "--base-name",
        default="",
        help="the new base model's name as readers know it (e.g. a Hugging Face id), written as "
        "base_model_name_or_path in adapter_config.json and base_model in the model card (default: --base-model's URI)",
    )
    io.add_argument(
        "--control-result",
        metavar="URI",
        help="result.json of a random-init run on the same release and evaluation data: reported in the model card",
    )
    groups = {name: p.add_argument_group(name) for name in ("task", "strategy and fine-tuning", "fusion search")}
    add_options(p, ReadaptConfig, READAPT, groups)
    _common(p)


def _add_readapt_batch(sub: Any) -> None:
    p = sub.add_parser(
        "readapt-batch",
        help="re-adapt several adapters of one base release and task kind on one load of the base",
        description="Re-adapt every adapter of a plan (relora_contract.batch.BatchPlan, JSON) one after another, "
        "loading the base model once; each adapter is published and recorded in the plan's result record as "
        "soon as it is done. See docs/worker-contract.md, 'relora readapt-batch'.",
        epilog=EPILOG + BATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(Flag.PLAN, required=True, metavar="URI", help="the batch plan (JSON: local, file:// or s3://)")
    _common(p)


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure an adapter's quality on a dataset",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(Flag.BASE_MODEL, required=True, metavar="URI", help="base model the adapter is applied to")
    p.add_argument(Flag.ADAPTER, required=True, metavar="URI", help="PEFT adapter folder")
    p.add_argument("--data", required=True, metavar="URI", help="dataset to evaluate on (every row)")
    add_options(p, TaskConfig, EVALUATE)
    _common(p)


def _add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole story on CPU: build a model, a release, an adapter; run every strategy",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="relora-demo", help="folder for the scenario, results and plot")
    p.add_argument(Flag.TASK, choices=TASK_TYPES, default="seq-cls", help="task of the demo scenario")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated strategies to run")
    p.add_argument(Flag.MAX_STEPS, type=int, default=150, help="fine-tuning budget per strategy")
    p.add_argument(Flag.SEED, type=int, default=0, help="random seed")
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="threshold = the old adapter's quality on v1 less this (the regression a team accepts)",
    )
    _common(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="relora",
        description="ReLoRA: re-adapt LoRA adapters to a new base-model release.",
        epilog=EPILOG + LAUNCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from relora_worker.version import installed_version  # only the parser needs it

    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_project(sub)
    _add_readapt(sub)
    _add_readapt_batch(sub)
    _add_evaluate(sub)
    _add_demo(sub)
    return parser


def _targets(text: str) -> list[str] | str:
    if text.startswith("re:"):
        return text[3:]
    targets = [t.strip() for t in text.split(",") if t.strip()]
    if not targets:
        raise BadInputError("--target-modules is empty; expected module names such as q_proj,v_proj")
    return targets


def _progress_bar(enabled: bool) -> Callable[[str, int, int | None], None] | None:
    if not enabled:
        return None
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def update(stage: str, done: int, total: int | None) -> None:
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, leave=False)
        bars[stage].update(done)

    return update


def readapt_config_from(args: argparse.Namespace) -> ReadaptConfig:
    config = config_from(args, ReadaptConfig, READAPT)
    # Stage 1 never outlasts the budget: a short run (--max-steps 20) keeps the default --stage1-steps.
    finetune = replace(config.finetune, stage1_steps=min(config.finetune.stage1_steps, config.finetune.max_steps))
    return replace(config, finetune=finetune)


def _with_options(parser: argparse.ArgumentParser, argv: list[str], values: Any, where: str) -> argparse.Namespace:
    """``argv`` parsed with ``values`` (underscored readapt options) as the defaults: flags in ``argv`` win."""
    readapt_parser = parser._subparsers._group_actions[0].choices["readapt"]  # type: ignore[union-attr]
    known = {a.dest for a in readapt_parser._actions} - {"help", "config"}
    if not isinstance(values, dict):
        raise BadInputError(f"{where}: expected a JSON object of options")
    unknown = sorted(set(values) - known)
    if unknown:
        raise BadInputError(f"{where}: unknown option(s) {unknown}")
    readapt_parser.set_defaults(**values)
    return parser.parse_args(argv)


def _apply_config_file(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        try:
            values = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as error:
            raise BadInputError(f"--config {args.config}: not a readable JSON object ({error})") from error
        args = _with_options(parser, argv, values, f"--config {args.config}")
    return args


def _cmd_project(args: argparse.Namespace, progress: Any) -> TerminationSummary:
    from relora_worker.sharded_projection import publish_projection
    from relora_worker.storage import parse_uri

    parse_uri(args.output, Flag.OUTPUT)
    config = config_from(args, ProjectionConfig, PROJECT_DELTA)
    targets = _targets(args.target_modules)
    with distributed.joined(args.device):  # under torchrun each rank projects a share of the modules (issue 18)
        done = publish_projection(
            args.old_model,
            args.new_model,
            targets,
            config,
            (args.old_release, args.new_release),
            args.output,
            on_module=(lambda _m: progress("project", 1, None)) if progress else None,
        )
    summary = TerminationSummary(
        command=Command.PROJECT_DELTA,
        status=RunStatus.OK,
        exit_code=EXIT_OK,
        projection_uri=args.output,
        modules=done["modules"],
        seconds=done["seconds"],
    )
    return summary


def _cmd_readapt(args: argparse.Namespace, progress: Any) -> TerminationSummary:
    from relora_worker.readapt import ReadaptInputs, run_readapt

    for name in ("base_model", "adapter", "train_data", "output"):
        if not getattr(args, name):
            raise BadInputError(f"--{name.replace('_', '-')} is required (on the command line or in --config)")
    inputs = ReadaptInputs(
        base_model=args.base_model,
        adapter=args.adapter,
        output=args.output,
        train_data=args.train_data,
        val_data=args.val_data,
        eval_data=args.eval_data,
        old_base_model=args.old_base_model,
        projection=args.projection,
        old_release=args.old_release,
        new_release=args.new_release,
        base_name=args.base_name,
        control_result=args.control_result,
    )
    with distributed.joined(args.device):  # torchrun's process group, when started by torchrun (issue 18)
        record = ResultRecord.parse(run_readapt(inputs, readapt_config_from(args), progress))
    return TerminationSummary.readapt(record, record.verdict_code)


def _readapt_job(values: dict[str, Any], where: str) -> tuple[Any, ReadaptConfig]:
    """One batch adapter's inputs and configuration, parsed and checked as ``relora readapt`` would check its
    command line (a fresh parser each time: one adapter's options never become another's defaults)."""
    from relora_worker.readapt import ReadaptInputs

    try:
        args = _with_options(build_parser(), ["readapt"], values, where)
        precheck.validate(args)
        config = readapt_config_from(args)
    except BadInputError as error:
        raise BadInputError(f"{where}: {error}") from None
    names = ("base_model", "adapter", "output", "train_data", "val_data", "eval_data", "old_base_model")
    names += ("projection", "old_release", "new_release", "base_name", "control_result")
    return ReadaptInputs(**{name: getattr(args, name) for name in names}), config


def _cmd_readapt_batch(args: argparse.Namespace, progress: Any) -> TerminationSummary:
    from relora_worker import batch

    plan, sha256 = batch.read_plan(args.plan)
    # --device applies to every adapter unless its options say otherwise; each adapter's options are checked
    # (and a wrong one refused alone) before torch is imported.
    jobs = batch.prepare(plan, lambda values, where: _readapt_job({"device": args.device, **values}, where))
    record = batch.run_batch(plan, sha256, jobs, progress)
    return batch.summarise(plan, record)


def _cmd_evaluate(args: argparse.Namespace, _progress: Any) -> TerminationSummary:
    from relora_worker.evaluate import run_evaluate

    config = config_from(args, TaskConfig, EVALUATE)
    result = run_evaluate(args.base_model, args.adapter, args.data, config, args.device)
    return TerminationSummary(command=Command.EVALUATE, status=RunStatus.OK, exit_code=EXIT_OK, **result)


def _cmd_demo(args: argparse.Namespace, progress: Any) -> TerminationSummary:
    from relora_worker.demo import run_demo

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        raise BadInputError(f"--strategies: unknown {unknown}; expected some of {list(STRATEGIES)}")
    summary = run_demo(
        Path(args.out),
        args.task,
        strategies,
        args.max_steps,
        args.seed,
        args.device,
        quiet=args.json,
        tolerance=args.tolerance,
    )
    return TerminationSummary(command=Command.DEMO, status=RunStatus.OK, exit_code=EXIT_OK, **summary)


COMMANDS = {
    "project-delta": _cmd_project,
    "readapt": _cmd_readapt,
    "readapt-batch": _cmd_readapt_batch,
    "evaluate": _cmd_evaluate,
    "demo": _cmd_demo,
}
# Shown without --verbose: a pod's log must say how far a long download or a batch has come.
ALWAYS_INFO = ("relora_worker.transfers", "relora_worker.batch")


def _print_human(summary: TerminationSummary) -> None:
    for key, value in summary.report().items():
        print(f"{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    """Runs one command; SIGTERM/SIGINT end it with exit 143/130 and a ``Terminated`` summary."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [cli_args.LAUNCH]:  # the command on N processes, each of which comes back here
        from relora_worker import launch

        return launch.main(args[1:])
    with signals.installed():
        return _main(args)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args: argparse.Namespace | None = None
    try:
        args = _apply_config_file(parser, argv)
        precheck.validate(args)  # URIs, output apart from inputs, labels: before torch is imported
        world = distributed.detect()
        if world.active and args.command not in ("readapt", "project-delta"):
            raise BadInputError(
                f"relora {args.command} runs in one process; only readapt and project-delta run under torchrun yet"
            )
        if args.command == "readapt":
            readapt_config_from(args)  # every option's range, still before torch
        if args.command == "demo":  # the same table on every machine: pinned before torch is imported
            from relora_worker.determinism import pin_cpu_numerics

            pin_cpu_numerics()
        if not args.verbose:
            # Library deprecation notices and per-file loading bars say nothing about the user's job.
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        for name in ALWAYS_INFO:
            logging.getLogger(name).setLevel(logging.INFO)
        show = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
        summary = COMMANDS[args.command](args, _progress_bar(show))
        # Name the immutable version this run published, not the location whose pointer the next publish moves.
        summary = summary.with_uris(pinned)
    except Terminated as error:
        command = getattr(args, "command", "relora")
        print(f"relora {command}: {error}", file=sys.stderr)
        summary = TerminationSummary.failed(command, str(error), error.exit_code, reason=error.reason)
    except ReloraError as error:
        command = getattr(args, "command", "relora")
        if args is not None and args.verbose:
            traceback.print_exc()
        print(f"relora {command}: error: {error}", file=sys.stderr)
        summary = TerminationSummary.failed(command, str(error), error.exit_code)
    except Exception as error:
        command = getattr(args, "command", "relora")
        traceback.print_exc()
        message = f"internal error: {type(error).__name__}: {error}"
        print(f"relora {command}: {message}", file=sys.stderr)
        summary = TerminationSummary.failed(command, message, EXIT_INTERNAL)
    # The exit code is the summary's own (one record): the Job's podFailurePolicy keys on it, the operator
    # reads the summary (relora_contract.verdict).
    code = summary.exit_code if summary.exit_code is not None else EXIT_INTERNAL
    # Several ranks share one container: rank 0 alone writes its termination message and prints the summary.
    if args is not None and distributed.is_publisher():
        write_termination_message(args.termination_message_path, summary)
        if args.json:
            print(dumps_strict(summary.as_json()))  # strict JSON: a NaN quality is reported as null
        elif code in (EXIT_OK, EXIT_BELOW_THRESHOLD) and args.command != "demo":  # the demo prints its own table
            _print_human(summary)
    return code
