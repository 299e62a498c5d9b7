"""Configuration dataclasses of the worker; each rejects a bad value by naming the field.

The defaults are the paper's (Section 4.1): rank 16, batch 32, a 512-example validation set, a search budget
of T = 20 probes, λ1 = 1e-3, λ2 = 1e-4, η1 = 5e-4 cosine-annealed to η_min = 1e-5. The search bounds are
configuration rather than constants: on a real pretrained encoder the best α was negative.

Each field a user may set is declared with :func:`knob`: its help text, its flag and the commands that offer
it. The command line (relora_worker.cli_options) is built from these declarations, so a new knob is one field
here: its default, its help and its validation in one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Literal

from relora_contract import strategies
from relora_contract.cli_args import Flag
from relora_worker.errors import BadInputError

Strategy = Literal[*strategies.NAMES]  # type: ignore[valid-type]  # the contract's names, one source
STRATEGIES: tuple[str, ...] = strategies.NAMES
# The strategies that need Π_r(ΔΘ): the fused starts, and auto (which races the fused start against transfer).
DELTA_STRATEGIES: frozenset[str] = strategies.USES_DELTA
TaskType = Literal["seq-cls", "causal-lm"]
TASK_TYPES: tuple[str, ...] = ("seq-cls", "causal-lm")
METRICS: tuple[str, ...] = ("accuracy", "exact-match")
SVD_METHODS: tuple[str, ...] = ("auto", "exact", "randomized")
RANDOMIZED_SVD_MAX_RANK = 64  # svd="auto": randomized up to this rank, exact above
SEARCH_METHODS: tuple[str, ...] = ("bayesian", "grid")
READINESS_METHODS: tuple[str, ...] = ("wilson", "point")
PROBE_PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16")
CHECKPOINTING_MODES: tuple[str, ...] = ("auto", "on", "off")
SEARCH_CAPS: tuple[str, ...] = ("time", "work")
SHARD_BASE_MODES: tuple[str, ...] = ("never", "always", "auto")  # relora_worker.distributed.shard_decision


READAPT, PROJECT_DELTA, EVALUATE = "readapt", "project-delta", "evaluate"


@dataclass(frozen=True)
class Knob:
    """How a configuration field appears on the command line."""

    help: str
    flag: str | None = None  # default: --<field-name-with-dashes>
    commands: tuple[str, ...] = (READAPT,)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # text -> value (raises ValueError naming what was expected)
    convert: Callable[[Any], Any] | None = None  # the option's value (or --config's) -> the field's value
    common: bool = False  # declared by every command's common options (e.g. --device), only read here
    group: str | None = None  # the --help section (default: the class's GROUP)
    required: tuple[str, ...] = ()  # commands that need it given (flag or --config): no default is assumed there


def knob(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING, **cli: Any) -> Any:
    """A dataclass field that the command line offers (``cli``: :class:`Knob`'s options)."""
    return field(default=default, default_factory=default_factory, metadata={"knob": Knob(help, **cli)})


def parse_pair(text: str) -> tuple[float, float]:
    """``LOW,HIGH`` -> (low, high)."""
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r}: expected two numbers LOW,HIGH") from None
    return low, high


def _require(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise BadInputError(f"invalid {name}={value!r}: expected {expected}")


def _positive_int(name: str, value: Any) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0, name, "a positive integer", value)


def _finite(name: str, value: Any) -> None:
    _require(isinstance(value, (int, float)) and math.isfinite(value), name, "a finite number", value)


def _non_negative(name: str, value: Any) -> None:
    _finite(name, value)
    _require(value >= 0, name, "a number >= 0", value)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _require(value in choices, name, "one of " + ", ".join(choices), value)


@dataclass(frozen=True)
class ProjectionConfig:
    """How Π_r computes the best rank-r approximation of W' − W for each targeted module.

    ``svd="auto"`` (the default) is the randomized SVD for ranks ≤ 64 and the exact one above: with 4 power
    iterations its rank-r error is within rounding of the exact one on release deltas (their spectra decay),
    at a fraction of the exact SVD's cost on 4k–16k matrices; the exact SVD stays available.
    """

    GROUP: ClassVar[str] = "fusion search"

    rank: int = knob(16, "rank r of the projection (the adapters' rank)", commands=(PROJECT_DELTA,))
    svd: str = knob(
        "auto",
        "SVD of Π_r: auto (randomized for rank <= 64, else exact), exact or randomized (svd_lowrank)",
        choices=SVD_METHODS,
        commands=(PROJECT_DELTA, READAPT),
    )
    oversample: int = knob(
        8, "randomized SVD: extra columns of the range finder (Halko et al.)", commands=(PROJECT_DELTA,)
    )
    power_iterations: int = knob(4, "randomized SVD: subspace iterations", commands=(PROJECT_DELTA,))
    device: str = knob(
        "auto", "auto (GPU when present), cpu, cuda or cuda:N", common=True, commands=(PROJECT_DELTA, READAPT)
    )

    def __post_init__(self) -> None:
        _positive_int("rank", self.rank)
        _choice("svd", self.svd, SVD_METHODS)
        _require(
            isinstance(self.oversample, int) and self.oversample >= 0, "oversample", "an integer >= 0", self.oversample
        )
        _require(
            isinstance(self.power_iterations, int) and self.power_iterations >= 0,
            "power_iterations",
            "an integer >= 0",
            self.power_iterations,
        )

    @property
    def method(self) -> str:
        """The SVD actually used: ``svd`` with ``auto`` resolved by the rank."""
        if self.svd != "auto":
            return self.svd
        return "randomized" if self.rank <= RANDOMIZED_SVD_MAX_RANK else "exact"


@dataclass(frozen=True)
class SearchConfig:
    """The search of the fusion coefficients (α, β).

    ``budget`` counts every probe, seeds included (the paper's T). ``transfer`` (α=0, β=1) is always probed
    first, so the chosen start is never worse on D_val than reusing the old adapter.
    """

    GROUP: ClassVar[str] = "fusion search"

    method: str = knob("bayesian", "bayesian (GP + LogEI) or grid", flag="--search", choices=SEARCH_METHODS)
    budget: int = knob(20, "T: probes in total, seeds included", flag=Flag.SEARCH_BUDGET)
    seed_points: int = knob(4, "quasi-random seed probes (transfer first)", flag="--search-seed-points")
    alpha_bounds: tuple[float, float] = knob(
        (-2.0, 1.0), "LOW,HIGH for α (may be negative)", flag=Flag.ALPHA_BOUNDS, parse=parse_pair, convert=tuple
    )
    beta_bounds: tuple[float, float] = knob(
        (0.0, 3.0), "LOW,HIGH for β", flag=Flag.BETA_BOUNDS, parse=parse_pair, convert=tuple
    )
    candidates: int = knob(
        2048, "bayesian: dense candidate set scored in one batched acquisition call", flag="--search-candidates"
    )
    # Off by default: on MiniLM the early-stopped searches (10 and 15 probes) found starts 0.6–2.9 points worse
    # than the full 20-probe search to save ~1 s (bench/README.md).
    ei_stop: float = knob(
        0.0,
        "stop early when expected improvement (standardised) stays below this for 2 iterations (0: all T probes)",
    )
    min_probes: int = knob(8, "with --ei-stop: never stop before this many probes", flag="--search-min-probes")
    refit_every: int = knob(
        4,
        "re-optimise the GP's hyper-parameters every this many probes (warm-started in between)",
        flag="--search-refit-every",
    )
    fit_maxiter: int = knob(
        20, "L-BFGS iterations per hyper-parameter fit (more over-fits early)", flag="--search-fit-maxiter"
    )
    grid_size: int = knob(5, "points per axis for --search grid")
    # At 8B a probe over 512 rows of ~100 tokens is 1.6 s of arithmetic (bench/scale): 20 probes were a third of
    # the run. The budget binds only from ~3B parameters at such a D_val; smaller models score every row.
    probe_flops: float = knob(
        2.5e14,
        "one probe scores the first D_val rows whose forward pass costs at most this many FLOPs "
        "(2 × parameters × tokens; at least 64 rows; 0: every row)",
        flag="--search-probe-flops",
    )
    # Probes are only compared with each other; fine-tuning and every reported quality stay in float32.
    probe_precision: str = knob(
        "auto",
        "precision of the probes' validation passes (auto: bfloat16 on a CUDA GPU, else float32)",
        choices=PROBE_PRECISIONS,
    )
    seed: int = knob(0, "seed of batches and fresh initialisations", flag=Flag.SEED)

    def __post_init__(self) -> None:
        _choice("search.method", self.method, SEARCH_METHODS)
        _choice("search.probe_precision", self.probe_precision, PROBE_PRECISIONS)
        _positive_int("search.budget", self.budget)
        _positive_int("search.seed_points", self.seed_points)
        _positive_int("search.candidates", self.candidates)
        _positive_int("search.grid_size", self.grid_size)
        _positive_int("search.refit_every", self.refit_every)
        _positive_int("search.fit_maxiter", self.fit_maxiter)
        _non_negative("search.ei_stop", self.ei_stop)
        _non_negative("search.probe_flops", self.probe_flops)
        _require(
            isinstance(self.min_probes, int) and self.min_probes >= 1,
            "search.min_probes",
            "an integer >= 1",
            self.min_probes,
        )
        for name, (low, high) in (("alpha_bounds", self.alpha_bounds), ("beta_bounds", self.beta_bounds)):
            _finite(f"search.{name}[0]", low)
            _finite(f"search.{name}[1]", high)
            _require(low < high, f"search.{name}", "lower bound < upper bound", (low, high))
        a_lo, a_hi = self.alpha_bounds
        b_lo, b_hi = self.beta_bounds
        _require(
            a_lo <= 0.0 <= a_hi and b_lo <= 1.0 <= b_hi,
            "search bounds",
            "bounds that contain the transfer point alpha=0, beta=1",
            (self.alpha_bounds, self.beta_bounds),
        )


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning with scheduled regularisation (paper Eq. 18–22).

    Stage 1 runs ``stage1_steps`` steps at constant ``lr`` with anchor strength ``lambda1``; stage 2 runs to
    ``max_steps`` with ``lambda2`` and a cosine schedule from ``lr`` to ``lr_min``. ``lambda1 = lambda2 = 0``
    is plain fine-tuning.
    """

    GROUP: ClassVar[str] = "strategy and fine-tuning"

    max_steps: int = knob(300, "training budget E_total in steps")
    stage1_steps: int = knob(100, "E1: steps of stage 1 (strong anchor; at most the budget)")
    batch_size: int = knob(32, "mini-batch size")
    lr: float = knob(5e-4, "η1, learning rate of stage 1 and start of stage 2")
    lr_min: float = knob(1e-5, "η_min at the end of the cosine schedule")
    lambda1: float = knob(1e-3, "anchor strength λ1 in stage 1")
    lambda2: float = knob(1e-4, "anchor strength λ2 in stage 2")
    eval_every: int = knob(10, "measure quality every k steps (the shortest interval on a GPU)")
    warmup_steps: int = knob(0, "linear learning-rate warm-up steps at the start (0: the paper's schedule)")
    weight_decay: float = knob(0.0, "AdamW weight decay of the LoRA factors")
    max_length: int = knob(128, "token limit per example")
    seed: int = knob(0, "seed of batches and fresh initialisations", flag=Flag.SEED)
    # CPU runs keep eval_every (reproducible trajectories; timings vary there). See relora_worker/finetune.py,
    # next_evaluation.
    eval_share: float = knob(
        0.1,
        "on a GPU, stretch the evaluation interval so evaluation costs at most this share of training time "
        "(0: exactly every --eval-every steps)",
    )
    # LoRA factors, optimiser state and gradients stay float32 under bfloat16 autocast.
    precision: str = knob(
        "auto",
        "training precision (auto: bfloat16 autocast on a CUDA GPU, LoRA factors and optimiser in float32)",
        flag="--train-precision",
        choices=PROBE_PRECISIONS,
    )
    gradient_checkpointing: str = knob(
        "auto",
        "recompute activations in the backward pass (auto: only when a step would not fit in GPU memory)",
        choices=CHECKPOINTING_MODES,
    )

    def __post_init__(self) -> None:
        _require(
            isinstance(self.max_steps, int) and self.max_steps >= 0, "max_steps", "an integer >= 0", self.max_steps
        )
        _non_negative("eval_share", self.eval_share)
        _require(self.eval_share < 1, "eval_share", "a share in [0, 1)", self.eval_share)
        _choice("precision", self.precision, PROBE_PRECISIONS)
        _choice("gradient_checkpointing", self.gradient_checkpointing, CHECKPOINTING_MODES)
        _require(
            isinstance(self.stage1_steps, int) and self.stage1_steps >= 0,
            "stage1_steps",
            "an integer >= 0",
            self.stage1_steps,
        )
        _positive_int("batch_size", self.batch_size)
        _require(
            isinstance(self.warmup_steps, int) and self.warmup_steps >= 0,
            "warmup_steps",
            "an integer >= 0",
            self.warmup_steps,
        )
        _positive_int("eval_every", self.eval_every)
        _positive_int("max_length", self.max_length)
        for name in ("lr", "lr_min", "lambda1", "lambda2", "weight_decay"):
            _non_negative(name, getattr(self, name))
        _require(self.lr > 0, "lr", "a number > 0", self.lr)
        _require(self.lr_min <= self.lr, "lr_min", f"a number <= lr ({self.lr})", self.lr_min)


_MEASURED = (READAPT, EVALUATE)


def _labels(value: Any) -> tuple[str, ...] | None:
    from relora_worker.precheck import parse_labels  # the one reading of --labels (it names the flag)

    return parse_labels(value)


@dataclass(frozen=True)
class TaskConfig:
    """What the adapter is for and how its quality is measured."""

    GROUP: ClassVar[str] = "task"

    task: str = knob("seq-cls", "sequence classification or causal LM", choices=TASK_TYPES, commands=_MEASURED)
    text_field: str = knob("text", "field holding the text (the prompt for causal-lm)", commands=_MEASURED)
    label_field: str = knob("label", "field holding the label (the completion)", commands=_MEASURED)
    labels: tuple[str, ...] | None = knob(
        None,
        "comma-separated label set in class order, or a JSON array when a label has a comma (default: the "
        "adapter's, or sorted)",
        convert=_labels,
    )
    metric: str = knob("accuracy", "quality metric on D_eval", choices=METRICS, commands=_MEASURED)
    # Required by readapt, as by the TaskAdapter CRD: a silently assumed threshold would decide Ready for a team.
    threshold: float = knob(0.8, "service-quality threshold in (0, 1]", commands=_MEASURED, required=(READAPT,))
    val_size: int = knob(512, "size of D_val (the search's objective)")
    eval_size: int = knob(1000, "size of D_eval when carved from train")
    split_seed: int = knob(
        0, "seed of batches and fresh initialisations", flag=Flag.SEED, group="strategy and fine-tuning"
    )

    def __post_init__(self) -> None:
        _choice("task", self.task, TASK_TYPES)
        _choice("metric", self.metric, METRICS)
        _require(
            self.task == "causal-lm" or self.metric == "accuracy",
            "metric",
            "accuracy for seq-cls tasks (exact-match needs causal-lm)",
            self.metric,
        )
        _finite("threshold", self.threshold)
        _require(0 < self.threshold <= 1, "threshold", "a number in (0, 1]", self.threshold)
        _require(bool(self.text_field), "text_field", "a non-empty field name", self.text_field)
        _require(bool(self.label_field), "label_field", "a non-empty field name", self.label_field)
        _positive_int("val_size", self.val_size)
        _positive_int("eval_size", self.eval_size)
        if self.labels is not None:
            _require(
                len(self.labels) >= 2 and len(set(self.labels)) == len(self.labels),
                "labels",
                "at least two distinct labels",
                self.labels,
            )


@dataclass(frozen=True)
class ReadinessConfig:
    """When a measured quality counts as "ready" (the statistical decision of relora_worker/readiness.py).

    Each evaluation is tested — ``wilson``: the one-sided lower confidence bound of the metric (a proportion
    of D_eval's rows: accuracy, exact-match) at level ``confidence`` reaches the threshold; ``point``: the
    measured value itself does (the rule before issue 17, where one lucky evaluation passes) — and the run is
    ready once ``consecutive`` evaluations in a row pass. The defaults were chosen by resampling the
    benchmark's trajectories (bench/README.md, "Readiness that is not noise").
    """

    GROUP: ClassVar[str] = "strategy and fine-tuning"

    method: str = knob(
        "wilson",
        "readiness test of one evaluation: wilson (its lower confidence bound >= threshold) or point",
        flag="--readiness",
        choices=READINESS_METHODS,
    )
    confidence: float = knob(0.8, "one-sided level of the Wilson bound", flag="--readiness-confidence")
    consecutive: int = knob(2, "ready once this many evaluations in a row pass", flag="--readiness-consecutive")

    def __post_init__(self) -> None:
        _choice("readiness.method", self.method, READINESS_METHODS)
        _finite("readiness.confidence", self.confidence)
        _require(0.5 <= self.confidence < 1, "readiness.confidence", "a level in [0.5, 1)", self.confidence)
        _positive_int("readiness.consecutive", self.consecutive)


@dataclass(frozen=True)
class AutoConfig:
    """The ``auto`` policy's one knob (relora_worker/auto.py): how much of the measured training budget the
    search may cost before Ready. It is a share of the run's own measured step time × ``max_steps``, not a
    per-task constant; 0.05 is the issue's "search ≤ 5 % of end-to-end"."""

    GROUP: ClassVar[str] = "strategy and fine-tuning"

    search_share: float = knob(0.05, "auto: search cap, a share of the budget")
    # "time": seconds of the search vs the measured step time. "work": forward-token equivalents (a probe's
    # validation pass vs a training step's forward + backward, turned into a probe count before the search),
    # independent of the machine's speed and load, so `relora demo` prints the same table everywhere; "time" is
    # what a run actually spends.
    search_cap: str = knob(
        "time",
        "auto: measure the share in seconds (time) or in forward-token work (work: machine-independent)",
        choices=SEARCH_CAPS,
    )

    def __post_init__(self) -> None:
        _finite("auto.search_share", self.search_share)
        _require(0 < self.search_share <= 1, "auto.search_share", "a share in (0, 1]", self.search_share)
        _choice("auto.search_cap", self.search_cap, SEARCH_CAPS)


@dataclass(frozen=True)
class ReadaptConfig:
    """Everything one re-adaptation needs besides its URIs."""

    GROUP: ClassVar[str] = "strategy and fine-tuning"

    strategy: str = knob(
        strategies.DEFAULT.value,
        "how to build the start and train (auto: the measured choice between the fused start and the old "
        "adapter, never slower than re-using it; see relora_worker/auto.py)",
        choices=STRATEGIES,
    )
    task: TaskConfig = field(default_factory=TaskConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    stop_at_ready: bool = knob(False, "stop at the first evaluation meeting the threshold")
    device: str = knob("auto", "auto (GPU when present), cpu, cuda or cuda:N", common=True)
    readiness: ReadinessConfig = field(default_factory=ReadinessConfig)
    auto: AutoConfig = field(default_factory=AutoConfig)
    # Ready early, improve after: the first ready version is published beside the output (readapt.ready_uri).
    improve_after_ready: bool = knob(
        False,
        "publish the first version that meets the readiness rule at OUTPUT-ready at once, keep training, "
        "publish the final one at OUTPUT (the summary names the better of the two)",
    )
    improve_max_steps: int = knob(0, "training steps after Ready (0: the budget)")
    # Several processes (torchrun, issue 18): FSDP2 shards of the frozen base instead of a whole copy per rank.
    shard_base: str = knob(
        "auto",
        "under several processes (torchrun): shard the frozen base across them with FSDP2 (always), keep a "
        "whole copy on each (never), or shard when its weights exceed half of one GPU's memory (auto; never on "
        "CPUs); one process never shards",
        choices=SHARD_BASE_MODES,
    )

    def __post_init__(self) -> None:
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("shard_base", self.shard_base, SHARD_BASE_MODES)
        _require(
            isinstance(self.improve_max_steps, int) and self.improve_max_steps >= 0,
            "improve_max_steps",
            "an integer >= 0",
            self.improve_max_steps,
        )

    @property
    def uses_delta(self) -> bool:
        """Whether the strategy needs Π_r(ΔΘ) (the fused starts and auto do)."""
        return self.strategy in DELTA_STRATEGIES


def dataclass_from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    """Builds ``cls`` from a dict, naming any unknown key instead of ignoring it."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise BadInputError(f"{where}: unknown field(s) {', '.join(unknown)}; expected some of {sorted(known)}")
    return cls(**values)
