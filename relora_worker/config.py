"""Configuration dataclasses of the worker; each rejects a bad value by naming the field.

The defaults are the paper's (Section 4.1): rank 16, batch 32, a 512-example validation set, a search budget
of T = 20 probes, λ1 = 1e-3, λ2 = 1e-4, η1 = 5e-4 cosine-annealed to η_min = 1e-5. The search bounds are
configuration rather than constants: on a real pretrained encoder the best α was negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from relora_contract import strategies
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

    rank: int = 16
    svd: str = "auto"
    oversample: int = 8  # extra columns for randomized SVD (Halko et al.)
    power_iterations: int = 4  # subspace iterations for randomized SVD
    device: str = "auto"

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

    method: str = "bayesian"
    budget: int = 20
    seed_points: int = 4
    alpha_bounds: tuple[float, float] = (-2.0, 1.0)
    beta_bounds: tuple[float, float] = (0.0, 3.0)
    candidates: int = 2048  # dense candidate set scored in one batched acquisition call
    # Stop when max EI (standardised units) stays below this for 2 iterations; 0 = always T probes (the paper).
    # Off by default: on MiniLM the early-stopped searches (10 and 15 probes) found starts 0.6–2.9 points worse
    # than the full 20-probe search to save ~1 s (bench/README.md).
    ei_stop: float = 0.0
    min_probes: int = 8  # never stop before this many probes
    refit_every: int = 4  # re-optimise GP hyper-parameters every this many probes (warm-started in between)
    fit_maxiter: int = 20  # L-BFGS iterations per hyper-parameter fit (warm-started; more over-fits early)
    grid_size: int = 5  # per dimension, for method="grid"
    # Precision of the probes' validation forward passes: auto = bfloat16 autocast on a CUDA GPU, else float32.
    # Probes are only compared with each other; fine-tuning and every reported quality stay in float32.
    probe_precision: str = "auto"
    seed: int = 0

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

    max_steps: int = 300
    stage1_steps: int = 100
    batch_size: int = 32
    lr: float = 5e-4
    lr_min: float = 1e-5
    lambda1: float = 1e-3
    lambda2: float = 1e-4
    eval_every: int = 10
    warmup_steps: int = 0  # linear LR warm-up at the start of stage 1 (0 = the paper's schedule)
    weight_decay: float = 0.0
    max_length: int = 128
    seed: int = 0
    # Evaluation cadence on a GPU: the interval grows beyond eval_every so that evaluation costs at most this
    # share of the training time (measured); 0 = exactly every eval_every steps. CPU runs keep eval_every
    # (reproducible trajectories; timings vary there). See relora_worker/finetune.py, next_evaluation.
    eval_share: float = 0.1
    # Training precision: auto = bfloat16 autocast on a CUDA GPU that has it (LoRA factors, optimiser state and
    # gradients stay float32), float32 elsewhere.
    precision: str = "auto"
    # Activation checkpointing: auto = on when the step's estimated activations do not fit in free memory.
    gradient_checkpointing: str = "auto"

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


@dataclass(frozen=True)
class TaskConfig:
    """What the adapter is for and how its quality is measured."""

    task: str = "seq-cls"
    text_field: str = "text"
    label_field: str = "label"
    labels: tuple[str, ...] | None = None
    metric: str = "accuracy"
    threshold: float = 0.8
    val_size: int = 512
    eval_size: int = 1000
    split_seed: int = 0

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

    method: str = "wilson"
    confidence: float = 0.8
    consecutive: int = 2

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

    search_share: float = 0.05
    # How the share is measured: "time" (seconds of the search vs the measured step time, the default) or
    # "work" (forward-token equivalents: a probe's validation pass vs a training step's forward + backward,
    # turned into a probe count before the search). "work" makes the cap independent of the machine's speed and
    # load, so `relora demo` prints the same table everywhere; "time" is what a run actually spends.
    search_cap: str = "time"

    def __post_init__(self) -> None:
        _finite("auto.search_share", self.search_share)
        _require(0 < self.search_share <= 1, "auto.search_share", "a share in (0, 1]", self.search_share)
        _require(self.search_cap in ("time", "work"), "auto.search_cap", "'time' or 'work'", self.search_cap)


@dataclass(frozen=True)
class ReadaptConfig:
    """Everything one re-adaptation needs besides its URIs."""

    strategy: str = "relora"
    task: TaskConfig = field(default_factory=TaskConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    stop_at_ready: bool = False
    device: str = "auto"
    readiness: ReadinessConfig = field(default_factory=ReadinessConfig)
    auto: AutoConfig = field(default_factory=AutoConfig)
    # Ready early, improve after: publish the first version that meets the readiness rule at once (beside the
    # output, see readapt.ready_uri), keep training and publish the final one at the output. 0 steps = no cap
    # beyond the budget; otherwise at most this many training steps after Ready.
    improve_after_ready: bool = False
    improve_max_steps: int = 0

    def __post_init__(self) -> None:
        _choice("strategy", self.strategy, STRATEGIES)
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
