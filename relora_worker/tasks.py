"""Task encodings: the loss, validation loss and quality metric of a model on pre-tokenised splits.

Two tasks share one interface (:class:`Task`):

* ``seq-cls`` — sequence classification; quality = accuracy of the argmax logit.
* ``causal-lm`` — prompt → completion; trained on completion tokens only; quality = accuracy of the label
  whose completion is most likely given the prompt (``accuracy``), or greedy exact match (``exact-match``).

Every split is tokenised once up front; batches are slices of device tensors, trimmed to their longest row
(the row lengths are kept on the host too, so slicing a batch never waits for the device).

At LLM scale a causal LM's forward is cheap next to its output layer when the vocabulary is large (128k × 4k
for Llama-3): the causal-LM task therefore runs the transformer trunk and applies the output layer only at
the positions it scores (the completion tokens), in the base's dtype, with float32 only in the log-softmax
reduction. Likelihood accuracy runs each prompt once: its KV cache is shared by all the labels'
continuations (see :meth:`CausalLanguageModelTask.label_scores`).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from relora_worker.data import Example, TaskData
from relora_worker.distributed import FULL_FORWARD

EVAL_CHUNK = 128  # rows per generate() call of exact-match evaluation
CPU_EVAL_TOKENS = 65536  # padded tokens per evaluation forward pass on a CPU
MAX_EVAL_TOKENS = 1 << 20  # the most a GPU pass takes, whatever its free memory
FULL_LOGITS_BYTES = 2**31  # per pass of the full-logits path (fallback and reference): tokens × vocabulary
EVAL_MEMORY_SHARE = 0.5  # of the device's free memory, for one evaluation pass (the rest: allocator slack)


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


def model_dtype(model: Any) -> torch.dtype:
    """The dtype of the base's (frozen) weights: the first floating parameter that does not train."""
    for parameter in model.parameters():
        if not parameter.requires_grad and parameter.is_floating_point():
            return parameter.dtype
    return next(model.parameters()).dtype


def eval_context(model: Any, device: torch.device) -> contextlib.AbstractContextManager:
    """Evaluation in the base's own dtype: a half-precision base on a GPU also runs its LoRA factors (float32
    parameters) in that dtype under autocast; a float32 base evaluates in float32."""
    dtype = model_dtype(model)
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def token_budget(model: Any, device: torch.device, cached_prefix: bool = False) -> int:
    """Padded tokens one evaluation pass may hold, from the device's free memory (fixed on a CPU).

    Per token, one layer's live activations (attention projections, residual, MLP) in the base's dtype, plus
    every layer's key/value entry when the pass keeps a cache (the shared prompts of likelihood accuracy).
    Only one layer's activations live at a time without gradients, so the count does not grow with depth.
    """
    if device.type != "cuda":
        return CPU_EVAL_TOKENS
    config = getattr(model, "config", None)
    hidden = int(getattr(config, "hidden_size", 1024) or 1024)
    ffn = int(getattr(config, "intermediate_size", 4 * hidden) or 4 * hidden)
    layers = int(getattr(config, "num_hidden_layers", 1) or 1)
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(config, "num_key_value_heads", heads) or heads)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    width = torch.finfo(model_dtype(model)).bits // 8
    per_token = width * (8 * hidden + 3 * ffn)
    if cached_prefix:
        per_token += 2 * layers * kv_heads * head_dim * width
    free, _total = torch.cuda.mem_get_info(device)
    return int(min(MAX_EVAL_TOKENS, max(1024, EVAL_MEMORY_SHARE * free // per_token)))


@dataclass
class Encoded:
    """A padded split: ``input_ids``/``attention_mask`` N × L, ``targets`` N (classes) or N × L (tokens).

    ``lengths`` (N, on the host) are the rows' token counts; ``scored`` (N, on the device) the number of
    completion tokens at the end of each causal-LM row (``None`` for classification).
    """

    input_ids: Tensor
    attention_mask: Tensor
    targets: Tensor
    lengths: Tensor
    scored: Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def chunks(self, max_tokens: int) -> list[dict[str, Tensor]]:
        """The split in row order as batches of at most ``max_tokens`` padded tokens (at least one row each)."""
        rows = max(1, max_tokens // max(self.input_ids.shape[1], 1))
        return [self.rows(slice(i, i + rows)) for i in range(0, len(self), rows)]

    def head(self, count: int) -> Encoded:
        """The first ``count`` rows as a split of their own (views, no copies)."""
        scored = None if self.scored is None else self.scored[:count]
        return Encoded(self.input_ids[:count], self.attention_mask[:count], self.targets[:count],
                       self.lengths[:count], scored)  # fmt: skip

    def rows(self, index: Tensor | slice, host_index: Tensor | slice | None = None) -> dict[str, Tensor]:
        """Rows ``index`` (a device tensor or a slice), trimmed to their longest; ``host_index`` is the same
        selection on the host (for the lengths), so that trimming never reads from the device."""
        host = index if host_index is None else host_index
        width = int(self.lengths[host].max())  # right-padded: trim to the longest row
        targets = self.targets[index]
        batch = {
            "input_ids": self.input_ids[index][:, :width],
            "attention_mask": self.attention_mask[index][:, :width],
            "targets": targets[:, :width] if targets.dim() == 2 else targets,
        }
        if self.scored is not None:
            batch["lengths"] = self.attention_mask[index][:, :width].sum(dim=1)
            batch["scored"] = self.scored[index]
        return batch


def probe_rows(lengths: Tensor, parameters: int, max_flops: float, min_rows: int = 64) -> int:
    """How many leading D_val rows one probe may score: the longest prefix whose forward pass costs at most
    ``max_flops`` (≈ 2 × ``parameters`` × its tokens), never fewer than ``min_rows`` (nor more than exist).

    Args:
        lengths: the rows' token counts, shape (N,), on the host.
        parameters: the model's parameter count.
        max_flops: the budget of one probe's forward pass; 0 or less: every row.
    """
    total = len(lengths)
    if max_flops <= 0 or total == 0:
        return total
    affordable = int((torch.cumsum(lengths.double(), 0) * 2 * parameters <= max_flops).sum())
    return max(min(min_rows, total), affordable)


def _pad(rows: list[list[int]], value: int) -> Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


class Task:
    """Interface: ``train_batches``, ``loss``, ``val_loss`` (search objective) and ``quality``.

    Evaluation runs in batches of at most ``eval_tokens`` padded tokens: few large forward passes, since on a GPU a
    small model's evaluation is bound by kernel launches, not arithmetic. On a GPU the budget comes from the
    device's free memory at the first evaluation (:func:`token_budget`); setting ``eval_tokens`` overrides it.
    """

    def __init__(self, data: TaskData, tokenizer: Any, max_length: int, device: torch.device):
        self.eval_tokens: int | None = CPU_EVAL_TOKENS if device.type != "cuda" else None
        self.data = data
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = device
        self.labels = data.labels
        self.train = self.encode(data.train)
        self.val = self.encode(data.val)
        self.probe = self.val  # what the search's objective scores: D_val, or its first rows (limit_probe)
        self._val_chunks: list[dict[str, Tensor]] | None = None

    def encode(self, examples: list[Example]) -> Encoded:
        raise NotImplementedError

    def loss(self, model: Any, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def quality(self, model: Any) -> float:
        raise NotImplementedError

    def train_batches(self, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
        """An endless stream of shuffled mini-batches (reshuffled every epoch).

        The epoch's order goes to the device once; each batch is sliced from it with its width read from the
        host's row lengths, so drawing a batch never synchronises with the device.
        """
        generator = torch.Generator().manual_seed(seed)
        while True:
            order = torch.randperm(len(self.train), generator=generator)
            on_device = order.to(self.device)
            for start in range(0, max(len(order) - batch_size, 0) + 1, batch_size):  # drop a short last batch
                part = slice(start, start + batch_size)
                yield self.train.rows(on_device[part], host_index=order[part])

    def budget(self, model: Any) -> int:
        """``eval_tokens``, computed from free memory at the first call when not set."""
        if self.eval_tokens is None:
            self.eval_tokens = token_budget(model, self.device)
        return self.eval_tokens

    def limit_probe(self, rows: int) -> None:
        """The search's objective scores the first ``rows`` rows of D_val (the same rows at every probe)."""
        self.probe = self.val.head(rows)
        self._val_chunks = None

    def val_passes(self, model: Any) -> int:
        """The forward passes :meth:`val_loss` runs (the ranks of a sharded base must run as many)."""
        if self._val_chunks is None:
            # Sliced once: the search calls this for every probe.
            self._val_chunks = self.probe.chunks(self.budget(model))
        return len(self._val_chunks)

    def quality_passes(self, model: Any) -> int:
        """The forward passes :meth:`quality` runs."""
        raise NotImplementedError

    @torch.no_grad()
    def val_loss(self, model: Any) -> float:
        """Mean loss on D_val (or the rows ``limit_probe`` kept): the search's objective (lower is better)."""
        self.val_passes(model)
        assert self._val_chunks is not None
        was_training = model.training
        model.eval()
        total = torch.zeros((), device=self.device)
        with eval_context(model, self.device):
            for batch in self._val_chunks:
                total += self.loss(model, batch).float() * batch["input_ids"].shape[0]
        model.train(was_training)
        return float(total) / len(self.probe)


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
        return Encoded(ids.to(self.device), mask.to(self.device), targets.to(self.device), mask.sum(dim=1))

    def logits(self, model: Any, batch: dict[str, Tensor]) -> Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def loss(self, model: Any, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(self.logits(model, batch).float(), batch["targets"])

    def quality_passes(self, model: Any) -> int:
        if self._eval_chunks is None:
            self._eval_chunks = self.eval.chunks(self.budget(model))
        return len(self._eval_chunks)

    @torch.no_grad()
    def quality(self, model: Any) -> float:
        was_training = model.training
        model.eval()
        self.quality_passes(model)
        assert self._eval_chunks is not None
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        with eval_context(model, self.device):
            for batch in self._eval_chunks:
                correct += (self.logits(model, batch).argmax(-1) == batch["targets"]).sum()
        model.train(was_training)
        return int(correct) / len(self.eval)


def trunk_and_head(model: Any) -> tuple[Any, Any] | None:
    """The causal LM's transformer trunk (hidden states out) and its output layer, or ``None`` when the model
    transforms its logits beyond the output layer (soft-capping, logit scaling), or when its base is sharded as
    one root unit (a tied output layer, relora_worker.distributed.shard_frozen_base): then the full forward is
    used."""
    if getattr(model, FULL_FORWARD, False):
        return None
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(lm, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    trunk = getattr(lm, getattr(lm, "base_model_prefix", ""), None)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if trunk is None or head is None or trunk is lm:
        return None
    return trunk, head


def _cache_argument(trunk: Any) -> str:
    """The name under which this transformers version takes a key/value cache (``cache`` from 5.2x on)."""
    return "cache" if "cache" in inspect.signature(trunk.forward).parameters else "past_key_values"


def _returned_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


class CausalLanguageModelTask(Task):
    """``causal-lm``: prompt → completion, loss on completion tokens only.

    The completion sits at the end of each row, so the scored positions of row i are the ``scored[i]`` positions
    before its last token: a fixed N × M block (M the longest completion), gathered without reading the targets
    back from the device.
    """

    def __init__(self, data: TaskData, tokenizer: Any, max_length: int, device: torch.device, metric: str):
        self.metric = metric
        super().__init__(data, tokenizer, max_length, device)
        self.eval_examples = data.eval
        if metric == "accuracy":
            self.label_completions = [self._completion(label) for label in self.labels]
            longest = max(len(c) for c in self.label_completions)
            self.prompts = [self._prompt(e.text, max_length - longest) for e in data.eval]
            self.truth = torch.tensor([self.labels.index(e.label) for e in data.eval], device=device)

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
        scored = torch.tensor([sum(t != -100 for t in p[1]) for p in pairs], dtype=torch.long)
        return Encoded(
            ids.to(self.device), mask.to(self.device), targets.to(self.device), mask.sum(dim=1), scored.to(self.device)
        )

    @staticmethod
    def token_losses(model: Any, batch: dict[str, Tensor]) -> Tensor:
        """Per-token negative log-likelihood over every position (N × L−1), 0 where the target is ignored.

        The reference computation (full logits); :meth:`completion_losses` computes the scored ones only.
        """
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["targets"][:, 1:]
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
        ).view(targets.shape)

    @staticmethod
    def completion_losses(model: Any, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Negative log-likelihood of each completion token: (N × M losses, N × M mask of real tokens).

        Runs the trunk, gathers the hidden states that predict the completion tokens and applies the output
        layer to those only (in the base's dtype; the log-softmax in float32).
        """
        parts = trunk_and_head(model)
        scored, lengths = batch["scored"], batch["lengths"]
        longest = batch["targets"].shape[1]  # an upper bound of M that needs no device read
        width = min(longest, int(batch.get("max_scored", longest)))
        if parts is None:
            losses = CausalLanguageModelTask.token_losses(model, batch)
            return losses, batch["targets"][:, 1:] != -100
        trunk, head = parts
        hidden = trunk(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)[0]
        offsets = torch.arange(width, device=hidden.device)
        positions = (lengths - scored - 1)[:, None] + offsets  # N × M: position t predicts token t + 1
        real = (offsets < scored[:, None]) & (positions >= 0)
        positions = positions.clamp(0, max(hidden.shape[1] - 2, 0))
        picked = hidden.gather(1, positions[:, :, None].expand(-1, -1, hidden.shape[-1]))  # N × M × h
        logits = head(picked)  # N × M × V, base dtype
        targets = batch["input_ids"].gather(1, positions + 1).masked_fill(~real, -100)
        losses = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
        ).view(targets.shape)
        return losses, real

    def loss(self, model: Any, batch: dict[str, Tensor]) -> Tensor:
        losses, real = self.completion_losses(model, self._bounded(batch))
        return losses.sum() / real.sum().clamp_min(1)

    def _bounded(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch with ``max_scored``: the split's longest completion, known on the host."""
        return {**batch, "max_scored": self._max_scored}  # type: ignore[dict-item]

    @property
    def _max_scored(self) -> int:
        if not hasattr(self, "_max_scored_value"):
            splits = [self.train, self.val]
            self._max_scored_value = max(int(s.scored.max()) for s in splits if s.scored is not None and len(s))
        return self._max_scored_value

    @torch.no_grad()
    def quality(self, model: Any) -> float:
        was_training = model.training
        model.eval()
        with eval_context(model, self.device):
            if self.metric == "accuracy":
                score = float((self.label_scores(model).argmax(dim=1) == self.truth).float().mean())
            else:
                score = self._exact_match(model)
        model.train(was_training)
        return score

    @torch.no_grad()
    def label_scores(self, model: Any, first_token_only: bool = False) -> Tensor:
        """Log-likelihood of every label's completion after every evaluation prompt (E × K).

        Each chunk of prompts runs once with its key/value cache kept; the cache is repeated K times and all the
        labels' continuations (every completion token but the last) run against it in one batched pass. That
        costs E prompts + E·K continuation tokens instead of E·K full sequences. With ``first_token_only`` the
        continuation pass is skipped and only each label's first token is scored (exact only for one-token
        completions without an end-of-sequence token; measured by bench/scale as the cheaper alternative).
        Falls back to the full sequences when the model has no separable output layer.
        """
        parts = trunk_and_head(model)
        if parts is None:
            return self._label_scores_full(model)
        trunk, head = parts
        first = torch.tensor([c[0] for c in self.label_completions], device=self.device)  # K
        tails = [c[1:] for c in self.label_completions]
        rows, tail_width = self._prompt_rows(model)
        pad = self.tokenizer.pad_token_id
        out = []
        for start in range(0, len(self.prompts), rows):
            prompts = self.prompts[start : start + rows]
            width = max(1, max(len(p) for p in prompts))
            lengths = torch.tensor([len(p) for p in prompts], device=self.device)  # an empty prompt scores from pad
            ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts], device=self.device)
            mask = (torch.arange(width, device=self.device)[None, :] < lengths.clamp_min(1)[:, None]).long()
            result = trunk(input_ids=ids, attention_mask=mask, use_cache=not first_token_only and tail_width > 0)
            last = result[0].gather(1, (lengths.clamp_min(1) - 1)[:, None, None].expand(-1, 1, result[0].shape[-1]))
            scores = torch.log_softmax(head(last[:, 0]).float(), dim=-1)[:, first]  # n × K
            if not first_token_only and tail_width > 0:
                scores = scores + self._continuation_scores(trunk, head, _returned_cache(result), mask, lengths, tails)
            out.append(scores)
        return torch.cat(out)

    def _prompt_rows(self, model: Any) -> tuple[int, int]:
        """Prompts per pass of :meth:`label_scores`, and the longest label tail (0: one pass per chunk)."""
        tail_width = max(len(c) - 1 for c in self.label_completions)
        prompt_width = max(1, max(len(p) for p in self.prompts))
        rows = max(1, self.budget_prefix(model) // (len(self.labels) * (prompt_width + tail_width)))
        return rows, tail_width

    def quality_passes(self, model: Any) -> int:
        """Forward passes of likelihood accuracy (a trunk pass and its output layer each; exact match's
        generation stops when its rows do, so it has no count known in advance and is not counted here)."""
        if self.metric != "accuracy":
            raise NotImplementedError("exact match: generation's passes are not known in advance")
        if trunk_and_head(model) is None:
            return len(Encoded(*self._choice_rows()).chunks(min(self.budget(model), self._full_logits_tokens())))
        rows, tail_width = self._prompt_rows(model)
        return math.ceil(len(self.prompts) / rows) * (2 if tail_width > 0 else 1)

    def budget_prefix(self, model: Any) -> int:
        """Tokens of repeated prompt cache one likelihood-accuracy pass may hold."""
        if self.eval_tokens is not None:
            return self.eval_tokens
        return token_budget(model, self.device, cached_prefix=True)

    def _continuation_scores(
        self, trunk: Any, head: Any, cache: Any, mask: Tensor, lengths: Tensor, tails: list[list[int]]
    ) -> Tensor:
        """Σ_j log p(tail_k[j] | prompt, first_k, tail_k[:j]) for every prompt (n) and label (K): n × K."""
        labels, rows = len(tails), mask.shape[0]
        firsts = [c[0] for c in self.label_completions]
        width = max(len(t) for t in tails)
        # Continuation inputs: the label's first token and every tail token but the last; targets: the tail.
        steps = [[firsts[k], *t][: len(t)] for k, t in enumerate(tails)]
        inputs = torch.tensor([x + [0] * (width - len(x)) for x in steps], device=self.device)  # K × W
        targets = torch.tensor([t + [-100] * (width - len(t)) for t in tails], device=self.device)  # K × W
        cache.batch_repeat_interleave(labels)  # row i·K + k continues prompt i with label k
        full_mask = torch.cat([mask.repeat_interleave(labels, 0), mask.new_ones(rows * labels, width)], dim=1)
        positions = lengths.clamp_min(1).repeat_interleave(labels)[:, None] + torch.arange(width, device=self.device)
        hidden = trunk(
            input_ids=inputs.repeat(rows, 1),
            attention_mask=full_mask,
            position_ids=positions,
            use_cache=True,
            **{_cache_argument(trunk): cache},
        )[0]
        logits = head(hidden).float()  # n·K × W × V: only continuation positions
        flat_targets = targets.repeat(rows, 1).reshape(-1)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), flat_targets, ignore_index=-100, reduction="none")
        return -nll.view(rows, labels, width).sum(dim=2)

    def budget(self, model: Any) -> int:
        """As :meth:`Task.budget`, capped for models scored through their full logits (no separable output
        layer): those hold tokens × vocabulary float32 logits per pass, at most ``FULL_LOGITS_BYTES``."""
        budget = super().budget(model)
        if trunk_and_head(model) is None:
            return min(budget, self._full_logits_tokens())
        return budget

    def _full_logits_tokens(self) -> int:
        return max(1024, FULL_LOGITS_BYTES // (4 * max(len(self.tokenizer), 1)))

    def _label_scores_full(self, model: Any) -> Tensor:
        """The reference: every (prompt, label) sequence in full (E·K rows), scored token by token."""
        sequences = Encoded(*self._choice_rows())
        scores = []
        for batch in sequences.chunks(min(self.budget(model), self._full_logits_tokens())):
            scores.append(-self.token_losses(model, batch).sum(dim=1))  # log-likelihood of the completion
        return torch.cat(scores).view(-1, len(self.labels))

    def _choice_rows(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Every (prompt, label) pair, row-major (row i·K + k scores label k after prompt i), sharing the prompts
        of :meth:`label_scores`."""
        rows = [(p + c, [-100] * len(p) + c) for p in self.prompts for c in self.label_completions]
        ids = _pad([r[0] for r in rows], self.tokenizer.pad_token_id)
        mask = _pad([[1] * len(r[0]) for r in rows], 0)
        targets = _pad([r[1] for r in rows], -100)
        return ids.to(self.device), mask.to(self.device), targets.to(self.device), mask.sum(dim=1)

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
