"""Several processes (torchrun's world) re-adapting one adapter: a first, data-parallel slice of issue 18.

Under ``torchrun --nproc-per-node N relora readapt …`` every rank loads the whole base (no sharding of the
frozen weights yet: FSDP2 is the issue's goal, not this slice) and:

* evaluation is split by rows: each rank scores a contiguous share of D_val (the search's probes) and of
  D_eval (quality), and the partial sums are all-reduced, so every rank sees the same total;
* training is data-parallel: each rank takes its share of every mini-batch and the trainable parameters'
  gradients are averaged across ranks, so the replicas stay identical;
* the search's decisions are taken on rank 0 only (:func:`decided_on_publisher`): the other ranks serve its
  probes and receive its result, so no rank can take a different path through a collective;
* only rank 0 (:attr:`World.is_publisher`) publishes and writes the termination summary.

Without torchrun's environment (or with a world of one) every helper is a no-op and torch.distributed is
never initialised. The world is process-global (:func:`current`) as torch.distributed's process group is.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from relora_worker.errors import EXIT_INTERNAL, BadInputError, ReloraError

T = TypeVar("T")


class DistributedError(ReloraError):
    """Another rank failed while this one waited for it (exit code 1, like an internal error)."""

    exit_code = EXIT_INTERNAL


@dataclass(frozen=True)
class World:
    """This process's place in torchrun's world (read from RANK, WORLD_SIZE and LOCAL_RANK)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_publisher(self) -> bool:
        """Rank 0 alone publishes versions and writes the termination summary."""
        return self.rank == 0

    def share(self, rows: int) -> slice:
        """This rank's contiguous share of ``rows`` rows (sizes differ by at most one; a share may be empty)."""
        return slice(rows * self.rank // self.size, rows * (self.rank + 1) // self.size)


_current = World()


def detect() -> World:
    """The world torchrun describes in the environment (a world of one without it). Reads no torch."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise BadInputError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun): {error}") from None
    if size < 1 or not 0 <= rank < size:
        raise BadInputError(f"RANK={rank} is outside WORLD_SIZE={size} (set by torchrun)")
    return World(rank, size, local_rank)


def is_publisher() -> bool:
    """Whether this process publishes and writes the summary: rank 0 of torchrun's world, or a single process.
    A process whose torchrun environment is unreadable counts as one, so it reports that error itself."""
    try:
        return detect().is_publisher
    except BadInputError:
        return True


def current() -> World:
    """The world :func:`joined` set up in this process (a world of one outside it)."""
    return _current


@contextlib.contextmanager
def joined(device_name: str) -> Iterator[World]:
    """Joins torchrun's process group for the block (gloo on a CPU, nccl on CUDA) and leaves it after.

    ``device_name`` is the ``--device`` option: under a world of several ranks a CUDA device becomes
    ``cuda:LOCAL_RANK`` (one GPU per rank)."""
    global _current
    world = detect()
    if not world.active:
        yield world
        return
    import torch
    import torch.distributed as dist

    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=world.rank, world_size=world.size)
    _current = world
    try:
        yield world
    finally:
        _current = World()
        dist.destroy_process_group()


def rank_device(device: Any) -> Any:
    """``device`` for this rank: its own GPU (``cuda:LOCAL_RANK``) in a world of several; else unchanged."""
    import torch

    if _current.active and device.type == "cuda":
        return torch.device("cuda", _current.local_rank)
    return device


def all_reduce_sums(values: list[float], device: Any) -> list[float]:
    """Every rank's ``values`` summed element-wise, the same list on every rank (float64)."""
    if not _current.active:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast_from_publisher(value: T) -> T:
    """Rank 0's ``value`` on every rank (pickled; for small decisions: (α, β), a search result)."""
    if not _current.active:
        return value
    import torch.distributed as dist

    box = [value if _current.is_publisher else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def average_gradients(params: list[Any]) -> None:
    """Averages the gradients of ``params`` across ranks in place (data-parallel training's one collective).

    Every rank passes the same parameters in the same order; one without a gradient contributes zeros."""
    if not _current.active:
        return
    import torch
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= _current.size
    offset = 0
    for param, grad in zip(params, grads, strict=True):
        count = grad.numel()
        param.grad = flat[offset : offset + count].view_as(grad).to(grad.dtype)
        offset += count


def broadcast_parameters(params: list[Any]) -> None:
    """Rank 0's values of ``params`` on every rank (the start of training is the same everywhere)."""
    if not _current.active:
        return
    import torch.distributed as dist

    for param in params:
        dist.broadcast(param.data, src=0)


def decided_on_publisher(objective: Callable[..., float], decide: Callable[[Callable[..., float]], T]) -> T:
    """``decide(objective)`` run on rank 0 alone; the other ranks evaluate the same probes with it and return
    its result.

    ``objective`` is collective (its evaluation all-reduces), so every rank must call it with the same
    arguments the same number of times: rank 0 announces each call before making it, then its result (or
    its failure, which the others raise as :class:`DistributedError` instead of waiting forever)."""
    if not _current.active:
        return decide(objective)
    if _current.is_publisher:

        def announced(*args: Any) -> float:
            broadcast_from_publisher(("probe", args))
            return objective(*args)

        try:
            result = decide(announced)
        except BaseException as error:
            broadcast_from_publisher(("failed", f"{type(error).__name__}: {error}"))
            raise
        broadcast_from_publisher(("done", result))
        return result
    while True:
        kind, payload = broadcast_from_publisher(None)  # type: ignore[misc]
        if kind == "probe":
            objective(*payload)
        elif kind == "done":
            return payload
        else:
            raise DistributedError(f"rank 0 failed during the fusion search: {payload}")


def _blocks(model: Any) -> list[Any]:
    """The base's transformer blocks: the classes transformers names in ``_no_split_modules`` (Llama, Qwen,
    …), else the children of the module lists that hold them (BERT's ``encoder.layer``)."""
    import torch.nn as nn

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    if names:
        return [m for m in model.modules() if type(m).__name__ in names]
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 1]
    nested = {id(child) for outer in lists for child in outer.modules() if child is not outer}
    return [block for blocks in lists if id(blocks) not in nested for block in blocks]


def shard_frozen_base(model: Any) -> int:
    """Shards the frozen base of ``model`` across the ranks with FSDP2 (``fully_shard`` of every block, then
    of the root); returns the number of blocks sharded.

    The trainable parameters (LoRA factors, a saved head) are left out (``ignored_params``): they stay whole,
    ordinary tensors on every rank, so fusing, anchoring and saving the adapter work as in one process, and
    :func:`average_gradients` keeps them identical. Every forward pass all-gathers a block's weights, so every
    rank must run the same number of passes: not wired into ``readapt`` yet (its split evaluation can give
    ranks different pass counts); checked by tests/worker/distributed_check.py."""
    from torch.distributed.fsdp import fully_shard

    trainable = {p for p in model.parameters() if p.requires_grad}
    blocks = _blocks(model)
    if not blocks:
        raise BadInputError(f"{type(model).__name__}: no transformer blocks found to shard (no _no_split_modules)")
    for block in blocks:
        fully_shard(block, ignored_params=trainable)
    fully_shard(model, ignored_params=trainable)
    return len(blocks)


class RankFailed(ReloraError):
    """Another rank's failure, raised on this rank with that failure's exit code: every rank exits alike."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _failure(error: Exception) -> tuple[int, str]:
    """(exit code, message) of ``error`` as the CLI would report it."""
    if isinstance(error, ReloraError):
        return int(error.exit_code), str(error)
    return int(EXIT_INTERNAL), f"internal error: {type(error).__name__}: {error}"


def _raise_agreed(failed: tuple[int, tuple[int, str]] | None, own: Exception | None) -> None:
    """Raises the failure every rank agreed on (``(rank, (code, message))``): this rank's own error when it
    is that one (or says the same), else :class:`RankFailed` naming the rank."""
    if failed is None:
        return
    rank, (code, message) = failed
    if own is not None and (rank == _current.rank or _failure(own) == (code, message)):
        raise own
    raise RankFailed(f"rank {rank} of {_current.size} failed: {message}", code)


def gathered_on_publisher(work: Callable[[], T]) -> list[T] | None:
    """``work()`` on every rank; the results in rank order on rank 0 (``None`` on the others; pickled, so
    keep tensors on the CPU).

    A failure on any rank is raised on every rank once all have finished their work, with the exit code of
    the lowest rank that failed: no rank waits forever for one that gave up, and every rank exits with the
    code one process would have (a bad input that every rank sees is each rank's own error, said alike)."""
    if not _current.active:
        return [work()]
    import torch.distributed as dist

    own: Exception | None = None
    try:
        outcome: tuple[bool, Any] = (True, work())
    except Exception as error:  # every failure must reach the other ranks
        own, outcome = error, (False, _failure(error))
    gathered: list[Any] | None = [None] * _current.size if _current.is_publisher else None
    dist.gather_object(outcome, gathered, dst=0)
    failed = None
    if gathered is not None:
        failed = next(((rank, value) for rank, (ok, value) in enumerate(gathered) if not ok), None)
    _raise_agreed(broadcast_from_publisher(failed), own)
    return [value for _ok, value in gathered] if gathered is not None else None


def done_on_publisher(work: Callable[[], T]) -> T:
    """``work()`` (a publish) on rank 0 alone; its (small, pickled) result on every rank, or its failure
    raised on every rank with its exit code."""
    if not _current.active:
        return work()
    own: Exception | None = None
    outcome: tuple[bool, Any] | None = None
    if _current.is_publisher:
        try:
            outcome = (True, work())
        except Exception as error:  # every failure must reach the other ranks
            own, outcome = error, (False, _failure(error))
    ok, value = broadcast_from_publisher(outcome)  # type: ignore[misc]
    if not ok:
        _raise_agreed((0, value), own)
    return value
