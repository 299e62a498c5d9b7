"""A tiny but complete scenario, built locally from configs: base v1, its release v2, an old adapter, data.

Used by ``relora demo`` and the tests (no hub, no network). Words belong to topics; the v1 "pre-training"
corpus groups words by one topic assignment, the v2 "continued pre-training" corpus by a partly permuted
one, so the release moves the representations the old adapter relies on, as a real release does. The task
is topic classification: ``seq-cls`` on a BERT-style encoder, or ``causal-lm`` (prompt → topic word) on a
Llama-style decoder.

    python -m relora_worker.synthetic --out DIR --task seq-cls
"""

from __future__ import annotations

if __name__ == "__main__":  # the same scenario on every machine: pinned before torch is imported below
    from relora_worker.determinism import pin_cpu_numerics

    pin_cpu_numerics()

import argparse
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

TOPICS = ("astronomy", "cooking", "finance", "music")
SPECIAL_BERT = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPECIAL_LLAMA = ["<pad>", "<unk>", "<s>", "</s>"]


@dataclass
class Scenario:
    """Where the scenario's pieces were written."""

    base_v1: str
    base_v2: str
    adapter_v1: str
    train: str
    eval: str
    task: str
    labels: list[str]
    target_modules: list[str]


@dataclass(frozen=True)
class ScenarioSize:
    """Knobs that trade fidelity for speed (tests use the defaults; the demo a little more)."""

    words_per_topic: int = 24
    sentence_length: int = 12
    train_rows: int = 1200
    eval_rows: int = 400
    pretrain_steps: int = 400
    release_steps: int = 150
    adapter_steps: int = 300
    hidden: int = 64
    layers: int = 2
    rank: int = 8
    release_rank: int = 2  # the release is a merged rank-`release_rank` update of the targeted modules
    release_lr: float = 1e-2


def _vocabulary(size: ScenarioSize) -> dict[str, list[str]]:
    return {topic: [f"{topic[:3]}{i}" for i in range(size.words_per_topic)] for topic in TOPICS}


def _grouping(words: dict[str, list[str]], rng: random.Random, mix: float) -> list[list[str]]:
    """Word groups that co-occur in a corpus; ``mix`` of each topic's words move to other groups."""
    groups = [list(ws) for ws in words.values()]
    for i, group in enumerate(groups):
        for j in range(len(group)):
            if rng.random() < mix:
                k = rng.randrange(len(groups))
                if k != i:
                    group[j], groups[k][j] = groups[k][j], group[j]
    return groups


def _corpus(groups: list[list[str]], rng: random.Random, rows: int, length: int) -> list[str]:
    return [" ".join(rng.choice(g) for _ in range(length)) for g in (rng.choice(groups) for _ in range(rows))]


def _task_rows(words: dict[str, list[str]], rng: random.Random, rows: int, length: int) -> list[dict]:
    """Topic classification: most words from the topic, the rest from others (a noisy signal)."""
    out = []
    all_words = [w for ws in words.values() for w in ws]
    for _ in range(rows):
        topic = rng.choice(TOPICS)
        tokens = [rng.choice(words[topic]) if rng.random() < 0.6 else rng.choice(all_words) for _ in range(length)]
        out.append({"text": " ".join(tokens), "label": topic})
    return out


def make_tokenizer(vocab: list[str], kind: str):  # -> PreTrainedTokenizerFast
    """A word-level tokenizer (whitespace split) wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = SPECIAL_BERT if kind == "bert" else SPECIAL_LLAMA
    index = {token: i for i, token in enumerate(special + vocab)}
    tokenizer = Tokenizer(models.WordLevel(index, unk_token=special[1]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if kind == "bert":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", index["[CLS]"]), ("[SEP]", index["[SEP]"])]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tokenizer,
            pad_token="[PAD]",
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", index["<s>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def _new_model(kind: str, vocab_size: int, size: ScenarioSize, seed: int):
    torch.manual_seed(seed)
    if kind == "bert":
        from transformers import BertConfig, BertForPreTraining

        # BertForPreTraining (not ForMaskedLM) so the checkpoint carries the pooler a classifier builds on.
        return BertForPreTraining(
            BertConfig(
                vocab_size=vocab_size,
                hidden_size=size.hidden,
                num_hidden_layers=size.layers,
                num_attention_heads=4,
                intermediate_size=size.hidden * 2,
                max_position_embeddings=64,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
                pad_token_id=0,
            )
        )
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=size.hidden,
            num_hidden_layers=size.layers,
            num_attention_heads=4,
            num_key_value_heads=4,
            intermediate_size=size.hidden * 2,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            tie_word_embeddings=False,
        )
    )


def _pretrain(model, tokenizer, sentences: list[str], steps: int, lr: float, kind: str, seed: int) -> None:
    """Masked-LM (bert) or next-token (llama) training on ``sentences``: a stand-in for (continued) pre-training."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, ids.shape[0], (32,), generator=generator)
        batch, batch_mask = ids[rows], mask[rows]
        labels = batch.clone()
        if kind == "bert":
            masked = (torch.rand(batch.shape, generator=generator) < 0.2) & (batch_mask == 1) & (batch > 4)
            labels[~masked] = -100
            batch = batch.masked_fill(masked, tokenizer.mask_token_id)
        else:
            labels[batch_mask == 0] = -100
        if kind == "bert":
            logits = model(input_ids=batch, attention_mask=batch_mask).prediction_logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        else:
            loss = model(input_ids=batch, attention_mask=batch_mask, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


def _release(model, tokenizer, corpus: list[str], size: ScenarioSize, kind: str, targets: list[str], seed: int):
    """v2 = v1 + a merged low-rank update of the targeted modules, trained on the regrouped corpus.

    Many real releases are made this way (a LoRA merged into the base, as the benchmark's MiniLM release),
    and it is the structure ReLoRA's projected delta can express: the demo shows the method where its
    assumption holds; bench/README.md shows real releases where it holds less.
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora = LoraConfig(
        r=size.release_rank, lora_alpha=2 * size.release_rank, target_modules=targets, lora_dropout=0.0
    )
    wrapped = get_peft_model(model, lora)
    _pretrain(wrapped, tokenizer, corpus, size.release_steps, size.release_lr, kind, seed)
    return wrapped.merge_and_unload()


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _train_old_adapter(
    base_dir: Path, out_dir: Path, train: Path, task: str, size: ScenarioSize, targets: list[str], seed: int
) -> None:
    """Trains the adapter that is in service on v1 (plain LoRA fine-tuning, our own loop)."""
    from peft import LoraConfig, TaskType, get_peft_model

    from relora_worker.adapters import lora_slots
    from relora_worker.config import FinetuneConfig, TaskConfig
    from relora_worker.data import build_task_data
    from relora_worker.finetune import finetune
    from relora_worker.modelio import load_base_model, load_tokenizer, save_adapter
    from relora_worker.tasks import build_task

    task_config = TaskConfig(task=task, val_size=64, eval_size=200)
    data = build_task_data(task_config, str(train), labels=list(TOPICS))
    tokenizer = load_tokenizer(base_dir)
    torch.manual_seed(seed)
    base = load_base_model(base_dir, task, len(TOPICS), tokenizer.pad_token_id)
    lora = LoraConfig(
        r=size.rank,
        lora_alpha=2 * size.rank,
        target_modules=targets,
        lora_dropout=0.0,
        task_type=TaskType.SEQ_CLS if task == "seq-cls" else TaskType.CAUSAL_LM,
    )
    model = get_peft_model(base, lora)
    device = torch.device("cpu")
    encoded = build_task(task, data, tokenizer, 64, device)
    config = FinetuneConfig(
        max_steps=size.adapter_steps,
        stage1_steps=0,
        lr=5e-3,
        lr_min=5e-4,
        eval_every=max(size.adapter_steps, 1),
        seed=seed,
    )
    finetune(model, encoded, lora_slots(model), config, threshold=1.0, anchors=None)
    save_adapter(model, out_dir, {"task": task, "labels": list(TOPICS), "release": "v1"}, str(base_dir))


def build_scenario(
    out_dir: Path | str, task: str = "seq-cls", seed: int = 0, size: ScenarioSize | None = None
) -> Scenario:
    """Writes base_v1/, base_v2/, adapter_v1/, train.jsonl and eval.jsonl under ``out_dir``."""
    size = size or ScenarioSize()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kind = "bert" if task == "seq-cls" else "llama"
    words = _vocabulary(size)
    vocab = [w for ws in words.values() for w in ws] + (["topic:", *list(TOPICS)] if kind == "llama" else [])
    tokenizer = make_tokenizer(vocab, kind)
    rows = _task_rows(words, rng, size.train_rows + size.eval_rows, size.sentence_length)
    if kind == "llama":
        rows = [{"text": r["text"] + " topic:", "label": r["label"]} for r in rows]
    _write_jsonl(out / "train.jsonl", rows[: size.train_rows])
    _write_jsonl(out / "eval.jsonl", rows[size.train_rows :])

    model = _new_model(kind, len(tokenizer), size, seed)
    v1_corpus = _corpus(_grouping(words, rng, 0.0), rng, 2000, size.sentence_length)
    _pretrain(model, tokenizer, v1_corpus, size.pretrain_steps, 3e-3, kind, seed)
    for name in ("base_v1",):
        model.save_pretrained(out / name, safe_serialization=True)
        tokenizer.save_pretrained(out / name)
    targets = ["query", "value", "dense"] if kind == "bert" else ["q_proj", "v_proj", "o_proj"]
    v2_corpus = _corpus(_grouping(words, rng, 0.5), rng, 2000, size.sentence_length)
    model = _release(model, tokenizer, v2_corpus, size, kind, targets, seed + 1)
    model.save_pretrained(out / "base_v2", safe_serialization=True)
    tokenizer.save_pretrained(out / "base_v2")

    _train_old_adapter(out / "base_v1", out / "adapter_v1", out / "train.jsonl", task, size, targets, seed)
    return Scenario(
        str(out / "base_v1"),
        str(out / "base_v2"),
        str(out / "adapter_v1"),
        str(out / "train.jsonl"),
        str(out / "eval.jsonl"),
        task,
        list(TOPICS),
        targets,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the tiny synthetic ReLoRA scenario (models, adapter, data).")
    parser.add_argument("--out", required=True, help="folder to write the scenario into")
    parser.add_argument("--task", choices=("seq-cls", "causal-lm"), default="seq-cls", help="task type")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    print(json.dumps(asdict(build_scenario(args.out, args.task, args.seed))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
