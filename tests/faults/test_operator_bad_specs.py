"""Bad specs on the real API server: refused at admission where the CRD can tell (naming the field, and for a
URI with credentials pointing at the Secret), else only that adapter gets Ready=False, reason InvalidSpec,
naming the field, while the rest of its family and release proceed and get their status."""

# ruff: noqa: F811  (test parameters named like the imported fixtures, as pytest wants)
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.faults.operator_support import apply, cond, get, model_folder, release, settings, status
from tests.operator.conftest import operator_factory, relora_crds, s3_secret  # noqa: F401  (fixtures)
from tests.operator.factories import adapter_spec, with_field
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster
SECRET_HINT = "store them in the S3 Secret"


def _with(path: str, value: Any) -> dict[str, Any]:
    return with_field(adapter_spec(), path, value)


# (id, spec, text the API server's refusal must contain): every one was accepted before this audit, except
# where noted; the count is in tests/faults/README.md.
BAD_ADAPTERS = [
    ("cpu-words", _with("resources", {"cpu": "2 cores"}), "spec.resources.cpu"),
    ("cpu-negative", _with("resources", {"cpu": "-1"}), "spec.resources.cpu"),
    ("memory-unit", _with("resources", {"memory": "16GB"}), "spec.resources.memory"),
    ("node-selector-key", _with("nodeSelector", {"bad key!": "a100"}), "nodeSelector key"),
    ("node-selector-value", _with("nodeSelector", {"pool": "a b"}), "spec.nodeSelector"),
    ("toleration-key", _with("tolerations", [{"key": "no spaces", "operator": "Exists"}]), "spec.tolerations[0].key"),
    (
        "toleration-exists-value",
        _with("tolerations", [{"key": "gpu", "operator": "Exists", "value": "x"}]),
        "value must be empty when operator is Exists",
    ),
    (
        "toleration-seconds-noschedule",
        _with("tolerations", [{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 5}]),
        "tolerationSeconds needs effect NoExecute",
    ),
    (
        "toleration-seconds-negative",
        _with("tolerations", [{"key": "g", "effect": "NoExecute", "tolerationSeconds": -5}]),
        "spec.tolerations[0].tolerationSeconds",
    ),
    ("deadline-zero", _with("activeDeadlineSeconds", 0), "spec.activeDeadlineSeconds"),
    ("deadline-absurd", _with("activeDeadlineSeconds", 10**9), "spec.activeDeadlineSeconds"),
    ("steps-negative", _with("strategy", {"maxSteps": -1}), "spec.strategy.maxSteps"),
    ("budget-absurd", _with("strategy", {"searchBudget": 10_000}), "spec.strategy.searchBudget"),
    ("lr-negative", _with("strategy", {"learningRate": -0.1}), "spec.strategy.learningRate"),
    ("module-name", _with("targetModules", ["q proj"]), "spec.targetModules[0]"),
    ("bucket-malformed", _with("adapterUri", "s3://Bad_Bucket/a/"), "must be s3://<bucket>/<key>"),
    ("bucket-missing", _with("adapterUri", "s3:///a/b/"), "must be s3://<bucket>/<key>"),
    ("file-relative", _with("task.trainData", "file://data/train.jsonl"), "file:///<absolute path>"),
    ("uri-space", _with("task.evalData", "s3://data/eval set.jsonl"), "without whitespace"),
    # Credentials in URIs: refused, pointing at the Secret.
    ("userinfo", _with("adapterUri", "s3://AKIAIOSFODNN7EXAMPLE:wJalr@adapters/a/"), SECRET_HINT),
    (
        "presigned",
        _with("task.trainData", "s3://data/t.jsonl?X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc123"),
        SECRET_HINT,
    ),
    ("key-param", _with("task.valData", "s3://data/v.jsonl;aws_secret_access_key=abc"), SECRET_HINT),
    ("token-param", _with("adapterUri", "file:///adapters/a/token=abc"), SECRET_HINT),
]
BAD_RELEASES = [
    ("model-userinfo", {"modelUri": "s3://user:pass@models/llama/v1/"}, SECRET_HINT),
    ("model-presigned", {"modelUri": "s3://models/llama/v1/?X-Amz-Signature=abc"}, SECRET_HINT),
    ("projection-cpu", {"projection": {"cpu": "four"}}, "spec.projection.cpu"),
    ("projection-deadline", {"projection": {"activeDeadlineSeconds": -1}}, "spec.projection.activeDeadlineSeconds"),
]


def _doc(kind: str, name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump({"apiVersion": "relora.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})


def test_bad_specs_are_refused_at_admission(relora_crds: None, kubectl: Any, namespace: str) -> None:
    accepted = []
    for name, spec, text in BAD_ADAPTERS:
        result = kubectl("apply", "-n", namespace, "-f", "-", input=_doc("TaskAdapter", name, spec), check=False)
        if result.returncode == 0 or text not in result.stderr:
            accepted.append((name, result.returncode, result.stderr[-400:]))
    for name, spec, text in BAD_RELEASES:
        full = {"family": "llama", "version": "v1", "modelUri": "s3://models/llama/v1/", **spec}
        result = kubectl("apply", "-n", namespace, "-f", "-", input=_doc("BaseModelRelease", name, full), check=False)
        if result.returncode == 0 or text not in result.stderr:
            accepted.append((name, result.returncode, result.stderr[-400:]))
    assert accepted == []  # silently accepted (or refused without naming the field): 0
    assert get(kubectl, namespace, "taskadapters") == {} and get(kubectl, namespace, "basemodelreleases") == {}
    # Nothing of a refused URI with credentials is stored (the API server echoes it only to its sender).
    userinfo = next(spec for name, spec, _ in BAD_ADAPTERS if name == "userinfo")
    result = kubectl("apply", "-n", namespace, "-f", "-", input=_doc("TaskAdapter", "u", userinfo), check=False)
    assert result.returncode != 0 and SECRET_HINT in result.stderr and "wJalr" not in kubectl("get", "ta", "-A").stdout


# A platform policy on Jobs (what "a value the API server rejects in a Job" looks like on a real cluster): the
# TaskAdapter passes the CRD, its Job is refused.
POLICY = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: NAME}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {apiGroups: [batch], apiVersions: [v1], operations: [CREATE], resources: [jobs]}
  validations:
    - expression: >-
        object.spec.template.spec.containers.all(c, !has(c.resources.requests) || !('cpu' in c.resources.requests)
        || quantity(c.resources.requests['cpu']).compareTo(quantity('4')) <= 0)
      message: "worker pods may request at most 4 CPUs (TaskAdapter spec.resources.cpu)"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: NAME}
spec:
  policyName: NAME
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {kubernetes.io/metadata.name: NAMESPACE}
"""


def test_one_bad_adapter_of_three_fails_alone(
    relora_crds: None,
    kubectl: Any,
    namespace: str,
    test_kubelet: Any,
    s3_secret: Any,
    operator_factory: Any,
    tmp_path: Path,
) -> None:
    # Refused at admission: nothing of it reaches the family.
    refused = apply(kubectl, namespace, "TaskAdapter", "typo", _with("resources", {"cpu": "2 cores"}), check=False)
    assert refused.returncode != 0 and "spec.resources.cpu" in refused.stderr
    policy = POLICY.replace("NAMESPACE", namespace).replace("NAME", f"max-cpu-{namespace}")
    kubectl("apply", "-f", "-", input=policy)
    try:
        operator_factory(namespace, **settings(namespace))
        release(kubectl, namespace, "v1", model_folder(tmp_path, "v1", "w1"))
        apply(kubectl, namespace, "TaskAdapter", "good", adapter_spec())
        # Passes the CRD, refused in its Job by the cluster's policy (which needs a moment to be in force).
        apply(kubectl, namespace, "TaskAdapter", "greedy", _with("resources", {"cpu": "64"}))
        # Passes the CRD, refused by the operator's setting (RELORA_ALLOW_TOLERATE_ALL is false).
        apply(kubectl, namespace, "TaskAdapter", "tolerant", _with("tolerations", [{"operator": "Exists"}]))
        release(kubectl, namespace, "v2", model_folder(tmp_path, "v2", "w2"))
        wait_for(lambda: status(kubectl, namespace, "good").get("readyRelease") == "v2", 60, "good Ready on v2")
        for name, field in (("greedy", "spec.resources.cpu"), ("tolerant", "spec.tolerations[0]")):
            st = wait_for(
                lambda n=name: (s := status(kubectl, namespace, n)) and cond(s).get("reason") == "InvalidSpec" and s,
                60,
                f"{name} InvalidSpec",
            )
            assert cond(st)["status"] == "False" and field in cond(st)["message"], cond(st)
            assert st["adapterUri"] == "s3://adapters/sentiment/" and st["readyRelease"] == "v1"  # old one serves
        rel = wait_for(
            lambda: (r := get(kubectl, namespace, "basemodelreleases")["llama-v2"]["status"]).get("phase") == "Complete"
            and r,
            30,
            "release v2 Complete",
        )
        assert (rel["adapters"]["total"], rel["adapters"]["ready"], rel["adapters"]["failed"]) == (3, 1, 2)
        labels = [j["metadata"]["labels"] for j in get(kubectl, namespace, "jobs").values()]
        assert [x["relora.dev/task-adapter"] for x in labels if x["app.kubernetes.io/component"] == "adaptation"] == [
            "good"
        ]
    finally:
        kinds = "validatingadmissionpolicybinding,validatingadmissionpolicy"
        kubectl("delete", kinds, f"max-cpu-{namespace}", check=False)
