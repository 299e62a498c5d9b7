"""The search's time cap and resumption, which the ``auto`` policy relies on (relora_worker/search.py)."""

from __future__ import annotations

import time

from relora_worker.config import SearchConfig
from relora_worker.search import bayesian_search


def slow_bowl(alpha: float, beta: float) -> float:
    time.sleep(0.02)  # a probe that costs something, so the cap binds after a few probes
    return (alpha + 0.7) ** 2 + 0.5 * (beta - 1.6) ** 2 + 0.1


def test_a_time_limit_stops_the_search_and_says_why() -> None:
    capped = bayesian_search(slow_bowl, SearchConfig(budget=20, seed=0), time_limit_s=0.05)
    assert 1 <= len(capped.probes) < 20
    assert capped.stop_reason == "time limit" and capped.stopped_early
    assert capped.probes[0].source == "transfer"  # always probed, whatever the cap
    # the cap is checked before each probe: at most one probe (plus the GP work) past it
    assert capped.probe_seconds + capped.fit_seconds + capped.acquisition_seconds < 0.05 + 0.5


def test_a_resumed_search_keeps_its_probes_and_reaches_the_full_budget() -> None:
    config = SearchConfig(budget=12, seed=1)
    capped = bayesian_search(slow_bowl, config, time_limit_s=0.07)
    done = len(capped.probes)
    assert done < 12
    resumed = bayesian_search(slow_bowl, config, resume=capped)
    assert len(resumed.probes) == 12 and resumed.stop_reason == "budget"
    assert resumed.probes[:done] == capped.probes, "the capped probes are kept, not repeated"
    assert sum(p.source == "transfer" for p in resumed.probes) == 1
    assert resumed.probe_seconds >= capped.probe_seconds and resumed.loss <= capped.loss
    # the uninterrupted search draws the same quasi-random seed points
    full = bayesian_search(slow_bowl, config)
    seeds = min(done, config.seed_points)
    assert [(p.alpha, p.beta) for p in full.probes[:seeds]] == [(p.alpha, p.beta) for p in resumed.probes[:seeds]]
