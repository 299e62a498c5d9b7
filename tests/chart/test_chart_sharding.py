"""The chart's sharding values: replicas, the Lease RBAC (only in the operator's namespace, only when sharded)
and the settings the replicas read (docs/operator.md, "Sharding")."""

from __future__ import annotations

from pathlib import Path

from relora_operator.settings import Settings

from tests.chart.chartlib import NAMESPACE, RELEASE, env_refs, env_values, of_kind, one, rejection, render

FULLNAME = f"{RELEASE}-relora-operator"


def test_unsharded_by_default_no_lease_permissions(tmp_path: Path) -> None:
    docs = render(tmp_path)
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    rules = [r for d in of_kind(docs, "Role") + of_kind(docs, "ClusterRole") for r in d["rules"]]
    assert not [r for r in rules if "coordination.k8s.io" in r["apiGroups"]]
    assert Settings.from_env(env_values(docs)).shards == 1


def test_sharded_replicas_get_leases_in_their_own_namespace_only(tmp_path: Path) -> None:
    docs = render(tmp_path, {"sharding": {"shards": 8, "replicas": 3, "leaseSeconds": 20}})
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 3 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    settings = Settings.from_env(env_values(docs))
    assert (settings.shards, settings.shard_lease_seconds, settings.lease_namespace) == (8, 20.0, "")
    refs = env_refs(docs)
    assert refs["POD_NAME"]["fieldRef"]["fieldPath"] == "metadata.name"  # the replica's identity
    assert refs["POD_NAMESPACE"]["fieldRef"]["fieldPath"] == "metadata.namespace"  # where the Leases live
    (role,) = [r for r in of_kind(docs, "Role") if r["metadata"]["name"] == f"{FULLNAME}-leases"]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list", "create", "update", "delete"]}
    ]
    (binding,) = [b for b in of_kind(docs, "RoleBinding") if b["metadata"]["name"] == f"{FULLNAME}-leases"]
    assert binding["roleRef"]["name"] == f"{FULLNAME}-leases" and binding["metadata"]["namespace"] == NAMESPACE
    cluster_rules = [r for d in of_kind(docs, "ClusterRole") for r in d["rules"]]
    assert not [r for r in cluster_rules if "coordination.k8s.io" in r["apiGroups"]]


def test_replicas_without_shards_are_refused(tmp_path: Path) -> None:
    assert "sharding.replicas > 1 needs sharding.shards > 1" in rejection(tmp_path, {"sharding": {"replicas": 2}})
