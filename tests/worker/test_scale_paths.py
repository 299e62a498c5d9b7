"""The LLM-scale code paths of issue 14 on tiny real models: scored-only logits, shared-prompt likelihood
accuracy, the evaluation cadence, the SVD default, the load dtype policy and activation checkpointing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from relora_worker.config import FinetuneConfig, ProjectionConfig
from relora_worker.finetune import finetune, next_evaluation, plan_checkpointing, prepare_training
from relora_worker.modelio import checkpoint_dtype, load_base_model, load_dtype
from relora_worker.synthetic import Scenario
from tests.worker.test_readapt import CPU, loaded


def test_shared_prompt_scores_equal_the_full_sequences(scenario_lm: Scenario) -> None:
    model, task, _, _ = loaded(scenario_lm)
    model.eval()
    with torch.no_grad():
        shared = task.label_scores(model)
        full = task._label_scores_full(model)
        first = task.label_scores(model, first_token_only=True)
    assert shared.shape == (len(task.eval_examples), len(task.labels))
    torch.testing.assert_close(shared, full, atol=1e-4, rtol=1e-4)
    # the first-token variant drops the end-of-sequence term: a different (cheaper) score, not the same one
    assert not torch.allclose(first, full, atol=1e-3)
    truth = task.truth
    assert task.quality(model) == pytest.approx(float((full.argmax(1) == truth).float().mean()))


def test_shared_prompt_chunks_do_not_change_the_scores(scenario_lm: Scenario) -> None:
    model, task, _, _ = loaded(scenario_lm)
    model.eval()
    whole = task.label_scores(model)
    task.eval_tokens = 1  # one prompt per pass: the cache is repeated for one row at a time
    torch.testing.assert_close(task.label_scores(model), whole, atol=1e-5, rtol=1e-5)


def test_loss_applies_the_output_layer_to_scored_positions_only(scenario_lm: Scenario) -> None:
    model, task, _, _ = loaded(scenario_lm)
    batch = next(task.train_batches(8, seed=0))
    rows_seen: list[int] = []
    head = model.get_base_model().get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, inputs, _o: rows_seen.append(inputs[0].shape[:-1].numel()))
    try:
        loss = task.loss(model, batch)
    finally:
        handle.remove()
    counted = int((batch["targets"][:, 1:] != -100).sum())
    reference = task.token_losses(model, batch).sum() / counted  # full logits at every position
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    width = batch["input_ids"].shape[1]
    assert rows_seen and rows_seen[0] <= 8 * task._max_scored < 8 * (width - 1)


def test_gradients_through_scored_positions_equal_the_full_logits(scenario_lm: Scenario) -> None:
    model, task, slots, _ = loaded(scenario_lm)
    batch = next(task.train_batches(8, seed=1))
    task.loss(model, batch).backward()
    scored = [p.grad.clone() for s in slots for p in (s.lora_b, s.lora_a)]
    model.zero_grad()
    counted = (batch["targets"][:, 1:] != -100).sum()
    (task.token_losses(model, batch).sum() / counted).backward()
    for a, b in zip(scored, [p.grad for s in slots for p in (s.lora_b, s.lora_a)], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_evaluation_cadence_bounds_its_share_and_never_shortens() -> None:
    config = FinetuneConfig(max_steps=300, eval_every=10, eval_share=0.1)
    assert next_evaluation(0, config, 2.0, 2.0, 0.0, 0.0, adaptive=True) == 10  # no step time yet: eval_every
    assert next_evaluation(20, config, 8.0, 2.0, 5.0, 0.25, adaptive=False) == 30  # fixed: CPU runs
    # 8B-like: 2 s evaluations, 0.25 s steps. Re-planned at step 10 (2.5 s trained, only the step-0 evaluation
    # so far): the next one waits until evaluation (2 + 2 s) is 10 % of training, 40 s: 150 more steps
    due = next_evaluation(0, config, 2.0, 2.0, 2.5, 0.25, adaptive=True, now=10)
    assert due == 160 and 0.1 * (due * 0.25) >= 2.0 + 2.0
    # after an evaluation at 160 (40 s trained, 6 s of evaluation with the next): 20 s more, 80 steps
    assert next_evaluation(160, config, 4.0, 2.0, 40.0, 0.25, adaptive=True) == 240
    assert next_evaluation(40, config, 0.02, 0.01, 10.0, 0.25, adaptive=True) == 50  # cheap: every eval_every
    assert next_evaluation(290, config, 8.0, 2.0, 50.0, 0.25, adaptive=True) == 300  # the last step, always
    assert next_evaluation(40, replace(config, eval_share=0.0), 8.0, 2.0, 10.0, 0.25, adaptive=True) == 50
    with pytest.raises(ValueError, match="eval_share"):
        FinetuneConfig(eval_share=1.5)


def test_a_stop_between_evaluations_still_measures_the_final_state(scenario_cls: Scenario) -> None:
    model, task, slots, _ = loaded(scenario_cls)
    config = FinetuneConfig(max_steps=20, stage1_steps=0, eval_every=10, lr=2e-3)
    result = finetune(model, task, slots, config, threshold=1.0, anchors=None, stop=lambda step: step >= 7)
    assert result.steps == 7
    assert [p.step for p in result.trajectory] == [0, 7]
    assert [p["step"] for p in result.eval_points] == [0, 7]
    assert result.final_quality == task.quality(model)


def test_randomized_svd_is_the_default_up_to_rank_64() -> None:
    assert ProjectionConfig().svd == "auto" and ProjectionConfig().method == "randomized"
    assert ProjectionConfig(rank=64).method == "randomized"
    assert ProjectionConfig(rank=65).method == "exact"
    assert ProjectionConfig(rank=16, svd="exact").method == "exact"
    with pytest.raises(ValueError, match="svd"):
        ProjectionConfig(svd="qr")


def test_half_precision_checkpoints_load_as_float32_on_a_cpu(scenario_lm: Scenario, tmp_path: Path) -> None:
    source = Path(scenario_lm.base_v2)
    half = tmp_path / "half"
    model = load_base_model(source, "causal-lm", None, 0)
    model.to(torch.bfloat16).save_pretrained(half)
    assert checkpoint_dtype(half) == torch.bfloat16 and checkpoint_dtype(source) == torch.float32
    assert load_dtype(half, torch.device("cuda")) == torch.bfloat16  # kept on a GPU: no float32 copy
    assert load_dtype(half, CPU) == torch.float32
    reloaded = load_base_model(half, "causal-lm", None, 0)
    assert all(p.dtype == torch.float32 for p in reloaded.parameters())
    (half / "config.json").write_text(json.dumps({**json.loads((half / "config.json").read_text()), "dtype": "x"}))
    assert checkpoint_dtype(half) == torch.float32  # an unknown name: the safe default


def test_checkpointing_is_recorded_and_gives_the_same_gradients(scenario_lm: Scenario) -> None:
    grads = {}
    for mode in ("off", "on"):
        model, task, slots, _ = loaded(scenario_lm)
        plan = prepare_training(model, FinetuneConfig(gradient_checkpointing=mode), CPU)
        assert plan["gradient_checkpointing"] is (mode == "on") and plan["activation_bytes_estimate"] > 0
        assert model.get_base_model().is_gradient_checkpointing is (mode == "on")
        model.train()
        task.loss(model, next(task.train_batches(8, seed=2))).backward()
        grads[mode] = [p.grad.clone() for s in slots for p in (s.lora_b, s.lora_a)]
    for a, b in zip(grads["off"], grads["on"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    model, _, _, _ = loaded(scenario_lm)
    assert plan_checkpointing(model, FinetuneConfig(), CPU)["gradient_checkpointing"] is False  # auto: GPU only
