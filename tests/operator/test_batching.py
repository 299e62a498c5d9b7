"""Many adapters per Job (spec.batching), without a cluster: which adapters share a Job, the batch Job and its
plan as the real worker reads them, and how each member's outcome in the batch record becomes its status."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from relora_operator import batching, naming, views
from relora_operator.builders import batch_job
from relora_operator.builders.jobs import build_adaptation_job
from relora_operator.cache import Index, Keys
from relora_operator.decisions import Candidate, plan_adapter
from relora_operator.outcome import Observed
from relora_operator.settings import Settings
from relora_operator.status import adapter_status

from relora_contract.batch import AdapterOutcome, BatchPlan, BatchRecord
from tests.operator.factories import NS, adapter, job, release_body, releases

S = Settings.from_env({})
FAMILY = releases("v1", "v2")


def _candidate(name: str, **spec: object) -> Candidate:
    a = adapter(name, **spec)  # type: ignore[arg-type]
    return Candidate(a, plan_adapter(a, FAMILY, S), S.queue_of(a.spec))


def _members(*cands: Candidate) -> list[batch_job.Member]:
    return [batch_job.Member(c.adapter.name, c.adapter.spec, c.plan.adaptation) for c in cands]  # type: ignore[arg-type]


def _names(units: list[list[Candidate]]) -> list[list[str]]:
    return [[c.adapter.name for c in u] for u in units]


# --- the planner ---


def test_compatible_adapters_share_jobs_of_at_most_max_adapters() -> None:
    cands = [_candidate(f"a{i}") for i in range(4)]
    units = batching.units(cands, batching.Limits(max_adapters=3), S)
    assert [len(u) for u in units] == [3, 1]
    assert sorted(n for u in _names(units) for n in u) == ["a0", "a1", "a2", "a3"]


def test_batching_off_is_one_job_per_adapter() -> None:
    cands = [_candidate(f"a{i}") for i in range(3)]
    assert [len(u) for u in batching.units(cands, batching.Limits(max_adapters=1), S)] == [1, 1, 1]


@pytest.mark.parametrize(
    "other",
    [
        {"resources": {"gpus": 2}},
        {"resources": {"memory": "64Gi"}},
        {"task": {"type": "causal-lm", "trainData": "s3://data/t.jsonl"}},
        {"strategy": {"name": "relora", "seed": 7}},
        {"strategy": {"name": "transfer-ft"}},  # no projection: another base load
        {"nodeSelector": {"pool": "a100"}},
        {"queueName": "gpu"},
    ],
)
def test_adapters_that_cannot_share_a_base_load_or_a_pod_get_separate_jobs(other: dict[str, object]) -> None:
    units = batching.units([_candidate("a"), _candidate("b", **other)], batching.Limits(max_adapters=4), S)
    assert sorted(_names(units)) == [["a"], ["b"]]


def test_an_adapter_a_batch_left_unfinished_gets_its_own_job() -> None:
    cands = [_candidate(f"a{i}") for i in range(3)]
    units = batching.units(cands, batching.Limits(max_adapters=3), S, alone=frozenset({"a1"}))
    assert sorted(_names(units)) == [["a0", "a2"], ["a1"]]


def test_gpu_minutes_bound_cuts_batches_once_the_family_median_is_known() -> None:
    cands = [_candidate(f"a{i}", resources={"gpus": 1}) for i in range(5)]
    # 1 GPU x 10 min each: 20 GPU-minutes hold 2 adapters.
    bounded = batching.Limits(max_adapters=10, max_gpu_minutes=20, minutes_per_adapter=10.0)
    assert [len(u) for u in batching.units(cands, bounded, S)] == [2, 2, 1]
    unknown = dataclasses.replace(bounded, minutes_per_adapter=None)
    assert [len(u) for u in batching.units(cands, unknown, S)] == [5]


def test_an_adapter_of_several_gpus_is_never_batched() -> None:
    """readapt-batch runs one process: an adapter of 2 GPUs (its spec's, or the operator's default) gets a Job of
    its own, under relora launch, even among adapters that match it in everything else."""
    cands = [_candidate(f"a{i}", resources={"gpus": 2}) for i in range(3)]
    assert _names(batching.units(cands, batching.Limits(max_adapters=4), S)) == [["a0"], ["a1"], ["a2"]]
    two = Settings.from_env({"RELORA_DEFAULT_GPUS": "2"})
    by_default = [_candidate("b0"), _candidate("b1")]
    assert _names(batching.units(by_default, batching.Limits(max_adapters=4), two)) == [["b0"], ["b1"]]
    assert _names(batching.units(by_default, batching.Limits(max_adapters=4), S)) == [["b0", "b1"]]
    with pytest.raises(ValueError, match="adapter a0: readapt-batch runs one process"):
        batch_job.build_batch_job(S, _members(*cands[:2]))


def test_limits_come_from_the_release_else_the_settings() -> None:
    body = release_body("v2")
    body["spec"]["batching"] = {"maxAdaptersPerJob": 5}
    rel = views.release_view(body)
    settings = Settings.from_env(
        {"RELORA_BATCH_MAX_ADAPTERS_PER_JOB": "3", "RELORA_BATCH_MAX_GPU_MINUTES_PER_JOB": "90"}
    )
    assert batching.limits_of(rel, settings, 120.0) == batching.Limits(5, 90, 2.0)
    assert batching.limits_of(FAMILY[1], settings, None) == batching.Limits(3, 90, None)
    assert batching.limits_of(FAMILY[1], S, None).enabled is False  # the default: one Job per adapter


def test_batch_name_is_stable_whatever_the_order_and_changes_with_its_members() -> None:
    a, b, c = (_candidate(n) for n in "abc")
    name = batch_job.job_name(_members(a, b))
    assert name == batch_job.job_name(_members(b, a))
    assert name != batch_job.job_name(_members(a, c))
    assert name.startswith("rb-v2-") and len(name) <= naming.MAX_NAME


# --- the builder: the plan, the ConfigMap and the Job ---


def test_plan_parses_and_holds_each_adapters_own_inputs() -> None:
    a = _candidate("a")
    b = _candidate("b", quality={"metric": "accuracy", "threshold": 0.9}, strategy={"name": "relora", "maxSteps": 50})
    cm = batch_job.build_plan_configmap(S, _members(a, b))
    plan = BatchPlan.parse(json.loads(cm["data"][batch_job.PLAN_FILE]))
    assert plan.base_model == "s3://models/llama/v2/" and plan.new_release == "v2" and plan.task == "seq-cls"
    assert plan.projection == a.plan.adaptation.projection_uri  # type: ignore[union-attr]
    assert plan.result == naming.batch_record_uri(S.artifact_root, NS, "v2", cm["metadata"]["name"])
    assert [p.key for p in plan.adapters] == [f"{NS}/a", f"{NS}/b"]
    assert [p.output for p in plan.adapters] == [c.plan.adaptation.output_uri for c in (a, b)]  # type: ignore[union-attr]
    assert [p.threshold for p in plan.adapters] == [0.8, 0.9]
    assert plan.adapters[1].options["max_steps"] == "50" and plan.adapters[0].options["stop_at_ready"] is True


def test_plan_refuses_members_of_another_release_or_task() -> None:
    a, b = _candidate("a"), _candidate("b", task={"type": "causal-lm", "trainData": "s3://data/t.jsonl"})
    with pytest.raises(ValueError, match=r"adapter b differs .*\['task'\]"):
        batch_job.build_plan(S, _members(a, b))


def test_batch_job_keeps_the_pod_locked_down_and_mounts_the_plan_read_only() -> None:
    members = _members(_candidate("a"), _candidate("b"))
    built = batch_job.build_batch_job(S, members)
    pod = built["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mount = next(m for m in container["volumeMounts"] if m["name"] == batch_job.PLAN_VOLUME)
    assert mount == {"name": batch_job.PLAN_VOLUME, "mountPath": batch_job.PLAN_DIR, "readOnly": True}
    volume = next(v for v in pod["volumes"] if v["name"] == batch_job.PLAN_VOLUME)
    assert volume["configMap"]["name"] == built["metadata"]["name"]
    # One pod: a retry would re-adapt what the first one published; evictions end it too.
    assert built["spec"]["backoffLimit"] == 0
    assert all(r["action"] != "Ignore" for r in built["spec"]["podFailurePolicy"]["rules"])
    # Each adapter alone would get its deadline: the batch gets the sum.
    assert built["spec"]["activeDeadlineSeconds"] == 2 * S.job_active_deadline_seconds
    # The caches find the batch by its members' own Job names.
    body = {**built, "metadata": {**built["metadata"], "uid": "u1"}}
    assert {own for own, _ in views.job_view(body).members} == {m.inputs.job_name for m in members}


def test_batch_job_command_and_every_adapters_options_parse_with_the_real_worker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cli = pytest.importorskip("relora_worker.cli", reason="the worker (torch) is not installed")
    batch = pytest.importorskip("relora_worker.batch")
    cands = [
        _candidate("a", strategy={"name": "relora", "alphaMin": -1.5, "learningRate": 0.001, "batchSize": 8}),
        _candidate("b", strategy={"name": "relora", "improveAfterReady": True, "improveMaxSteps": 30}),
    ]
    members = _members(*cands)
    ns = cli.build_parser().parse_args(
        batch_job.build_batch_job(S, members)["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert ns.command == "readapt-batch" and ns.plan == f"{batch_job.PLAN_DIR}/{batch_job.PLAN_FILE}"
    plan = BatchPlan.parse(json.loads(batch_job.build_plan_configmap(S, members)["data"][batch_job.PLAN_FILE]))
    for cand, item in zip(cands, plan.adapters, strict=True):
        # What the worker makes of the plan's entry is what it makes of the adapter's own readapt command line.
        from_plan = cli._with_options(cli.build_parser(), ["readapt"], batch.option_values(plan, item), "plan")
        alone = build_adaptation_job(S, cand.adapter.spec, cand.plan.adaptation)  # type: ignore[arg-type]
        from_args = cli.build_parser().parse_args(alone["spec"]["template"]["spec"]["containers"][0]["args"])
        for dest in vars(from_args):
            if dest not in ("json", "termination_message_path", "config", "func"):
                assert getattr(from_plan, dest) == getattr(from_args, dest), dest
    # The worker's own preparation (its parser, prechecks and configuration) takes every entry.
    prepared = batch.prepare(plan, lambda values, where: cli._readapt_job({"device": "cpu", **values}, where))
    assert [p.error for p in prepared] == [None, None]
    assert prepared[1].config.improve_after_ready and prepared[1].config.improve_max_steps == 30


# --- the record, member by member ---


def _batch(state: str = "Running") -> views.JobView:
    return dataclasses.replace(
        job("rb-v2-x", state=state), members=(("ra-a", "a"), ("ra-b", "b"), ("ra-c", "c")), output_uri="s3://r.json"
    )


def _record(*outcomes: AdapterOutcome) -> BatchRecord:
    return BatchRecord(plan_sha256="x", base_model="s3://m", adapters=list(outcomes))


def _outcome(name: str, code: int, **fields: object) -> AdapterOutcome:
    status = {0: "ready", 3: "below-threshold"}.get(code, "error")
    return AdapterOutcome(key=f"{NS}/{name}", exit_code=code, status=status, output=f"s3://o/{name}/", **fields)  # type: ignore[arg-type]


NOW = "2026-01-02T00:05:00Z"


def test_each_member_ends_as_its_own_job_would_while_the_batch_runs() -> None:
    record = _record(
        _outcome(
            "a",
            0,
            quality=0.91,
            threshold=0.8,
            adapter_uri="s3://o/a/v1/",
            result_uri="s3://o/a/v1/result.json",
            seconds=60,
        ),
        _outcome("b", 2, error="cannot read s3://data/missing.jsonl: NoSuchKey"),
    )
    a = batching.member_view(_batch(), "a", record, None, True, NOW)
    assert a.job is not None and a.job.state == "Succeeded" and a.summary is not None
    assert (a.summary.quality, a.summary.adapter_uri) == (0.91, "s3://o/a/v1/")
    assert a.job.start_time == "2026-01-02T00:04:00Z"  # its own minute, not the batch's
    b = batching.member_view(_batch(), "b", record, None, True, NOW)
    assert b.job is not None and b.job.state == "Failed" and b.summary is not None and b.summary.exit_code == 2
    c = batching.member_view(_batch(), "c", record, None, True, NOW)
    assert c.job is not None and c.job.state == "Running" and not c.again


def test_members_the_ended_batch_did_not_finish_need_their_own_job() -> None:
    record = _record(_outcome("a", 0, quality=0.9, threshold=0.8), _outcome("b", 4, error="storage: timeout"))
    for name in ("b", "c"):  # a retryable failure, and never started (the pod was killed)
        seen = batching.member_view(_batch("Failed"), name, record, None, True, NOW)
        assert seen.job is None and seen.again
    assert batching.member_view(_batch("Failed"), "c", None, None, True, NOW).again  # no record written at all


def test_an_ended_batch_whose_record_storage_cannot_give_says_so_and_waits() -> None:
    seen = batching.member_view(_batch("Succeeded"), "a", None, "s3://r.json: timeout", False, NOW)
    assert seen.job is not None and seen.job.finished and seen.storage_error == "s3://r.json: timeout"


def test_member_statuses_ready_and_bad_input_are_isolated() -> None:
    record = _record(
        _outcome("a", 0, quality=0.91, threshold=0.8, adapter_uri="s3://o/a/v1/", result_uri="s3://o/a/v1/r.json"),
        _outcome("b", 2, error="cannot read s3://data/missing.jsonl: NoSuchKey"),
    )
    statuses = {}
    for name in ("a", "b"):
        a = adapter(name)
        plan = plan_adapter(a, FAMILY, S)
        seen = batching.member_view(_batch("Failed"), name, record, None, True, NOW)
        statuses[name], _ = adapter_status(a, plan, Observed(job=seen.job, summary=seen.summary), NOW)
    assert statuses["a"]["phase"] == "Ready" and statuses["a"]["adapterUri"] == "s3://o/a/v1/"
    assert statuses["a"]["quality"] == 0.91 and statuses["a"]["job"] == "rb-v2-x"
    assert statuses["b"]["phase"] == "Failed" and "NoSuchKey" in statuses["b"]["message"]
    ready = next(c for c in statuses["b"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "BadInput"


# --- the index: a batch found by its members' own Job names ---


def test_job_index_finds_a_batch_by_member_and_an_own_job_first() -> None:
    direct, by_member = Index(), Index()
    batch = _batch()
    direct._put((NS, batch.name), "u1", batch)
    by_member._put(Keys(batching.member_keys(batch)), "u1", batch)
    index = batching.JobIndex(direct, by_member)
    assert index.get((NS, "ra-a")) == [batch] and index.get((NS, batch.name)) == [batch]
    own = job("ra-a")
    direct._put((NS, "ra-a"), "u2", own)
    assert index.get((NS, "ra-a")) == [own]  # the retry of its own wins over the batch it was in
    assert sum(len(v) for v in index.values()) == 2  # every Job once: limits count Jobs
    by_member._drop(Keys(batching.member_keys(batch)), "u1")
    assert index.get((NS, "ra-b")) is None


def test_the_jobs_cache_files_a_batch_under_each_member_and_follows_its_changes() -> None:
    from relora_operator.cache import Informer
    from relora_operator.controller import KINDS

    kind = KINDS["jobs"]
    indices = {name: Index() for name in kind.indices}
    loop = asyncio.new_event_loop()
    try:
        informer = Informer(kind, NS, indices, loop, api=None)
        batch = _batch()
        informer._apply("ADDED", "u1", informer._keys_of(batch), batch)
        assert {k for k in indices["batch_members"]} == {(NS, "ra-a"), (NS, "ra-b"), (NS, "ra-c")}
        smaller = dataclasses.replace(batch, members=(("ra-a", "a"),))
        informer._apply("MODIFIED", "u1", informer._keys_of(smaller), smaller)
        assert list(indices["batch_members"]) == [(NS, "ra-a")] and indices["jobs"][(NS, batch.name)] == [smaller]
        informer._apply("DELETED", "u1", None, None)
        assert not list(indices["batch_members"]) and not list(indices["jobs"])
        single = job("ra-x")
        informer._apply("ADDED", "u2", informer._keys_of(single), single)
        assert not list(indices["batch_members"])  # a Job of one adapter is filed under its own name only
    finally:
        loop.close()


def test_a_queued_batch_goes_through_kueue_like_a_job_of_its_own() -> None:
    settings = Settings.from_env({"RELORA_DEFAULT_QUEUE_NAME": "gpu"})
    built = batch_job.build_batch_job(settings, _members(_candidate("a"), _candidate("b")))
    assert built["spec"]["suspend"] is True
    assert built["metadata"]["labels"][naming.LABEL_QUEUE] == "gpu"
    assert built["spec"]["template"]["metadata"]["labels"][naming.LABEL_QUEUE] == "gpu"
    assert naming.LABEL_ADAPTER not in built["metadata"]["labels"]  # many adapters: the annotation lists them


def test_a_member_the_batch_left_is_queued_for_its_own_job_saying_why() -> None:
    a = adapter("b")
    seen = batching.member_view(_batch("Failed"), "b", _record(), None, True, NOW)
    status, out = adapter_status(a, plan_adapter(a, FAMILY, S), Observed(job=seen.job, batch_left="rb-v2-x"), NOW)
    assert (status["phase"], out.reason) == ("Queued", "BatchUnfinished") and out.progressing
    assert "batch Job rb-v2-x ended before it finished this adapter" in status["message"]
    assert "still serving s3://adapters/sentiment/" in status["message"]
