"""`kubectl relora`: thin wrappers over the relora.dev API (installed as `kubectl-relora`, so kubectl finds it).

    kubectl relora status RELEASE [-n NS]        per-adapter table: phase, quality vs threshold, TTR, served
    kubectl relora pause RELEASE / resume RELEASE  patch spec.rollout.paused
    kubectl relora rollback ADAPTER [--to R]     patch spec.pinnedRelease (default: status.rollbackRelease)
    kubectl relora rollback ADAPTER --clear      unset it: serve the newest release's adapter again

Everything shown is read from the objects' status and everything done is one patch of a spec field the operator
acts on (docs/operator.md): no decision is made here. Torch-free; needs only the `kubernetes` client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from relora_operator.conditions import ready_reason

GROUP, VERSION = "relora.dev", "v1alpha1"


def _api(context: str | None) -> tuple[Any, str]:
    from kubernetes import client, config

    # KUBECONFIG read now, not when the client library was imported (it caches its default then).
    path = os.environ.get("KUBECONFIG") or None
    config.load_kube_config(config_file=path, context=context)
    contexts, active = config.list_kube_config_contexts(config_file=path)
    if context:
        active = next((c for c in contexts if c.get("name") == context), active)
    namespace = (active or {}).get("context", {}).get("namespace") or "default"
    return client.CustomObjectsApi(), namespace


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _entry(adapter: Mapping[str, Any], version: str) -> Mapping[str, Any]:
    return next((e for e in adapter.get("status", {}).get("releases") or [] if e.get("release") == version), {})


def adapter_row(adapter: Mapping[str, Any], version: str) -> list[str]:
    """One table row: the adapter's status.releases entry for ``version`` (its result for that release), else,
    while the release is its target, the adapter's phase."""
    status = adapter.get("status") or {}
    entry = _entry(adapter, version)
    phase = status.get("phase") if status.get("targetRelease") == version else None
    reason = ready_reason(status)
    if entry and (phase in (None, "Ready", "Degraded", "Failed")):
        phase, reason = entry.get("phase"), entry.get("reason")
    threshold = entry.get("threshold", adapter.get("spec", {}).get("quality", {}).get("threshold"))
    quality = entry.get("quality")
    versus = (
        f"{_fmt(quality)} {'>=' if quality >= threshold else '<'} {_fmt(threshold)}"
        if (quality is not None and threshold is not None)
        else f"- / {_fmt(threshold)}"
    )
    served = status.get("served") or {}
    return [
        adapter["metadata"]["name"],
        phase or "-",
        reason or "-",
        versus,
        entry.get("timeToReadiness") or "-",
        served.get("release") or "-",
    ]


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def status_text(release: Mapping[str, Any], adapters: Sequence[Mapping[str, Any]]) -> str:
    spec, status = release.get("spec") or {}, release.get("status") or {}
    version, counts = spec.get("version", ""), status.get("adapters") or {}
    rollout = status.get("rollout") or {}
    lines = [
        f"Release {release['metadata']['name']} (family {spec.get('family')}, version {version}): "
        f"{status.get('phase', 'Pending')}"
        + (f", {status['rolloutDuration']}" if status.get("rolloutDuration") else ""),
        "Adapters: "
        + ", ".join(
            f"{counts[k]} {k}" for k in ("total", "ready", "degraded", "failed", "running", "queued") if k in counts
        ),
    ]
    canary = rollout.get("canary")
    if canary:
        lines.append(f"Canary: {canary.get('state')}: {canary.get('message', '')}")
    plan = rollout.get("plan")
    if plan:
        lines.append(
            f"Dry run: {plan.get('total')} re-adaptation(s), {plan.get('estimatedGpuHours')} GPU-hours "
            f"({plan.get('basis')})"
        )
    rows = [["ADAPTER", "PHASE", "REASON", "QUALITY vs THRESHOLD", "TTR", "SERVED"]]
    rows += [adapter_row(a, version) for a in sorted(adapters, key=lambda a: a["metadata"]["name"])]
    return "\n".join(lines) + "\n\n" + table(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl relora", description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    parser.add_argument("--context", help="kubeconfig context")
    # The same flags after the command too, as kubectl takes them (`kubectl relora status R -n ns`); SUPPRESS
    # keeps a value given before the command when none is given after it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace")
    common.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("status", "per-adapter table of a BaseModelRelease's rollout"),
        ("pause", "set spec.rollout.paused: no new Jobs of the release"),
        ("resume", "unset spec.rollout.paused"),
    ):
        sub.add_parser(name, help=text, parents=[common]).add_argument("release", help="BaseModelRelease name")
    rollback = sub.add_parser(
        "rollback", help="serve an earlier release's adapter (spec.pinnedRelease)", parents=[common]
    )
    rollback.add_argument("adapter", help="TaskAdapter name")
    target = rollback.add_mutually_exclusive_group()
    target.add_argument("--to", metavar="RELEASE", help="release to serve (default: status.rollbackRelease)")
    target.add_argument("--clear", action="store_true", help="unset the pin: serve the newest release's adapter")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from kubernetes.client.exceptions import ApiException

    api, default_ns = _api(args.context)
    ns = args.namespace or default_ns
    try:
        return _run(api, ns, args)
    except ApiException as exc:
        reason = (json.loads(exc.body).get("message") if exc.body else None) or exc.reason
        print(f"error: {reason}", file=sys.stderr)
        return 1


def _run(api: Any, ns: str, args: argparse.Namespace) -> int:
    if args.command == "status":
        release = api.get_namespaced_custom_object(GROUP, VERSION, ns, "basemodelreleases", args.release)
        items = api.list_namespaced_custom_object(GROUP, VERSION, ns, "taskadapters")["items"]
        family = release["spec"]["family"]
        print(status_text(release, [a for a in items if a.get("spec", {}).get("family") == family]))
        return 0
    if args.command in ("pause", "resume"):
        paused = args.command == "pause"
        body = {"spec": {"rollout": {"paused": paused}}}
        api.patch_namespaced_custom_object(GROUP, VERSION, ns, "basemodelreleases", args.release, body)
        print(f"basemodelrelease/{args.release} {'paused' if paused else 'resumed'}")
        return 0
    adapter = api.get_namespaced_custom_object(GROUP, VERSION, ns, "taskadapters", args.adapter)
    pin = None if args.clear else args.to or (adapter.get("status") or {}).get("rollbackRelease")
    if not args.clear and not pin:
        print(
            f"error: taskadapter/{args.adapter} has no earlier Ready artifact (status.rollbackRelease is empty); "
            "name one with --to",
            file=sys.stderr,
        )
        return 1
    api.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "taskadapters", args.adapter, {"spec": {"pinnedRelease": pin}}
    )
    print(f"taskadapter/{args.adapter} " + (f"pinned to release {pin}" if pin else "unpinned"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
