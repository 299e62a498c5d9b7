"""The periodic, level-triggered pass of every BaseModelRelease: one tick per release every interval.

This is what kopf timers did, without them: a kopf timer puts a finalizer on every object it runs for, and kopf
has no public switch to avoid that (the finalizer would block deleting releases whenever the operator is not
running). Here one loop, fed by the watch-fed release cache, starts each release's tick when its previous tick
has ended and ``interval`` has passed since that one started — so, like a kopf timer, a long pass of one family
(thousands of adapters) delays only that release's next tick, never another family's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)


class Ticker:
    """Runs ``tick(item)`` for every item of ``items()`` (keyed by ``key``) at most once per ``interval``."""

    def __init__(
        self,
        items: Callable[[], Iterable[Any]],
        key: Callable[[Any], str],
        tick: Callable[[Any], Awaitable[None]],
        interval: float,
        poll: float = 1.0,
    ) -> None:
        self.items, self.key, self.tick = items, key, tick
        self.interval, self.poll = interval, min(poll, interval)
        self.started: dict[str, float] = {}
        self.running: dict[str, asyncio.Task[None]] = {}

    def due(self, now: float) -> list[Any]:
        """The items whose tick may start now (none running, ``interval`` since the last start); forgets the rest
        of the items that are gone."""
        current = {self.key(item): item for item in self.items()}
        for gone in [k for k in self.started if k not in current]:
            self.started.pop(gone, None)
            self.running.pop(gone, None)
        ready = []
        for k, item in current.items():
            task = self.running.get(k)
            if (task is None or task.done()) and now - self.started.get(k, float("-inf")) >= self.interval:
                ready.append(item)
        return ready

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            for item in self.due(now):
                k = self.key(item)
                self.started[k] = now
                self.running[k] = asyncio.ensure_future(self._one(item))
            await asyncio.sleep(self.poll)

    async def _one(self, item: Any) -> None:
        try:
            await self.tick(item)
        except asyncio.CancelledError:
            raise
        except Exception:  # the next tick retries; the loop and the other releases go on
            logger.exception("tick of %s failed", self.key(item))

    def stop(self) -> None:
        for task in self.running.values():
            task.cancel()
