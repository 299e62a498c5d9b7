"""A TaskAdapter of 2 GPUs on the real control plane with the real worker (issue 18): its Job is one pod asking
for 2 GPUs whose command runs under ``relora launch --nproc-per-node 2`` (on CPU here: 2 gloo ranks), the
adapter goes Ready on the new release, rank 0 alone published (exactly one version), and the two ranks downloaded
the new base once between them (the pod's own base cache)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from relora_operator import naming

from bench.fleet.s3log import AccessLog
from tests.operator.test_cluster_e2e import _adapter, _apply, _items, scenario_in_s3  # noqa: F401 (a fixture)
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_an_adapter_of_two_gpus_runs_on_two_ranks_and_publishes_once(
    relora_crds: None,
    kubectl: Any,
    namespace: str,
    test_kubelet: Any,
    s3_server: Any,
    scenario_in_s3: dict[str, Any],  # noqa: F811
    operator_factory: Any,
) -> None:
    scn = scenario_in_s3
    # Through the cluster's pod template: one thread per rank (two ranks share the machine's cores), and this
    # checkout's worker (the venv's `relora_worker` may be another checkout's).
    pythonpath = os.pathsep.join([str(ROOT), str(ROOT / "operator")])
    template = {"env": [{"name": "OMP_NUM_THREADS", "value": "1"}, {"name": "PYTHONPATH", "value": pythonpath}]}
    operator_factory(
        namespace,
        RELORA_ARTIFACT_ROOT=s3_server.uri(f"{namespace}/artifacts"),
        RELORA_RESYNC_SECONDS="2",
        RELORA_WORKER_POD_TEMPLATE=json.dumps(template),
        **s3_server.env,
    )
    access = AccessLog(s3_server.log_path, s3_server.bucket)
    access.mark()  # the server's requests from here on are this test's
    secret = (f"--from-literal={k}={v}" for k, v in s3_server.secret_data().items())
    kubectl("create", "secret", "generic", "relora-s3", "-n", namespace, *secret)
    for version in ("v1", "v2"):
        spec = {"family": "tiny-bert", "version": version, "modelUri": f"{scn['uri']}/base_{version}/"}
        _apply(kubectl, namespace, "BaseModelRelease", f"tiny-bert-{version}", spec)
    # improveAfterReady off: the one version published is the final one (no first-ready version before it).
    strategy = {"name": "relora", "maxSteps": 40, "searchBudget": 4, "learningRate": 0.002, "evalEvery": 10,
                "improveAfterReady": False}  # fmt: skip
    _apply(kubectl, namespace, "TaskAdapter", "wide", _adapter(scn, strategy=strategy, resources={"gpus": 2}))

    def outcome_on_v2() -> dict[str, Any] | None:
        status = _items(kubectl, namespace, "ta")["wide"].get("status", {})
        done = status.get("readyRelease") == "v2" or status.get("phase") in ("Degraded", "Failed")
        return status if done else None

    status = wait_for(outcome_on_v2, 900, "the adapter's outcome on v2", interval=2)
    if status.get("readyRelease") != "v2":  # the worker's own words, for whoever reads the failure
        pods = json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
        logs = {p["metadata"]["name"]: test_kubelet.logs(namespace, p["metadata"]["name"])[-3000:] for p in pods}
        pytest.fail(f"not Ready on v2: {status}\n{json.dumps(logs, indent=1)}")
    assert status["phase"] == "Ready" and status["quality"] >= 0.4, status
    jobs = {j["metadata"]["labels"][naming.LABEL_COMPONENT]: j for j in _items(kubectl, namespace, "jobs").values()}
    job = jobs["adaptation"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:4] == ["launch", "--nproc-per-node", "2", "readapt"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert {"name": "relora-shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    # The projection (a release of no GPUs here) ran as one process.
    assert jobs["projection"]["spec"]["template"]["spec"]["containers"][0]["args"][0] == "project-delta"
    # The pod the test kubelet ran is the Job's, 2 GPUs asked for.
    pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"job-name={job['metadata']['name']}",
                              "-o", "json").stdout)["items"]  # fmt: skip
    assert [p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] for p in pods] == ["2"]

    # Exactly one version under the adapter's output (rank 0 published; rank 1 wrote nothing), and it is served.
    s3, output = s3_server.client(), job["metadata"]["annotations"][naming.ANNOTATION_OUTPUT]
    prefix = output.removeprefix(f"s3://{s3_server.bucket}/").rstrip("/") + "/versions/"
    listing = s3.list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix)["Contents"]
    keys = [o["Key"].removeprefix(prefix) for o in listing]
    (version,) = {key.split("/", 1)[0] for key in keys}
    assert version in status["adapterUri"]
    result = json.loads(s3.get_object(Bucket=s3_server.bucket, Key=f"{prefix}{version}/result.json")["Body"].read())
    assert (result["world"]["processes"], result["world"]["rank"]) == (2, 0)  # rank 0 alone published
    assert result["world"]["sharded"] is False  # CPU pods: auto keeps the base whole

    # The new base was downloaded twice in all: once by the projection Job, once by the adaptation pod, whose
    # two ranks share one copy through the base cache on the pod's /tmp (without it: three).
    base_prefix = s3_server.uri("scenario/base_v2/").removeprefix(f"s3://{s3_server.bucket}/")
    base = s3.list_objects_v2(Bucket=s3_server.bucket, Prefix=base_prefix)["Contents"]
    served = access.since_mark(base_prefix, {o["Key"]: o["Size"] for o in base})
    assert served.downloads == 2, served
