"""Task encodings: the loss, validation loss and quality metric of a model on pre-tokenised splits.

Two tasks share one interface (:class:`Task`):

* ``seq-cls`` — sequence classification; quality = accuracy of the argmax logit.
* ``causal-lm`` — prompt → completion; trained on completion tokens only; quality = accuracy of the label
  whose completion is most likely given the prompt (``accuracy``), or greedy exact match (``exact-match``).

Every split is tokenised once up front; batches are slices of device tensors, trimmed to their longest row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from relora_worker.data import Example, TaskData

EVAL_CHUNK = 128  # rows per generate() call of exact-match evaluation


def precision_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for forward passes that only rank or score (search probes), never for training.

    ``auto`` is bfloat16 on a CUDA device that supports it and float32 elsewhere: a probe's validation loss is
    compared only with other probes', and bf16 matmuls make it several times cheaper.
    """
    if precision == "float32" or (precision == "auto" and not (device.type == "cuda" and _cuda_bf16())):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _cuda_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass
class Encoded:
    """A padded split: ``input_ids``/``attention_mask`` N × L, ``targets`` N (classes) or N × L (tokens)."""

    input_ids: Tensor
    attention_mask: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def chunks(self, max_tokens: int) -> list[dict[str, Tensor]]:
        """The split in row order as batches of at most ``max_tokens`` padded tokens (at least one row each)."""
        rows = max(1, max_tokens // max(self.input_ids.shape[1], 1))
        return [self.rows(slice(i, i + rows)) for i in range(0, len(self), rows)]

    def rows(self, index: Tensor | slice) -> dict[str, Tensor]:
        mask = self.attention_mask[index]
        width = int(mask.sum(dim=1).max())  # right-padded: trim to the longest row
        targets = self.targets[index]
        return {
            "input_ids": self.input_ids[index][:, :width],
            "attention_mask": mask[:, :width],
            "targets": targets[:, :width] if targets.dim() == 2 else targets,
        }


def _pad(rows: list[list[int]], value: int) -> Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


class Task:
    """Interface: ``train_batches``, ``loss``, ``val_loss`` (search objective) and ``quality``.

    Evaluation runs in batches of at most ``eval_tokens`` padded tokens: few large forward passes, since on a GPU a
    small model's evaluation is bound by kernel launches, not arithmetic.
    """

    eval_tokens = 65536

    def __init__(self, data: TaskData, tokenizer: Any, max_length: int, device: torch.device):
        self.data = data
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = device
        self.labels = data.labels
        self.train = self.encode(data.train)
        self.val = self.encode(data.val)
        self._val_chunks: list[dict[str, Tensor]] | None = None

    def encode(self, examples: list[Example]) -> Encoded:
        raise NotImplementedError

    def loss(self, model: Any, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def quality(self, model: Any) -> float:
        raise NotImplementedError

    def train_batches(self, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
        """An endless stream of shuffled mini-batches (reshuffled every epoch)."""
        generator = torch.Generator().manual_seed(seed)
        while True:
            order = torch.randperm(len(self.train), generator=generator)
            for start in range(0, max(len(order) - batch_size, 0) + 1, batch_size):  # drop a short last batch
                yield self.train.rows(order[start : start + batch_size].to(self.device))

    @torch.no_grad()
    def val_loss(self, model: Any) -> float:
        """Mean loss on D_val: the search's objective (lower is better)."""
        if self._val_chunks is None:
            # Sliced and trimmed once: the search calls this for every probe, and trimming reads the mask back
            # from the device (a synchronisation per chunk).
            self._val_chunks = self.val.chunks(self.eval_tokens)
        was_training = model.training
        model.eval()
        total = torch.zeros((), device=self.device)
        for batch in self._val_chunks:
            total += self.loss(model, batch).float() * batch["input_ids"].shape[0]
        model.train(was_training)
        return float(total) / len(self.val)


class SequenceClassificationTask(Task):
    """``seq-cls``: cross-entropy over the label set; accuracy on D_eval."""

    def __init__(self, data: TaskData, tokenizer: Any, max_length: int, device: torch.device):
        self.label_index = {label: i for i, label in enumerate(data.labels)}
        super().__init__(data, tokenizer, max_length, device)
        self.eval = self.encode(data.eval)
        self._eval_chunks: list[dict[str, Tensor]] | None = None

    def encode(self, examples: list[Example]) -> Encoded:
        encoded = self.tokenizer([e.text for e in examples], truncation=True, max_length=self.max_length)
        ids = _pad(encoded["input_ids"], self.tokenizer.pad_token_id)
        mask = _pad(encoded["attention_mask"], 0)
        targets = torch.tensor([self.label_index[e.label] for e in examples], dtype=torch.long)
        return Encoded(ids.to(self.device), mask.to(self.device), targets.to(self.device))

    def logits(self, model: Any, batch: dict[str, Tensor]) -> Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def loss(self, model: Any, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(self.logits(model, batch).float(), batch["targets"])

    @torch.no_grad()
    def quality(self, model: Any) -> float:
        was_training = model.training
        model.eval()
        if self._eval_chunks is None:
            self._eval_chunks = self.eval.chunks(self.eval_tokens)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for batch in self._eval_chunks:
            correct += (self.logits(model, batch).argmax(-1) == batch["targets"]).sum()
        model.train(was_training)
        return int(correct) / len(self.eval)


class CausalLanguageModelTask(Task):
    """``causal-lm``: prompt → completion, loss on completion tokens only."""

    logits_bytes = 2**30  # per evaluation chunk: its logits are tokens × vocabulary floats

    def __init__(self, data: TaskData, tokenizer: Any, max_length: int, device: torch.device, metric: str):
        self.metric = metric
        # A small vocabulary takes large chunks (few launches); a 128k one about 2k tokens (bounded memory).
        self.eval_tokens = max(1024, self.logits_bytes // (4 * max(len(tokenizer), 1)))
        super().__init__(data, tokenizer, max_length, device)
        self.eval_examples = data.eval
        if metric == "accuracy":
            self.choices = self._choice_sequences(data.eval)

    def _completion(self, label: str) -> list[int]:
        ids = self.tokenizer(" " + label, add_special_tokens=False)["input_ids"]
        return ids + ([self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else [])

    def _prompt(self, text: str, room: int) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids[-room:] if room > 0 else []  # keep the end of a long prompt: it sits next to the answer

    def _pair(self, text: str, label: str) -> tuple[list[int], list[int]]:
        completion = self._completion(label)
        prompt = self._prompt(text, self.max_length - len(completion))
        return prompt + completion, [-100] * len(prompt) + completion

    def encode(self, examples: list[Example]) -> Encoded:
        pairs = [self._pair(e.text, e.label) for e in examples]
        ids = _pad([p[0] for p in pairs], self.tokenizer.pad_token_id)
        mask = _pad([[1] * len(p[0]) for p in pairs], 0)
        targets = _pad([p[1] for p in pairs], -100)
        return Encoded(ids.to(self.device), mask.to(self.device), targets.to(self.device))

    def _choice_sequences(self, examples: list[Example]) -> Encoded:
        """Every (example, label) pair, row-major: row i·K + k scores label k for example i."""
        return self.encode([Example(e.text, label) for e in examples for label in self.labels])

    @staticmethod
    def token_losses(model: Any, batch: dict[str, Tensor]) -> Tensor:
        """Per-token negative log-likelihood (N × L−1), 0 where the target is ignored."""
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["targets"][:, 1:]
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
        ).view(targets.shape)

    def loss(self, model: Any, batch: dict[str, Tensor]) -> Tensor:
        counted = (batch["targets"][:, 1:] != -100).sum().clamp_min(1)
        return self.token_losses(model, batch).sum() / counted

    @torch.no_grad()
    def quality(self, model: Any) -> float:
        was_training = model.training
        model.eval()
        score = self._likelihood_accuracy(model) if self.metric == "accuracy" else self._exact_match(model)
        model.train(was_training)
        return score

    def _likelihood_accuracy(self, model: Any) -> float:
        scores = []
        for batch in self.choices.chunks(self.eval_tokens):
            scores.append(-self.token_losses(model, batch).sum(dim=1))  # log-likelihood of the completion
        by_example = torch.cat(scores).view(-1, len(self.labels))
        truth = torch.tensor([self.labels.index(e.label) for e in self.eval_examples], device=by_example.device)
        return float((by_example.argmax(dim=1) == truth).float().mean())

    def _exact_match(self, model: Any) -> float:
        longest = max(len(self._completion(e.label)) for e in self.eval_examples) + 1
        correct = 0
        for start in range(0, len(self.eval_examples), EVAL_CHUNK):
            chunk = self.eval_examples[start : start + EVAL_CHUNK]
            prompts = [self._prompt(e.text, self.max_length - longest) for e in chunk]
            width = max(len(p) for p in prompts)
            pad = self.tokenizer.pad_token_id
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=longest, do_sample=False, pad_token_id=pad
            )
            texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            correct += sum(t.strip() == e.label.strip() for t, e in zip(texts, chunk, strict=True))
        return correct / len(self.eval_examples)


def build_task(
    task: str, data: TaskData, tokenizer: Any, max_length: int, device: torch.device, metric: str = "accuracy"
) -> Task:
    if task == "seq-cls":
        return SequenceClassificationTask(data, tokenizer, max_length, device)
    return CausalLanguageModelTask(data, tokenizer, max_length, device, metric)
