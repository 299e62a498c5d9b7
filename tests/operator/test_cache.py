"""The watch-fed caches on the real control plane: paged listing, the indices, watch events to listeners."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from relora_operator.cache import Caches
from relora_operator.controller import KINDS
from relora_operator.models import GROUP, VERSION

from tests.operator.factories import adapter_spec

pytestmark = pytest.mark.cluster


def _adapter(name: str, family: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaskAdapter",
        "metadata": {"name": name},
        "spec": adapter_spec(family=family),
    }


async def _until(predicate: Any, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def test_lists_in_pages_indexes_and_follows_the_watch(relora_crds: None, k8s_api: Any, namespace: str) -> None:
    from kubernetes import client

    custom = client.CustomObjectsApi(k8s_api)

    def create(name: str, family: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "taskadapters", _adapter(name, family))

    for i in range(5):  # 5 objects in pages of 2: the listing follows the continue token
        create(f"a{i}", "llama" if i < 3 else "mistral")

    async def scenario() -> None:
        caches = Caches({"adapters": KINDS["adapters"]})
        seen: list[tuple[str, str | None, str | None]] = []
        caches.listen(
            "adapters",
            lambda kind, old, new: seen.append(
                (kind, old and f"{old.name}/{old.generation}", new and f"{new.name}/{new.generation}")
            ),
        )
        caches.start((namespace,), k8s_api, asyncio.get_running_loop(), page_size=2)
        try:
            await asyncio.wait_for(caches.wait_synced(), 30)
            by_family = caches["adapters"]
            assert sorted(a.name for a in by_family[(namespace, "llama")]) == ["a0", "a1", "a2"]
            assert sorted(a.name for a in by_family[(namespace, "mistral")]) == ["a3", "a4"]
            assert caches["adapters_by_name"][(namespace, "a4")][0].family == "mistral"
            assert seen == []  # the first listing is not announced as events: the passes read it

            # A new object, a spec change (a new generation), deletions.
            await asyncio.to_thread(create, "a5", "mistral")
            await asyncio.to_thread(
                custom.patch_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "taskadapters",
                "a0",
                {"spec": {"priority": 7}},
                _content_type="application/merge-patch+json",
            )
            for name in ("a1", "a2"):
                await asyncio.to_thread(
                    custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, "taskadapters", name
                )
            await _until(lambda: len(seen) == 4)
            assert seen == [
                ("ADDED", None, "a5/1"),
                ("MODIFIED", "a0/1", "a0/2"),  # the listener gets the view before and after
                ("DELETED", "a1/1", None),
                ("DELETED", "a2/1", None),
            ]
            assert [(a.name, a.spec.priority) for a in by_family[(namespace, "llama")]] == [("a0", 7)]
            assert sorted(a.name for a in by_family[(namespace, "mistral")]) == ["a3", "a4", "a5"]
            assert (namespace, "a1") not in caches["adapters_by_name"]
            assert len(caches.views("adapters")) == caches.count("adapters") == 4
            for name in ("a0",):
                await asyncio.to_thread(
                    custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, "taskadapters", name
                )
            await _until(lambda: len(seen) == 5)
            assert (namespace, "llama") not in by_family  # an emptied key goes away
        finally:
            caches.stop()

    asyncio.run(scenario())
