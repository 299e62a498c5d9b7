"""A task whose evaluation and training batches are split across torchrun's ranks (relora_worker.distributed).

:class:`ShardedTask` wraps a built :class:`~relora_worker.tasks.Task`: each rank keeps a contiguous share of
the probe rows (D_val, after ``limit_probe``) and of the evaluation rows (D_eval), scores only those, and the
partial sums are all-reduced. Classification's loss and accuracy are sums over rows, so the totals are the
single-process ones (up to the order of float additions); a causal LM's loss is a token mean per pass, so its
split validation loss is the row-weighted mean of the shares' token means (close, not identical). Training
batches are split the same way; with equal shares the average of the shares' mean losses is the batch's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import Tensor

from relora_worker.distributed import World, all_reduce_sums
from relora_worker.errors import BadInputError
from relora_worker.tasks import Encoded, Task


def _rows(encoded: Encoded, share: slice) -> Encoded:
    scored = None if encoded.scored is None else encoded.scored[share]
    return Encoded(encoded.input_ids[share], encoded.attention_mask[share], encoded.targets[share],
                   encoded.lengths[share], scored)  # fmt: skip


class ShardedTask:
    """``task`` with this rank's share of the rows; every other attribute is the wrapped task's.

    ``probe`` (and so the result's ``sizes.probe``) stays the whole probe: the search scores all of it."""

    def __init__(self, task: Task, world: World, batch_size: int):
        if batch_size % world.size:
            raise BadInputError(
                f"--batch-size {batch_size} must be a multiple of the number of processes ({world.size}): "
                "each rank trains on an equal share of every batch"
            )
        self._task = task
        self._world = world
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

    def val_loss(self, model: Any) -> float:
        rows = len(self._task.probe)
        mean = self._task.val_loss(model) if rows else 0.0
        total, count = all_reduce_sums([mean * rows, float(rows)], self._task.device)
        return total / count

    def quality(self, model: Any) -> float:
        rows = self._local_eval
        share = self._task.quality(model) if rows else 0.0
        # Accuracy × rows is a whole count of correct rows: rounded so the total is exact.
        total, count = all_reduce_sums([round(share * rows), float(rows)], self._task.device)
        return total / count

    def train_batches(self, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
        """The wrapped task's stream (the same on every rank: same seed), each batch cut to this rank's rows."""
        share = self._world.share(batch_size)
        for batch in self._task.train_batches(batch_size, seed):
            yield {key: value[share] for key, value in batch.items()}
