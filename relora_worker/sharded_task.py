"""A task whose evaluation and training batches are split across torchrun's ranks (relora_worker.distributed).

:class:`ShardedTask` wraps a built :class:`~relora_worker.tasks.Task`: each rank keeps a contiguous share of
the probe rows (D_val, after ``limit_probe``) and of the evaluation rows (D_eval), scores only those, and the
partial sums are all-reduced. Classification's loss and accuracy are sums over rows, so the totals are the
single-process ones (up to the order of float additions); a causal LM's loss is a token mean per pass, so its
split validation loss is the row-weighted mean of the shares' token means (close, not identical). Training
batches are split the same way; with equal shares the average of the shares' mean losses is the batch's.

With a sharded base (FSDP2, ``--shard-base``) every forward pass is collective (it all-gathers each unit's
weights), so every rank must run as many passes as the others. Shares differ by a row and may be empty, and a
rank's evaluation chunks follow its own rows (and its own memory budget on a GPU), so the counts can differ:
before each evaluation the ranks agree on the largest count (each task says how many passes it will run:
``val_passes``, ``quality_passes``) and after it the short ones run filler passes (one training row, result
discarded) up to it. Results are unchanged; a hook on the first sharded block counts the passes actually run
(``passes``). Training is equal by construction (equal shares of every batch, one forward and one backward
each). Greedy exact match is refused with a sharded base (readapt): generation stops when a rank's rows do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor

from relora_worker.distributed import World, all_reduce_sums, gathered
from relora_worker.errors import BadInputError
from relora_worker.tasks import Encoded, Task, eval_context

T = TypeVar("T")


def _rows(encoded: Encoded, share: slice) -> Encoded:
    scored = None if encoded.scored is None else encoded.scored[share]
    return Encoded(encoded.input_ids[share], encoded.attention_mask[share], encoded.targets[share],
                   encoded.lengths[share], scored)  # fmt: skip


class ShardedTask:
    """``task`` with this rank's share of the rows; every other attribute is the wrapped task's.

    ``probe`` (and so the result's ``sizes.probe``) stays the whole probe: the search scores all of it.
    ``sharded_block``: the first block of a sharded base, whose forward calls count this rank's passes (every
    pass runs it once); ``None`` for replicas (passes need not match)."""

    def __init__(self, task: Task, world: World, batch_size: int, sharded_block: Any = None):
        if batch_size % world.size:
            raise BadInputError(
                f"--batch-size {batch_size} must be a multiple of the number of processes ({world.size}): "
                "each rank trains on an equal share of every batch"
            )
        self._task = task
        self._world = world
        self.passes = 0  # forward passes of this rank's evaluations so far (a sharded base only)
        self.filler_passes = 0
        self._filler = task.train.rows(slice(0, 1))  # the same row on every rank; any row would do
        if sharded_block is not None:
            sharded_block.register_forward_pre_hook(self._count)
        self._sharded = sharded_block is not None
        self.probe = task.probe
        task.probe = _rows(task.probe, world.share(len(task.probe)))
        task._val_chunks = None
        if hasattr(task, "eval"):  # classification: an encoded D_eval
            self._eval_rows = len(task.eval)
            task.eval = _rows(task.eval, world.share(self._eval_rows))
            task._eval_chunks = None
            self._local_eval = len(task.eval)
        else:  # causal LM: prompts / labels (likelihood accuracy) or examples (exact match)
            self._eval_rows = len(task.eval_examples)
            share = world.share(self._eval_rows)
            task.eval_examples = task.eval_examples[share]
            if task.metric == "accuracy":
                task.prompts, task.truth = task.prompts[share], task.truth[share]
            self._local_eval = len(task.eval_examples)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def _count(self, _module: Any, _inputs: Any) -> None:
        self.passes += 1

    def _equal_passes(self, model: Any, passes: Callable[[], int], local: Callable[[], T]) -> T:
        """``local()`` (this rank's evaluation), then filler passes up to the most passes any rank runs.

        The counts are agreed before any pass: a pass is collective, so a rank still in its last real pass
        must meet the others' fillers, not a count's all-reduce."""
        if not self._sharded:
            return local()
        mine = passes()
        most = int(max(gathered(float(mine), self._task.device)))
        value = local()
        if most > mine:
            was_training = model.training
            model.eval()
            with torch.no_grad(), eval_context(model, self._task.device):
                for _ in range(most - mine):
                    self._task.loss(model, self._filler)  # one pass; its value is discarded
            model.train(was_training)
            self.filler_passes += most - mine
        return value

    def val_loss(self, model: Any) -> float:
        rows = len(self._task.probe)
        mean = self._equal_passes(
            model,
            lambda: self._task.val_passes(model) if rows else 0,
            lambda: self._task.val_loss(model) if rows else 0.0,
        )
        total, count = all_reduce_sums([mean * rows, float(rows)], self._task.device)
        return total / count

    def quality(self, model: Any) -> float:
        rows = self._local_eval
        share = self._equal_passes(
            model,
            lambda: self._task.quality_passes(model) if rows else 0,
            lambda: self._task.quality(model) if rows else 0.0,
        )
        # Accuracy × rows is a whole count of correct rows: rounded so the total is exact.
        total, count = all_reduce_sums([round(share * rows), float(rows)], self._task.device)
        return total / count

    def train_batches(self, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
        """The wrapped task's stream (the same on every rank: same seed), each batch cut to this rank's rows."""
        share = self._world.share(batch_size)
        for batch in self._task.train_batches(batch_size, seed):
            yield {key: value[share] for key, value in batch.items()}
