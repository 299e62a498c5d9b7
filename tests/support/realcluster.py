"""The guard for running the suite against an existing cluster (RELORA_TEST_KUBECONFIG).

The tests create and delete namespaces, CRDs and cluster-wide RBAC, so they must never run against a
cluster someone did not explicitly mark as disposable. A context is accepted when:
  * its name is listed in RELORA_TEST_CLUSTER_CONTEXTS (comma separated), or
  * the cluster has a namespace `relora-test` annotated `relora.test/disposable: "true"`, or
  * its name starts with `kind-` or `k3d-` (local throwaway clusters) and RELORA_TEST_ALLOW=1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.support.kubeconfig import current_context

MARK_NAMESPACE = "relora-test"
MARK_ANNOTATION = "relora.test/disposable"


def refusal(kubeconfig: Path, marked: Callable[[], bool]) -> str | None:
    """Why the suite must not use this kubeconfig's current context, or None when it may.

    `marked` asks the cluster whether the mark namespace carries the annotation (only called if needed).
    """
    try:
        name, _ = current_context(kubeconfig)
    except (OSError, ValueError) as err:
        return f"RELORA_TEST_KUBECONFIG={kubeconfig}: {err}"
    listed = {c.strip() for c in os.environ.get("RELORA_TEST_CLUSTER_CONTEXTS", "").split(",") if c.strip()}
    if name in listed:
        return None
    if name.startswith(("kind-", "k3d-")) and os.environ.get("RELORA_TEST_ALLOW") == "1":
        return None
    try:
        if marked():
            return None
    except Exception as err:
        return f"context {name!r}: could not check the test-cluster mark ({err})"
    return (
        f"refusing to run the tests against context {name!r}: it is not marked as a test cluster. "
        f"List it in RELORA_TEST_CLUSTER_CONTEXTS, or annotate namespace {MARK_NAMESPACE} with "
        f'{MARK_ANNOTATION}="true", or (kind-/k3d- contexts) set RELORA_TEST_ALLOW=1. See docs/testing.md.'
    )
