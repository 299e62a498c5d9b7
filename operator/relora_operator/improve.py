"""Ready early, improve after (issue 17): the operator's side of the worker's ``--improve-after-ready``.

With ``spec.strategy.improveAfterReady`` the worker publishes the first adapter that meets the readiness rule
at ``<output>-ready`` (its ``result.json`` says ``"version": "first-ready"``) and keeps training; at the end
it publishes the final one at ``<output>`` and its summary names the better of the two (``adapter_uri``), so
the worker itself never hands over a regression. The operator:

* while the Job runs, reads ``<output>-ready/result.json``; once it is there the adapter is **Ready** (reason
  ``ReadyImproving``, still Progressing) and serves that first version;
* when the Job succeeds, serves what the summary names and says so in an Event (reason ``Improved``, old
  and new quality);
* when the improvement fails after the first version was served, keeps serving it (reason
  ``FirstVersionKept``): a failed improvement never takes a Ready adapter away.

Pure functions and one storage read; no kopf, no API calls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from relora_contract.result import ResultRecord
from relora_contract.summary import TerminationSummary
from relora_operator.conditions import ready_reason
from relora_operator.views import parse_result

logger = logging.getLogger(__name__)
IMPROVING = "ReadyImproving"
IMPROVED = "Improved"
KEPT = "FirstVersionKept"
READY_SUFFIX = "-ready"  # the worker's relora_worker.readapt.READY_SUFFIX (docs/worker-contract.md)


def ready_uri(output_uri: str) -> str:
    return output_uri.rstrip("/") + READY_SUFFIX


def wanted(spec: Any) -> bool:
    return bool(spec is not None and getattr(spec.strategy, "improve_after_ready", False))


def is_improving(status: Mapping[str, Any]) -> bool:
    """Ready at a first version whose Job still trains: not a final outcome yet."""
    return status.get("phase") == "Ready" and ready_reason(status) == IMPROVING


def read_early(output_uri: str) -> ResultRecord | None:
    """The first ready version's record, or None while there is none (or storage does not answer: the
    next pass asks again; the Job's end is handled without it)."""
    from relora_operator import results  # storage clients only where a Job runs with improveAfterReady

    folder = ready_uri(output_uri)
    try:
        record = results.read_published_result(folder)
    except Exception as exc:  # storage trouble must not break the pass: the adapter just is not Ready yet
        logger.debug("no first ready version at %s: %s", folder, exc)
        return None
    early = parse_result(record, f"result.json of {folder}")
    return early if early is not None and early.is_first_ready else None


def _quality(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "?"


def ready_outcome(target: str, job: str, early: ResultRecord) -> tuple[str, bool, str, str, bool]:
    """(phase, ready, reason, message, progressing) of an adapter whose first version is ready."""
    interval = early.quality_interval
    bounds = f" [{_quality(interval.low)}, {_quality(interval.high)}]" if interval else ""
    return (
        "Ready",
        True,
        IMPROVING,
        f"ready for release {target} at its first version: quality {_quality(early.quality)}{bounds} "
        f">= threshold {early.threshold} ({early.readiness_rule or 'readiness rule'}); Job {job} "
        "keeps training and the better version replaces it when it ends",
        True,
    )


def improved_outcome(
    old: Mapping[str, Any], job: str, target: str, record: TerminationSummary
) -> tuple[str, bool, str, str] | None:
    """The Job that served a first version has succeeded: what it ends with (None if it served none)."""
    if not (is_improving(old) and old.get("job") == job):
        return None
    first = (old.get("served") or {}).get("adapterUri")
    now = record.adapter_uri
    if now and now == first:
        words = f"the first version stays ({_quality(old.get('quality'))}, the final one measured lower)"
    else:
        words = f"quality {_quality(old.get('quality'))} -> {_quality(record.quality)}"
    return "Ready", True, IMPROVED, f"improved for release {target}: {words}; serving {now or first}"


def kept_outcome(old: Mapping[str, Any], job: str, target: str, error: str) -> tuple[str, bool, str, str] | None:
    """The Job failed after serving a first version: keep it (None if it served none)."""
    if not (is_improving(old) and old.get("job") == job):
        return None
    first = (old.get("served") or {}).get("adapterUri")
    return "Ready", True, KEPT, f"ready for release {target}: the improvement failed ({error}); serving the first " \
        f"version {first} (quality {_quality(old.get('quality'))})"


def early_status(early: ResultRecord, release: str, job: str, spec_hash: str | None) -> dict[str, Any]:
    """The status fields of a served first version."""
    return {
        "quality": early.quality,
        "timeToReadinessSeconds": early.time_to_readiness_s,
        "strategy": early.strategy,
        "resultUri": early.result_uri,
        "served": {"release": release, "adapterUri": early.adapter_uri, "job": job, "specHash": spec_hash},
    }
