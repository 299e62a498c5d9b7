"""Search of the fusion coefficients (α, β) that minimise the validation loss (paper Eq. 8–17).

The objective is a black box ``loss(α, β)``: each call is one *probe* (fuse, swap the factors into the loaded
model in place, evaluate D_val). Bayesian search fits a GP with an RBF kernel (ScaleKernel(RBF), ARD;
hyper-parameters fitted by marginal likelihood, warm-started from the previous fit) to −loss and picks the
next probe by LogExpectedImprovement over a dense candidate set scored in one batched call: for a 2-D box
that costs milliseconds, where multi-start gradient optimisation of the acquisition costs seconds. The
search stops early when the expected improvement is negligible. The transfer point (α=0, β=1) is always
the first probe. Non-finite losses are recorded but enter the GP as the worst finite value minus a margin.

Everything here runs on the CPU in float64: the GP has at most a few dozen points.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from relora_worker.config import SearchConfig

TRANSFER_POINT = (0.0, 1.0)


@dataclass
class Probe:
    """One evaluation of the objective."""

    alpha: float
    beta: float
    loss: float  # raw validation loss; may be inf/nan
    seconds: float
    source: str  # "transfer", "sobol", "ei", "grid"
    expected_improvement: float | None = None


@dataclass
class SearchResult:
    """The chosen coefficients and the full trace, with the time split the issue asks for."""

    alpha: float
    beta: float
    loss: float
    probes: list[Probe] = field(default_factory=list)
    probe_seconds: float = 0.0
    fit_seconds: float = 0.0
    acquisition_seconds: float = 0.0
    stopped_early: bool = False
    stop_reason: str = "budget"

    @property
    def overhead_seconds(self) -> float:
        """The search's own machinery (GP fit + acquisition), excluding probes."""
        return self.fit_seconds + self.acquisition_seconds

    def to_dict(self) -> dict:
        out = asdict(self)
        out["overhead_seconds"] = self.overhead_seconds
        out["probes"] = [_finite_or_none(asdict(p)) for p in self.probes]
        return out


def _finite_or_none(record: dict) -> dict:
    # JSON has no inf/nan: keep the record readable by every parser.
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


def _bounds_tensor(config: SearchConfig) -> Tensor:
    return torch.tensor([config.alpha_bounds, config.beta_bounds], dtype=torch.float64).T  # 2 × 2


class _Tracker:
    """Runs probes and keeps the trace."""

    def __init__(self, objective: Callable[[float, float], float]):
        self.objective = objective
        self.probes: list[Probe] = []
        self.seconds = 0.0

    def probe(self, alpha: float, beta: float, source: str, ei: float | None = None) -> None:
        start = time.perf_counter()
        loss = float(self.objective(alpha, beta))
        elapsed = time.perf_counter() - start
        self.seconds += elapsed
        self.probes.append(Probe(alpha, beta, loss, elapsed, source, ei))

    def best(self) -> Probe:
        finite = [p for p in self.probes if math.isfinite(p.loss)]
        if not finite:
            raise ValueError("every probe of the fusion search gave a non-finite validation loss")
        return min(finite, key=lambda p: p.loss)

    def result(self, **extra: object) -> SearchResult:
        best = self.best()
        return SearchResult(best.alpha, best.beta, best.loss, self.probes, self.seconds, **extra)  # type: ignore[arg-type]


def gp_targets(losses: list[float]) -> Tensor:
    """−loss as a column (n × 1), non-finite entries replaced by the worst finite value minus a margin."""
    values = torch.tensor([-x for x in losses], dtype=torch.float64)
    finite = torch.isfinite(values)
    if not finite.any():
        raise ValueError("no finite validation loss to fit the GP to")
    worst, best = values[finite].min(), values[finite].max()
    margin = max((best - worst).item(), 1.0)
    values[~finite] = worst - margin
    return values.unsqueeze(-1)


def grid_search(objective: Callable[[float, float], float], config: SearchConfig) -> SearchResult:
    """Probes the transfer point, then a ``grid_size × grid_size`` grid over the bounds."""
    tracker = _Tracker(objective)
    tracker.probe(*TRANSFER_POINT, source="transfer")
    alphas = torch.linspace(*config.alpha_bounds, config.grid_size).tolist()
    betas = torch.linspace(*config.beta_bounds, config.grid_size).tolist()
    for alpha in alphas:
        for beta in betas:
            tracker.probe(alpha, beta, source="grid")
    return tracker.result()


class _SurrogateFitter:
    """Fits SingleTaskGP(ScaleKernel(RBF)) with hyper-parameters warm-started from the previous fit."""

    def __init__(self, maxiter: int = 20) -> None:
        self._previous: dict[str, Tensor] | None = None
        self.maxiter = maxiter

    def fit(self, x_unit: Tensor, y: Tensor, optimise: bool = True):  # -> SingleTaskGP
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.outcome import Standardize
        from gpytorch.kernels import RBFKernel, ScaleKernel

        model = SingleTaskGP(
            x_unit,
            y,
            covar_module=ScaleKernel(RBFKernel(ard_num_dims=x_unit.shape[-1])),
            outcome_transform=Standardize(m=1),
        )
        if self._previous is not None:
            # Only kernel, mean and noise hyper-parameters: the outcome transform's buffers belong to this data.
            model.load_state_dict(self._previous, strict=False)
        if optimise or self._previous is None:
            self._optimise(model, self.maxiter)
        model.eval()
        self._previous = {
            k: v.detach().clone()
            for k, v in model.state_dict().items()
            if k.startswith(("covar_module", "mean_module", "likelihood"))
        }
        return model

    @staticmethod
    def _optimise(model, maxiter: int) -> None:
        from botorch.fit import fit_gpytorch_mll
        from gpytorch.mlls import ExactMarginalLogLikelihood

        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(Exception):
                fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": maxiter}}, max_attempts=2)


def warm_up() -> None:
    """Runs one tiny GP fit and acquisition so the first real one does not pay the libraries' start-up.

    The first fit in a process costs ~0.5 s (lazy imports, first-call code paths of gpytorch/scipy), every
    later one milliseconds. The worker calls this in a background thread while it loads the model, so the
    cost overlaps I/O the job does anyway instead of delaying readiness.
    """
    from botorch.acquisition import LogExpectedImprovement

    x = torch.tensor([[0.1, 0.2], [0.5, 0.9], [0.8, 0.4]], dtype=torch.float64)
    y = torch.tensor([[0.3], [0.1], [0.7]], dtype=torch.float64)
    model = _SurrogateFitter().fit(x, y)
    with torch.no_grad():
        LogExpectedImprovement(model, best_f=y.max()).forward(x.unsqueeze(-2))


def bayesian_search(
    objective: Callable[[float, float], float],
    config: SearchConfig,
    time_limit_s: float | None = None,
    resume: SearchResult | None = None,
) -> SearchResult:
    """GP + LogEI search of (α, β) within ``config.budget`` probes.

    Args:
        objective: maps (α, β) to the validation loss (lower is better).
        config: bounds, budget, seed points, candidate-set size and the early-stop tolerance.
        time_limit_s: stop once the search's own seconds (probes + fit + acquisition) reach this (the
            ``auto`` policy's cap); the transfer point is always probed. ``None``: no limit.
        resume: an earlier (time-capped) search of the same objective to continue: its probes are kept, not
            repeated, and its seconds count towards this one's.

    Returns:
        The best probe and the trace, with probe / model-fit / acquisition seconds.
    """
    from botorch.acquisition import LogExpectedImprovement

    bounds = _bounds_tensor(config)
    span = bounds[1] - bounds[0]
    sobol = torch.quasirandom.SobolEngine(dimension=2, scramble=True, seed=config.seed)
    tracker = _Tracker(objective)
    fit_seconds = acq_seconds = 0.0
    if resume is not None:
        tracker.probes, tracker.seconds = list(resume.probes), resume.probe_seconds
        fit_seconds, acq_seconds = resume.fit_seconds, resume.acquisition_seconds

    def out_of_time() -> bool:
        return time_limit_s is not None and tracker.seconds + fit_seconds + acq_seconds >= time_limit_s

    stop_reason = "budget"
    if not tracker.probes:
        tracker.probe(*TRANSFER_POINT, source="transfer")
    n_seeds = max(0, min(config.seed_points, config.budget) - 1)
    # SobolEngine.draw(0) raises (torch asks C++ for n - 1 points): a budget of one probe has no seed points.
    seed_points = sobol.draw(n_seeds, dtype=torch.float64) if n_seeds else torch.empty(0, 2, dtype=torch.float64)
    for point in seed_points[len(tracker.probes) - 1 :]:
        if out_of_time():
            stop_reason = "time limit"
            break
        alpha, beta = (bounds[0] + point * span).tolist()
        tracker.probe(alpha, beta, source="sobol")

    seeds = min(len(tracker.probes), len(seed_points) + 1)
    fitter = _SurrogateFitter(config.fit_maxiter)
    generator = torch.Generator().manual_seed(config.seed)
    low_ei_streak = 0
    base_candidates = sobol.draw(config.candidates, dtype=torch.float64)
    while len(tracker.probes) < config.budget and stop_reason == "budget":
        if out_of_time():
            stop_reason = "time limit"
            break
        x_unit = torch.tensor([[p.alpha, p.beta] for p in tracker.probes], dtype=torch.float64)
        x_unit = (x_unit - bounds[0]) / span
        y = gp_targets([p.loss for p in tracker.probes])
        start = time.perf_counter()
        # Hyper-parameters are re-optimised every `refit_every` probes and otherwise reused: with warm starts
        # they barely move between neighbouring iterations, and the fit dominates the search's own cost. A
        # resumed search has a fresh fitter, so its first fit always optimises.
        optimise = (len(tracker.probes) - seeds) % config.refit_every == 0
        model = fitter.fit(x_unit, y, optimise=optimise)
        fit_seconds += time.perf_counter() - start

        start = time.perf_counter()
        best_unit = x_unit[int(y.argmax())]
        local = (best_unit + 0.05 * torch.randn(256, 2, generator=generator, dtype=torch.float64)).clamp(0, 1)
        candidates = torch.cat([base_candidates, local])
        with torch.no_grad():
            log_ei = LogExpectedImprovement(model, best_f=y.max()).forward(candidates.unsqueeze(-2))
        # Never re-probe a point already probed: its EI is ~0 anyway, but rounding can tie.
        too_close = torch.cdist(candidates, x_unit).min(dim=1).values < 1e-4
        log_ei = log_ei.masked_fill(too_close, -math.inf)
        index = int(log_ei.argmax())
        acq_seconds += time.perf_counter() - start

        expected = math.exp(log_ei[index].item())
        scale = float(y.std()) if y.numel() > 1 and float(y.std()) > 0 else 1.0
        low_ei_streak = low_ei_streak + 1 if expected / scale < config.ei_stop else 0
        if low_ei_streak >= 2 and len(tracker.probes) >= config.min_probes:
            stop_reason = "expected improvement below ei_stop"
            break
        alpha, beta = (bounds[0] + candidates[index] * span).tolist()
        tracker.probe(alpha, beta, source="ei", ei=expected)

    return tracker.result(
        fit_seconds=fit_seconds,
        acquisition_seconds=acq_seconds,
        stopped_early=stop_reason != "budget",
        stop_reason=stop_reason,
    )


def run_search(
    objective: Callable[[float, float], float],
    config: SearchConfig,
    time_limit_s: float | None = None,
    resume: SearchResult | None = None,
) -> SearchResult:
    """Dispatches on ``config.method`` (the grid has no time limit and does not resume)."""
    if config.method == "grid":
        return grid_search(objective, config)
    return bayesian_search(objective, config, time_limit_s, resume)
