"""End to end: the real worker CLI (tiny models on CPU), the real S3 server, the real control plane.

`kubectl apply` a release v1 and TaskAdapters, then release v2: the two good adapters become Ready with their
measured quality above the threshold, one projection is shared, artifacts and manifests land in S3; an
adapter with a missing dataset ends not Ready with a message naming the URI while the others complete.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.operator.conftest import wait_equal

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def scenario_in_s3(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The worker's synthetic scenario (BERT-style classifier, v1 -> v2 release, adapter on v1) in S3."""
    from relora_worker.synthetic import build_scenario

    root = tmp_path_factory.mktemp("scenario")
    scenario = build_scenario(root, task="seq-cls", seed=0)
    s3 = s3_server.client()
    for path in root.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), s3_server.bucket, f"scenario/{path.relative_to(root)}")
    return {"uri": s3_server.uri("scenario"), "labels": scenario.labels, "targets": scenario.target_modules}


def _apply(kubectl: Any, namespace: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    doc = {"apiVersion": "relora.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


def _adapter(scn: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    spec = {
        "family": "tiny-bert",
        "adapterUri": f"{scn['uri']}/adapter_v1/",
        "trainedOnRelease": "v1",
        "targetModules": scn["targets"],
        "rank": 8,
        "task": {
            "type": "seq-cls",
            "trainData": f"{scn['uri']}/train.jsonl",
            "evalData": f"{scn['uri']}/eval.jsonl",
            "labels": scn["labels"],
        },
        "quality": {"threshold": 0.4},
        "strategy": {"maxSteps": 60, "searchBudget": 6, "learningRate": 0.002, "evalEvery": 10},
    }
    spec.update(overrides)
    return spec


def _items(kubectl: Any, namespace: str, kind: str) -> dict[str, dict[str, Any]]:
    items = json.loads(kubectl("get", "-n", namespace, kind, "-o", "json").stdout)["items"]
    return {i["metadata"]["name"]: i for i in items}


def test_release_rollout_with_the_real_worker(
    relora_crds: None,
    kubectl: Any,
    namespace: str,
    test_kubelet: Any,
    s3_server: Any,
    scenario_in_s3: dict[str, Any],
    operator_factory: Any,
) -> None:
    scn = scenario_in_s3
    operator_factory(
        namespace,
        RELORA_ARTIFACT_ROOT=s3_server.uri(f"{namespace}/artifacts"),
        RELORA_RESYNC_SECONDS="2",
        **s3_server.env,
    )
    kubectl(
        "create",
        "secret",
        "generic",
        "relora-s3",
        "-n",
        namespace,
        *(f"--from-literal={k}={v}" for k, v in s3_server.secret_data().items()),
    )
    for version in ("v1",):
        _apply(
            kubectl,
            namespace,
            "BaseModelRelease",
            f"tiny-bert-{version}",
            {"family": "tiny-bert", "version": version, "modelUri": f"{scn['uri']}/base_{version}/"},
        )
    _apply(kubectl, namespace, "TaskAdapter", "topics", _adapter(scn))
    _apply(
        kubectl,
        namespace,
        "TaskAdapter",
        "topics-noreg",
        _adapter(
            scn,
            strategy={
                "name": "relora-noreg",
                "maxSteps": 60,
                "searchBudget": 6,
                "learningRate": 0.002,
                "evalEvery": 10,
            },
            priority=1,
        ),
    )
    missing = f"{scn['uri']}/no-such-file.jsonl"
    _apply(
        kubectl,
        namespace,
        "TaskAdapter",
        "bad-data",
        _adapter(scn, task={"type": "seq-cls", "trainData": missing, "labels": scn["labels"]}),
    )

    def phases() -> dict[str, str]:
        return {n: a.get("status", {}).get("phase", "") for n, a in _items(kubectl, namespace, "ta").items()}

    wait_equal(phases, {"topics": "Ready", "topics-noreg": "Ready", "bad-data": "Ready"}, 60)
    _apply(
        kubectl,
        namespace,
        "BaseModelRelease",
        "tiny-bert-v2",
        {"family": "tiny-bert", "version": "v2", "modelUri": f"{scn['uri']}/base_v2/"},
    )
    wait_equal(phases, {"topics": "Ready", "topics-noreg": "Ready", "bad-data": "Failed"}, 420, interval=2)


    adapters = _items(kubectl, namespace, "ta")
    s3 = s3_server.client()
    for name in ("topics", "topics-noreg"):
        st = adapters[name]["status"]
        assert st["readyRelease"] == "v2" and st["quality"] >= 0.4, st
        # auto (topics' default) may be ready at once with the old adapter (0 s); it still searches to improve
        assert st["timeToReadinessSeconds"] >= 0
        # Ready at its first version while the Job still trains (ReadyImproving): α/β come with the final result.
        improving = any(c.get("reason") == "ReadyImproving" for c in st.get("conditions", []))
        assert improving or ("alpha" in st and "beta" in st), st
        # adapterUri may name a version folder with or without its trailing slash: list that folder's keys
        prefix = st["adapterUri"].removeprefix(f"s3://{s3_server.bucket}/").rstrip("/") + "/"
        keys = {
            o["Key"].removeprefix(prefix)
            for o in s3.list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix)["Contents"]
        }
        assert {"adapter_config.json", "adapter_model.safetensors", "result.json", "manifest.json"} <= keys
    bad = adapters["bad-data"]["status"]
    ready = next(c for c in bad["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "BadInput" and missing in ready["message"]
    assert bad["adapterUri"] == f"{scn['uri']}/adapter_v1/"  # still serving what it had

    release = _items(kubectl, namespace, "bmr")["tiny-bert-v2"]["status"]
    assert len(release["projections"]) == 1 and release["projections"][0]["state"] == "Succeeded"
    proj = release["projections"][0]["uri"].removeprefix(f"s3://{s3_server.bucket}/")
    keys = {o["Key"].removeprefix(proj) for o in s3.list_objects_v2(Bucket=s3_server.bucket, Prefix=proj)["Contents"]}
    # An immutable version and the pointer naming it (README, "Publishing layout").
    pointer = json.loads(s3.get_object(Bucket=s3_server.bucket, Key=proj + "manifest.json")["Body"].read())
    version = pointer["current"]
    assert {"manifest.json", version + "projection.safetensors", version + "manifest.json"} <= keys
    wait_equal(lambda: _items(kubectl, namespace, "bmr")["tiny-bert-v2"]["status"].get("phase"), "Complete", 30)
    release = _items(kubectl, namespace, "bmr")["tiny-bert-v2"]["status"]
    assert release["adapters"]["ready"] == 2 and release["adapters"]["failed"] == 1

    table = kubectl("get", "-n", namespace, "taskadapters").stdout
    lines = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert lines["topics"][1:4] == ["tiny-bert", "v2", "True"], table
    assert lines["bad-data"][3:5] == ["False", "BadInput"], table
