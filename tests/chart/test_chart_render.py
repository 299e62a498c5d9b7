"""The chart without a cluster: lint, rendering with the defaults and with every optional feature, RBAC, the
operator's settings, the CRDs (identical to crds/), values documentation and schema rejections."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from relora_operator.settings import Settings

from tests.chart.chartlib import (
    CHART,
    CRDS,
    EXPECTED_RULES,
    NAMESPACE,
    RELEASE,
    container,
    env_refs,
    env_values,
    helm,
    of_kind,
    one,
    rejection,
    render,
)

FULLNAME = f"{RELEASE}-relora-operator"
SETTING_ENVS = {f.metadata["env"]: f for f in fields(Settings)}

ALL_FEATURES: dict[str, Any] = {
    "image": {"digest": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "regcred"}],
    "watchNamespaces": ["team-a", "team-b"],
    "crds": {"enabled": False},
    "artifactRoot": "s3://ml-artifacts/relora",
    "s3": {"secretName": "minio-creds", "endpoint": "http://minio.minio:9000"},
    "worker": {
        "image": {"repository": "registry.example.com/relora-worker", "tag": "0.1.0-cu128", "pullPolicy": "Always"},
        "command": "python -m relora_worker",
        "runAsUser": 2000,
        "tmpSize": "100Gi",
        "cpu": "8",
        "memory": "64Gi",
        "gpu": {"resourceName": "amd.com/gpu", "count": 2, "projectionCount": 4},
        "nodeSelector": {"gpu.example.com/pool": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "backoffLimit": 1,
        "activeDeadlineSeconds": 86400,
        "queueName": "gpu-queue",
    },
    "concurrency": {"maxJobs": 4, "maxJobsPerRelease": 2},
    "resyncSeconds": 2.5,
    "historyLimit": 3,
    "apiWorkers": 8,
    "logging": {"format": "text", "level": "DEBUG"},
    "metrics": {
        "port": 9090,
        "service": {"port": 9091, "annotations": {"prometheus.io/scrape": "true"}},
        "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "10s", "labels": {"release": "kps"}},
    },
    "health": {"port": 9092},
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    "podAnnotations": {"example.com/team": "ml"},
    "podLabels": {"team": "ml"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "priorityClassName": "system-cluster-critical",
}


def test_helm_lint() -> None:
    out = helm("lint", "--strict", str(CHART)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    helm(
        "lint", "--strict", str(CHART), "--set", "metrics.serviceMonitor.enabled=true", "--set", "watchNamespaces={a,b}"
    )


def test_defaults_render_a_secure_cluster_wide_operator(tmp_path: Path) -> None:
    docs = render(tmp_path)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Pod",  # the `helm test` hook (test_chart_platform.py)
        ]
    )
    dep = one(docs, "Deployment")
    assert dep["metadata"]["namespace"] == NAMESPACE
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == FULLNAME == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    c = container(docs)
    assert c["image"] == "ghcr.io/relora-operator/relora-operator:0.1.0"
    assert c["command"] == ["relora-operator"]
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # read-only root: HOME is /tmp

    env = env_values(docs)
    assert env["RELORA_NAMESPACES"] == ""
    assert env["RELORA_WORKER_IMAGE"] == "ghcr.io/relora-operator/relora-worker:0.1.0"
    assert env["RELORA_S3_SECRET"] == "relora-s3"
    # The operator's own S3 access comes from the same Secret, optional (file:// roots need none).
    refs = env_refs(docs)
    assert set(refs) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"}
    for name, ref in refs.items():
        assert ref == {"secretKeyRef": {"name": "relora-s3", "key": name, "optional": True}}

    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_every_setting_is_set_from_values_and_parses(tmp_path: Path) -> None:
    """The chart sets every operator setting (exact env names), and the operator parses what it renders."""
    for values, namespaces in ((None, ()), (ALL_FEATURES, ("team-a", "team-b"))):
        env = env_values(render(tmp_path, values))
        relora = {k: v for k, v in env.items() if k.startswith("RELORA_")}
        assert set(relora) == set(SETTING_ENVS), set(relora) ^ set(SETTING_ENVS)
        settings = Settings.from_env(relora)
        assert settings.namespaces == namespaces
    s = Settings.from_env({k: v for k, v in env_values(render(tmp_path, ALL_FEATURES)).items()})
    assert s.worker_image == "registry.example.com/relora-worker:0.1.0-cu128"
    assert s.worker_image_pull_policy == "Always"
    assert s.worker_command == ("python", "-m", "relora_worker")
    assert (s.worker_run_as_user, s.worker_tmp_size_limit, s.worker_cpu, s.worker_memory) == (
        2000,
        "100Gi",
        "8",
        "64Gi",
    )
    assert (s.gpu_resource_name, s.default_gpus, s.projection_gpus) == ("amd.com/gpu", 2, 4)
    assert dict(s.default_node_selector) == {"gpu.example.com/pool": "a100"}
    assert [dict(t) for t in s.default_tolerations] == ALL_FEATURES["worker"]["tolerations"]
    assert s.s3_secret_name == "minio-creds" and s.artifact_root == "s3://ml-artifacts/relora"
    assert (s.max_concurrent_jobs, s.max_concurrent_jobs_per_release) == (4, 2)
    assert (s.job_backoff_limit, s.job_active_deadline_seconds) == (1, 86400)
    assert (s.resync_seconds, s.history_limit, s.api_workers) == (2.5, 3, 8)
    assert (s.metrics_port, s.liveness_port, s.log_format, s.log_level) == (9090, 9092, "text", "DEBUG")
    # Defaults of the chart = defaults of the operator, except where the chart documents otherwise.
    assert Settings.from_env(env_values(render(tmp_path))) == Settings()


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(tmp_path: Path) -> None:
    docs = render(tmp_path)
    role = one(docs, "ClusterRole")
    assert role["rules"] == EXPECTED_RULES
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": FULLNAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")
    flat = [
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    ]
    assert not [f for f in flat if "*" in f], "no wildcards"
    assert not [f for f in flat if f[1] in ("secrets", "configmaps", "namespaces", "customresourcedefinitions")]
    assert not [f for f in flat if f[2] in ("delete", "deletecollection", "escalate", "bind", "impersonate")]


def test_every_optional_feature(tmp_path: Path) -> None:
    docs = render(tmp_path, ALL_FEATURES)
    # Namespaced: a Role and RoleBinding per watched namespace, nothing cluster-wide.
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    roles, bindings = of_kind(docs, "Role"), of_kind(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert all(r["rules"] == EXPECTED_RULES for r in roles)
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    assert not of_kind(docs, "CustomResourceDefinition")

    monitor = one(docs, "ServiceMonitor")
    svc = one(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "honorLabels": True, "interval": "15s", "scrapeTimeout": "10s"}
    ]
    assert svc["spec"]["ports"][0]["port"] == 9091 and svc["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true"
    }

    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == ALL_FEATURES["tolerations"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert dep["spec"]["template"]["metadata"]["annotations"] == {"example.com/team": "ml"}
    assert dep["spec"]["template"]["metadata"]["labels"]["team"] == "ml"
    c = container(docs)
    assert c["image"] == "ghcr.io/relora-operator/relora-operator@sha256:" + "a" * 64
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 9090, "health": 9092}
    env = env_values(docs)
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["AWS_ENDPOINT_URL"] == "http://minio.minio:9000"  # the value wins over the Secret's key
    refs = env_refs(docs)
    assert "AWS_ENDPOINT_URL" not in refs and refs["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "minio-creds"
    assert [e["name"] for e in c["env"]].count("AWS_ENDPOINT_URL") == 1
    # The worker pods get the same endpoint and the default Kueue queue through the operator's settings.
    assert env["RELORA_S3_ENDPOINT"] == "http://minio.minio:9000"
    assert env["RELORA_DEFAULT_QUEUE_NAME"] == "gpu-queue"


def test_service_monitor_needs_the_service(tmp_path: Path) -> None:
    err = rejection(tmp_path, {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in err
    docs = render(tmp_path, {"metrics": {"service": {"enabled": False}}, "rbac": {"create": False}})
    assert not of_kind(docs, "Service") and not of_kind(docs, "ClusterRole")


def test_existing_service_account(tmp_path: Path) -> None:
    docs = render(tmp_path, {"serviceAccount": {"create": False, "name": "ops-operator"}})
    assert not of_kind(docs, "ServiceAccount")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops-operator"
    assert one(docs, "ClusterRoleBinding")["subjects"][0]["name"] == "ops-operator"
    err = rejection(tmp_path, {"serviceAccount": {"create": False}})
    assert "serviceAccount.name is required" in err


def test_crds_are_the_repositorys_and_kept_on_uninstall(tmp_path: Path) -> None:
    copies = CHART / "files" / "crds"
    sources = sorted(CRDS.glob("*.yaml"))
    assert sources
    assert sorted(p.name for p in copies.glob("*.yaml")) == [p.name for p in sources]
    for src in sources:
        assert (copies / src.name).read_bytes() == src.read_bytes(), (
            f"{copies / src.name} differs from {src}: run `cp crds/*.yaml {copies.relative_to(CHART.parents[1])}/`"
        )
    rendered = {d["metadata"]["name"]: d for d in of_kind(render(tmp_path), "CustomResourceDefinition")}
    for src in sources:
        expected = yaml.safe_load(src.read_text())
        got = rendered.pop(expected["metadata"]["name"])
        assert got["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert expected["metadata"]["labels"].items() <= got["metadata"]["labels"].items()
        strip = lambda d: {k: v for k, v in d.items() if k != "metadata"}  # noqa: E731
        assert strip(got) == strip(expected)
        assert {k: v for k, v in got["metadata"].items() if k not in ("labels", "annotations")} == {
            k: v for k, v in expected["metadata"].items() if k not in ("labels", "annotations")
        }
    assert not rendered


# --- values.yaml and values.schema.json -------------------------------------------------------------------


def _schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def _structured_paths(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Value paths the schema spells out (objects with additionalProperties: false), to their schema."""
    out: dict[str, dict[str, Any]] = {}
    if schema.get("additionalProperties") is False:
        for key, sub in schema.get("properties", {}).items():
            path = f"{prefix}.{key}" if prefix else key
            out[path] = sub
            out.update(_structured_paths(sub, path))
    return out


def _values_lines() -> list[tuple[str, str, int]]:
    """(dotted path, previous non-blank line, line number) of every key line of values.yaml."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    out = []
    prev = ""
    for n, line in enumerate(lines, 1):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if m and not line.lstrip().startswith("#"):
            indent = len(m.group(1))
            stack = [(i, k) for i, k in stack if i < indent]
            stack.append((indent, m.group(2)))
            out.append((".".join(k for _, k in stack), prev, n))
        if line.strip():
            prev = line.strip()
    return out


def test_every_value_is_documented_and_in_the_schema() -> None:
    structured = _structured_paths(_schema())
    seen = set()
    for path, prev, n in _values_lines():
        if path not in structured:
            # Only allowed inside a free-form value (securityContext, resources.requests, ...), documented above it.
            parts = path.split(".")
            ancestors = [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]
            owner = next((a for a in ancestors if a in structured), None)
            assert owner and structured[owner].get("additionalProperties") is not False, (
                f"values.yaml:{n}: {path} is not in values.schema.json"
            )
            continue
        seen.add(path)
        assert prev.startswith("#"), f"values.yaml:{n}: {path} has no comment above it"
        assert structured[path].get("description"), f"values.schema.json: {path} has no description"
    assert set(structured) == seen, f"in the schema but not in values.yaml: {set(structured) - seen}"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"worker": {"gpus": 2}}, "at '/worker': additional properties 'gpus' not allowed"),
        ({"worker": {"gpu": {"count": "two"}}}, "at '/worker/gpu/count': got string, want integer"),
        ({"worker": {"gpu": {"count": -1}}}, "at '/worker/gpu/count'"),
        ({"watchNamespaces": "team-a"}, "at '/watchNamespaces': got string, want array"),
        ({"watchNamespaces": ["Team_A"]}, "at '/watchNamespaces/0'"),
        ({"logging": {"level": "verbose"}}, "at '/logging/level'"),
        ({"crds": {"enabled": "yes"}}, "at '/crds/enabled': got string, want boolean"),
        ({"artifactRoot": "http://bucket/x"}, "at '/artifactRoot'"),
        ({"worker": {"nodeSelector": {"pool": 1}}}, "at '/worker/nodeSelector/pool': got number, want string"),
        ({"worker": {"tolerations": [{"key": "a", "operator": "Maybe"}]}}, "at '/worker/tolerations/0/operator'"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "at '/podSecurityContext/runAsNonRoot'"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "at '/securityContext/allowPrivilegeEscalation'"),
        ({"metrics": {"serviceMonitor": {"interval": 30}}}, "at '/metrics/serviceMonitor/interval'"),
    ],
)
def test_schema_rejects_bad_values(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    err = rejection(tmp_path, values)
    assert "values don't meet the specifications of the schema" in err
    assert message in err, err


def test_packaged_chart_renders_the_same(tmp_path: Path) -> None:
    """`helm package` keeps what the templates read (files/crds/, the schema)."""
    helm("package", str(CHART), "-d", str(tmp_path))
    (tgz,) = tmp_path.glob("relora-operator-*.tgz")
    out = helm("template", RELEASE, str(tgz), "-n", NAMESPACE).stdout
    packaged = [d for d in yaml.safe_load_all(out) if d]
    assert packaged == render(tmp_path)
    assert "additional properties" in helm("template", RELEASE, str(tgz), "--set", "bogus=1", check=False).stderr


def test_serving_rbac_is_opt_in_per_integration(tmp_path: Path) -> None:
    """Hand-off to serving (spec.serving): each integration's grant only when its value is on, and no delete."""
    serving_rules = {
        "aibrix": {
            "apiGroups": ["model.aibrix.ai"],
            "resources": ["modeladapters"],
            "verbs": ["get", "create", "update"],
        },
        "kserve": {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["llminferenceservices"],
            "verbs": ["get", "update"],
        },
        "configMap": {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
    }
    for name, rule in serving_rules.items():
        role = one(render(tmp_path, {"serving": {"rbac": {name: True}}}), "ClusterRole")
        assert role["rules"] == [*EXPECTED_RULES, rule], name
    docs = render(tmp_path, {"serving": {"rbac": dict.fromkeys(serving_rules, True)}, "watchNamespaces": ["team-a"]})
    assert one(docs, "Role")["rules"] == [*EXPECTED_RULES, *serving_rules.values()]


def test_batching_defaults_and_their_configmap_grant(tmp_path: Path) -> None:
    """Many adapters per Job: the values become the operator's defaults; ConfigMap create (the batch plans) is
    granted only when batching can happen (maxAdaptersPerJob > 1, or batching.rbac for spec.batching alone)."""
    plan_rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}
    docs = render(tmp_path, {"batching": {"maxAdaptersPerJob": 8, "maxGpuMinutesPerJob": 240}})
    env = env_values(docs)
    assert (env["RELORA_BATCH_MAX_ADAPTERS_PER_JOB"], env["RELORA_BATCH_MAX_GPU_MINUTES_PER_JOB"]) == ("8", "240")
    settings = Settings.from_env(env)
    assert (settings.batch_max_adapters_per_job, settings.batch_max_gpu_minutes_per_job) == (8, 240)
    assert one(docs, "ClusterRole")["rules"] == [*EXPECTED_RULES, plan_rule]
    assert one(render(tmp_path, {"batching": {"rbac": True}}), "ClusterRole")["rules"] == [*EXPECTED_RULES, plan_rule]
    assert one(render(tmp_path), "ClusterRole")["rules"] == EXPECTED_RULES
    bad = helm("template", RELEASE, str(CHART), "--set", "batching.maxAdaptersPerJob=0", check=False)
    assert bad.returncode != 0 and "maxAdaptersPerJob" in bad.stderr
