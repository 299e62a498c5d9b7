"""Entry point: ``relora-operator`` / ``python -m relora_operator`` runs the kopf operator standalone.

Settings come from the environment (see ``relora_operator.settings``); ``--namespace`` and
``--all-namespaces`` override RELORA_NAMESPACES. kopf peering is off: without sharding one replica runs
(Deployment strategy Recreate); with RELORA_SHARDS > 1 several replicas split the families by shard, each shard
held through a Lease (``relora_operator.sharding``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
from typing import Any

from relora_operator.settings import Settings


def kopf_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``kopf.run``/``kopf.operator`` for these settings."""
    options: dict[str, Any] = {"standalone": True}
    if settings.namespaces:
        options["namespaces"] = list(settings.namespaces)
    else:
        options["clusterwide"] = True
    if settings.liveness_port > 0:
        options["liveness_endpoint"] = f"http://0.0.0.0:{settings.liveness_port}/healthz"
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relora-operator", description="ReLoRA Kubernetes operator.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch all namespaces")
    args = parser.parse_args(argv)
    if args.namespace:
        os.environ["RELORA_NAMESPACES"] = ",".join(args.namespace)
    elif args.all_namespaces:
        os.environ["RELORA_NAMESPACES"] = ""
    settings = Settings.from_env()

    from relora_operator import logs

    logs.configure(settings.log_format, settings.log_level)
    import kopf

    import relora_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.run(**kopf_options(settings))
    return 0


def run_in_thread(settings: Settings, stop: threading.Event, ready: threading.Event | None = None) -> threading.Thread:
    """Runs the operator in a background thread with its own event loop (tests, benchmarks)."""
    import kopf

    import relora_operator.handlers  # noqa: F401

    def target() -> None:
        async def stopper(flag: asyncio.Future[None]) -> None:
            await asyncio.to_thread(stop.wait)
            flag.set_result(None)

        async def run() -> None:
            loop = asyncio.get_running_loop()
            stop_flag: asyncio.Future[None] = loop.create_future()
            ready_flag: asyncio.Future[None] = loop.create_future()
            waiter = asyncio.create_task(stopper(stop_flag))
            if ready is not None:
                ready_flag.add_done_callback(lambda _: ready.set())
            await kopf.operator(stop_flag=stop_flag, ready_flag=ready_flag, **kopf_options(settings))
            waiter.cancel()

        asyncio.run(run())

    thread = threading.Thread(target=target, name="relora-operator", daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    raise SystemExit(main())
