"""reconcile's bookkeeping between concurrent passes (no cluster: the API calls are replaced). Each test makes its
own OperatorState: nothing it remembers leaks into another test."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from relora_operator import decisions, reconcile
from relora_operator.outcome import Outcome
from relora_operator.settings import Settings
from relora_operator.state import OperatorState
from relora_operator.views import PodView

from tests.operator.factories import NS, adapter, releases


def _pod(job: str, exit_code: int | None, finished: str | None = None) -> PodView:
    return PodView(NS, f"{job}-x", job, "Succeeded" if exit_code == 0 else "Running", exit_code, None, finished)


def test_has_finished_pod() -> None:
    pods = {(NS, "j1"): [_pod("j1", None)], (NS, "j2"): [_pod("j2", None), _pod("j2", 0, "2026-01-01T00:00:00Z")]}
    assert not reconcile.has_finished_pod(pods, NS, "j1")
    assert reconcile.has_finished_pod(pods, NS, "j2")
    assert not reconcile.has_finished_pod(pods, NS, "absent")


def test_concurrent_syncs_of_one_adapter_write_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two passes (the release timer and an event) sync the same adapter at once; the first one's write is slow.
    Its patch must still reach the API server first, and the second pass must compute from the first's status:
    otherwise the cluster keeps the older status while the operator believes it wrote the newer one."""
    computed: list[str] = []
    sent: list[str] = []
    lock = threading.Lock()
    first_writing, first_may_finish = threading.Event(), threading.Event()
    # The second pass is at the adapter's lock (where it must wait), or, were there no lock, has sent its write.
    second_here = threading.Event()

    async def fake_pass(_state: OperatorState, a: Any, *_: Any) -> Any:
        phase = f"step-{len(computed) + 1}"
        computed.append(f"{a.status.get('phase')}->{phase}")
        status = {"phase": phase, "observedGeneration": 1}
        return (
            status,
            Outcome(phase, False, "Test", ""),
            decisions.plan_adapter(a, releases("v1"), Settings.from_env({})),
        )

    def fake_patch(*args: Any) -> None:
        patch = args[5]
        if patch["phase"] == "step-1":  # the first write is slow: it ends when the test lets it
            first_writing.set()
            assert first_may_finish.wait(10)
        with lock:
            sent.append(patch["phase"])
        second_here.set()

    class Watched(OperatorState):
        def adapter_lock(self, uid: str) -> asyncio.Lock:
            second_here.set()
            return super().adapter_lock(uid)

    monkeypatch.setattr(reconcile, "adapter_pass", fake_pass)
    monkeypatch.setattr(reconcile.kube, "patch_status", fake_patch)
    monkeypatch.setattr(reconcile, "announce", lambda *_: False)
    view = adapter("ordered", status={"phase": "Ready", "observedGeneration": 1})
    settings = Settings.from_env({})
    state = Watched()

    async def both() -> None:
        first = asyncio.create_task(reconcile.sync_adapters(state, [view], {}, {}, {}, settings))
        assert await asyncio.to_thread(first_writing.wait, 10)  # the first pass has computed and is writing
        second_here.clear()  # the first pass took the lock already
        second = asyncio.create_task(reconcile.sync_adapters(state, [view], {}, {}, {}, settings))
        assert await asyncio.to_thread(second_here.wait, 10)
        first_may_finish.set()
        await asyncio.gather(first, second)

    asyncio.run(both())
    assert sent == ["step-1", "step-2"]
    assert computed == ["Ready->step-1", "step-1->step-2"]


def test_status_is_computed_when_it_can_be_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """With one write slot, the second adapter's status is computed after the first one's write, not at the start
    of the pass: a status computed early would be stale by the time a long write queue reaches it."""
    order: list[str] = []

    async def fake_pass(_state: OperatorState, a: Any, *_: Any) -> Any:
        order.append(f"compute {a.name}")
        status = {"phase": "Queued", "observedGeneration": 1}
        return status, Outcome("Queued", False, "Test", ""), decisions.plan_adapter(a, releases("v1"), settings)

    def fake_patch(*args: Any) -> None:
        order.append(f"write {args[4]}")

    settings = Settings.from_env({"RELORA_API_WORKERS": "1"})
    monkeypatch.setattr(reconcile, "adapter_pass", fake_pass)
    monkeypatch.setattr(reconcile.kube, "patch_status", fake_patch)
    monkeypatch.setattr(reconcile, "announce", lambda *_: False)
    views = [adapter("a"), adapter("b")]
    asyncio.run(reconcile.sync_adapters(OperatorState(), views, {}, {}, {}, settings))
    assert order == ["compute a", "write a", "compute b", "write b"]
