"""ConfigMap: ``<name>: <adapter URI>`` entries that a vLLM Deployment mounts or polls (the generic path).

Several TaskAdapters may share one ConfigMap (one key each). The annotation relora.dev/lora-entries records
which TaskAdapter wrote which key, so one never overwrites another's key or a key someone else wrote. A
ConfigMap the operator created is owned by every TaskAdapter with a key in it (ownerReferences): it goes
when the last of them goes, and a deleted TaskAdapter's key is removed when another's entry is next checked.
A ConfigMap that existed before is only given keys: no owner, nothing else touched.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from kubernetes import client

from relora_operator import naming
from relora_operator.models.serving import ConfigMapTarget
from relora_operator.serving import api, common
from relora_operator.serving.common import HandOff, Result

RESOURCE = api.Resource("", "v1", "configmaps", "ConfigMap", "serving.rbac.configMap")
ENTRIES = "relora.dev/lora-entries"  # JSON {key: {"taskAdapter", "uid", "release"}}


def key_of(target: ConfigMapTarget, handoff: HandOff) -> str:
    what = "a ConfigMap key (letters, digits, '-', '_', '.')"
    return common.checked(target.key or handoff.adapter, handoff, "configMap.key", common.CONFIGMAP_KEY, 253, what)


def decide(current: dict[str, Any] | None, target: ConfigMapTarget, handoff: HandOff) -> api.Write | Result:
    """Create the ConfigMap or put the served adapter's URI under its key (pure)."""
    name, key = common.dns_name(target.name, handoff, "configMap.name"), key_of(target, handoff)
    where = f"ConfigMap {handoff.namespace}/{name}"
    entry = {"taskAdapter": handoff.adapter, "uid": handoff.uid, "release": handoff.release}
    done = Result("True", common.SERVED, f"{where}: {key} = {common.served_text(handoff)}")
    if current is None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": handoff.namespace,
                "labels": {naming.LABEL_MANAGED: naming.MANAGED_BY},
                "annotations": {ENTRIES: json.dumps({key: entry}, sort_keys=True)},
                "ownerReferences": [common.owner_reference(handoff.owner, controller=False)],
            },
            "data": {key: handoff.uri},
        }
        return api.Write(body, True, Result(done.status, done.reason, done.message, f"{where} created: {done.message}"))
    meta = current.get("metadata") or {}
    entries = json.loads((meta.get("annotations") or {}).get(ENTRIES) or "{}")
    data = dict(current.get("data") or {})
    if key in data and (entries.get(key) or {}).get("uid") != handoff.uid:
        writer = (entries.get(key) or {}).get("taskAdapter")
        return Result(
            "False",
            common.CONFLICT,
            f"{where} already has key {key!r}, written by {('TaskAdapter ' + writer) if writer else 'someone else'}: "
            "choose another spec.serving.configMap.key",
        )
    updated = copy.deepcopy(current)
    new_meta = updated.setdefault("metadata", {})
    owners = list(new_meta.get("ownerReferences") or [])
    if (meta.get("labels") or {}).get(naming.LABEL_MANAGED) == naming.MANAGED_BY:
        if not common.owned_by(current, handoff.uid):
            owners.append(common.owner_reference(handoff.owner, controller=False))
        # Keys of TaskAdapters that are gone: the garbage collector removed their ownerReferences.
        alive = {ref.get("uid") for ref in owners}
        for gone in [k for k, e in entries.items() if e.get("uid") not in alive]:
            entries.pop(gone)
            data.pop(gone, None)
        new_meta["ownerReferences"] = owners
    before = data.get(key)
    data[key] = handoff.uri
    entries[key] = entry
    updated["data"] = data
    new_meta["annotations"] = {**(new_meta.get("annotations") or {}), ENTRIES: json.dumps(entries, sort_keys=True)}
    if updated == current:
        return done
    change = (
        f"{where}: {key} {before or '(new)'} -> {handoff.uri} (release {handoff.release})"
        if before != handoff.uri
        else None
    )
    return api.Write(updated, False, Result(done.status, done.reason, done.message, change))


def hand_off(api_client: client.ApiClient, target: ConfigMapTarget, handoff: HandOff) -> Result:
    name = common.dns_name(target.name, handoff, "configMap.name")
    return api.keep(
        api_client,
        RESOURCE,
        handoff.namespace,
        name,
        "nothing (ConfigMaps are core)",
        lambda c: decide(c, target, handoff),
    )
