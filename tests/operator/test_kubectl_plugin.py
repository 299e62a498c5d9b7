"""`kubectl relora status`'s table from the objects' status (pure; the API calls are tested in
test_cluster_plugin.py)."""

from __future__ import annotations

import pytest
from relora_operator.kubectl_plugin import build_parser, status_text

from tests.operator.factories import adapter_body, release_body


def test_status_table_shows_each_adapters_result_for_the_release() -> None:
    release = release_body(
        "v2",
        status={
            "phase": "Halted",
            "adapters": {"total": 3, "ready": 1, "failed": 1},
            "rollout": {"canary": {"state": "Failed", "message": "1/2 Ready; b (JobFailed)"}},
        },
    )
    entry = {
        "release": "v2",
        "phase": "Ready",
        "reason": "Readapted",
        "quality": 0.91,
        "threshold": 0.8,
        "timeToReadiness": "4m12s",
    }
    ready = adapter_body(
        "a", status={"targetRelease": "v2", "phase": "Ready", "served": {"release": "v2"}, "releases": [entry]}
    )
    failed = adapter_body(
        "b",
        status={
            "targetRelease": "v2",
            "phase": "Failed",
            "served": {"release": "v1"},
            "releases": [{**entry, "phase": "Failed", "reason": "JobFailed", "quality": None, "timeToReadiness": None}],
        },
    )
    waiting = adapter_body(
        "c",
        status={
            "targetRelease": "v2",
            "phase": "Queued",
            "served": {"release": "v1"},
            "conditions": [{"type": "Ready", "reason": "CanaryFailed"}],
        },
    )
    text = status_text(release, [waiting, failed, ready])
    assert "Release llama-v2 (family llama, version v2): Halted" in text
    assert "Canary: Failed: 1/2 Ready; b (JobFailed)" in text
    rows = [line.split() for line in text.splitlines()[-3:]]
    assert rows == [
        ["a", "Ready", "Readapted", "0.91", ">=", "0.8", "4m12s", "v2"],
        ["b", "Failed", "JobFailed", "-", "/", "0.8", "-", "v1"],
        ["c", "Queued", "CanaryFailed", "-", "/", "0.8", "-", "v1"],
    ]


@pytest.mark.parametrize(
    ("argv", "namespace", "context"),
    [
        (["status", "r", "-n", "ml-team"], "ml-team", None),  # as kubectl users type it
        (["-n", "ml-team", "status", "r"], "ml-team", None),
        (["--context", "prod", "rollback", "a", "--clear", "-n", "x"], "x", "prod"),
        (["-n", "a", "pause", "r", "--context", "c"], "a", "c"),
        (["resume", "r"], None, None),
    ],
)
def test_namespace_and_context_go_before_or_after_the_command(
    argv: list[str], namespace: str | None, context: str | None
) -> None:
    args = build_parser().parse_args(argv)
    assert (args.namespace, args.context) == (namespace, context)
