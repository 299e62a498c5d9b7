"""The pure parts of the operator's fault handling (issue 12): redaction, the CRD's rules in Python, release
identity, lost Jobs, deadlines, refusals and storage errors in the status, and the operator's storage reads.
The same behaviours on the real control plane: tests/faults/test_operator_*.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from relora_operator import decisions, identity, refusals, storage, views
from relora_operator.builders.jobs import build_adaptation_job
from relora_operator.decisions import plan_adapter
from relora_operator.models.common import CREDENTIAL_RULE, uri_problem
from relora_operator.outcome import Observed
from relora_operator.redaction import redact, redact_obj
from relora_operator.settings import Settings
from relora_operator.status import adapter_status, status_patch, transition_event

from tests.operator.factories import adapter, job, release_body, releases, worker_summary

S = Settings.from_env({})
NOW = "2026-01-02T00:20:00Z"


def _cond(status: dict[str, Any], type_: str = "Ready") -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI@bucket/key", "wJalrXUtnFEMI"),
        ("cannot read https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=deadbeef", "deadbeef"),
        ("s3://bucket/k;aws_secret_access_key=topsecret", "topsecret"),
        ("error: token=abc123 was refused", "abc123"),
        ("key id AKIAIOSFODNN7EXAMPLE leaked", "AKIAIOSFODNN7EXAMPLE"),
    ],
)
def test_redact_removes_the_secret_and_keeps_the_rest(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "***" in out
    assert redact(out) == out  # idempotent
    assert redact_obj({"a": [text], "b": 1}) == {"a": [out], "b": 1}


def test_redact_leaves_plain_uris_alone() -> None:
    for uri in ("s3://bucket/releases/llama/v2/", "file:///tmp/relora/adapters/ns/a/v2/abc/", "s3://bkt/tokenizer/"):
        assert redact(uri) == uri and uri_problem(uri) is None


@pytest.mark.parametrize(
    "uri",
    [
        "s3://user:pass@bucket/key",
        "s3://bucket/key?X-Amz-Signature=abc",
        "s3://bucket/key?versionId=3",
        "file:///data/x;password=hunter2",
    ],
)
def test_credential_uris_are_refused_naming_the_secret(uri: str) -> None:
    assert uri_problem(uri) == CREDENTIAL_RULE["message"]
    spec = adapter().spec
    assert spec is not None
    view = views.adapter_view(
        {"metadata": {"name": "a", "uid": "u"}, "spec": {**spec.model_dump(by_alias=True), "adapterUri": uri}}
    )
    assert view.spec is None and view.error is not None and "spec.adapterUri" in view.error
    assert "S3 Secret" in view.error and "hunter2" not in view.error and "pass@" not in view.error


def test_a_spec_stored_before_the_rules_fails_alone_naming_the_field() -> None:
    served = {"served": {"release": "v1", "adapterUri": "s3://adapters/sentiment/"}}
    bad = adapter("bad", status=served, resources={"cpu": "2 cores"}, nodeSelector={"bad key!": "x"})
    plan = plan_adapter(bad, releases("v1", "v2"), S)
    status, out = adapter_status(bad, plan, Observed(), NOW)
    assert out.reason == "InvalidSpec" and status["phase"] == "Failed"
    assert "spec.resources.cpu" in out.message and "'2 cores'" in out.message and "nodeSelector" in out.message
    assert status["adapterUri"] == "s3://adapters/sentiment/"  # what served before still serves
    good = plan_adapter(adapter("good"), releases("v1", "v2"), S)
    assert good.kind == "Adapt"


def test_tolerate_all_needs_the_setting() -> None:
    tol = adapter(tolerations=[{"operator": "Exists"}])
    plan = plan_adapter(tol, releases("v1", "v2"), S)
    assert plan.kind == "Invalid" and "spec.tolerations[0]" in plan.message
    status, _ = adapter_status(tol, plan, Observed(), NOW)
    assert status["targetRelease"] == "v2"  # counted by its release (as failed): the rollout can complete
    assert "RELORA_ALLOW_TOLERATE_ALL" in plan.message
    allowed = Settings.from_env({"RELORA_ALLOW_TOLERATE_ALL": "true"})
    assert plan_adapter(tol, releases("v1", "v2"), allowed).kind == "Adapt"


def _ready_on_v2(fam: list[views.ReleaseView]) -> dict[str, Any]:
    a = adapter()
    plan = plan_adapter(a, fam, S)
    assert plan.adaptation is not None
    done = job(plan.adaptation.job_name, state="Succeeded")
    summary = {"quality": 0.9, "threshold": 0.8, "adapter_uri": "s3://out/v2/", "exit_code": 0}
    status, out = adapter_status(a, plan, Observed(job=done, summary=worker_summary(**summary)), NOW)
    assert out.ready
    return status


def test_identity_is_the_weights_not_the_version() -> None:
    fam = releases("v1", "v2")
    v2 = fam[1]
    status = _ready_on_v2(fam)
    assert status["served"]["releaseIdentity"] == identity.identity_of(v2)
    assert plan_adapter(adapter(status=status), fam, S).kind == "UpToDate"
    first_plan = plan_adapter(adapter(), fam, S)

    # Same version, other weights (the digest the operator read changed): not ready, a new Job and projection.
    reweighed = dataclasses.replace(v2, status={**v2.status, "modelDigest": "sha256:other"})
    # ... and the same version deleted and re-created (a new uid).
    recreated = dataclasses.replace(v2, uid="uid-llama-v2-again")
    for other in (reweighed, recreated):
        a = adapter(status=status)
        plan = plan_adapter(a, [fam[0], other], S)
        assert plan.kind == "Adapt" and plan.target_identity != status["served"]["releaseIdentity"]
        assert plan.adaptation is not None and first_plan.adaptation is not None
        assert plan.adaptation.job_name != first_plan.adaptation.job_name
        assert plan.adaptation.output_uri != first_plan.adaptation.output_uri
        assert plan.projection is not None and first_plan.projection is not None
        assert plan.projection.job_name != first_plan.projection.job_name
        assert plan.projection.output_uri(S) != first_plan.projection.output_uri(S)
        new, out = adapter_status(a, plan, Observed(), NOW)
        assert not out.ready and new["readyRelease"] == "v2 (replaced)" and _cond(new)["status"] == "False"


def test_rollback_never_restores_an_adapter_made_for_other_weights() -> None:
    fam = releases("v1", "v2")
    status = _ready_on_v2(fam)
    recreated = dataclasses.replace(fam[1], uid="uid-llama-v2-again")
    plan = plan_adapter(adapter(status={"releases": status["releases"]}), [fam[0], recreated], S)
    assert plan.kind == "Adapt"
    assert plan_adapter(adapter(status={"releases": status["releases"]}), fam, S).kind == "Restored"


def test_as_given_adapter_on_a_release_whose_weights_changed() -> None:
    fam = releases("v1")
    a = adapter()
    status, out = adapter_status(a, plan_adapter(a, fam, S), Observed(), NOW)
    assert out.reason == "TrainedOnRelease" and status["served"]["modelDigest"] == "sha256:llama-v1"
    changed = dataclasses.replace(fam[0], status={**fam[0].status, "modelDigest": "sha256:new"})
    plan = plan_adapter(adapter(status=status), [changed], S)
    new, out = adapter_status(adapter(status=status), plan, Observed(), NOW)
    assert new["readyRelease"] == "v1 (replaced)"  # never shown as ready for the new weights
    assert out.reason == "ReleaseChanged" and not out.ready and "other weights" in out.message
    # Re-created with the same weights: still the adapter it was trained on.
    same = dataclasses.replace(fam[0], uid="uid-again")
    assert plan_adapter(adapter(status=status), [same], S).kind == "AsGiven"


def test_identity_waits_for_the_first_digest_read() -> None:
    body = release_body("v9")
    body["status"] = {}
    unread = views.release_view(body)
    assert identity.identity_of(unread) is None
    plan = plan_adapter(adapter(), [*releases("v1"), unread], S)
    assert plan.kind == "Verifying"


def _running_status(fam: list[views.ReleaseView]) -> tuple[dict[str, Any], str]:
    a = adapter()
    plan = plan_adapter(a, fam, S)
    assert plan.adaptation is not None
    status, out = adapter_status(a, plan, Observed(job=job(plan.adaptation.job_name)), NOW)
    assert out.reason == "Adapting"
    return status, plan.adaptation.job_name


def test_a_deleted_job_is_recreated_then_given_up_after_the_backoff_limit() -> None:
    fam = releases("v1", "v2")
    status, name = _running_status(fam)
    for attempt in (1, 2):
        a = adapter(status=status)
        plan = plan_adapter(a, fam, S)
        assert plan.kind == "Adapt"  # the pass re-creates it
        status, out = adapter_status(a, plan, Observed(lost_limit=2), NOW)
        assert out.reason == "JobDeleted" and status["lostJobs"] == attempt and out.progressing
        assert f"re-creation {attempt} of 2" in out.message
        # Still gone at the next pass (not re-created yet): the count does not move.
        again, _ = adapter_status(adapter(status=status), plan, Observed(lost_limit=2), NOW)
        assert again["lostJobs"] == attempt
        # Re-created (same name), running again.
        status, out = adapter_status(adapter(status=again), plan, Observed(job=job(name)), NOW)
        assert out.reason == "Adapting" and status["lostJobs"] == attempt
    a = adapter(status=status)
    status, out = adapter_status(a, plan_adapter(a, fam, S), Observed(lost_limit=2), NOW)
    assert out.reason == "JobLost" and status["phase"] == "Failed" and status["lostJobs"] == 3
    plan = plan_adapter(adapter(status=status), fam, S)
    assert plan.kind == "JobLost"  # not re-created again
    again, out = adapter_status(adapter(status=status), plan, Observed(lost_limit=2), NOW)
    assert out.reason == "JobLost" and again["lostJobs"] == 3 and status_patch(status, again) == {}


def test_deadline_exceeded_refusals_and_storage_errors_are_visible() -> None:
    fam = releases("v1", "v2")
    a = adapter()
    plan = plan_adapter(a, fam, S)
    assert plan.adaptation is not None
    late = dataclasses.replace(
        job(plan.adaptation.job_name, state="Failed"), reason="DeadlineExceeded", active_deadline_seconds=7
    )
    _, out = adapter_status(a, plan, Observed(job=late), NOW)
    assert out.reason == "DeadlineExceeded" and "(7 s)" in out.message and out.degraded

    refused = refusals.Refusal("Forbidden", refusals.permission_message("create", "jobs.batch", "ns"), 0, 0.0)
    status, out = adapter_status(a, plan, Observed(refusal=refused), NOW)
    assert out.reason == "Forbidden" and "may not create jobs.batch in namespace ns" in out.message
    assert transition_event({}, status)[0] == "Warning"

    done = job(plan.adaptation.job_name, state="Succeeded")
    seen = Observed(job=done, summary=worker_summary(exit_code=0), storage_error="timeout")
    status, out = adapter_status(a, plan, seen, NOW)
    assert out.reason == "StorageUnavailable" and not out.ready and not status.get("releases")


def test_deadline_of_the_job_from_the_spec_else_the_default() -> None:
    fam = releases("v1", "v2")
    for spec, expected in (({"activeDeadlineSeconds": 90}, 90), ({}, S.job_active_deadline_seconds)):
        a = adapter(**spec)
        plan = plan_adapter(a, fam, S)
        assert a.spec is not None and plan.adaptation is not None
        built = build_adaptation_job(S, a.spec, plan.adaptation)
        assert built["spec"]["activeDeadlineSeconds"] == expected
    assert S.job_active_deadline_seconds == 43200


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.body = status, "Unprocessable", json.dumps({"message": message})


def test_refusals_are_remembered_per_job_and_retried() -> None:
    manifest = {"metadata": {"namespace": "ns", "name": "ra-x"}}
    refused = refusals.Refusals()  # the process's own, kept in OperatorState
    assert refused.record(manifest, _ApiError(500, "boom")) is None  # not a refusal: the caller re-raises
    got = refused.record(manifest, _ApiError(422, 'Job "ra-x" is invalid: spec.template...cpu: Invalid value'))
    assert got is not None and got.reason == "InvalidSpec" and "cpu: Invalid value" in got.message
    assert refused.blocked("ns", "ra-x", S) and refused.for_plan("ns", "ra-x", None) == got
    assert not refused.blocked("ns", "ra-y", S)
    assert not refusals.Refusals().blocked("ns", "ra-x", S)  # another state (another test) sees none of it
    refused.clear("ns", "ra-x")
    assert refused.get("ns", "ra-x") is None


def test_model_digest_and_result_reads_on_file_storage(tmp_path: Path) -> None:
    model = tmp_path / "model"
    assert storage.model_digest(f"file://{model}/", S) == ""  # absent: empty, not an error
    model.mkdir()
    (model / "config.json").write_text("{}")
    listing = storage.model_digest(f"file://{model}/", S)
    assert listing.startswith("listing:")
    (model / "manifest.json").write_text('{"files": {}}')
    digest = storage.model_digest(f"file://{model}/", S)
    assert digest.startswith("sha256:") and digest != listing
    (model / "manifest.json").write_text('{"files": {"w": 1}}')
    assert storage.model_digest(f"file://{model}/", S) != digest
    assert storage.read_json(f"file://{tmp_path}/nothing.json", S) is None


def test_model_digest_on_s3(s3_server: Any) -> None:
    s3 = s3_server.client()
    key = "digest-test/model"
    s3.put_object(Bucket=s3_server.bucket, Key=f"{key}/config.json", Body=b"{}")
    env = Settings.from_env({})
    import os

    old = {k: os.environ.get(k) for k in s3_server.env}
    os.environ.update(s3_server.env)
    try:
        storage._clients.clear()
        listing = storage.model_digest(s3_server.uri(key), env)
        s3.put_object(Bucket=s3_server.bucket, Key=f"{key}/manifest.json", Body=b'{"files": {}}')
        digest = storage.model_digest(s3_server.uri(key), env)
        assert listing.startswith("listing:") and digest.startswith("sha256:")
        assert storage.model_digest(s3_server.uri("digest-test/absent"), env) == ""
        assert storage.read_json(s3_server.uri("digest-test/absent/result.json"), env) is None
        # A store that refuses connections: StorageUnavailable after the settings' attempts, not "absent".
        from tests.support.ports import free_port

        os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
        quick = Settings.from_env({"RELORA_S3_CONNECT_TIMEOUT": "1", "RELORA_S3_RETRIES": "0"})
        with pytest.raises(storage.StorageUnavailable, match=r"absent/result\.json"):
            storage.read_json(s3_server.uri("digest-test/absent/result.json"), quick)
    finally:
        storage._clients.clear()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_a_lost_job_recreated_before_a_pass_saw_it_gone_is_counted_and_limited() -> None:
    fam = releases("v1", "v2")
    status, name = _running_status(fam)
    limit = Settings.from_env({"RELORA_JOB_BACKOFF_LIMIT": "1"})
    assert decisions.was_running(adapter(status=status), name)
    assert decisions.recreation_allowed(adapter(status=status), name, limit)
    a = adapter(status=status)
    status, out = adapter_status(a, plan_adapter(a, fam, S), Observed(job=job(name), recreated=True, lost_limit=1), NOW)
    assert out.reason == "Adapting" and status["lostJobs"] == 1 and "re-created after it disappeared" in out.message
    assert not decisions.recreation_allowed(adapter(status=status), name, limit)  # the budget is spent
    a = adapter(status=status)
    status, out = adapter_status(a, plan_adapter(a, fam, S), Observed(lost_limit=1), NOW)
    assert out.reason == "JobLost" and status["lostJobs"] == 2


def test_a_refused_list_or_watch_is_named_on_the_release() -> None:
    from relora_operator.controller import KINDS

    # RBAC names the resources so: core kinds bare, the others with their group.
    assert [k.resource for k in KINDS.values()] == [
        "basemodelreleases.relora.dev",
        "taskadapters.relora.dev",
        "jobs.batch",
        "pods",
    ]
    message = refusals.permission_message("list", "pods", "ns", "pods is forbidden")
    previous = [
        {"type": "Ready", "status": "True", "reason": "RolloutComplete", "message": "", "lastTransitionTime": "t0"},
        {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "", "lastTransitionTime": "t0"},
    ]
    old = {"phase": "Complete", "adapters": {"total": 3}, "conditions": previous}
    new = refusals.forbidden_release_status(old, [message], 4, "t1")
    conditions = {c["type"]: c for c in new["conditions"]}
    assert new["phase"] == "Complete" and new["adapters"] == {"total": 3}  # the last pass's view is kept
    assert conditions["Ready"] == previous[0]  # unchanged: what was served still is
    degraded, progressing = conditions["Degraded"], conditions["Progressing"]
    assert (degraded["status"], degraded["reason"], degraded["lastTransitionTime"]) == ("True", "Forbidden", "t1")
    assert (progressing["status"], progressing["reason"]) == ("False", "Forbidden")
    assert (
        "may not list pods in namespace ns" in degraded["message"]
        and "grant verb 'list' on 'pods'" in degraded["message"]
    )
    assert degraded["observedGeneration"] == 4
    # Posted again only when due: the same refusal does not flood the namespace with Events.
    due = refusals.Refusals()
    assert due.event_due("uid-r", "list-watch") and not due.event_due("uid-r", "list-watch")


def test_a_job_deleted_before_the_next_pass_is_no_longer_in_flight() -> None:
    # The race behind a flaky fault test: created, seen by the watch, deleted — all before the next release
    # pass could see it in the index. The watch events themselves now take it out of "in flight".
    from relora_operator.controller import Controller
    from relora_operator.sharding import Sharding
    from relora_operator.state import OperatorState

    state = OperatorState()
    controller = Controller(S, Sharding(1, identity="a"), state)
    running = job("ra-x")
    state.created(running.namespace, running.name)
    controller.on_job("ADDED", None, running)
    assert not state.is_in_flight(running.namespace, running.name)
    state.created(running.namespace, running.name)
    controller.on_job("DELETED", running, None)  # only the deletion seen (the ADDED came before the create returned)
    assert not state.is_in_flight(running.namespace, running.name)
