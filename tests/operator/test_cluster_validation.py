"""Invalid custom resources are rejected by the real API server with the CRD's messages (schema + CEL)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.operator.factories import adapter_spec, with_field

pytestmark = pytest.mark.cluster


def _adapter(name: str, spec: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "relora.dev/v1alpha1", "kind": "TaskAdapter", "metadata": {"name": name}, "spec": spec}
    )


def _release(name: str, **spec: Any) -> str:
    base = {"family": "llama", "version": "v1", "modelUri": "s3://models/llama/v1/"}
    base.update(spec)
    return yaml.safe_dump(
        {
            "apiVersion": "relora.dev/v1alpha1",
            "kind": "BaseModelRelease",
            "metadata": {"name": name},
            "spec": base,
        }
    )


def _with(path: str, value: Any) -> dict[str, Any]:
    return with_field(adapter_spec(), path, value)


INVALID_ADAPTERS = [
    ("threshold-zero", _with("quality.threshold", 0), "threshold"),
    ("threshold-above-one", _with("quality.threshold", 1.5), "threshold"),
    (
        "alpha-bounds",
        _with("strategy", {"alphaMin": 0.5, "alphaMax": 0.2}),
        "alphaMin must be less than alphaMax",
    ),
    ("beta-bounds", _with("strategy", {"betaMin": 2.0, "betaMax": 1.0}), "betaMin must be less than betaMax"),
    (
        "transfer-point",
        _with("strategy", {"alphaMin": 0.1, "alphaMax": 0.7}),
        "the search bounds must contain the transfer point",
    ),
    ("http-adapter", _with("adapterUri", "http://example.com/adapter"), "must be an s3:// or file:// URI"),
    (
        "https-data",
        _with("task.trainData", "https://example.com/train.jsonl"),
        "must be an s3:// or file:// URI",
    ),
    ("task-type", _with("task.type", "regression"), 'Unsupported value: "regression"'),
    ("strategy-name", _with("strategy", {"name": "magic"}), 'Unsupported value: "magic"'),
    ("rank-zero", _with("rank", 0), "spec.rank"),
    (
        "exact-match-cls",
        _with("quality.metric", "exact-match"),
        "metric exact-match needs task.type causal-lm",
    ),
    ("no-quality", _with("quality", KeyError), "spec.quality: Required value"),
    ("no-targets", _with("targetModules", []), "spec.targetModules"),
    ("dup-labels", _with("task.labels", ["pos", "pos"]), "Duplicate value"),
    ("bad-queue", _with("queueName", "Bad_Queue"), "spec.queueName"),
    ("unknown-field", _with("bogus", 1), 'unknown field "spec.bogus"'),
    ("serving-none", _with("serving", {}), "set exactly one of aibrix, kserve, configMap"),
    (
        "serving-two",
        _with("serving", {"configMap": {"name": "lora"}, "kserve": {"name": "llama"}}),
        "set exactly one of aibrix, kserve, configMap",
    ),
    ("serving-no-selector", _with("serving", {"aibrix": {}}), "spec.serving.aibrix.podSelector: Required value"),
    ("serving-bad-name", _with("serving", {"configMap": {"name": "lora map"}}), "spec.serving.configMap.name"),
    (
        "serving-kserve-version",
        _with("serving", {"kserve": {"name": "a", "apiVersion": "v1"}}),
        'Unsupported value: "v1"',
    ),
    ("bad-pin", _with("pinnedRelease", "V 1"), "spec.pinnedRelease"),
]


@pytest.mark.parametrize(("name", "spec", "message"), INVALID_ADAPTERS, ids=[c[0] for c in INVALID_ADAPTERS])
def test_invalid_task_adapter_rejected(
    relora_crds: None, kubectl: Any, namespace: str, name: str, spec: dict[str, Any], message: str
) -> None:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=_adapter(name, spec), check=False)
    assert result.returncode != 0, f"{name} was accepted"
    assert message in result.stderr, result.stderr


INVALID_RELEASES = [
    ("self-supersede", {"version": "v2", "supersedes": "v2"}, "a release cannot supersede itself"),
    ("http-model", {"modelUri": "http://example.com/model"}, "must be an s3:// or file:// URI"),
    ("bad-version", {"version": "V 2"}, "spec.version"),
    ("svd", {"projection": {"svd": "qr"}}, 'Unsupported value: "qr"'),
    ("empty-canary", {"rollout": {"canary": {"successFraction": 0.5}}}, "a canary needs a selector or a percent"),
    ("canary-percent", {"rollout": {"canary": {"percent": 0}}}, "spec.rollout.canary.percent"),
    ("canary-fraction", {"rollout": {"canary": {"percent": 10, "successFraction": 0}}}, "successFraction"),
    ("canary-key", {"rollout": {"canary": {"selector": {"bad key": "x"}}}}, "every selector key must be a label key"),
    ("max-concurrent", {"rollout": {"maxConcurrent": 0}}, "spec.rollout.maxConcurrent"),
    ("unknown-rollout", {"rollout": {"pause": True}}, 'unknown field "spec.rollout.pause"'),
]


@pytest.mark.parametrize(("name", "spec", "message"), INVALID_RELEASES, ids=[c[0] for c in INVALID_RELEASES])
def test_invalid_release_rejected(
    relora_crds: None, kubectl: Any, namespace: str, name: str, spec: dict[str, Any], message: str
) -> None:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=_release(name, **spec), check=False)
    assert result.returncode != 0, f"{name} was accepted"
    assert message in result.stderr, result.stderr


def test_immutable_fields_and_defaults(relora_crds: None, kubectl: Any, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=_adapter("ok", adapter_spec()))
    got = yaml.safe_load(kubectl("get", "-n", namespace, "taskadapter", "ok", "-o", "yaml").stdout)
    # Defaults from the CRD.
    assert got["spec"]["strategy"]["name"] == "auto" and got["spec"]["strategy"]["alphaMin"] == -2.0
    assert got["spec"]["strategy"]["improveAfterReady"] is True  # issue 17: ready early, improve after
    assert got["spec"]["quality"]["metric"] == "accuracy" and got["spec"]["priority"] == 0
    kubectl("apply", "-n", namespace, "-f", "-", input=_release("steered", rollout={"canary": {"percent": 20}}))
    steered = yaml.safe_load(kubectl("get", "-n", namespace, "bmr", "steered", "-o", "yaml").stdout)["spec"]["rollout"]
    assert steered == {"paused": False, "dryRun": False, "canary": {"percent": 20, "successFraction": 1.0}}
    changed = adapter_spec(family="mistral")
    result = kubectl("apply", "-n", namespace, "-f", "-", input=_adapter("ok", changed), check=False)
    assert result.returncode != 0 and "family is immutable" in result.stderr
    kubectl("apply", "-n", namespace, "-f", "-", input=_release("rel"))
    result = kubectl("apply", "-n", namespace, "-f", "-", input=_release("rel", version="v9"), check=False)
    assert result.returncode != 0 and "version is immutable" in result.stderr
    # Short names and the category work.
    assert "ok" in kubectl("get", "-n", namespace, "ta").stdout
    assert "rel" in kubectl("get", "-n", namespace, "bmr").stdout
    assert "taskadapter.relora.dev/ok" in kubectl("get", "-n", namespace, "relora", "-o", "name").stdout
