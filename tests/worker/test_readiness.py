"""The readiness rule (relora_worker/readiness.py): Wilson bounds, k consecutive, one decision per run."""

from __future__ import annotations

import pytest

from relora_worker.config import ReadinessConfig
from relora_worker.errors import BadInputError
from relora_worker.readiness import (
    Readiness,
    ReadyAt,
    first_ready,
    lower_bound,
    report_interval,
    wilson_interval,
    z_value,
)


def test_wilson_interval_matches_the_textbook_values() -> None:
    # Wilson (1927) / Agresti & Coull (1998): p̂ = 0.5, n = 100, 95 % two-sided -> (0.4038, 0.5962).
    low, high = wilson_interval(0.5, 100, z_value(0.95, two_sided=True))
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    # It stays inside [0, 1] where the normal interval would not: p̂ = 1 on 20 rows.
    low, high = wilson_interval(1.0, 20, z_value(0.95, two_sided=True))
    assert 0.8 < low < 1.0 and high == 1.0
    assert z_value(0.8) == pytest.approx(0.8416, abs=1e-4)


def test_the_bound_tightens_with_more_rows_and_the_point_rule_has_none() -> None:
    rule = ReadinessConfig(method="wilson", confidence=0.8)
    assert lower_bound(0.9, 100, rule) < lower_bound(0.9, 10_000, rule) < 0.9
    assert lower_bound(0.9, 100, ReadinessConfig(method="point")) == 0.9
    interval = report_interval(0.9, 1000)
    assert interval["low"] < 0.9 < interval["high"] and interval["n"] == 1000 and interval["level"] == 0.95


def test_a_lucky_evaluation_at_the_threshold_is_not_ready_under_wilson_but_is_under_point() -> None:
    trajectory = [(0.0, 0, 0.80), (1.0, 10, 0.921), (2.0, 20, 0.90), (3.0, 30, 0.95)]
    assert first_ready(trajectory, 0.92, 1000, ReadinessConfig(method="point", consecutive=1)) == (1.0, 10)
    assert first_ready(trajectory, 0.92, 1000, ReadinessConfig(method="wilson", consecutive=1)) == (3.0, 30)
    assert first_ready(trajectory, 0.96, 1000, ReadinessConfig(method="wilson", consecutive=1)) == (None, None)


def test_consecutive_needs_k_passing_evaluations_in_a_row() -> None:
    rule = ReadinessConfig(method="point", consecutive=2)
    assert first_ready([(1, 10, 0.93), (2, 20, 0.91), (3, 30, 0.93), (4, 40, 0.94)], 0.92, 1000, rule) == (4, 40)
    # both guards at once: two evaluations in a row whose lower bound passes
    both = ReadinessConfig(method="wilson", confidence=0.8, consecutive=2)
    assert first_ready([(1, 10, 0.95), (2, 20, 0.925), (3, 30, 0.95), (4, 40, 0.95)], 0.92, 1000, both) == (4, 40)


def test_readiness_decides_once_and_a_new_start_resets_the_streak() -> None:
    seen: list[ReadyAt] = []
    tracker = Readiness(ReadinessConfig(method="point", consecutive=2), 0.5, 100, on_ready=seen.append)
    tracker.start_phase("transfer")
    assert not tracker.observe(0.9, 1.0, 10)
    tracker.start_phase("fused")  # another adapter state: the first start's pass does not count
    assert not tracker.observe(0.9, 2.0, 10)
    assert tracker.observe(0.9, 3.0, 20)
    assert tracker.observe(0.1, 4.0, 30)  # once ready, it stays decided
    assert [(r.seconds, r.step, r.phase) for r in seen] == [(3.0, 20, "fused")]


def test_a_fixed_start_at_step_0_needs_only_the_test() -> None:
    # no optimiser noise between evaluations of a start that does not move: the bound alone decides
    tracker = Readiness(ReadinessConfig(method="wilson", confidence=0.8, consecutive=2), 0.5, 100)
    assert tracker.observe(0.9, 0.0, 0) and tracker.first is not None and tracker.first.step == 0
    assert not Readiness(ReadinessConfig(consecutive=2), 0.5, 100).observe(0.9, 1.0, 10)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("method", "lucky", "readiness.method='lucky'"),
        ("confidence", 1.0, r"readiness.confidence=1.0.*\[0.5, 1\)"),
        ("confidence", 0.3, r"readiness.confidence=0.3"),
        ("consecutive", 0, r"readiness.consecutive=0.*positive"),
    ],
)
def test_bad_rules_are_rejected_naming_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        ReadinessConfig(**{field: value})
