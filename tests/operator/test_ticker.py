"""The release ticker (what kopf timers did), on an explicit clock: each item ticks at most once per interval, a
long tick of one item never delays another's, a running tick is not started twice, items that are gone are
forgotten, and a failing tick does not stop the loop."""

from __future__ import annotations

import asyncio
from typing import Any

from relora_operator.ticker import Ticker


async def _noop(item: str) -> None:
    return None


def _start(ticker: Ticker, now: float, loop: asyncio.AbstractEventLoop) -> list[str]:
    """What ``run`` does at ``now``: start every due item (as a future the test finishes by hand)."""
    started = []
    for item in ticker.due(now):
        ticker.started[item] = now
        ticker.running[item] = loop.create_future()
        started.append(item)
    return started


def test_a_long_tick_delays_only_its_own_item() -> None:
    loop = asyncio.new_event_loop()
    try:
        items = ["slow", "fast"]
        ticker = Ticker(lambda: items, lambda i: i, _noop, interval=10)
        assert _start(ticker, 0, loop) == ["slow", "fast"]
        assert _start(ticker, 5, loop) == []  # neither is due before the interval
        ticker.running["fast"].set_result(None)
        assert _start(ticker, 10, loop) == ["fast"]  # slow still runs: not started twice
        ticker.running["fast"].set_result(None)
        assert _start(ticker, 25, loop) == ["fast"]
        ticker.running["slow"].set_result(None)  # slow's pass ends after 27 s
        assert _start(ticker, 27, loop) == ["slow"]  # due at once: its interval passed long ago
    finally:
        loop.close()


def test_items_that_are_gone_are_forgotten() -> None:
    loop = asyncio.new_event_loop()
    try:
        items = ["a", "b"]
        ticker = Ticker(lambda: list(items), lambda i: i, _noop, interval=1)
        _start(ticker, 0, loop)
        items.remove("b")
        for future in ticker.running.values():
            future.set_result(None)
        assert _start(ticker, 1, loop) == ["a"]
        assert "b" not in ticker.started and "b" not in ticker.running
        items.append("b")  # back again (re-created): due at once, no stale start time
        assert _start(ticker, 1.5, loop) == ["b"]
    finally:
        loop.close()


def test_a_failing_tick_is_logged_and_the_next_one_runs(caplog: Any) -> None:
    calls: list[str] = []

    async def tick(item: str) -> None:
        calls.append(item)
        raise RuntimeError("boom")

    ticker = Ticker(lambda: ["a"], lambda i: i, tick, interval=1)
    asyncio.run(ticker._one("a"))
    asyncio.run(ticker._one("a"))
    assert calls == ["a", "a"] and "tick of a failed" in caplog.text
