"""Several processes (torchrun's world) re-adapting one adapter (issue 18).

Under ``torchrun --nproc-per-node N relora readapt …`` every rank either holds a whole copy of the frozen
base (data-parallel replicas) or, with ``--shard-base`` (:func:`shard_decision`), a 1/N shard of it through
FSDP2 (:func:`shard_frozen_base`; loaded shard by shard, relora_worker.sharded_load), and:

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


# --shard-base auto shards when the base's weights exceed this share of one GPU's memory: the rest holds the
# activations, the evaluation passes' buffers and the allocator's slack.
SHARD_AUTO_SHARE = 0.5
FULL_FORWARD = "_relora_full_forward"  # set on a sharded model whose task must not call trunk and head directly


def shard_decision(mode: str, device: Any, weight_bytes: int) -> tuple[bool, str]:
    """Whether this world shards the frozen base (``--shard-base``), and why (recorded in result.json).

    ``always`` shards under several ranks; ``never`` keeps a whole copy on each; ``auto`` shards only on GPUs
    and only when ``weight_bytes`` exceed :data:`SHARD_AUTO_SHARE` of one device's memory. In a world of one
    nothing is sharded, whatever the mode."""
    if not _current.active:
        return False, "one process"
    if mode == "always":
        return True, "--shard-base always"
    if mode == "never":
        return False, "--shard-base never"
    if device.type != "cuda":
        return False, "auto: not on GPUs"
    import torch

    capacity = torch.cuda.get_device_properties(device).total_memory
    shard = weight_bytes > SHARD_AUTO_SHARE * capacity
    relation = ">" if shard else "<="
    return shard, f"auto: base {weight_bytes} B {relation} {SHARD_AUTO_SHARE} x device {capacity} B"


def gathered(value: float, device: Any) -> list[float]:
    """Every rank's ``value``, in rank order, on every rank (one all-reduce of a one-hot vector)."""
    slots = [0.0] * _current.size
    slots[_current.rank] = value
    return all_reduce_sums(slots, device)


def first_block(model: Any) -> Any:
    """The first transformer block of ``model``: every forward pass runs it once (it counts the passes)."""
    return _blocks(model)[0]


def frozen_bytes_local(model: Any) -> int:
    """Bytes of the frozen weights this rank holds: its shards of a sharded base, else every frozen weight."""
    from torch.distributed.tensor import DTensor

    frozen = [p for p in model.parameters() if not p.requires_grad]
    local = [p.to_local() if isinstance(p, DTensor) else p for p in frozen]
    return sum(t.numel() * t.element_size() for t in local)


def _blocks(model: Any) -> list[Any]:
    """The base's transformer blocks: the classes transformers names in ``_no_split_modules`` (Llama, Qwen,
    …), else the children of the module lists that hold them (BERT's ``encoder.layer``)."""
    import torch.nn as nn

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    if names:
        # The class or a base of it: fully_shard turns a block's class into a subclass (FSDPLlamaDecoderLayer).
        return [m for m in model.modules() if any(c.__name__ in names for c in type(m).__mro__)]
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 1]
    nested = {id(child) for outer in lists for child in outer.modules() if child is not outer}
    return [block for blocks in lists if id(blocks) not in nested for block in blocks]


def shard_frozen_base(model: Any) -> int:
    """Shards the frozen base of ``model`` across the ranks with FSDP2 (``fully_shard``); returns the number of
    transformer blocks sharded.

    Units: every block; then, for a causal LM whose task calls the trunk and the output layer directly
    (:func:`relora_worker.tasks.trunk_and_head`), the trunk and the output layer each (a direct call outside a
    root unit would meet sharded embeddings); otherwise the root (which also marks a tied output layer's model
    for the full forward, see :data:`FULL_FORWARD`). The trainable parameters (LoRA factors, a saved head) are
    left out (``ignored_params``): they stay whole, ordinary tensors on every rank, so fusing, anchoring and
    saving the adapter work as in one process, and :func:`average_gradients` keeps them identical. Every
    forward pass all-gathers each unit's weights, so every rank must run the same number of passes
    (relora_worker.sharded_task equalises them)."""
    from torch.distributed.fsdp import fully_shard

    from relora_worker.tasks import trunk_and_head

    trainable = {p for p in model.parameters() if p.requires_grad}
    blocks = _blocks(model)
    if not blocks:
        raise BadInputError(f"{type(model).__name__}: no transformer blocks found to shard (no _no_split_modules)")
    for block in blocks:
        fully_shard(block, ignored_params=trainable)
    parts = trunk_and_head(model)
    if parts is not None:
        trunk, head = parts
        trunk_params = {id(p) for p in trunk.parameters()}
        if not any(id(p) in trunk_params for p in head.parameters()):
            fully_shard(trunk, ignored_params=trainable)
            fully_shard(head, ignored_params=trainable)
            return len(blocks)
        setattr(model, FULL_FORWARD, True)  # tied output layer: the task runs the whole model (root unit)
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
