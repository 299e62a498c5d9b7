"""Readiness as a stated statistical decision, not the first lucky evaluation (issue 17).

Every quality metric of the worker (accuracy, exact-match) is a proportion of the n rows of D_eval, so a
measured quality q̂ has binomial noise: with n = 800 one standard error of an accuracy near 0.9 is about one
point. When the threshold lies on the plateau every strategy ends at, "the first evaluation with q̂ ≥ τ" is
mostly a coin flip. The rules here decide from the measurement and its noise:

* ``wilson`` (default): an evaluation passes when the one-sided Wilson lower confidence bound of q̂ at level
  ``confidence`` reaches τ — "the adapter's quality is at least τ, with that confidence". Wilson's interval
  stays inside [0, 1] and keeps its coverage near 0 and 1, where the normal (Wald) interval does not.
* ``point``: an evaluation passes when q̂ ≥ τ (the rule before issue 17, with ``consecutive`` = 1).
* ``consecutive`` = k: the run is ready once k evaluations in a row pass (a crossing that holds; it guards
  against the optimiser's noise between evaluations, the bound against the evaluation set's own). An
  evaluation at step 0 measures a fixed start (the old adapter, a fused start), where there is no optimiser
  noise to guard against: there the test alone decides.

The level was chosen by resampling the benchmark's trajectories (``bench/relora/readiness_tradeoff.py``,
false-Ready rate against delay; bench/README.md). A metric that is not a proportion would need a bootstrap
interval instead; the worker has none today, so none is implemented.

Pure: no I/O, no torch. The same functions decide readiness in the worker and in the benchmark's report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist

from relora_worker.config import ReadinessConfig

REPORT_LEVEL = 0.95  # two-sided level of the interval reported beside every quality


def z_value(confidence: float, two_sided: bool = False) -> float:
    """The standard normal quantile for a one-sided (or two-sided) level, e.g. 0.8 → 0.8416."""
    tail = (1 - confidence) / 2 if two_sided else 1 - confidence
    return NormalDist().inv_cdf(1 - tail)


def wilson_interval(quality: float, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval (low, high) of a proportion ``quality`` measured on ``n`` rows, for quantile ``z``.

    Args:
        quality: the measured proportion p̂ in [0, 1].
        n: the number of rows it was measured on (> 0).
        z: the normal quantile (``z_value``).
    """
    if n <= 0:
        raise ValueError(f"a proportion needs n > 0 rows, got {n}")
    p = min(max(quality, 0.0), 1.0)
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def report_interval(quality: float, n: int) -> dict[str, float | int]:
    """The quality with its two-sided 95 % Wilson interval, as status and result.json report it."""
    low, high = wilson_interval(quality, n, z_value(REPORT_LEVEL, two_sided=True))
    return {"value": quality, "low": low, "high": high, "level": REPORT_LEVEL, "n": n, "method": "wilson"}


def lower_bound(quality: float, n: int, rule: ReadinessConfig) -> float:
    """The value the ``wilson`` rule compares with the threshold (q̂ itself for the other rules)."""
    if rule.method != "wilson":
        return quality
    return wilson_interval(quality, n, z_value(rule.confidence))[0]


def describe(rule: ReadinessConfig) -> str:
    """The rule in words, for result.json and the operator's messages."""
    test = (
        f"the one-sided {rule.confidence:.0%} Wilson lower bound of the metric >= threshold"
        if rule.method == "wilson"
        else "the metric >= threshold"
    )
    return test + (f" at {rule.consecutive} consecutive evaluations" if rule.consecutive > 1 else "")


@dataclass
class ReadyAt:
    """Where readiness was first decided."""

    seconds: float
    step: int
    quality: float
    lower_bound: float
    phase: str


@dataclass
class Readiness:
    """The readiness decision over a run's evaluations (shared by every phase of a run).

    ``observe`` is called with every evaluation in time order; it returns whether the run is ready (now or
    earlier). ``on_ready`` runs once, at the evaluation that first decides readiness, while the model still
    holds the evaluated weights (the worker publishes the first ready version from there).
    """

    rule: ReadinessConfig
    threshold: float
    n: int
    on_ready: Callable[[ReadyAt], None] | None = None
    phase: str = "finetune"
    first: ReadyAt | None = None
    streak: int = 0
    observations: int = field(default=0)

    def passes(self, quality: float) -> bool:
        """Whether one evaluation passes the test (readiness needs ``consecutive`` in a row, see ``observe``)."""
        return lower_bound(quality, self.n, self.rule) >= self.threshold - 1e-12

    def start_phase(self, phase: str) -> None:
        """A new start (another adapter state): a streak of the previous one does not carry over."""
        self.phase, self.streak = phase, 0

    def observe(self, quality: float, seconds: float, step: int) -> bool:
        self.observations += 1
        passed = self.passes(quality)
        self.streak = self.streak + 1 if passed else 0
        needed = 1 if step == 0 else self.rule.consecutive  # a fixed start: see the module's docstring
        if self.first is None and self.streak >= needed:
            self.first = ReadyAt(seconds, step, quality, lower_bound(quality, self.n, self.rule), self.phase)
            if self.on_ready is not None:
                self.on_ready(self.first)
        return self.first is not None

    @property
    def ready(self) -> bool:
        return self.first is not None


def first_ready(points: list[tuple[float, int, float]], threshold: float, n: int,
                rule: ReadinessConfig) -> tuple[float | None, int | None]:
    """(seconds, step) at which ``rule`` first decides readiness on a trajectory of (seconds, step, quality),
    or (None, None): how the benchmark applies the worker's rule to recorded trajectories."""
    tracker = Readiness(rule, threshold, n)
    for seconds, step, quality in points:
        if tracker.observe(quality, seconds, step):
            assert tracker.first is not None
            return tracker.first.seconds, tracker.first.step
    return None, None
