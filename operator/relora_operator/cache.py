"""Watch-fed caches: one list+watch per kind, kept as small views, indexed by the keys the reconcile reads.

Why not kopf's indices: kopf makes every object of an indexed kind wait until *all* objects are indexed, and
each new object's readiness toggle wakes every waiting per-object worker, which re-checks every toggle: start-up
cost grows with the square of the object count (13+ minutes without a single status at 10,000 adapters, see
bench/operator). Here one thread per kind lists in pages, converts each object to its view and hands it to the
event loop; the operator is "synced" when every kind's first listing is in. Cost: linear in the objects.

Threads do the I/O and JSON parsing (the GIL is released while reading sockets); every mutation of the stores
happens on the event loop (``call_soon_threadsafe``), so the reconcile code, which runs there, never sees a
store change in the middle of a synchronous read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from relora_operator.refusals import permission_message

logger = logging.getLogger(__name__)

# (type, old view or None, new view or None); called on the event loop, for changes after the first listing.
Listener = Callable[[str, Any, Any], None]


class Keys(frozenset):  # type: ignore[type-arg]
    """What an index's key function returns to file one view under several keys (or, empty, under none)."""


def _each(key: Hashable) -> Iterator[Hashable]:
    yield from (key if isinstance(key, Keys) else (key,))


class Index(Mapping[Hashable, list[Any]]):
    """key -> the views with that key; the same read interface the reconcile code had with kopf's indices."""

    def __init__(self) -> None:
        self._by_key: dict[Hashable, dict[str, Any]] = {}

    def __getitem__(self, key: Hashable) -> list[Any]:
        return list(self._by_key[key].values())

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._by_key))

    def __len__(self) -> int:
        return len(self._by_key)

    # Snapshots (lists), not live views: the metrics collector reads from its own thread while the event loop
    # changes the stores, and a key may go between listing the keys and reading one.
    def values(self) -> list[list[Any]]:  # type: ignore[override]
        return [list(store.values()) for store in list(self._by_key.values())]

    def items(self) -> list[tuple[Hashable, list[Any]]]:  # type: ignore[override]
        return [(key, list(store.values())) for key, store in list(self._by_key.items())]

    def _put(self, key: Hashable, uid: str, view: Any) -> None:
        for one in _each(key):
            self._by_key.setdefault(one, {})[uid] = view

    def _drop(self, key: Hashable, uid: str) -> None:
        for one in _each(key):
            store = self._by_key.get(one)
            if store is not None:
                store.pop(uid, None)
                if not store:
                    del self._by_key[one]


@dataclass(frozen=True)
class Kind:
    """What to watch and how to keep it: API path (without namespace part), label selector, view and key."""

    name: str
    group_version: str  # "v1" for the core group, else "group/version"
    plural: str
    to_view: Callable[[Mapping[str, Any]], Any]
    indices: Mapping[str, Callable[[Any], Hashable]]  # index name -> the key of a view in it
    label_selector: str = ""

    @property
    def resource(self) -> str:
        """The resource as RBAC names it: ``pods``, ``jobs.batch``, ``taskadapters.relora.dev``."""
        group = self.group_version.rpartition("/")[0]
        return f"{self.plural}.{group}" if group else self.plural

    def path(self, namespace: str | None) -> str:
        base = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        return f"{base}/namespaces/{namespace}/{self.plural}" if namespace else f"{base}/{self.plural}"


class Refused(Exception):
    """The API server answered 403: the operator's RBAC lacks list or watch on a kind (the message says which)."""


class Informer:
    """List, then watch, one kind in one namespace (or cluster-wide); relists after a 410 Gone."""

    def __init__(
        self,
        kind: Kind,
        namespace: str | None,
        indices: Mapping[str, Index],
        loop: asyncio.AbstractEventLoop,
        api: Any,
        page_size: int = 500,
        watch_seconds: int = 300,
    ) -> None:
        self.kind, self.namespace, self.loop, self.api = kind, namespace, loop, api
        self.indices = [(indices[name], key_of) for name, key_of in kind.indices.items()]
        self.page_size, self.watch_seconds = page_size, watch_seconds
        self.views: dict[str, Any] = {}  # uid -> view (loop thread only)
        self._keys: dict[str, tuple[Hashable, ...]] = {}  # uid -> its key in each index
        self.listeners: list[Listener] = []
        self.synced = asyncio.Event()
        # Why the API server refuses this kind (RBAC), None while it answers; set from the watch thread.
        self.refusal: str | None = None
        self.settled = asyncio.Event()  # synced, or refused: either way a pass need not wait any longer
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name=f"relora-watch-{kind.name}", daemon=True)

    def start(self) -> Informer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # closing a half-dead connection may fail in many ways
                response.close()  # unblocks the thread's read

    # --- the watch thread ---

    def _run(self) -> None:
        version = ""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                version = self._watch(version)
                backoff = 0.5
            except Refused as exc:  # visible in the releases' status (handlers), not only in the log
                if self._stop.is_set():
                    return
                if self.refusal is None:
                    logger.error("%s", exc)
                self.refusal = str(exc)
                self._call(self.settled.set)
                version = ""  # list again once granted: nothing was seen meanwhile
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # the API server restarts, connections drop: retry
                if self._stop.is_set():
                    return
                name = type(exc).__name__
                logger.warning("watch of %s failed (%s: %s); retrying in %.1fs", self.kind.name, name, exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def _get(self, query: list[tuple[str, Any]], timeout: float, verb: str = "list") -> Any:
        """GET on the kind's collection; the raw (streaming) urllib3 response, for the caller to parse."""
        path = self.kind.path(self.namespace)
        if self.kind.label_selector:
            query = [*query, ("labelSelector", self.kind.label_selector)]
        method, url, headers, body, post = self.api.param_serialize(
            "GET", path, query_params=query, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        response = self.api.call_api(method, url, headers, body, post, _request_timeout=(10, timeout)).response
        if response.status >= 400:
            text = response.data[:500]
            response.release_conn()
            if response.status == 403:
                raise Refused(permission_message(verb, self.kind.resource, self.namespace or "", _status_message(text)))
            raise RuntimeError(f"GET {path}: HTTP {response.status}: {text!r}")
        return response

    def _list(self) -> str:
        """Lists every object in pages; the result replaces the store (events for what changed meanwhile)."""
        fresh: dict[str, tuple[tuple[Hashable, ...], Any]] = {}
        token = ""
        while True:
            query: list[tuple[str, Any]] = [("limit", self.page_size)]
            if token:
                query.append(("continue", token))
            response = self._get(query, 120)
            try:
                page = json.loads(response.data)
            finally:
                response.release_conn()
            for body in page.get("items") or []:
                view = self.kind.to_view(body)
                fresh[body["metadata"]["uid"]] = (self._keys_of(view), view)
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                version = str(page["metadata"]["resourceVersion"])
                break
        self._call(self._replace, fresh)
        return version

    def _watch(self, version: str) -> str:
        """Follows the watch from ``version``; returns the version to resume from ('' to relist)."""
        from kubernetes.watch.watch import iter_resp_lines

        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", self.watch_seconds),
        ]
        response = self._response = self._get(query, self.watch_seconds + 30, verb="watch")
        self.refusal = None  # listed and watching: both verbs are granted (cleared only here, so no flapping)
        try:
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    return version
                event = json.loads(line)
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:  # our version is too old: list again
                        return ""
                    raise RuntimeError(f"watch error: {body.get('message')}")
                version = str((body.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                uid = body["metadata"]["uid"]
                if kind == "DELETED":
                    self._call(self._apply, kind, uid, None, None)
                else:
                    view = self.kind.to_view(body)
                    self._call(self._apply, kind, uid, self._keys_of(view), view)
        finally:
            self._response = None
            response.release_conn()
        return version

    def _keys_of(self, view: Any) -> tuple[Hashable, ...]:
        return tuple(key_of(view) for _, key_of in self.indices)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    # --- the event loop ---

    def _replace(self, fresh: dict[str, tuple[tuple[Hashable, ...], Any]]) -> None:
        first = not self.synced.is_set()
        for uid in [u for u in self.views if u not in fresh]:
            self._apply("DELETED", uid, None, None, notify=not first)
        for uid, (keys, view) in fresh.items():
            # After a relist only arrivals are announced; changes missed meanwhile are the periodic resync's.
            self._apply(
                "ADDED" if uid not in self.views else "MODIFIED",
                uid,
                keys,
                view,
                notify=not first and uid not in self.views,
            )
        self.synced.set()
        self.settled.set()

    def _apply(self, kind: str, uid: str, keys: tuple[Hashable, ...] | None, view: Any, notify: bool = True) -> None:
        old = self.views.get(uid)
        old_keys = self._keys.get(uid)
        for i, (index, _) in enumerate(self.indices):
            if old_keys is not None and (keys is None or old_keys[i] != keys[i]):
                index._drop(old_keys[i], uid)
            if keys is not None:
                index._put(keys[i], uid, view)
        if view is None or keys is None:
            self.views.pop(uid, None)
            self._keys.pop(uid, None)
        else:
            self.views[uid] = view
            self._keys[uid] = keys
        if notify and self.synced.is_set():
            for listener in self.listeners:
                try:
                    listener(kind, old, view)
                except Exception:  # a listener's bug must not stop the cache
                    logger.exception("listener of %s failed", self.kind.name)


def _status_message(body: Any) -> str:
    """The message of an API server's Status body (JSON), else the body's text."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    try:
        return str(json.loads(text).get("message") or text)
    except (ValueError, AttributeError):
        return text


class Caches:
    """The named indices of every kind, fed by one Informer per (kind, namespace)."""

    def __init__(self, kinds: Mapping[str, Kind]) -> None:
        self.kinds = dict(kinds)
        self.indices: dict[str, Index] = {name: Index() for kind in kinds.values() for name in kind.indices}
        self.informers: list[Informer] = []
        self._listeners: dict[str, list[Listener]] = {name: [] for name in kinds}

    def __getitem__(self, name: str) -> Index:
        return self.indices[name]

    def count(self, kind: str) -> int:
        """How many objects of a kind are cached (safe from any thread)."""
        return sum(len(i.views) for i in self.informers if i.kind.name == kind)

    def views(self, kind: str) -> list[Any]:
        """Every cached view of a kind (all namespaces)."""
        return [v for i in self.informers if i.kind.name == kind for v in i.views.values()]

    def listen(self, name: str, listener: Listener) -> None:
        self._listeners[name].append(listener)
        for informer in self.informers:
            if informer.kind.name == name:
                informer.listeners.append(listener)

    def start(
        self, namespaces: tuple[str, ...], api: Any, loop: asyncio.AbstractEventLoop, page_size: int = 500
    ) -> Caches:
        for kind in self.kinds.values():
            for namespace in namespaces or (None,):
                informer = Informer(kind, namespace, self.indices, loop, api, page_size=page_size)
                informer.listeners.extend(self._listeners[kind.name])
                self.informers.append(informer.start())
        return self

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers))

    async def wait_settled(self) -> None:
        """Until every kind is listed or refused (a refused kind never syncs: waiting for it would hide why)."""
        await asyncio.gather(*(i.settled.wait() for i in self.informers))

    def refusals(self, namespace: str) -> list[str]:
        """Why the API server refuses kinds the operator must watch in ``namespace`` (RBAC), in kind order."""
        return [i.refusal for i in self.informers if i.refusal is not None and i.namespace in (namespace, None)]

    @property
    def synced(self) -> bool:
        return bool(self.informers) and all(i.synced.is_set() for i in self.informers)

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()
