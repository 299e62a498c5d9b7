"""Run in a fresh process by tests/worker/test_portable_adapter.py: what a serving team does with a published
adapter, using no loader of ours.

Downloads the adapter's version folder and the base model from S3 with plain boto3 (credentials and endpoint
from the standard AWS variables), loads the base with transformers' Auto class and the adapter with stock
``PeftModel.from_pretrained``, then measures the quality on the evaluation data with the worker's data reading
and evaluation code (the measurement must be the one the worker reports; the model is not ours to load).
Prints one JSON line: {"quality", "rows", "base_model_name_or_path", "modules_to_save"}.

    python tests/worker/stock_peft_eval.py --adapter s3://b/out/versions/V/ --base s3://b/base --eval s3://b/eval.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def download(uri: str, into: Path) -> Path:
    """Every object under the s3:// prefix ``uri`` into ``into`` (keys relative to the prefix)."""
    import boto3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/"
    client = boto3.client("s3")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            target = into / item["Key"][len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(target))
    return into


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", required=True, help="s3:// prefix of the published version folder")
    parser.add_argument("--base", required=True, help="s3:// prefix of the base model")
    parser.add_argument("--eval", required=True, help="evaluation data URI")
    args = parser.parse_args()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from relora_worker.config import TaskConfig
    from relora_worker.data import build_task_data
    from relora_worker.tasks import build_task

    with tempfile.TemporaryDirectory() as tmp:
        adapter = download(args.adapter, Path(tmp) / "adapter")
        base_dir = download(args.base, Path(tmp) / "base")
        config = json.loads((adapter / "adapter_config.json").read_text())
        task_meta = json.loads((adapter / "relora_task.json").read_text())
        tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if task_meta["task"] == "seq-cls":
            base = AutoModelForSequenceClassification.from_pretrained(
                str(base_dir), num_labels=len(task_meta["labels"]), pad_token_id=tokenizer.pad_token_id
            )
        else:
            base = AutoModelForCausalLM.from_pretrained(str(base_dir))
        model = PeftModel.from_pretrained(base, str(adapter)).eval()
        task_config = TaskConfig(task=task_meta["task"])
        data = build_task_data(task_config, args.eval, eval_uri=args.eval, labels=task_meta["labels"])
        task = build_task(task_meta["task"], data, tokenizer, 128, torch.device("cpu"))
        with torch.no_grad():
            quality = task.quality(model)  # on every row of the evaluation file, as the worker measures it
    print(
        json.dumps(
            {
                "quality": quality,
                "rows": len(data.eval),
                "base_model_name_or_path": config.get("base_model_name_or_path"),
                "modules_to_save": config.get("modules_to_save"),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
