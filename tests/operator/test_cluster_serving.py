"""Hand-off to serving on the real control plane: AIBrix ModelAdapter, KServe LLMInferenceService and ConfigMap
targets follow each TaskAdapter's status.served through a rollout and a rollback; an absent CRD is a clear
Served condition that heals once the CRD is installed.

The ModelAdapter and LLMInferenceService CRDs are test CRDs mirroring the upstream fields the operator uses
(tests/operator/crds/, each naming the upstream file and version). Neither AIBrix's nor KServe's controller
runs here: where a test needs the target's status, it writes it through the status subresource as that
controller would, and checks that Served follows it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operator.factories import adapter_spec
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster
FAKE = f"{sys.executable} {Path(__file__).with_name('fake_worker.py')}"
CRDS = Path(__file__).with_name("crds")
AIBRIX_CRD = "modeladapters.model.aibrix.ai"
KSERVE_CRD = "llminferenceservices.serving.kserve.io"
AS_GIVEN = "s3://adapters/sentiment/"  # adapter_spec()'s adapterUri, trained on v1
AIBRIX = {
    "aibrix": {
        "baseModel": "llama-{release}",
        "podSelector": {"matchLabels": {"model.aibrix.ai/name": "llama-{release}"}},
    }
}


def install(kubectl: Any, crd: str) -> None:
    kubectl("apply", "--server-side", "-f", str(CRDS / f"{crd}.yaml"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")


def apply(kubectl: Any, namespace: str, doc: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


def adapter(kubectl: Any, namespace: str, name: str, serving: dict[str, Any], **spec: Any) -> None:
    body = {"apiVersion": "relora.dev/v1alpha1", "kind": "TaskAdapter", "metadata": {"name": name}}
    apply(kubectl, namespace, body | {"spec": adapter_spec(serving=serving, **spec)})


def release(kubectl: Any, namespace: str, version: str) -> None:
    spec = {"family": "llama", "version": version, "modelUri": f"s3://models/llama/{version}/"}
    apply(
        kubectl,
        namespace,
        {
            "apiVersion": "relora.dev/v1alpha1",
            "kind": "BaseModelRelease",
            "metadata": {"name": f"llama-{version}"},
            "spec": spec,
        },
    )


def get(kubectl: Any, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    out = kubectl("get", "-n", namespace, kind, name, "-o", "json", "--ignore-not-found").stdout
    return json.loads(out) if out.strip() else None


def cond(obj: dict[str, Any] | None, type_: str = "Served") -> dict[str, Any]:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def served_is(kubectl: Any, namespace: str, name: str, status: str, reason: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> Any:
        c = cond(get(kubectl, namespace, "taskadapter", name))
        return c if (c.get("status"), c.get("reason")) == (status, reason) else None

    return wait_for(check, timeout, f"{name}: Served={status} reason {reason}")


def served_uri(kubectl: Any, namespace: str, name: str) -> str:
    return get(kubectl, namespace, "taskadapter", name)["status"]["served"]["adapterUri"]  # type: ignore[index]


def set_status(kubectl: Any, namespace: str, kind: str, name: str, status: dict[str, Any]) -> None:
    """What AIBrix's or KServe's controller would write (neither runs on the test control plane)."""
    kubectl(
        "patch",
        "-n",
        namespace,
        kind,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def base_pods(kubectl: Any, namespace: str, version: str) -> None:
    """A running pod of release ``version``'s server, labelled as AIBrix's vLLM pods are (the test kubelet runs
    its command as a local process: a stand-in for vLLM, which the operator never talks to)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"vllm-llama-{version}", "labels": {"model.aibrix.ai/name": f"llama-{version}"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "vllm", "image": "unused", "command": [sys.executable, "-c", "import time; time.sleep(900)"]}
            ],
        },
    }
    apply(kubectl, namespace, pod)
    wait_for(
        lambda: (
            ((get(kubectl, namespace, "pod", f"vllm-llama-{version}") or {}).get("status") or {}).get("phase")
            == "Running"
        ),
        60,
        f"the llama-{version} server pod running",
    )


def team_serves(kubectl: Any, namespace: str, version: str) -> None:
    """The team points its LLMInferenceService at a release's base (their rollout, not the operator's)."""
    patch = {"spec": {"model": {"uri": f"s3://models/llama/{version}/"}}}
    kubectl("patch", "-n", namespace, "llminferenceservice", "llama", "--type=merge", "-p", json.dumps(patch))


def test_absent_crd_is_a_clear_condition_and_heals_once_installed(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    kubectl("delete", "crd", AIBRIX_CRD, "--ignore-not-found", "--wait=true", "--timeout=60s")
    base_pods(kubectl, namespace, "v1")
    operator_factory(namespace, RELORA_WORKER_COMMAND=FAKE, RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}")
    release(kubectl, namespace, "v1")
    adapter(kubectl, namespace, "chat", AIBRIX)
    adapter(kubectl, namespace, "sql", {"configMap": {"name": "lora-{family}"}})

    absent = served_is(kubectl, namespace, "chat", "False", "TargetKindNotInstalled")
    assert "ModelAdapter (model.aibrix.ai/v1alpha1, CRD modeladapters.model.aibrix.ai)" in absent["message"]
    assert "install AIBrix or remove spec.serving" in absent["message"]
    chat = get(kubectl, namespace, "taskadapter", "chat")
    assert cond(chat, "Ready")["status"] == "True" and chat["status"]["phase"] == "Ready"  # type: ignore[index]
    # The other adapter is not held back by it.
    served_is(kubectl, namespace, "sql", "True", "Served")
    cm = get(kubectl, namespace, "configmap", "lora-llama")
    assert cm is not None and cm["data"] == {"sql": AS_GIVEN}
    assert [r["name"] for r in cm["metadata"]["ownerReferences"]] == ["sql"]

    install(kubectl, AIBRIX_CRD)
    served_is(kubectl, namespace, "chat", "Unknown", "HandOffPending", timeout=90)
    ma = get(kubectl, namespace, "modeladapter", "chat")
    assert ma is not None and ma["spec"]["artifactURL"] == AS_GIVEN and ma["spec"]["baseModel"] == "llama-v1"
    assert ma["spec"]["podSelector"] == {"matchLabels": {"model.aibrix.ai/name": "llama-v1"}}
    [owner] = ma["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("TaskAdapter", chat["metadata"]["uid"])  # type: ignore[index]
    set_status(
        kubectl, namespace, "modeladapter", "chat", {"phase": "Running", "readyReplicas": 1, "desiredReplicas": 1}
    )
    ok = served_is(kubectl, namespace, "chat", "True", "Served")
    assert f"is Running on 1/1 pod(s) with {AS_GIVEN} (release v1)" in ok["message"]


def test_targets_follow_served_through_a_rollout_and_a_rollback(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    install(kubectl, AIBRIX_CRD)
    install(kubectl, KSERVE_CRD)
    team_entry = {"name": "sql-team", "uri": "hf://team/sql-lora"}
    llmisvc = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": {"name": "llama"},
        "spec": {"model": {"uri": "s3://models/llama/v1/", "name": "llama", "lora": {"adapters": [team_entry]}}},
    }
    apply(kubectl, namespace, llmisvc)
    base_pods(kubectl, namespace, "v1")
    operator_factory(namespace, RELORA_WORKER_COMMAND=FAKE, RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}")
    release(kubectl, namespace, "v1")
    slow = {"strategy": {"maxSteps": 4000}}  # each re-adaptation runs 4 s: time to see the targets wait for Ready
    adapter(kubectl, namespace, "chat", AIBRIX, **slow)
    adapter(kubectl, namespace, "qa", {"kserve": {"name": "llama", "adapterName": "qa"}}, **slow)
    adapter(kubectl, namespace, "sum", {"configMap": {"name": "lora-{family}"}}, **slow)
    adapter(kubectl, namespace, "ghost", {"kserve": {"name": "nowhere"}})

    def targets() -> dict[str, Any]:
        ma = get(kubectl, namespace, "modeladapter", "chat") or {}
        svc = get(kubectl, namespace, "llminferenceservice", "llama") or {}
        cm = get(kubectl, namespace, "configmap", "lora-llama") or {}
        return {
            "chat": (
                (ma.get("spec") or {}).get("artifactURL"),
                ((ma.get("spec") or {}).get("podSelector") or {}).get("matchLabels"),
            ),
            "qa": {a["name"]: a["uri"] for a in svc["spec"]["model"]["lora"]["adapters"]},
            "sum": (cm.get("data") or {}).get("sum"),
        }

    on_v1 = {
        "chat": (AS_GIVEN, {"model.aibrix.ai/name": "llama-v1"}),
        "qa": {"sql-team": team_entry["uri"], "qa": AS_GIVEN},
        "sum": AS_GIVEN,
    }
    wait_for(lambda: targets() == on_v1, 60, "every target on the v1 adapter")
    missing = served_is(kubectl, namespace, "ghost", "False", "TargetNotFound")
    assert f"LLMInferenceService {namespace}/nowhere not found" in missing["message"]

    release(kubectl, namespace, "v2")
    wait_for(
        lambda: (get(kubectl, namespace, "taskadapter", "chat") or {}).get("status", {}).get("phase") == "Adapting",
        60,
        "chat re-adapting to v2",
    )
    assert targets() == on_v1  # not Ready for v2 yet: nothing handed off
    wait_for(
        lambda: all(
            (get(kubectl, namespace, "taskadapter", n) or {}).get("status", {}).get("readyRelease") == "v2"
            for n in ("chat", "qa", "sum")
        ),
        90,
        "Ready for v2",
    )
    v2 = {n: served_uri(kubectl, namespace, n) for n in ("chat", "qa", "sum")}
    assert all(f"/adapters/{namespace}/{n}/v2/" in uri for n, uri in v2.items())
    # The service still runs the v1 base: its entry stays on the v1 adapter until it runs v2.
    blocked = served_is(kubectl, namespace, "qa", "False", "BaseNotServed")
    assert "serves s3://models/llama/v1/, not release v2's model s3://models/llama/v2/" in blocked["message"]
    on_v2 = {
        "chat": (v2["chat"], {"model.aibrix.ai/name": "llama-v2"}),
        "qa": {"sql-team": team_entry["uri"], "qa": AS_GIVEN},
        "sum": v2["sum"],
    }
    on_v2["chat"] = on_v1["chat"]  # no pod of the v2 server runs yet: the v1 pods keep their adapter
    wait_for(lambda: targets() == on_v2, 60, "the ConfigMap on the v2 adapter")
    waiting = served_is(kubectl, namespace, "chat", "False", "BaseNotServed")
    assert "no pod matching model.aibrix.ai/name=llama-v2 runs" in waiting["message"]
    assert targets() == on_v2
    base_pods(kubectl, namespace, "v2")
    on_v2["chat"] = (v2["chat"], {"model.aibrix.ai/name": "llama-v2"})
    wait_for(lambda: targets() == on_v2, 60, "the ModelAdapter on the v2 adapter once v2's pods run")
    team_serves(kubectl, namespace, "v2")
    on_v2["qa"] = {"sql-team": team_entry["uri"], "qa": v2["qa"]}
    wait_for(lambda: targets() == on_v2, 60, "the service's entry on the v2 adapter once it runs v2")
    served_is(kubectl, namespace, "qa", "Unknown", "HandOffPending")
    generation = get(kubectl, namespace, "llminferenceservice", "llama")["metadata"]["generation"]  # type: ignore[index]
    set_status(
        kubectl,
        namespace,
        "llminferenceservice",
        "llama",
        {"observedGeneration": generation, "conditions": [{"type": "Ready", "status": "True"}]},
    )
    served_is(kubectl, namespace, "qa", "True", "Served")
    set_status(
        kubectl,
        namespace,
        "modeladapter",
        "chat",
        {
            "phase": "Failed",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "LoadFailed",
                    "message": "adapter rank 16 > max-lora-rank 8",
                    "lastTransitionTime": "2026-12-03T00:00:00Z",
                }
            ],
        },
    )
    failed = served_is(kubectl, namespace, "chat", "False", "TargetFailed")
    assert "adapter rank 16 > max-lora-rank 8" in failed["message"]
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    handed = [e["message"] for e in events if e["reason"] == "HandedOff" and e["involvedObject"]["name"] == "chat"]
    assert f"ModelAdapter {namespace}/chat: artifactURL {AS_GIVEN} -> {v2['chat']} (release v2)" in handed

    # Rollback: v2 withdrawn, served goes back to the v1 adapter, and so does every target.
    kubectl("delete", "-n", namespace, "basemodelrelease", "llama-v2", "--timeout=30s")
    team_serves(kubectl, namespace, "v1")
    wait_for(lambda: targets() == on_v1, 60, "every target back on the v1 adapter")
    for name in ("chat", "qa", "sum"):
        assert served_uri(kubectl, namespace, name) == AS_GIVEN
    assert get(kubectl, namespace, "modeladapter", "chat")["metadata"]["labels"]["relora.dev/served-release"] == "v1"  # type: ignore[index]


def test_what_the_operator_created_is_put_back_and_goes_with_its_task_adapters(
    relora_crds: None, kubectl: Any, namespace: str, test_kubelet: Any, s3_secret: Any, operator_factory: Any
) -> None:
    install(kubectl, AIBRIX_CRD)
    base_pods(kubectl, namespace, "v1")
    operator_factory(
        namespace,
        RELORA_WORKER_COMMAND=FAKE,
        RELORA_ARTIFACT_ROOT=f"file:///tmp/relora-{namespace}",
        RELORA_SERVING_RECHECK_SECONDS="2",
    )
    release(kubectl, namespace, "v1")
    adapter(kubectl, namespace, "chat", AIBRIX)
    for name in ("sql", "sum"):
        adapter(kubectl, namespace, name, {"configMap": {"name": "lora-{family}"}})
    served_is(kubectl, namespace, "chat", "Unknown", "HandOffPending")
    wait_for(
        lambda: ((get(kubectl, namespace, "configmap", "lora-llama") or {}).get("data") or {}).keys() == {"sql", "sum"},
        60,
        "one ConfigMap with both keys",
    )
    # Drift: a target deleted or edited by hand is put back.
    first_uid = get(kubectl, namespace, "modeladapter", "chat")["metadata"]["uid"]  # type: ignore[index]
    kubectl("delete", "-n", namespace, "modeladapter", "chat", "--wait=true", "--timeout=30s")
    wait_for(
        lambda: (
            (get(kubectl, namespace, "modeladapter", "chat") or {"metadata": {"uid": first_uid}})["metadata"]["uid"]
            != first_uid
        ),
        60,
        "the ModelAdapter created again",
    )
    kubectl("patch", "-n", namespace, "configmap", "lora-llama", "--type=merge", "-p", '{"data": {"sum": "s3://x/y/"}}')
    wait_for(
        lambda: (get(kubectl, namespace, "configmap", "lora-llama") or {}).get("data", {}).get("sum") == AS_GIVEN,
        60,
        "the ConfigMap's entry put back",
    )
    kubectl("delete", "-n", namespace, "taskadapter", "chat", "sql", "--timeout=30s")
    wait_for(lambda: get(kubectl, namespace, "modeladapter", "chat") is None, 60, "the ModelAdapter garbage-collected")
    # sum still owns the ConfigMap: it stays, and sql's key goes at sum's next check (RELORA_SERVING_RECHECK_SECONDS).
    wait_for(
        lambda: (get(kubectl, namespace, "configmap", "lora-llama") or {}).get("data") == {"sum": AS_GIVEN},
        60,
        "sql's key dropped",
    )
    kubectl("delete", "-n", namespace, "taskadapter", "sum", "--timeout=30s")
    wait_for(lambda: get(kubectl, namespace, "configmap", "lora-llama") is None, 60, "the ConfigMap garbage-collected")
