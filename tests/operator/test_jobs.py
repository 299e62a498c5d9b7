from __future__ import annotations

from relora_operator import naming
from relora_operator.builders.jobs import build_adaptation_job, build_projection_job
from relora_operator.decisions import plan_adapter
from relora_operator.settings import Settings

from tests.operator.factories import adapter, releases

S = Settings.from_env({"RELORA_ARTIFACT_ROOT": "s3://bucket/root", "RELORA_S3_SECRET": "s3-creds"})


def _plan(**spec):  # type: ignore[no-untyped-def]
    return plan_adapter(adapter(**spec), releases("v1", "v2"), S)


def _container(job):  # type: ignore[no-untyped-def]
    return job["spec"]["template"]["spec"]["containers"][0]


def test_adaptation_job_is_locked_down() -> None:
    a, plan = adapter(), _plan()
    job = build_adaptation_job(S, a.spec, plan.adaptation)
    pod = job["spec"]["template"]["spec"]
    c = _container(job)
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {e["name"]: e.get("value") for e in c["env"]}["HOME"] == "/tmp"
    s3 = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert set(s3) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"}
    assert all(ref["name"] == "s3-creds" and ref["key"] == name for name, ref in s3.items())
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["args"][-2:] == ["--termination-message-path", "/dev/termination-log"]
    assert c["command"] == ["relora"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"  # a quantity string, as the API client requires


def test_retry_policy_does_not_retry_bad_input_or_below_threshold() -> None:
    job = build_adaptation_job(S, adapter().spec, _plan().adaptation)
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "worker", "operator": "In", "values": [2, 3]},
    }
    assert rules[1]["action"] == "Ignore"
    assert job["spec"]["backoffLimit"] == 2


def test_readapt_arguments_follow_the_contract() -> None:
    plan = _plan()
    args = _container(build_adaptation_job(S, adapter().spec, plan.adaptation))["args"]
    assert args[0] == "readapt"
    flags = dict(a.split("=", 1) for a in args if "=" in a)
    assert flags["--base-model"] == "s3://models/llama/v2/"
    assert flags["--adapter"] == "s3://adapters/sentiment/"
    assert flags["--projection"] == plan.projection.output_uri(S)
    assert flags["--output"].startswith("s3://bucket/root/adapters/team-a/sentiment/v2/")
    assert "--stop-at-ready" in args
    assert flags["--labels"] == "neg,pos" and flags["--alpha-bounds"] == "-2.0,1.0"
    assert flags["--old-release"] == "v1" and flags["--new-release"] == "v2"


def test_projection_job_and_uri() -> None:
    plan = _plan()
    job = build_projection_job(S, plan.projection)
    args = _container(job)["args"]
    assert args[:1] == ["project-delta"]
    assert plan.projection.output_uri(S).startswith("s3://bucket/root/deltas/llama/v1__v2/r16-")
    assert "--target-modules=q_proj,v_proj" in args and "--rank=16" in args
    assert job["metadata"]["labels"][naming.LABEL_COMPONENT] == "projection"


def test_names_are_deterministic_and_short() -> None:
    long = "a" * 60
    p1 = plan_adapter(adapter(long), releases("v1", "v2"), S)
    p2 = plan_adapter(adapter(long), releases("v1", "v2"), S)
    assert p1.adaptation.job_name == p2.adaptation.job_name
    assert len(p1.adaptation.job_name) <= 63 and len(p1.projection.job_name) <= 63
    other = plan_adapter(adapter(long, quality={"threshold": 0.9}), releases("v1", "v2"), S)
    assert other.adaptation.job_name != p1.adaptation.job_name
    # Scheduling-only changes do not re-run an adaptation.
    same = plan_adapter(adapter(long, priority=7, resources={"gpus": 2}), releases("v1", "v2"), S)
    assert same.adaptation.job_name == p1.adaptation.job_name


def test_kueue_gpus_and_placement() -> None:
    a = adapter(
        queueName="team-queue",
        resources={"gpus": 4, "memory": "64Gi"},
        nodeSelector={"pool": "a100"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    s = Settings.from_env({"RELORA_GPU_RESOURCE": "amd.com/gpu"})
    job = build_adaptation_job(s, a.spec, plan_adapter(a, releases("v1", "v2"), s).adaptation)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"memory": "64Gi", "amd.com/gpu": "4"}
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # Without a queue: not suspended; defaults from settings.
    d = Settings.from_env({"RELORA_DEFAULT_NODE_SELECTOR": '{"pool": "h100"}', "RELORA_DEFAULT_GPUS": "0"})
    job = build_adaptation_job(d, adapter().spec, plan_adapter(adapter(), releases("v1", "v2"), d).adaptation)
    assert "suspend" not in job["spec"]
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "h100"}
    assert "nvidia.com/gpu" not in job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_default_queue_and_worker_s3_endpoint_from_settings() -> None:
    s = Settings.from_env({"RELORA_DEFAULT_QUEUE_NAME": "gpu-queue", "RELORA_S3_ENDPOINT": "http://minio:9000"})
    a = adapter()
    job = build_adaptation_job(s, a.spec, plan_adapter(a, releases("v1", "v2"), s).adaptation)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue" and job["spec"]["suspend"] is True
    env = {e["name"]: e for e in _container(job)["env"]}
    assert env["AWS_ENDPOINT_URL"] == {"name": "AWS_ENDPOINT_URL", "value": "http://minio:9000"}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "relora-s3"
    own = adapter(queueName="team-a")
    named = build_adaptation_job(s, own.spec, plan_adapter(own, releases("v1", "v2"), s).adaptation)
    assert named["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    plain = build_adaptation_job(S, a.spec, _plan().adaptation)
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"] and not plain["spec"].get("suspend")
    assert "valueFrom" in {e["name"]: e for e in _container(plain)["env"]}["AWS_ENDPOINT_URL"]


def test_labels_with_a_comma_reach_the_worker_intact() -> None:
    from relora_worker.precheck import parse_labels  # the worker's own reading of --labels

    task = {"type": "seq-cls", "trainData": "s3://data/train.jsonl", "labels": ["good, mostly", "bad"]}
    args = _container(build_adaptation_job(S, adapter(task=task).spec, _plan(task=task).adaptation))["args"]
    flags = dict(a.split("=", 1) for a in args if "=" in a)
    assert parse_labels(flags["--labels"]) == ("good, mostly", "bad")
