"""The (α, β) search: finds planted optima within budget, probes transfer first, survives NaN losses."""

from __future__ import annotations

import math

import pytest

from relora_worker.config import SearchConfig
from relora_worker.errors import BadInputError
from relora_worker.search import bayesian_search, grid_search, run_search


def bowl(alpha: float, beta: float) -> float:
    return (alpha + 0.7) ** 2 + 0.5 * (beta - 1.6) ** 2 + 0.1


@pytest.mark.parametrize("seed", [0, 1])
def test_bayesian_search_finds_planted_optimum_within_budget(seed: int) -> None:
    result = bayesian_search(bowl, SearchConfig(budget=20, seed=seed))
    assert len(result.probes) <= 20
    assert abs(result.alpha + 0.7) < 0.15 and abs(result.beta - 1.6) < 0.2
    assert result.loss < 0.13
    assert result.fit_seconds > 0 and result.acquisition_seconds > 0 and result.probe_seconds >= 0


def test_transfer_point_is_always_probed_first_and_never_beaten_by_the_choice() -> None:
    result = bayesian_search(lambda a, b: (a - 0.0) ** 2 + (b - 1.0) ** 2, SearchConfig(budget=8))
    assert (result.probes[0].alpha, result.probes[0].beta, result.probes[0].source) == (0.0, 1.0, "transfer")
    assert result.loss <= result.probes[0].loss


@pytest.mark.parametrize("budget", [1, 2])
def test_the_smallest_budgets_probe_transfer_first_and_stop(budget: int) -> None:
    # A budget of 1 (auto's work cap on a tiny run) probes only the transfer point: no Sobol draw of 0 points.
    result = bayesian_search(bowl, SearchConfig(budget=budget))
    assert len(result.probes) == budget and result.probes[0].source == "transfer"
    assert result.stop_reason == "budget" and result.loss == min(p.loss for p in result.probes)


def test_non_finite_losses_are_recorded_but_not_chosen() -> None:
    def objective(alpha: float, beta: float) -> float:
        return math.nan if alpha > 0.2 else bowl(alpha, beta)

    result = bayesian_search(objective, SearchConfig(budget=14, seed=3, alpha_bounds=(-2.0, 1.0)))
    assert any(math.isnan(p.loss) for p in result.probes)
    assert math.isfinite(result.loss) and result.alpha <= 0.2
    assert all(
        v is None or math.isfinite(v)
        for p in result.to_dict()["probes"]
        for v in p.values()
        if isinstance(v, float) or v is None
    )


def test_negative_alpha_is_reachable_with_default_bounds() -> None:
    result = run_search(lambda a, b: (a + 1.5) ** 2 + (b - 1.0) ** 2, SearchConfig(budget=20))
    assert result.alpha < -1.2


def test_grid_search_probes_the_whole_grid() -> None:
    result = grid_search(bowl, SearchConfig(method="grid", grid_size=4))
    assert len(result.probes) == 1 + 16
    assert {p.source for p in result.probes} == {"transfer", "grid"}


def test_flat_objective_stops_early() -> None:
    result = bayesian_search(lambda a, b: 1.0, SearchConfig(budget=20, min_probes=6, ei_stop=1e-4))
    assert result.stopped_early and len(result.probes) < 20


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"alpha_bounds": (1.0, -1.0)}, "alpha_bounds"),
        ({"budget": 0}, "budget"),
        ({"beta_bounds": (1.5, 3.0)}, "transfer point"),
        ({"method": "random"}, "method"),
    ],
)
def test_bad_search_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(BadInputError, match=field):
        SearchConfig(**kwargs)
