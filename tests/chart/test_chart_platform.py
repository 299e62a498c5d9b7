"""The chart in a real platform: worker pod settings that reach the Jobs, the worker ServiceAccount, Kubernetes'
toleration rules in the schema, the chart as a subchart of an umbrella chart (`global` accepted), the
PrometheusRule and the Grafana dashboard (every query parsed by a PromQL parser, every metric and label checked
against what the operator exports) and the `helm test` hook. Rendering only (`helm template`); the hook and the
cloud identity also run on the test control plane (test_chart_cluster.py, test_chart_cloud_identity.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from relora_operator import metrics, views
from relora_operator.builders.jobs import build_adaptation_job, build_projection_job
from relora_operator.decisions import plan_adapter
from relora_operator.family_metrics import ADAPTER_PHASES, JOB_STATES, ROLLOUT_STATES, FamilyCollector
from relora_operator.settings import Settings

from tests.chart.chartlib import CHART, NAMESPACE, RELEASE, env_values, helm, of_kind, one, rejection, render
from tests.operator.factories import adapter, job, release_body, releases

FULLNAME = f"{RELEASE}-relora-operator"
WORKER: dict[str, Any] = {
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/relora"}},
    "imagePullSecrets": [{"name": "registry-creds"}],
    "podLabels": {"team": "ml", "cost-center": "42"},
    "podAnnotations": {"karpenter.sh/do-not-disrupt": "true"},
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "karpenter.k8s.aws/instance-gpu-name", "operator": "In",
                                           "values": ["h100"]}]}
                ]
            }
        }
    },
    "priorityClassName": "ml-batch",
    "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}, {"name": "HF_HOME", "value": "/cache/hf"}],
    "extraEnvFrom": [{"configMapRef": {"name": "proxy"}}],
    "extraVolumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "hf-cache"}}],
    "extraVolumeMounts": [{"name": "cache", "mountPath": "/cache"}],
    "queueName": "gpu",
    "projectionQueueName": "gpu-projection",
}


def _settings(docs: list[dict[str, Any]]) -> Settings:
    return Settings.from_env({k: v for k, v in env_values(docs).items() if k.startswith("RELORA_")})


def _worker_jobs(settings: Settings) -> list[dict[str, Any]]:
    a = adapter()
    plan = plan_adapter(a, releases("v1", "v2"), settings)
    assert plan.adaptation is not None and plan.projection is not None
    return [build_adaptation_job(settings, a.spec, plan.adaptation), build_projection_job(settings, plan.projection)]


# --- worker pod template ------------------------------------------------------------------------------------


def test_worker_values_reach_every_worker_job(tmp_path: Path) -> None:
    """values -> RELORA_WORKER_POD_TEMPLATE -> the operator's settings -> both kinds of Job."""
    docs = render(tmp_path, {"watchNamespaces": ["team-a", "team-b"], "worker": WORKER})
    s = _settings(docs)
    for built in _worker_jobs(s):
        pod, meta = built["spec"]["template"]["spec"], built["spec"]["template"]["metadata"]
        c = pod["containers"][0]
        assert pod["serviceAccountName"] == "relora-worker" and pod["automountServiceAccountToken"] is False
        assert pod["imagePullSecrets"] == WORKER["imagePullSecrets"]
        assert pod["priorityClassName"] == "ml-batch" and pod["affinity"] == WORKER["affinity"]
        assert WORKER["podLabels"].items() <= meta["labels"].items()
        assert meta["annotations"] == WORKER["podAnnotations"]
        env = {e["name"]: e for e in c["env"]}
        assert env["AWS_REGION"]["value"] == "eu-west-1" and env["HF_HOME"]["value"] == "/cache/hf"
        assert c["envFrom"] == WORKER["extraEnvFrom"]
        assert pod["volumes"][1:] == WORKER["extraVolumes"] and c["volumeMounts"][1:] == WORKER["extraVolumeMounts"]
        # Kueue for both kinds: adaptations in worker.queueName, projections in worker.projectionQueueName.
        component = built["metadata"]["labels"]["app.kubernetes.io/component"]
        queue = {"adaptation": "gpu", "projection": "gpu-projection"}[component]
        assert built["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == queue and built["spec"]["suspend"] is True


def test_worker_service_account(tmp_path: Path) -> None:
    # Namespaced install: one ServiceAccount per watched namespace, no token, the cloud identity annotation.
    docs = render(tmp_path, {"watchNamespaces": ["team-a", "team-b"], "worker": WORKER})
    workers = [sa for sa in of_kind(docs, "ServiceAccount") if sa["metadata"]["name"] == "relora-worker"]
    assert sorted(sa["metadata"]["namespace"] for sa in workers) == ["team-a", "team-b"]
    for sa in workers:
        assert sa["automountServiceAccountToken"] is False
        assert sa["metadata"]["annotations"] == WORKER["serviceAccount"]["annotations"]
        assert sa["imagePullSecrets"] == WORKER["imagePullSecrets"]
    # Nothing may bind a Role to it: the chart's only bindings are the operator's.
    for binding in [*of_kind(docs, "RoleBinding"), *of_kind(docs, "ClusterRoleBinding")]:
        assert [s["name"] for s in binding["subjects"]] == [FULLNAME]
    # Explicit namespaces win over watchNamespaces.
    docs = render(tmp_path, {"worker": {"serviceAccount": {"namespaces": ["ml"]}}})
    assert [sa["metadata"]["namespace"] for sa in of_kind(docs, "ServiceAccount") if sa["metadata"]["name"] ==
            "relora-worker"] == ["ml"]
    assert _settings(docs).worker_pod_template == {"serviceAccountName": "relora-worker"}
    # Cluster-wide without namespaces: nowhere to create it, so the pods keep each namespace's default.
    docs = render(tmp_path)
    assert [sa["metadata"]["name"] for sa in of_kind(docs, "ServiceAccount")] == [FULLNAME]
    assert _settings(docs).worker_pod_template == {}
    # One you manage yourself (e.g. per-namespace IRSA roles).
    docs = render(tmp_path, {"worker": {"serviceAccount": {"create": False, "name": "ml-s3-reader"}}})
    assert _settings(docs).worker_pod_template == {"serviceAccountName": "ml-s3-reader"}
    assert len(of_kind(docs, "ServiceAccount")) == 1
    err = rejection(tmp_path, {"watchNamespaces": ["a"], "worker": {"serviceAccount": {"name": ""}}})
    assert "worker.serviceAccount.name is required" in err


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # Kubernetes' toleration rules (a bad one would be refused only when the Job is created).
        ({"worker": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}},
         "at '/worker/tolerations/0/value': value must be ''"),
        ({"worker": {"tolerations": [{"operator": "Equal", "value": "x"}]}},
         "at '/worker/tolerations/0/operator': value must be 'Exists'"),
        ({"worker": {"tolerations": [{"key": "a", "operator": "Exists", "tolerationSeconds": 60}]}},
         "at '/worker/tolerations/0': missing property 'effect'"),
        ({"worker": {"tolerations": [{"key": "a", "operator": "Exists", "effect": "NoSchedule",
                                      "tolerationSeconds": 60}]}},
         "at '/worker/tolerations/0/effect': value must be 'NoExecute'"),
        ({"worker": {"tolerations": [{"key": "bad key", "operator": "Exists"}]}}, "at '/worker/tolerations/0/key'"),
        ({"tolerations": [{"key": "a", "operator": "Exists", "value": "b"}]}, "at '/tolerations/0/value'"),
        # Pod template values.
        ({"worker": {"podLabels": {"app.kubernetes.io/component": "x"}}},
         "invalid propertyName 'app.kubernetes.io/component'"),
        ({"worker": {"podLabels": {"team": "not a value"}}}, "at '/worker/podLabels/team'"),
        ({"worker": {"affinity": {"nodeSelector": {}}}}, "invalid propertyName 'nodeSelector'"),
        ({"worker": {"priorityClassName": "Not_Valid"}}, "at '/worker/priorityClassName'"),
        ({"worker": {"extraEnv": [{"name": "A", "value": "1", "valueFrom": {}}]}}, "at '/worker/extraEnv/0'"),
        ({"worker": {"extraEnvFrom": [{"prefix": "X_"}]}}, "at '/worker/extraEnvFrom/0'"),
        ({"worker": {"extraVolumes": [{"name": "tmp", "emptyDir": {}}]}}, "at '/worker/extraVolumes/0/name'"),
        ({"worker": {"extraVolumeMounts": [{"name": "a", "mountPath": "/tmp"}]}},
         "at '/worker/extraVolumeMounts/0/mountPath'"),
        ({"worker": {"serviceAccount": {"namespaces": ["Team_A"]}}}, "at '/worker/serviceAccount/namespaces/0'"),
        ({"metrics": {"prometheusRule": {"stalledAfter": "two hours"}}}, "at '/metrics/prometheusRule/stalledAfter'"),
        ({"metrics": {"maxFamilies": 0}}, "at '/metrics/maxFamilies'"),
    ],
)
def test_schema_rejects_bad_platform_values(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    err = rejection(tmp_path, values)
    assert "values don't meet the specifications of the schema" in err
    assert message in err, err


def test_mounts_must_name_a_volume(tmp_path: Path) -> None:
    err = rejection(tmp_path, {"worker": {"extraVolumeMounts": [{"name": "aws", "mountPath": "/var/run/aws"}]}})
    assert 'worker.extraVolumeMounts: "aws" is not the name of one of worker.extraVolumes []' in err
    err = rejection(tmp_path, {"extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/extra"}]})
    assert 'extraVolumeMounts: "ca" is not the name of one of extraVolumes []' in err


def test_operator_extra_volumes_and_env_from(tmp_path: Path) -> None:
    values = {
        "extraVolumes": [{"name": "aws", "secret": {"secretName": "aws-profile"}}],
        "extraVolumeMounts": [{"name": "aws", "mountPath": "/var/run/aws", "readOnly": True}],
        "extraEnvFrom": [{"secretRef": {"name": "proxy"}}],
    }
    pod = one(render(tmp_path, values), "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}, *values["extraVolumes"]]
    c = pod["containers"][0]
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}, *values["extraVolumeMounts"]]
    assert c["envFrom"] == values["extraEnvFrom"]


# --- subchart ---------------------------------------------------------------------------------------------


def _umbrella(tmp_path: Path, values: dict[str, Any]) -> Path:
    """A parent chart that depends on this one through file://, with `helm dependency update`."""
    parent = tmp_path / "platform"
    (parent / "templates").mkdir(parents=True)
    (parent / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "platform", "version": "1.0.0",
        "dependencies": [{"name": "relora-operator", "version": "0.1.0", "repository": f"file://{CHART}",
                          "condition": "relora-operator.enabled"}],
    }))
    (parent / "values.yaml").write_text(yaml.safe_dump(values))
    helm("dependency", "update", "--skip-refresh", str(parent))
    assert (parent / "charts" / "relora-operator-0.1.0.tgz").exists()
    return parent


def test_renders_as_a_subchart_with_globals(tmp_path: Path) -> None:
    values = {
        "global": {"imageRegistry": "registry.example.com", "storageClass": "gp3", "labels": {"env": "prod"}},
        "relora-operator": {
            "enabled": True,
            "watchNamespaces": ["ml"],
            "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                        "dashboard": {"enabled": True}},
        },
    }
    # `enabled` is the umbrella's condition, not a value of this chart: the schema lets the parent use it.
    parent = _umbrella(tmp_path, values)
    out = helm("template", "platform", str(parent), "-n", NAMESPACE).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    dep = one(docs, "Deployment")
    assert dep["metadata"]["name"] == "platform-relora-operator"
    assert {"ServiceMonitor", "PrometheusRule", "ConfigMap", "Pod"} <= {d["kind"] for d in docs}
    assert one(docs, "PrometheusRule")["metadata"]["name"] == "platform-relora-operator"
    # The subchart's schema still guards its own values inside the parent.
    bad = helm("template", "platform", str(parent), "--set", "relora-operator.replicas=2", check=False)
    assert bad.returncode != 0 and "additional properties 'replicas' not allowed" in bad.stderr
    off = helm("template", "platform", str(parent), "--set", "relora-operator.enabled=false").stdout
    assert "relora-operator" not in off


# --- monitoring: what the operator exports ---------------------------------------------------------------


def _exported() -> dict[str, set[str]]:
    """Metric name -> label names, from the operator's real collectors with one of everything in them."""
    source = SimpleNamespace(
        adapters={("ns", "llama"): [adapter(status={"phase": "Ready", "targetRelease": "v2"})]},
        releases={("ns", "llama"): [views.release_view(release_body("v2", status={
            "phase": "RollingOut", "startTime": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "StorageAvailable", "status": "False"}]}))]},
        jobs={("ns", "j"): [job("j", state="Failed", failed=1)]},
    )
    registry = CollectorRegistry()
    registry.register(FamilyCollector(source))
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    # The operator's own counters, histogram and gauges (metrics.py), with their declared labels.
    for metric in (metrics.RECONCILE_ERRORS, metrics.JOBS_CREATED):
        labels[metric._name + "_total"] = set(metric._labelnames)
    for suffix in ("_bucket", "_count", "_sum"):
        labels[metrics.TIME_TO_READINESS._name + suffix] = {"le"} if suffix == "_bucket" else set()
    labels.update({"relora_taskadapters": {"phase", "ready"}, "relora_jobs": {"component", "state"},
                   "relora_adaptations_waiting": set()})
    # Prometheus' own, per scrape target (the ServiceMonitor's job is the Service's name).
    labels["up"] = {"job", "namespace", "instance", "service", "pod", "endpoint"}
    return labels


FIXED_VALUES = {"phase": set(ADAPTER_PHASES), "state": set(ROLLOUT_STATES) | set(JOB_STATES)}


def _check_query(expr: str, exported: dict[str, set[str]], where: str) -> set[str]:
    """Parses ``expr`` (PromQL) and checks every selector and grouping against the exported metrics; returns
    the metric names it reads."""
    try:
        ast = promql_parser.parse(expr)
    except ValueError as exc:
        raise AssertionError(f"{where}: not PromQL: {exc}\n{expr}") from exc
    names: set[str] = set()
    groupings: list[list[str]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name in exported, f"{where}: {node.name} is not a metric the operator exports"
            names.add(node.name)
            for matcher in node.matchers.matchers:
                assert matcher.name in exported[node.name] | {"__name__"}, (
                    f"{where}: {node.name} has no label {matcher.name}"
                )
                if matcher.name in FIXED_VALUES and str(matcher.op) in ("MatchOp.Equal", "MatchOp.Re"):
                    values = set(matcher.value.split("|"))
                    assert values <= FIXED_VALUES[matcher.name], f"{where}: {matcher.name} {values}"
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            groupings.append(list(node.modifier.labels))
        return True

    promql_parser.walk(ast, visit)
    for group in groupings:
        assert any(set(group) <= exported[n] for n in names), f"{where}: grouping by {group} on {names}"
    return names


def test_prometheus_rule_alerts_parse_and_use_exported_series(tmp_path: Path) -> None:
    docs = render(tmp_path, {"metrics": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"},
                                                           "stalledAfter": "3h"}}})
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["labels"]["release"] == "kps"
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    alerts = {r["alert"]: r for r in rules}
    assert len(alerts) == len(rules)
    assert {"ReloraAdaptersDegraded", "ReloraReleaseStalled", "ReloraWorkerJobsFailed",
            "ReloraStorageUnavailable"} <= set(alerts)
    exported = _exported()
    read = {
        "ReloraAdaptersDegraded": {"relora_family_taskadapters"},
        "ReloraReleaseStalled": {"relora_release_adapters"},
        "ReloraWorkerJobsFailed": {"relora_family_jobs"},
        "ReloraStorageUnavailable": {"relora_storage_unavailable"},
    }
    for name, r in alerts.items():
        names = _check_query(r["expr"], exported, name)
        assert read.get(name, names) == names, name
        assert "for" not in r or promql_parser.parse_duration(r["for"]).total_seconds() > 0
        assert r["labels"]["severity"] == "warning" and r["annotations"]["summary"]
        # Prometheus' templates survive Helm's: $labels are passed through literally.
        for text in r["annotations"].values():
            assert "{{" not in text or re.search(r"\{\{ \$(labels\.\w+|value) \}\}", text), text
    assert "offset 3h" in alerts["ReloraReleaseStalled"]["expr"]
    assert f'up{{job="{FULLNAME}-metrics", namespace="{NAMESPACE}"}}' in alerts["ReloraOperatorDown"]["expr"]
    assert not of_kind(render(tmp_path), "PrometheusRule")


def test_grafana_dashboard_is_valid_and_its_queries_parse(tmp_path: Path) -> None:
    docs = render(tmp_path, {"metrics": {"dashboard": {"enabled": True, "annotations": {"grafana_folder": "ML"}}}})
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["annotations"]
    dash = json.loads(cm["data"]["relora-operator.json"])
    assert dash == json.loads((CHART / "files" / "dashboards" / "relora-operator.json").read_text())
    assert dash["uid"] == "relora-operator" and dash["panels"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    exported = _exported()

    def grafana(expr: str) -> str:
        # Grafana's substitutions, as it sends the query: $__rate_interval a duration, variables a regex.
        return expr.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$family", ".*")

    for name in ("namespace", "family"):
        query = variables[name]["query"]["query"]
        inner = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        assert inner and inner.group(2) == name, query
        _check_query(grafana(inner.group(1)), exported, f"variable {name}")
    ids, read = set(), set()
    for panel in dash["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            if "relora_family" in expr or "relora_release" in expr or "relora_storage" in expr:
                assert '$namespace' in expr and '$family' in expr, f"{panel['title']}: not filtered"
            read |= _check_query(grafana(expr), exported, panel["title"])
    # Every per-family series the operator exports is on the dashboard.
    assert {n for n in exported if n.startswith(("relora_family", "relora_release", "relora_storage"))} <= read


# --- helm test ---------------------------------------------------------------------------------------------


def test_helm_test_hook_pod(tmp_path: Path) -> None:
    out = helm("template", RELEASE, str(CHART), "-n", NAMESPACE, "--show-only", "templates/tests/test-metrics.yaml")
    pod = yaml.safe_load(out.stdout)
    assert pod["kind"] == "Pod" and pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    c = spec["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["command"][:2] == ["python", "-c"]
    assert c["env"] == [{"name": "RELORA_TEST_URL", "value": f"http://{FULLNAME}-metrics.{NAMESPACE}.svc:8080"}]
    compile(c["command"][2], "helm-test", "exec")  # valid Python
    # Without the metrics Service there is nothing to test (no pod), unless a URL is given.
    assert not of_kind(render(tmp_path, {"metrics": {"service": {"enabled": False}}}), "Pod")
    docs = render(tmp_path, {"metrics": {"service": {"enabled": False}}, "tests": {"url": "http://op:8080/"}})
    assert one(docs, "Pod")["spec"]["containers"][0]["env"][0]["value"] == "http://op:8080"


def test_packaged_chart_has_the_dashboard(tmp_path: Path) -> None:
    helm("package", str(CHART), "-d", str(tmp_path))
    (tgz,) = tmp_path.glob("relora-operator-*.tgz")
    shutil.unpack_archive(tgz, tmp_path / "unpacked")
    assert (tmp_path / "unpacked" / "relora-operator" / "files" / "dashboards" / "relora-operator.json").exists()


def test_base_cache_values_mount_the_cache_into_every_worker_job(tmp_path: Path) -> None:
    """worker.baseCache: one volume (the node's folder, or a claim) at the path the worker's cache reads."""
    for cache, source in (
        ({"enabled": True}, {"hostPath": {"path": "/var/cache/relora/base", "type": "DirectoryOrCreate"}}),
        ({"enabled": True, "claimName": "base-models"}, {"persistentVolumeClaim": {"claimName": "base-models"}}),
    ):
        s = _settings(render(tmp_path, {"worker": {**WORKER, "baseCache": cache}}))
        for built in _worker_jobs(s):
            pod = built["spec"]["template"]["spec"]
            c = pod["containers"][0]
            assert pod["volumes"][-1] == {"name": "relora-base-cache", **source}
            assert pod["volumes"][1:-1] == WORKER["extraVolumes"]  # the user's volumes stay
            assert c["volumeMounts"][-1] == {"name": "relora-base-cache", "mountPath": "/var/cache/relora-base"}
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["RELORA_BASE_CACHE_DIR"] == "/var/cache/relora-base" and env["AWS_REGION"] == "eu-west-1"
    s = _settings(render(tmp_path, {"worker": WORKER}))
    assert "RELORA_BASE_CACHE_DIR" not in {e["name"] for e in _worker_jobs(s)[0]["spec"]["template"]["spec"][
        "containers"][0]["env"]}
