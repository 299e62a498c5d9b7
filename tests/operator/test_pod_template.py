"""The platform's worker pod settings (RELORA_WORKER_POD_TEMPLATE) on both kinds of worker Job, the optional S3
Secret, and projection Jobs through Kueue."""

from __future__ import annotations

import json
from typing import Any

import pytest
from relora_operator import naming, views
from relora_operator.builders.jobs import build_adaptation_job, build_projection_job
from relora_operator.decisions import plan_adapter
from relora_operator.release_status import release_status
from relora_operator.settings import Settings

from tests.operator.factories import adapter, release_body, releases

TEMPLATE: dict[str, Any] = {
    "serviceAccountName": "relora-worker",
    "imagePullSecrets": [{"name": "registry-creds"}],
    "labels": {"team": "ml-platform", "cost-center": "42"},
    "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100"]}]}]
            }
        }
    },
    "priorityClassName": "batch-low",
    "env": [
        {"name": "AWS_REGION", "value": "eu-west-1"},
        {"name": "HF_HOME", "value": "/cache/hf"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "token"}}},
    ],
    "envFrom": [{"configMapRef": {"name": "proxy-settings"}}],
    "volumes": [{"name": "cache", "persistentVolumeClaim": {"claimName": "model-cache"}}],
    "volumeMounts": [{"name": "cache", "mountPath": "/cache", "readOnly": False}],
}


def _settings(**env: str) -> Settings:
    return Settings.from_env({"RELORA_ARTIFACT_ROOT": "s3://bucket/root", **env})


def _jobs(settings: Settings) -> list[dict[str, Any]]:
    a = adapter()
    plan = plan_adapter(a, releases("v1", "v2"), settings)
    assert plan.projection is not None and plan.adaptation is not None
    return [build_adaptation_job(settings, a.spec, plan.adaptation), build_projection_job(settings, plan.projection)]


def test_template_is_laid_over_both_kinds_of_job() -> None:
    s = _settings(RELORA_WORKER_POD_TEMPLATE=json.dumps(TEMPLATE))
    plain = _jobs(_settings())
    for job, before in zip(_jobs(s), plain, strict=True):
        pod, meta = job["spec"]["template"]["spec"], job["spec"]["template"]["metadata"]
        c = pod["containers"][0]
        assert pod["serviceAccountName"] == "relora-worker"
        assert pod["automountServiceAccountToken"] is False  # never an API token, whatever the SA
        assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
        assert pod["priorityClassName"] == "batch-low"
        assert pod["affinity"] == TEMPLATE["affinity"]
        # The operator's labels are all still there (selection, Kueue); the template's are added.
        assert meta["labels"] == {**before["spec"]["template"]["metadata"]["labels"], **TEMPLATE["labels"]}
        assert meta["annotations"] == TEMPLATE["annotations"]
        assert job["metadata"]["labels"] == before["metadata"]["labels"]  # the Job's own labels untouched
        # /tmp stays first and the operator's; the template's volume is added.
        assert [v["name"] for v in pod["volumes"]] == ["tmp", "cache"]
        assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}, TEMPLATE["volumeMounts"][0]]
        env = {e["name"]: e for e in c["env"]}
        assert env["HF_HOME"] == {"name": "HF_HOME", "value": "/cache/hf"}  # the template's replaces the default
        assert [e["name"] for e in c["env"]].count("HF_HOME") == 1
        assert env["AWS_REGION"]["value"] == "eu-west-1" and "valueFrom" in env["TOKEN"]
        assert env["HOME"]["value"] == "/tmp"  # the rest of the operator's env stays
        assert c["envFrom"] == [{"configMapRef": {"name": "proxy-settings"}}]
        assert c["securityContext"] == before["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        assert pod["securityContext"] == before["spec"]["template"]["spec"]["securityContext"]
    # The settings object is not changed by building Jobs (each Job gets its own copy).
    assert s.worker_pod_template["volumes"] == TEMPLATE["volumes"]
    first, again = _jobs(s)[0], _jobs(s)[0]
    first["spec"]["template"]["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"] = "changed"
    assert again["spec"]["template"]["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"] == "model-cache"


def test_no_template_changes_nothing() -> None:
    job = _jobs(_settings())[0]
    pod = job["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod and "affinity" not in pod and "priorityClassName" not in pod
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ({"serviceAcountName": "x"}, "unknown field(s) ['serviceAcountName']"),
        ({"serviceAccountName": "Not_A_Name"}, ".serviceAccountName: expected a DNS subdomain"),
        ({"labels": {naming.LABEL_COMPONENT: "x"}}, f".labels.{naming.LABEL_COMPONENT}:"),
        ({"labels": {naming.LABEL_QUEUE: "sneaky"}}, f".labels.{naming.LABEL_QUEUE}:"),
        ({"labels": {"team": "a b"}}, ".labels.team: expected a string label value"),
        ({"imagePullSecrets": ["creds"]}, ".imagePullSecrets: expected a list of objects"),
        ({"affinity": {"nodeSelector": {}}}, ".affinity: expected an Affinity object"),
        ({"env": [{"name": "A", "value": "1", "valueFrom": {}}]}, ".env[0] (A): expected {name, value}"),
        ({"env": [{"name": "1 A", "value": "1"}]}, ".env[0].name:"),
        ({"envFrom": [{"secretRef": {}}]}, ".envFrom[0]: expected a reference with a name"),
        ({"volumes": [{"name": "tmp", "emptyDir": {}}]}, ".volumes[0].name: expected a name other than 'tmp'"),
        ({"volumes": [{"name": "a", "emptyDir": {}, "secret": {}}]}, ".volumes[0] (a): expected a name and exactly"),
        ({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, ".volumeMounts[0].name: expected one of"),
        (
            {"volumes": [{"name": "a", "emptyDir": {}}], "volumeMounts": [{"name": "a", "mountPath": "/tmp/"}]},
            ".volumeMounts[0].mountPath: expected an absolute path other than / and /tmp",
        ),
    ],
)
def test_bad_templates_stop_the_operator_naming_the_field(template: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match="RELORA_WORKER_POD_TEMPLATE") as err:
        _settings(RELORA_WORKER_POD_TEMPLATE=json.dumps(template))
    assert field in str(err.value)


def test_errors_never_echo_env_values() -> None:
    secret = "hunter2-very-secret"
    for raw in (
        json.dumps({"env": [{"name": "PASSWORD", "value": secret, "valueFrom": {}}]}),
        '{"env": [{"name": "PASSWORD", "value": "' + secret + '"',  # not JSON
    ):
        with pytest.raises(ValueError) as err:
            _settings(RELORA_WORKER_POD_TEMPLATE=raw)
        assert secret not in str(err.value), err.value


def test_s3_secret_is_optional() -> None:
    """Every key of the static-key Secret is optional: without it the pod starts and uses the default AWS
    credential chain (IRSA / Pod Identity / a profile file from the template)."""
    for job in _jobs(_settings(RELORA_S3_SECRET="s3-creds")):
        refs = [e["valueFrom"]["secretKeyRef"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
                if "valueFrom" in e]
        assert {r["key"] for r in refs} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                             "AWS_ENDPOINT_URL"}
        assert all(r["optional"] is True and r["name"] == "s3-creds" for r in refs)
    # No Secret configured at all: no reference to one.
    s = Settings(artifact_root="s3://bucket/root", s3_secret_name="", worker_s3_endpoint="http://minio:9000")
    env = _jobs(s)[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert not [e for e in env if "valueFrom" in e]
    assert {"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"} in env


def test_projection_jobs_go_through_kueue() -> None:
    plain = _jobs(_settings())[1]
    assert naming.LABEL_QUEUE not in plain["metadata"]["labels"] and "suspend" not in plain["spec"]
    for env, queue in (
        ({"RELORA_DEFAULT_QUEUE_NAME": "gpu"}, "gpu"),
        ({"RELORA_DEFAULT_QUEUE_NAME": "gpu", "RELORA_PROJECTION_QUEUE_NAME": "gpu-big"}, "gpu-big"),
        ({"RELORA_PROJECTION_QUEUE_NAME": "gpu-big"}, "gpu-big"),
    ):
        job = _jobs(_settings(**env))[1]
        assert job["metadata"]["labels"][naming.LABEL_COMPONENT] == naming.COMPONENT_PROJECTION
        assert job["metadata"]["labels"][naming.LABEL_QUEUE] == queue, env
        assert job["spec"]["template"]["metadata"]["labels"][naming.LABEL_QUEUE] == queue
        assert job["spec"]["suspend"] is True  # Kueue admits it by un-suspending


def test_release_with_a_projection_queued_in_kueue_is_projecting() -> None:
    release = views.release_view(release_body("v2", supersedes="v1"))
    queued = [{"fromRelease": "v1", "rank": 16, "targetModules": ["q_proj"], "job": "p", "uri": "s3://x/",
               "state": "Suspended"}]
    status = release_status(release, newest=True, supersedes="v1", adapters=[], projections=queued,
                            now="2026-01-01T00:00:10Z")
    assert status["phase"] == "Projecting"
    assert next(c for c in status["conditions"] if c["type"] == "Progressing")["reason"] == "Projecting"
