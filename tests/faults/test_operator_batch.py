"""A batch Job (spec.batching) killed mid-batch, on the real control plane with the fake worker: the adapter
it finished keeps its result (its bytes unchanged, never re-run), the ones it did not finish get Jobs of their
own and become Ready; no batch is planned twice."""

# ruff: noqa: F811  (test parameters named like the imported fixtures, as pytest wants)
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.chart.chartlib import render
from tests.faults.operator_support import (
    apply,
    cond,
    jobs,
    model_folder,
    operator_under_role,
    release,
    settings,
    status,
)
from tests.operator.conftest import operator_factory, relora_crds, s3_secret, wait_equal  # noqa: F401  (fixtures)
from tests.operator.factories import adapter_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_batch_killed_after_its_first_adapter(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    operator_factory(namespace, **settings(namespace))
    release(kubectl, namespace, "v1", "s3://models/llama/v1/")
    names = ["a-first", "b-killed", "c-never"]
    # b-killed's data makes the fake worker SIGKILL itself when the batch reaches it (a node loss mid-batch);
    # alone, the same adapter re-adapts normally.
    data = {"b-killed": "s3://data/killbatch-train.jsonl"}
    for name in names:
        task = {"type": "seq-cls", "trainData": data.get(name, "s3://data/train.jsonl")}
        apply(kubectl, namespace, "TaskAdapter", name, adapter_spec(task=task))
    wait_equal(
        lambda: {n: status(kubectl, namespace, n).get("phase") for n in names}, dict.fromkeys(names, "Ready"), 60
    )
    apply(
        kubectl,
        namespace,
        "BaseModelRelease",
        "llama-v2",
        {"family": "llama", "version": "v2", "modelUri": "s3://models/llama/v2/", "batching": {"maxAdaptersPerJob": 3}},
    )

    batch = wait_for(
        lambda: next((j for j in jobs(kubectl, namespace).values() if j.get("status", {}).get("failed")), None),
        60,
        "the batch Job to fail",
    )
    batch_name = batch["metadata"]["name"]
    assert batch["metadata"]["name"].startswith("rb-v2-") and batch["spec"]["backoffLimit"] == 0
    first = wait_for(
        lambda: (st := status(kubectl, namespace, "a-first")).get("readyRelease") == "v2" and st,
        60,
        "a-first Ready on v2 from the batch record",
    )
    output = Path(first["adapterUri"].removeprefix("file://"))
    before = snapshot(output)
    assert before, "the batch published a-first's files"

    wait_equal(
        lambda: {n: status(kubectl, namespace, n).get("readyRelease") for n in names}, dict.fromkeys(names, "v2"), 90
    )
    after = {n: status(kubectl, namespace, n) for n in names}
    # a-first: from the batch, never re-run (its bytes unchanged, no Job of its own).
    assert after["a-first"]["job"] == batch_name and cond(after["a-first"])["reason"] == "Readapted"
    assert snapshot(output) == before
    created = jobs(kubectl, namespace)
    own = {n: j for n, j in created.items() if n != batch_name}
    assert sorted(j["metadata"]["labels"]["relora.dev/task-adapter"] for j in own.values()) == ["b-killed", "c-never"]
    assert len(created) == 3  # one batch, one Job each for the two it left: nothing planned twice
    for name in ("b-killed", "c-never"):
        assert after[name]["job"] in own and after[name]["phase"] == "Ready"
        assert [e["release"] for e in after[name]["releases"] if e.get("job")] == ["v2"]
    record_uri = batch["metadata"]["annotations"]["relora.dev/output-uri"]
    record = json.loads(Path(record_uri.removeprefix("file://")).read_text())
    assert [a["key"] for a in record["adapters"]] == [f"{namespace}/a-first"] and not record["done"]


@pytest.mark.parametrize("granted", [True, False], ids=["chart-grant", "no-configmaps"])
def test_batching_under_the_charts_role(
    granted: bool,
    relora_crds: None,
    kubectl: Any,
    kubeconfig_path: Path,
    namespace: str,
    test_kubelet: Any,
    s3_secret: Any,
    operator_factory: Any,
    tmp_path: Path,
) -> None:
    """The chart's namespaced Role with `batching.rbac` (its ConfigMap grant) suffices for a batch; without it
    (the chart's default) a release's spec.batching is refused the plan's ConfigMap and every adapter gets a Job
    of its own: all Ready, the log saying what to grant."""
    values = {"watchNamespaces": [namespace], "batching": {"rbac": granted}}
    role = next(d for d in render(tmp_path, values, namespace=namespace) if d["kind"] == "Role")
    op = operator_under_role(role, kubectl, kubeconfig_path, namespace, operator_factory, tmp_path)
    release(kubectl, namespace, "v1", model_folder(tmp_path, "v1", "w1"))
    names = ["a", "b", "c"]
    for adapter in names:
        apply(kubectl, namespace, "TaskAdapter", adapter, adapter_spec(strategy={"name": "transfer-ft"}))
    v2 = {"family": "llama", "version": "v2", "modelUri": model_folder(tmp_path, "v2", "w2")}
    apply(kubectl, namespace, "BaseModelRelease", "llama-v2", {**v2, "batching": {"maxAdaptersPerJob": 3}})
    wait_equal(
        lambda: {n: status(kubectl, namespace, n).get("readyRelease") for n in names}, dict.fromkeys(names, "v2"), 90
    )
    created = jobs(kubectl, namespace)
    batches = [n for n, j in created.items() if "relora.dev/batch-members" in j["metadata"].get("annotations", {})]
    if granted:
        assert len(created) == 1 and len(batches) == 1
        assert {status(kubectl, namespace, n)["job"] for n in names} == {batches[0]}
    else:
        assert len(created) == 3 and not batches
        assert "cannot create its plan ConfigMap" in op.tail() and "batching.rbac" in op.tail()
