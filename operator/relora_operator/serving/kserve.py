"""KServe: the TaskAdapter's entry in spec.model.lora.adapters of an existing LLMInferenceService.

Mirrors serving.kserve.io LLMInferenceService as in kserve/kserve pkg/apis/serving/v1alpha1 and v1alpha2
llm_inference_service_types.go (same LoRA layout in both; v1alpha2 is the storage version in recent KServe):
spec.model.uri, spec.model.lora.adapters[] = {name, uri, ...}; status.observedGeneration and knative-style
status.conditions (Ready). The service belongs to the team that runs it: the operator only adds or updates
its own entry (marked in the annotation relora.dev/lora-adapters) and never creates or deletes the service.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from kubernetes import client

from relora_operator.conditions import get
from relora_operator.models.serving import KServeTarget
from relora_operator.serving import api, common
from relora_operator.serving.common import HandOff, Result

MARKS = "relora.dev/lora-adapters"  # JSON {entry name: TaskAdapter uid}: the entries this operator keeps


def resource(target: KServeTarget) -> api.Resource:
    return api.Resource(
        "serving.kserve.io", target.api_version, "llminferenceservices", "LLMInferenceService", "serving.rbac.kserve"
    )


def _same_uri(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.rstrip("/") == b.rstrip("/")


def decide(current: dict[str, Any] | None, target: KServeTarget, handoff: HandOff) -> api.Write | Result:
    """Add or update the adapter entry, or report how the service stands (pure)."""
    name = common.dns_name(target.name, handoff, "kserve.name")
    entry_name = common.expand(target.adapter_name or handoff.adapter, handoff)
    where = f"LLMInferenceService {handoff.namespace}/{name}"
    if current is None:
        return Result(
            "False",
            common.NOT_FOUND,
            f"{where} not found: the operator adds its LoRA entry to an existing service; create it or fix "
            "spec.serving.kserve.name",
        )
    model = (current.get("spec") or {}).get("model") or {}
    if target.match_model_uri and not _same_uri(model.get("uri"), handoff.model_uri):
        return Result(
            "False",
            common.BASE_NOT_SERVED,
            f"{where} serves {model.get('uri')}, not release {handoff.release}'s model "
            f"{handoff.model_uri or '(release not found)'}: {common.served_text(handoff)} is handed off once it does "
            "(spec.serving.kserve.matchModelUri=false hands off whatever it serves)",
        )
    meta = current.get("metadata") or {}
    marks = json.loads((meta.get("annotations") or {}).get(MARKS) or "{}")
    adapters = list(((model.get("lora") or {}).get("adapters")) or [])
    index = next((i for i, a in enumerate(adapters) if a.get("name") == entry_name), None)
    if index is not None and marks.get(entry_name) != handoff.uid:
        return Result(
            "False",
            common.CONFLICT,
            f"{where} already has a LoRA adapter {entry_name!r} that TaskAdapter {handoff.adapter} did not add: "
            "remove it or choose another spec.serving.kserve.adapterName",
        )
    before = adapters[index].get("uri") if index is not None else None
    entry = {**(adapters[index] if index is not None else {}), "name": entry_name, "uri": handoff.uri}
    if index is None:
        adapters.append(entry)
    else:
        adapters[index] = entry
    updated = copy.deepcopy(current)
    lora = updated.setdefault("spec", {}).setdefault("model", {}).setdefault("lora", {})
    lora["adapters"] = adapters
    annotations = updated.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[MARKS] = json.dumps({**marks, entry_name: handoff.uid}, sort_keys=True)
    if updated == current:
        return observe(current, handoff, f"{where} (adapter {entry_name})")
    pending = f"{where}: adapter {entry_name} = {common.served_text(handoff)}; waiting for KServe to roll it out"
    change = f"{where}: adapter {entry_name} {before or '(new)'} -> {handoff.uri} (release {handoff.release})"
    return api.Write(updated, False, Result("Unknown", common.PENDING, pending, change))


def observe(obj: dict[str, Any], handoff: HandOff, where: str) -> Result:
    """The service's Ready condition, once KServe has reconciled the generation with the entry."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    if generation is not None and (status.get("observedGeneration") or 0) < generation:
        return Result("Unknown", common.PENDING, f"{where}: KServe has not reconciled generation {generation} yet")
    ready = get(status.get("conditions"), "Ready")
    if ready is not None and ready.get("status") == "True":
        return Result("True", common.SERVED, f"{where} is Ready with {common.served_text(handoff)}")
    if ready is not None and ready.get("status") == "False":
        why = ready.get("message") or ready.get("reason") or ""
        return Result("False", common.FAILED, f"KServe reports {where} not Ready" + (f": {why}" if why else ""))
    return Result("Unknown", common.PENDING, f"{where}: KServe has not reported Ready yet")


def hand_off(api_client: client.ApiClient, target: KServeTarget, handoff: HandOff) -> Result:
    name = common.dns_name(target.name, handoff, "kserve.name")
    return api.keep(
        api_client,
        resource(target),
        handoff.namespace,
        name,
        "KServe",
        lambda current: decide(current, target, handoff),
    )
