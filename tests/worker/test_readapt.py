"""End-to-end re-adaptation on tiny real models: PEFT round trip, in-place probes, the anchor, strategies."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from relora_worker.adapters import lora_slots, snapshot
from relora_worker.cli import main
from relora_worker.config import FinetuneConfig, SearchConfig, TaskConfig
from relora_worker.data import build_task_data
from relora_worker.finetune import anchor_penalty, finetune, learning_rate
from relora_worker.modelio import attach_adapter, load_base_model, load_tokenizer, read_adapter
from relora_worker.project import ProjectionConfig, compute_projection
from relora_worker.storage import verify_published
from relora_worker.strategies import FusedStart
from relora_worker.synthetic import Scenario
from relora_worker.tasks import build_task, precision_context
from tests.worker.conftest import readapt_args

CPU = torch.device("cpu")


def loaded(scenario: Scenario, release: str = "v2"):
    """(model, task, slots) with the old adapter on base ``release``, as the pipeline builds them."""
    adapter = read_adapter(Path(scenario.adapter_v1))
    base_dir = Path(scenario.base_v2 if release == "v2" else scenario.base_v1)
    tokenizer = load_tokenizer(base_dir)
    config = TaskConfig(task=scenario.task, val_size=64, eval_size=100)
    data = build_task_data(config, scenario.train, eval_uri=scenario.eval, labels=adapter.task.get("labels"))
    torch.manual_seed(0)
    model = attach_adapter(
        load_base_model(base_dir, scenario.task, len(data.labels), tokenizer.pad_token_id), adapter, scenario.task
    )
    return model, build_task(scenario.task, data, tokenizer, 64, CPU), lora_slots(model), adapter


def test_output_loads_with_stock_peft_and_gives_the_pipeline_quality(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from peft import PeftModel

    out = tmp_path / "new"
    code = main(readapt_args(scenario_cls, out))
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code in (0, 3) and summary["status"] in ("ready", "below-threshold")
    manifest = verify_published(str(out))
    assert set(manifest["files"]) >= {"adapter_config.json", "adapter_model.safetensors", "result.json"}
    assert not list(out.glob("*.bin"))
    record = json.loads((out / "result.json").read_text())

    # Stock PEFT on the new base, evaluated on the same D_eval, gives the quality the pipeline reported.
    _model, task, _, _ = loaded(scenario_cls)
    tokenizer = load_tokenizer(Path(scenario_cls.base_v2))
    base = load_base_model(Path(scenario_cls.base_v2), "seq-cls", len(record["labels"]), tokenizer.pad_token_id)
    stock = PeftModel.from_pretrained(base, str(out)).eval()
    eval_data = replace(
        task.data,
        eval=build_task_data(
            TaskConfig(val_size=64, eval_size=100), scenario_cls.train, eval_uri=scenario_cls.eval
        ).eval,
    )
    stock_task = build_task("seq-cls", eval_data, tokenizer, 128, CPU)
    assert stock_task.quality(stock) == pytest.approx(record["quality"], abs=1e-9)
    assert record["search"]["probes"][0]["source"] == "transfer"
    assert record["seconds"]["search"] >= record["search"]["probe_seconds"]


def test_in_place_probe_equals_a_freshly_loaded_adapter(scenario_cls: Scenario, tmp_path: Path) -> None:
    from peft import PeftModel

    model, task, slots, _ = loaded(scenario_cls)
    projection = compute_projection(
        Path(scenario_cls.base_v1),
        Path(scenario_cls.base_v2),
        scenario_cls.target_modules,
        ProjectionConfig(rank=8, device="cpu"),
    )
    start = FusedStart(slots, projection)
    start.apply(0.9, 0.4)  # an unrelated probe first: the second must not depend on it
    start.apply(-0.6, 1.3)
    in_place = task.val_loss(model)
    model.save_pretrained(str(tmp_path / "probe"))

    tokenizer = load_tokenizer(Path(scenario_cls.base_v2))
    base = load_base_model(Path(scenario_cls.base_v2), "seq-cls", len(task.labels), tokenizer.pad_token_id)
    fresh = PeftModel.from_pretrained(base, str(tmp_path / "probe")).eval()
    assert task.val_loss(fresh) == pytest.approx(in_place, rel=1e-5)
    start.apply(0.0, 1.0)
    assert task.val_loss(model) != pytest.approx(in_place, rel=1e-3)


def test_stage1_anchor_keeps_the_adapter_nearer_its_init(scenario_cls: Scenario) -> None:
    distances = {}
    for name, anchored in (("plain", False), ("anchored", True)):
        model, task, slots, _ = loaded(scenario_cls)
        init = snapshot(slots)
        config = FinetuneConfig(max_steps=15, stage1_steps=15, lr=3e-3, lambda1=5.0, eval_every=15)
        finetune(model, task, slots, config, threshold=1.0, anchors=init if anchored else None)
        distances[name] = float(anchor_penalty(slots, init))
    assert distances["anchored"] < 0.8 * distances["plain"]


def test_cosine_schedule_endpoints() -> None:
    config = FinetuneConfig(max_steps=100, stage1_steps=40, lr=5e-4, lr_min=1e-5)
    assert learning_rate(0, config) == learning_rate(39, config) == 5e-4
    assert learning_rate(40, config) == pytest.approx(5e-4)
    assert learning_rate(70, config) == pytest.approx((5e-4 + 1e-5) / 2)
    assert learning_rate(100, config) == pytest.approx(1e-5)


def test_random_init_keeps_norms_and_head(scenario_cls: Scenario) -> None:
    from relora_worker.strategies import randomise_like

    model, _, slots, _ = loaded(scenario_cls)
    before = snapshot(slots)
    head = {k: v.clone() for k, v in model.state_dict().items() if "classifier" in k}
    randomise_like(slots, seed=1)
    for slot in slots:
        b0, a0 = before[slot.name]
        assert slot.lora_b.norm().item() == pytest.approx(b0.norm().item(), rel=1e-4)
        assert not torch.allclose(slot.lora_a, a0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in head.items())


@pytest.mark.parametrize("strategy", ["transfer", "transfer-ft", "scratch", "random-init", "relora-noreg"])
def test_every_strategy_runs_and_records_its_start(
    strategy: str, scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(readapt_args(scenario_cls, tmp_path / strategy, strategy=strategy))
    assert code in (0, 3)
    record = json.loads((tmp_path / strategy / "result.json").read_text())
    assert record["strategy"] == strategy
    assert record["finetune"]["steps"] == (0 if strategy == "transfer" else 20)
    assert (record["alpha"] is not None) == (strategy == "relora-noreg")


def test_causal_lm_task_likelihood_accuracy_and_exact_match(
    scenario_lm: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(readapt_args(scenario_lm, tmp_path / "lm", "--threshold", "0.99"))
    assert code == 3  # a budget of 20 steps cannot reach 99 %: published, but below threshold
    record = json.loads((tmp_path / "lm" / "result.json").read_text())
    assert record["status"] == "below-threshold" and 0.0 <= record["quality"] <= 1.0
    assert record["task"] == "causal-lm" and record["alpha"] is not None
    code = main(
        [
            "evaluate",
            "--base-model",
            scenario_lm.base_v2,
            "--adapter",
            str(tmp_path / "lm"),
            "--data",
            scenario_lm.eval,
            "--task",
            "causal-lm",
            "--metric",
            "exact-match",
            "--json",
            "--progress",
            "off",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["metric"] == "exact-match" and 0.0 <= result["quality"] <= 1.0


def test_anchor_gradient_equals_the_anchor_in_the_loss(scenario_cls: Scenario) -> None:
    from relora_worker.finetune import Anchor

    model, task, slots, _ = loaded(scenario_cls)
    init = snapshot(slots)
    for slot in slots:  # move away from the anchor so the term is not zero
        slot.set_factors(slot.lora_b + 0.01, slot.lora_a - 0.02)
    batch = next(task.train_batches(8, seed=0))
    model.zero_grad()
    (task.loss(model, batch) + 0.5 * 0.3 * anchor_penalty(slots, init)).backward()
    via_loss = [p.grad.clone() for s in slots for p in (s.lora_b, s.lora_a)]
    model.zero_grad()
    task.loss(model, batch).backward()
    Anchor(slots, init).add_gradient(0.3)
    via_grad = [p.grad for s in slots for p in (s.lora_b, s.lora_a)]
    for a, b in zip(via_loss, via_grad, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_warmup_ramps_the_learning_rate() -> None:
    config = FinetuneConfig(max_steps=100, stage1_steps=40, warmup_steps=9, lr=1e-3)
    assert learning_rate(0, config) == pytest.approx(1e-4)
    assert learning_rate(8, config) == pytest.approx(9e-4)
    assert learning_rate(9, config) == 1e-3


@pytest.mark.parametrize("scenario_name", ["scenario_cls", "scenario_lm"])
def test_evaluation_does_not_depend_on_chunking(scenario_name: str, request: pytest.FixtureRequest) -> None:
    scenario = request.getfixturevalue(scenario_name)
    model, task, _, _ = loaded(scenario)
    _, row_by_row, _, _ = loaded(scenario)
    row_by_row.eval_tokens = 1  # one row per forward pass
    assert len(row_by_row.val.chunks(row_by_row.eval_tokens)) == len(task.val) > len(task.val.chunks(task.eval_tokens))
    assert row_by_row.val_loss(model) == pytest.approx(task.val_loss(model), rel=1e-5)
    assert row_by_row.quality(model) == task.quality(model)


def test_probe_precision_autocasts_only_when_asked_or_on_a_gpu(scenario_cls: Scenario) -> None:
    model, task, _, _ = loaded(scenario_cls)
    with precision_context(CPU, "auto"):
        assert not torch.is_autocast_enabled("cpu")  # auto is float32 off a GPU
    with precision_context(CPU, "bfloat16"):
        assert torch.is_autocast_enabled("cpu")
        reduced = task.val_loss(model)
    exact = task.val_loss(model)
    assert reduced != exact and reduced == pytest.approx(exact, rel=0.05)  # bf16 ranks probes, not reports
    with pytest.raises(ValueError, match=r"search\.probe_precision"):
        SearchConfig(probe_precision="fp8")
