"""Quality of a published adapter on a base model and a dataset (``relora evaluate``)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from relora_worker.config import TaskConfig
from relora_worker.data import build_task_data
from relora_worker.modelio import attach_adapter, load_base_model, load_tokenizer, read_adapter
from relora_worker.project import resolve_device
from relora_worker.storage import fetch
from relora_worker.tasks import build_task


def run_evaluate(
    base_model: str,
    adapter_uri: str,
    data_uri: str,
    task_config: TaskConfig,
    device_name: str = "auto",
    max_length: int = 128,
) -> dict[str, Any]:
    """Accuracy (or exact match) and loss of ``adapter`` on ``base_model`` over every row of ``data_uri``."""
    device = resolve_device(device_name)
    with contextlib.ExitStack() as stack:
        adapter = read_adapter(stack.enter_context(fetch(adapter_uri, "adapter")))
        data = build_task_data(
            task_config, data_uri, val_uri=data_uri, eval_uri=data_uri, labels=adapter.task.get("labels")
        )
        base_dir = stack.enter_context(fetch(base_model, "base model"))
        tokenizer = load_tokenizer(base_dir)
        base = load_base_model(base_dir, task_config.task, len(data.labels), tokenizer.pad_token_id, device)
        model = attach_adapter(base, adapter, task_config.task).to(device)
        task = build_task(task_config.task, data, tokenizer, max_length, device, task_config.metric)
        with torch.no_grad():
            quality = task.quality(model)
            loss = task.val_loss(model)
    return {
        "quality": quality,
        "metric": task_config.metric,
        "loss": loss,
        "examples": len(data.eval),
        "threshold": task_config.threshold,
        "meets_threshold": quality >= task_config.threshold,
    }
