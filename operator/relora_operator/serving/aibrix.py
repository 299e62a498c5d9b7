"""AIBrix: one ModelAdapter per TaskAdapter, created and owned by the operator, pointing at status.served.

Mirrors model.aibrix.ai/v1alpha1 ModelAdapter as in vllm-project/aibrix api/model/v1alpha1/modeladapter_types.go
(commit 121c604b, after v0.5.0): spec.baseModel, podSelector, artifactURL, credentialsSecretRef,
additionalConfig (schedulerName and replicas are left to AIBrix); status.phase (Pending, Scheduled, Bound,
ResourceCreated, Running, Failed, ...), readyReplicas, desiredReplicas, conditions.
"""

from __future__ import annotations

import copy
from typing import Any

from kubernetes import client

from relora_operator.models.serving import AibrixTarget
from relora_operator.serving import api, common
from relora_operator.serving.common import HandOff, Result

RESOURCE = api.Resource("model.aibrix.ai", "v1alpha1", "modeladapters", "ModelAdapter", "serving.rbac.aibrix")
PODS = api.Resource("", "v1", "pods", "Pod", "rbac.create")  # the operator lists pods anyway (worker pods)


def name_of(target: AibrixTarget, handoff: HandOff) -> str:
    return common.dns_name(target.name or handoff.adapter, handoff, "aibrix.name")


def spec_of(target: AibrixTarget, handoff: HandOff) -> dict[str, Any]:
    """The ModelAdapter spec fields the operator owns, for the served adapter."""
    selector: dict[str, Any] = {}
    sel = target.pod_selector
    if sel.match_labels:
        selector["matchLabels"] = {
            k: common.label_value(v, handoff, f"aibrix.podSelector.matchLabels[{k}]")
            for k, v in sel.match_labels.items()
        }
    if sel.match_expressions:
        selector["matchExpressions"] = [
            {
                "key": e.key,
                "operator": e.operator,
                **(
                    {
                        "values": [
                            common.label_value(v, handoff, f"aibrix.podSelector.matchExpressions[{i}]")
                            for v in e.values
                        ]
                    }
                    if e.values is not None
                    else {}
                ),
            }
            for i, e in enumerate(sel.match_expressions)
        ]
    spec: dict[str, Any] = {"podSelector": selector, "artifactURL": handoff.uri}
    if target.base_model:
        spec["baseModel"] = common.expand(target.base_model, handoff)
    if target.credentials_secret:
        spec["credentialsSecretRef"] = {
            "name": common.dns_name(target.credentials_secret, handoff, "aibrix.credentialsSecret")
        }
    if target.additional_config:
        spec["additionalConfig"] = dict(target.additional_config)
    return spec


OWNED = ("podSelector", "artifactURL", "baseModel", "credentialsSecretRef", "additionalConfig")


def decide(
    current: dict[str, Any] | None, target: AibrixTarget, handoff: HandOff, pods_run: bool = True
) -> api.Write | Result:
    """Create the ModelAdapter, update it to the served adapter, or report how it stands (pure). ``pods_run``:
    a pod of the (expanded) podSelector runs; without one, nothing is created or moved."""
    name, spec = name_of(target, handoff), spec_of(target, handoff)
    where = f"ModelAdapter {handoff.namespace}/{name}"
    waiting = Result(
        "False",
        common.BASE_NOT_SERVED,
        f"no pod matching {selector_string(spec['podSelector'])} runs in {handoff.namespace}: {where} is pointed at "
        f"{common.served_text(handoff)} once the pods serving that release run "
        "(spec.serving.aibrix.requireServingPods=false: at once)",
    )
    if current is None and not pods_run:
        return waiting
    if current is None:
        body = {
            "apiVersion": RESOURCE.api_version,
            "kind": RESOURCE.kind,
            "metadata": {
                "name": name,
                "namespace": handoff.namespace,
                "labels": common.labels(handoff),
                "ownerReferences": [common.owner_reference(handoff.owner)],
            },
            "spec": spec,
        }
        pending = f"created {where} for {common.served_text(handoff)}; waiting for AIBrix to load it"
        return api.Write(
            body, True, Result("Unknown", common.PENDING, pending, f"{where} created: {common.served_text(handoff)}")
        )
    if not common.owned_by(current, handoff.uid):
        return Result(
            "False",
            common.CONFLICT,
            f"{where} exists and is not owned by TaskAdapter {handoff.adapter}: the operator only changes the "
            "ModelAdapters it created; delete it or choose another spec.serving.aibrix.name",
        )
    updated = copy.deepcopy(current)
    updated["spec"] = {k: v for k, v in (current.get("spec") or {}).items() if k not in OWNED} | spec
    meta = updated.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **common.labels(handoff)}
    if updated == current:
        return observe(current, handoff, where)
    if not pods_run:
        return waiting
    before = (current.get("spec") or {}).get("artifactURL")
    change = (
        f"{where}: artifactURL {before} -> {handoff.uri} (release {handoff.release})" if before != handoff.uri else None
    )
    pending = f"{where} now points at {common.served_text(handoff)}; waiting for AIBrix to load it"
    return api.Write(updated, False, Result("Unknown", common.PENDING, pending, change))


def observe(obj: dict[str, Any], handoff: HandOff, where: str) -> Result:
    """How AIBrix reports the ModelAdapter (its status.phase), once it has seen the current generation."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    seen = [c["observedGeneration"] for c in status.get("conditions") or [] if c.get("observedGeneration") is not None]
    if generation is not None and seen and max(seen) < generation:
        return Result("Unknown", common.PENDING, f"{where}: AIBrix has not observed generation {generation} yet")
    phase = status.get("phase")
    if phase == "Running":
        ready, desired = status.get("readyReplicas"), status.get("desiredReplicas")
        pods = f" on {ready}/{desired} pod(s)" if desired else ""
        return Result("True", common.SERVED, f"{where} is Running{pods} with {common.served_text(handoff)}")
    if phase == "Failed":
        why = next(
            (
                c.get("message") or c.get("reason")
                for c in reversed(status.get("conditions") or [])
                if c.get("status") == "False"
            ),
            "",
        )
        return Result(
            "False",
            common.FAILED,
            f"AIBrix reports {where} Failed for {common.served_text(handoff)}" + (f": {why}" if why else ""),
        )
    return Result(
        "Unknown",
        common.PENDING,
        f"{where} points at {common.served_text(handoff)}; AIBrix reports phase {phase or '(none yet)'}",
    )


def selector_string(selector: dict[str, Any]) -> str:
    """A metav1.LabelSelector as the label_selector of a list call."""
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        values = ",".join(e.get("values") or [])
        parts.append(
            {"In": f"{e['key']} in ({values})", "NotIn": f"{e['key']} notin ({values})", "Exists": e["key"]}.get(
                e["operator"], f"!{e['key']}"
            )
        )
    return ",".join(parts)


def hand_off(api_client: client.ApiClient, target: AibrixTarget, handoff: HandOff) -> Result:
    name = name_of(target, handoff)

    def with_pods(current: dict[str, Any] | None) -> api.Write | Result:
        if not target.require_serving_pods:
            return decide(current, target, handoff)
        selector = selector_string(spec_of(target, handoff)["podSelector"])
        try:
            running = api.running_pods(api_client, handoff.namespace, selector)
        except Exception as exc:
            return api.failure(exc, PODS, handoff.namespace, "list")
        return decide(current, target, handoff, pods_run=running > 0)

    return api.keep(api_client, RESOURCE, handoff.namespace, name, "AIBrix", with_pods)
