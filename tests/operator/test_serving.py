"""Hand-off to serving without a cluster: the pure decisions of each integration (what the target becomes, from
(TaskAdapter, status.served) and the target as read) and the Served condition of the adapter's pass."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from relora_operator.models.serving import AibrixTarget, ConfigMapTarget, KServeTarget, Serving
from relora_operator.serving import aibrix, common, configmap, handoff, kserve
from relora_operator.serving.api import Write
from relora_operator.serving.common import HandOff, Result
from relora_operator.state import OperatorState

from tests.operator.factories import NS, adapter, releases

V2 = "s3://relora/adapters/team-a/chat/v2/abc/"
V3 = "s3://relora/adapters/team-a/chat/v3/def/"


def owner(name: str = "chat") -> dict[str, Any]:
    return {
        "apiVersion": "relora.dev/v1alpha1",
        "kind": "TaskAdapter",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
    }


def handoff_for(uri: str = V2, release: str = "v2", name: str = "chat", model_uri: str | None = None) -> HandOff:
    return HandOff(
        namespace=NS,
        adapter=name,
        uid=f"uid-{name}",
        owner=owner(name),
        family="llama",
        release=release,
        uri=uri,
        model_uri=model_uri or f"s3://models/llama/{release}/",
    )


def written(decision: Write | Result) -> dict[str, Any]:
    assert isinstance(decision, Write), decision
    return decision.body


# --- AIBrix ModelAdapter ---

AIBRIX = AibrixTarget.model_validate(
    {
        "baseModel": "llama-{release}",
        "podSelector": {
            "matchLabels": {"model.aibrix.ai/name": "{family}-{release}"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["{release}", "gold"]}],
        },
        "credentialsSecret": "aibrix-s3",
    }
)


def test_aibrix_creates_an_owned_model_adapter_for_the_pods_of_the_served_release() -> None:
    decision = aibrix.decide(None, AIBRIX, handoff_for())
    assert isinstance(decision, Write) and decision.create
    body = decision.body
    assert (body["apiVersion"], body["kind"], body["metadata"]["name"]) == (
        "model.aibrix.ai/v1alpha1",
        "ModelAdapter",
        "chat",
    )
    assert body["spec"] == {
        "podSelector": {
            "matchLabels": {"model.aibrix.ai/name": "llama-v2"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["v2", "gold"]}],
        },
        "artifactURL": V2,
        "baseModel": "llama-v2",
        "credentialsSecretRef": {"name": "aibrix-s3"},
    }
    [ref] = body["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == (
        "TaskAdapter",
        "uid-chat",
        True,
        True,
    )
    assert body["metadata"]["labels"]["relora.dev/task-adapter"] == "chat"
    assert body["metadata"]["labels"]["relora.dev/served-release"] == "v2"
    assert decision.result.status == "Unknown" and decision.result.reason == common.PENDING
    assert decision.result.change and V2 in decision.result.change


def test_aibrix_follows_served_forward_and_back_keeping_what_aibrix_owns() -> None:
    on_v2 = written(aibrix.decide(None, AIBRIX, handoff_for()))
    on_v2["metadata"]["generation"] = 1
    on_v2["spec"] |= {"schedulerName": "default", "replicas": 1}  # AIBrix's defaults: not the operator's
    decision = aibrix.decide(on_v2, AIBRIX, handoff_for(V3, "v3"))
    on_v3 = written(decision)
    assert not decision.create
    assert on_v3["spec"]["artifactURL"] == V3 and on_v3["spec"]["baseModel"] == "llama-v3"
    assert on_v3["spec"]["podSelector"]["matchLabels"] == {"model.aibrix.ai/name": "llama-v3"}
    assert on_v3["spec"]["schedulerName"] == "default" and on_v3["spec"]["replicas"] == 1
    assert decision.result.change == f"ModelAdapter {NS}/chat: artifactURL {V2} -> {V3} (release v3)"
    # Rollback: served goes back to the v2 artifact, and so does the ModelAdapter.
    back = written(aibrix.decide(on_v3, AIBRIX, handoff_for()))
    assert back["spec"]["artifactURL"] == V2 and back["spec"]["podSelector"] == on_v2["spec"]["podSelector"]


def test_aibrix_never_takes_over_a_model_adapter_it_did_not_create() -> None:
    theirs = written(aibrix.decide(None, AIBRIX, handoff_for()))
    theirs["metadata"]["ownerReferences"] = []
    decision = aibrix.decide(theirs, AIBRIX, handoff_for(V3, "v3"))
    assert isinstance(decision, Result) and (decision.status, decision.reason) == ("False", common.CONFLICT)
    assert "spec.serving.aibrix.name" in decision.message


def test_aibrix_waits_for_pods_of_the_served_release_before_creating_or_moving() -> None:
    waiting = aibrix.decide(None, AIBRIX, handoff_for(), pods_run=False)
    assert isinstance(waiting, Result) and (waiting.status, waiting.reason) == ("False", common.BASE_NOT_SERVED)
    assert "no pod matching model.aibrix.ai/name=llama-v2,tier in (v2,gold) runs in team-a" in waiting.message
    on_v2 = written(aibrix.decide(None, AIBRIX, handoff_for()))
    kept = aibrix.decide(on_v2, AIBRIX, handoff_for(V3, "v3"), pods_run=False)
    assert isinstance(kept, Result) and kept.reason == common.BASE_NOT_SERVED  # v2's pods keep their adapter
    on_v2["status"] = {"phase": "Running"}
    assert aibrix.decide(on_v2, AIBRIX, handoff_for(), pods_run=False).reason == common.SERVED  # type: ignore[union-attr]


def test_label_selectors_as_list_calls_take_them() -> None:
    selector = {
        "matchLabels": {"app": "vllm", "model.aibrix.ai/name": "llama-v2"},
        "matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["canary"]},
            {"key": "gpu", "operator": "Exists"},
            {"key": "draining", "operator": "DoesNotExist"},
        ],
    }
    assert (
        aibrix.selector_string(selector) == "app=vllm,model.aibrix.ai/name=llama-v2,tier notin (canary),gpu,!draining"
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"phase": "Running", "readyReplicas": 2, "desiredReplicas": 2}, ("True", common.SERVED, "on 2/2 pod(s)")),
        (
            {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False", "message": "download failed"}]},
            ("False", common.FAILED, "download failed"),
        ),
        ({"phase": "Scheduled"}, ("Unknown", common.PENDING, "phase Scheduled")),
        ({}, ("Unknown", common.PENDING, "(none yet)")),
        (  # status of an older generation (AIBrix has not seen the new artifact): not served yet
            {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 1}]},
            ("Unknown", common.PENDING, "generation 2"),
        ),
    ],
)
def test_aibrix_served_is_what_aibrix_reports(status: dict[str, Any], expected: tuple[str, str, str]) -> None:
    current = written(aibrix.decide(None, AIBRIX, handoff_for()))
    current["metadata"]["generation"] = 2
    current["status"] = status
    result = aibrix.decide(current, AIBRIX, handoff_for())
    assert isinstance(result, Result) and (result.status, result.reason) == expected[:2]
    assert expected[2] in result.message and result.change is None


def test_aibrix_names_the_field_whose_placeholders_give_an_invalid_value() -> None:
    bad = AibrixTarget.model_validate({"name": "chat_{release}", "podSelector": {"matchLabels": {"a": "b"}}})
    with pytest.raises(common.Invalid, match=r"spec.serving.aibrix.name 'chat_\{release\}' gives 'chat_v2'"):
        aibrix.decide(None, bad, handoff_for())
    long_value = AibrixTarget.model_validate({"podSelector": {"matchLabels": {"a": "x" * 62 + "{release}"}}})
    with pytest.raises(common.Invalid, match=r"matchLabels\[a\].*expected a label value"):
        aibrix.decide(None, long_value, handoff_for())


# --- KServe LLMInferenceService ---

KSERVE = KServeTarget.model_validate({"name": "llama-{release}", "adapterName": "chat"})


def llmisvc(model_uri: str = "s3://models/llama/v2", adapters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LLMInferenceService",
        "metadata": {"name": "llama-v2", "namespace": NS, "generation": 3, "resourceVersion": "7"},
        "spec": {"model": {"uri": model_uri, "name": "llama", "lora": {"adapters": adapters or []}}},
    }


def test_kserve_adds_its_entry_and_leaves_the_others() -> None:
    theirs = {"name": "sql", "uri": "hf://team/sql-lora"}
    decision = kserve.decide(llmisvc(adapters=[theirs]), KSERVE, handoff_for())
    body = written(decision)
    assert body["spec"]["model"]["lora"]["adapters"] == [theirs, {"name": "chat", "uri": V2}]
    assert json.loads(body["metadata"]["annotations"][kserve.MARKS]) == {"chat": "uid-chat"}
    assert body["metadata"]["resourceVersion"] == "7"  # the PUT fails if someone wrote in between
    assert decision.result.status == "Unknown" and "(new) -> " + V2 in (decision.result.change or "")


def test_kserve_updates_its_entry_on_rollout_and_rollback() -> None:
    on_v2 = written(kserve.decide(llmisvc(), KSERVE, handoff_for()))
    on_v2["spec"]["model"]["lora"]["adapters"][0]["criticality"] = "Critical"  # set by the team: kept
    on_v2["spec"]["model"]["uri"] = "s3://models/llama/v3/"
    on_v3 = written(kserve.decide(on_v2, KSERVE, handoff_for(V3, "v3")))
    assert on_v3["spec"]["model"]["lora"]["adapters"] == [{"name": "chat", "uri": V3, "criticality": "Critical"}]
    on_v3["spec"]["model"]["uri"] = "s3://models/llama/v2/"
    back = written(kserve.decide(on_v3, KSERVE, handoff_for()))
    assert back["spec"]["model"]["lora"]["adapters"][0]["uri"] == V2


def test_kserve_waits_for_the_service_to_run_the_served_base() -> None:
    decision = kserve.decide(llmisvc(model_uri="s3://models/llama/v1/"), KSERVE, handoff_for())
    assert isinstance(decision, Result) and (decision.status, decision.reason) == ("False", common.BASE_NOT_SERVED)
    assert "serves s3://models/llama/v1/, not release v2's model s3://models/llama/v2/" in decision.message
    anyway = KSERVE.model_copy(update={"match_model_uri": False})
    assert isinstance(kserve.decide(llmisvc(model_uri="s3://models/llama/v1/"), anyway, handoff_for()), Write)


def test_kserve_refuses_a_missing_service_and_an_entry_it_did_not_add() -> None:
    missing = kserve.decide(None, KSERVE, handoff_for())
    assert (
        isinstance(missing, Result)
        and missing.reason == common.NOT_FOUND
        and f"{NS}/llama-v2 not found" in missing.message
    )
    taken = kserve.decide(llmisvc(adapters=[{"name": "chat", "uri": "hf://x/y"}]), KSERVE, handoff_for())
    assert isinstance(taken, Result) and taken.reason == common.CONFLICT and "adapterName" in taken.message


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "True"}]}, ("True", common.SERVED)),
        (
            {"observedGeneration": 3, "conditions": [{"type": "Ready", "status": "False", "message": "OOMKilled"}]},
            ("False", common.FAILED),
        ),
        ({"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]}, ("Unknown", common.PENDING)),
    ],
)
def test_kserve_served_is_the_services_ready_for_its_generation(
    status: dict[str, Any], expected: tuple[str, str]
) -> None:
    current = written(kserve.decide(llmisvc(), KSERVE, handoff_for()))
    current["status"] = status
    result = kserve.decide(current, KSERVE, handoff_for())
    assert isinstance(result, Result) and (result.status, result.reason) == expected


# --- ConfigMap ---

CM = ConfigMapTarget.model_validate({"name": "lora-{family}"})


def test_configmap_is_created_with_the_entry_and_shared_by_adapters() -> None:
    decision = configmap.decide(None, CM, handoff_for())
    created = written(decision)
    assert decision.create and decision.result.status == "True"
    assert created["metadata"]["name"] == "lora-llama" and created["data"] == {"chat": V2}
    assert created["metadata"]["ownerReferences"][0]["controller"] is False  # several adapters own it
    other = handoff_for("s3://relora/adapters/team-a/sql/v2/x/", name="sql")
    shared = written(configmap.decide(created, CM, other))
    assert shared["data"] == {"chat": V2, "sql": other.uri}
    assert {r["uid"] for r in shared["metadata"]["ownerReferences"]} == {"uid-chat", "uid-sql"}
    assert json.loads(shared["metadata"]["annotations"][configmap.ENTRIES])["sql"]["release"] == "v2"
    same = configmap.decide(shared, CM, other)
    assert same == Result("True", common.SERVED, f"ConfigMap {NS}/lora-llama: sql = {other.uri} (release v2)")
    back = written(configmap.decide(shared, CM, handoff_for(V3, "v3")))
    assert back["data"]["chat"] == V3


def test_configmap_drops_the_keys_of_deleted_adapters_and_never_takes_a_key() -> None:
    shared = written(configmap.decide(written(configmap.decide(None, CM, handoff_for())), CM, handoff_for(name="sql")))
    shared["metadata"]["ownerReferences"] = [r for r in shared["metadata"]["ownerReferences"] if r["uid"] != "uid-sql"]
    pruned = written(configmap.decide(shared, CM, handoff_for(V3, "v3")))
    assert pruned["data"] == {"chat": V3}  # sql's TaskAdapter is gone (the GC removed its ownerReference)
    theirs = copy.deepcopy(pruned)
    theirs["data"]["other"] = "s3://elsewhere/"
    taken = configmap.decide(
        theirs, ConfigMapTarget.model_validate({"name": "lora-llama", "key": "other"}), handoff_for()
    )
    assert isinstance(taken, Result) and taken.reason == common.CONFLICT and "someone else" in taken.message


def test_a_configmap_the_team_made_only_gets_the_key() -> None:
    team = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "lora-llama", "namespace": NS},
        "data": {"x": "y"},
    }
    body = written(configmap.decide(team, CM, handoff_for()))
    assert body["data"] == {"x": "y", "chat": V2} and not body["metadata"].get("ownerReferences")


# --- the spec and the adapter's pass ---


def test_serving_selects_exactly_one_integration() -> None:
    field, target = Serving.model_validate({"configMap": {"name": "lora"}}).selected()
    assert field == "config_map" and isinstance(target, ConfigMapTarget)
    with pytest.raises(ValueError, match="exactly one of aibrix, kserve, configMap"):
        Serving.model_validate({}).selected()


def _sync(view: Any, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    class Settings:
        resync_seconds = 1.0
        api_workers = 2
        serving_recheck_seconds = 300.0

    return asyncio.run(handoff.sync(OperatorState(), view, old, new, releases("v1", "v2"), Settings()))


def test_the_pass_reports_nothing_served_without_a_call_and_drops_served_when_serving_is_off() -> None:
    ready = {"type": "Ready", "status": "True", "reason": "Readapted", "message": "", "lastTransitionTime": "t"}
    with_serving = adapter("chat", serving={"configMap": {"name": "lora"}})
    new = _sync(with_serving, {}, {"phase": "Pending", "conditions": [ready]})
    served = new["conditions"][-1]
    assert (served["type"], served["status"], served["reason"]) == ("Served", "False", common.NOTHING)
    assert new["conditions"][0] == ready
    off = _sync(adapter("chat"), new, {"phase": "Ready", "conditions": [ready]})
    assert off["conditions"] == [ready]


def test_handoff_of_reads_status_served_and_the_release_model() -> None:
    view = adapter("chat", serving={"configMap": {"name": "lora"}})
    h = handoff.handoff_of(view, {"served": {"release": "v2", "adapterUri": V2}}, releases("v1", "v2"))
    assert h is not None and (h.release, h.uri, h.model_uri, h.family) == ("v2", V2, "s3://models/llama/v2/", "llama")
    assert handoff.handoff_of(view, {}, releases("v1")) is None


def _api_error(status: int, body: dict[str, Any]) -> Any:
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps(body)
    return exc


def test_failures_say_what_was_refused_and_what_to_do() -> None:
    from relora_operator.serving import api

    forbidden = api.failure(
        _api_error(403, {"message": 'modeladapters.model.aibrix.ai "chat" is forbidden'}), aibrix.RESOURCE, NS, "create"
    )
    assert (forbidden.status, forbidden.reason) == ("False", common.FORBIDDEN)
    assert "may not create modeladapters.model.aibrix.ai in namespace team-a" in forbidden.message
    assert "Helm chart value serving.rbac.aibrix=true" in forbidden.message
    conflict = api.failure(
        _api_error(409, {"message": "the object has been modified"}), configmap.RESOURCE, NS, "update"
    )
    assert (conflict.status, conflict.reason) == ("Unknown", common.PENDING)
    refused = api.failure(
        _api_error(422, {"message": "spec.podSelector: Invalid value"}), aibrix.RESOURCE, NS, "update"
    )
    assert refused.reason == common.INVALID and "spec.podSelector: Invalid value" in refused.message
    # A 404 naming the object is a missing object; one that names none is a kind the server does not serve.
    assert api._names_an_object(_api_error(404, {"details": {"name": "chat", "kind": "modeladapters"}}))
    assert not api._names_an_object(_api_error(404, {"message": "the server could not find the requested resource"}))


def test_a_serving_without_integration_stored_before_the_rule_is_a_served_condition_not_a_crash() -> None:
    view = adapter("chat", serving={})
    new = _sync(view, {}, {"phase": "Ready", "conditions": []})
    assert new["conditions"][-1]["reason"] == common.INVALID
    assert "exactly one of aibrix, kserve, configMap" in new["conditions"][-1]["message"]
