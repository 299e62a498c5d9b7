"""Jobs of several GPUs (issue 18), without a cluster: the command runs under ``relora launch`` (one process per
GPU) with a memory-backed /dev/shm and one base download shared by the ranks, the Job stays one pod that Kueue
admits whole, and Jobs of one GPU or none are exactly what they were."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from relora_operator.builders import pod_template
from relora_operator.builders.jobs import TERMINATION_LOG, build_adaptation_job, build_projection_job
from relora_operator.decisions import plan_adapter
from relora_operator.settings import Settings

from tests.operator.factories import adapter, releases

S = Settings.from_env({"RELORA_ARTIFACT_ROOT": "s3://bucket/root"})
SHM = {"name": "relora-shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}
# The ranks of one pod share each base download through the worker's cache, on the pod's /tmp.
RANK_CACHE = {"name": "RELORA_BASE_CACHE_DIR", "value": "/tmp/relora-base-cache"}


def _adaptation(settings: Settings = S, **spec: Any) -> dict[str, Any]:
    a = adapter(**spec)
    return build_adaptation_job(settings, a.spec, plan_adapter(a, releases("v1", "v2"), settings).adaptation)


def _projection(gpus: int | None, settings: Settings = S) -> dict[str, Any]:
    plan = plan_adapter(adapter(), releases("v1", "v2"), settings)
    return build_projection_job(settings, dataclasses.replace(plan.projection, gpus=gpus))


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def _without_launch(job: dict[str, Any], gpus: int) -> dict[str, Any]:
    """``job`` (of ``gpus`` GPUs) less what several GPUs add, with one GPU's quantities: a one-GPU Job if the
    multi-GPU one differs from it in nothing else."""
    one = copy.deepcopy(job)
    pod = _pod(one)
    (container,) = pod["containers"]
    assert container["args"][:3] == ["launch", "--nproc-per-node", str(gpus)]
    container["args"] = container["args"][3:]
    pod["volumes"].remove(SHM)
    container["volumeMounts"].remove({"name": "relora-shm", "mountPath": "/dev/shm"})
    container["env"].remove(RANK_CACHE)
    for kind in ("requests", "limits"):
        assert container["resources"][kind]["nvidia.com/gpu"] == str(gpus)
        container["resources"][kind]["nvidia.com/gpu"] = "1"
    return one


@pytest.mark.parametrize("gpus", [2, 8])
def test_several_gpus_add_the_launcher_shared_memory_and_a_rank_base_cache_and_nothing_else(gpus: int) -> None:
    one, several = _adaptation(resources={"gpus": 1}), _adaptation(resources={"gpus": gpus})
    assert _without_launch(several, gpus) == one
    args = _pod(several)["containers"][0]["args"]
    assert args[3] == "readapt" and args[-2:] == ["--termination-message-path", TERMINATION_LOG]
    # The projection of a release that asks for several GPUs: project-delta under the launcher too.
    assert _without_launch(_projection(gpus), gpus) == _projection(1)
    assert _pod(_projection(gpus))["containers"][0]["args"][3] == "project-delta"


@pytest.mark.parametrize("gpus", [0, 1])
def test_jobs_of_one_gpu_or_none_run_the_command_itself(gpus: int) -> None:
    for job in (_adaptation(resources={"gpus": gpus}), _projection(gpus)):
        pod = _pod(job)
        (container,) = pod["containers"]
        assert container["args"][0] in ("readapt", "project-delta")
        assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "50Gi"}}]
        assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    # The operator's default GPUs decide like the spec's: 2 by default runs the launcher.
    two = Settings.from_env({"RELORA_ARTIFACT_ROOT": "s3://bucket/root", "RELORA_DEFAULT_GPUS": "2"})
    assert _without_launch(_adaptation(two), 2) == _adaptation(S)


def test_a_multi_gpu_job_is_one_pod_that_kueue_admits_whole() -> None:
    """Kueue admits a Job by its pod set: one pod (no parallelism, no indexed completions) whose GPU request
    equals its limit (an extended resource cannot be overcommitted), suspended until admitted."""
    job = _adaptation(queueName="gpu-queue", resources={"gpus": 4, "memory": "320Gi"})
    spec, pod = job["spec"], _pod(job)
    assert spec["suspend"] is True and job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert spec.get("parallelism", 1) == 1 and spec.get("completions", 1) == 1 and "completionMode" not in spec
    (container,) = pod["containers"]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"] == "4"
    assert limits["memory"] == requests["memory"] == "320Gi"
    assert "initContainers" not in pod


def test_shared_memory_size_is_a_setting_and_a_pod_template_mount_wins() -> None:
    sized = Settings.from_env({"RELORA_WORKER_SHM_SIZE": "32Gi"})
    assert {"name": "relora-shm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}} in _pod(
        _adaptation(sized, resources={"gpus": 2})
    )["volumes"]
    # A platform that mounts its own /dev/shm keeps it: the pod would be refused with two mounts there.
    own = {"volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}], "volumeMounts": [{"name": "dshm",
           "mountPath": "/dev/shm/"}]}  # fmt: skip
    platform = Settings(worker_pod_template=pod_template.parse(own))
    pod = _pod(_adaptation(platform, resources={"gpus": 2}))
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "dshm"]
    assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]] == ["/tmp", "/dev/shm/"]
    with pytest.raises(pod_template.TemplateError, match=r"volumes\[0\]\.name: expected a name other than"):
        pod_template.parse({"volumes": [{"name": "relora-shm", "emptyDir": {}}]})


def test_the_charts_base_cache_replaces_the_pods_own() -> None:
    """A node-wide cache (the chart's worker.baseCache sets the variable in the pod template) serves the ranks
    too, and the pod gets the variable once: the template's."""
    cache = {"name": "RELORA_BASE_CACHE_DIR", "value": "/var/cache/relora-base"}
    platform = Settings(worker_pod_template=pod_template.parse({"env": [cache]}))
    for job in (_adaptation(platform, resources={"gpus": 2}), _projection(4, platform)):
        env = _pod(job)["containers"][0]["env"]
        assert [v for v in env if v["name"] == "RELORA_BASE_CACHE_DIR"] == [cache]
    one_gpu = _pod(_adaptation(resources={"gpus": 1}))["containers"][0]["env"]
    assert "RELORA_BASE_CACHE_DIR" not in {v["name"] for v in one_gpu}  # one process: nothing to share
