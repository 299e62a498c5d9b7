"""``relora project-delta`` in one process or across torchrun's ranks (issue 18): each rank a share of the modules.

Every rank reads both checkpoints' headers and checks the targets (the same check, so bad input fails alike
on every rank), takes its share of the targeted weights (:func:`shares`), streams only those pairs of tensors
(``safe_open``, one pair at a time: no process ever holds a full checkpoint) and decomposes them on its own
device, from the random state one process would have reached at that module (the generator seeded alike on
every rank, then the draws of the other ranks' modules replayed), so the factors are the single process's. The factors
(d_out·r + r·d_in per module: megabytes) are gathered to rank 0, which alone assembles the projection in the
single process's module order, writes it and publishes it; the other ranks write nothing (``readapt
--old-base-model`` sends it to every rank instead: :func:`projection_on_every_rank`). A failure on any
rank reaches every rank with its exit code (:func:`relora_worker.distributed.gathered_on_publisher`), and so
does a failed publish (:func:`relora_worker.distributed.done_on_publisher`). In a world of one this is the
plain command.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from relora_worker import distributed
from relora_worker.config import ProjectionConfig
from relora_worker.project import (
    ProjectedShare,
    Projection,
    checkpoint_pair,
    project_modules,
    projection_meta,
    resolve_device,
)

SVD_SEED = 0


def shares(sizes: dict[str, int], ranks: int) -> list[list[str]]:
    """The keys of ``sizes`` (elements per weight) split across ``ranks``, each share in key order.

    Largest weight first, each to the least loaded rank (ties: the lower rank): the loads differ by at most one
    weight's size, whatever the mix of shapes (a Llama's MLP weights are 3.5× its attention ones, GQA's k/v 1/8
    of them, an output layer far larger), which a contiguous split in key order does not promise. Reading and
    the randomized SVD both scale with a weight's elements. Every rank computes the same plan from the same
    headers, so no plan is sent."""
    loads = [0] * ranks
    plan: list[list[str]] = [[] for _ in range(ranks)]
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        rank = min(range(ranks), key=lambda r: (loads[r], r))
        loads[rank] += sizes[key]
        plan[rank].append(key)
    return [sorted(share) for share in plan]


def _merged(keys: list[str], parts: list[ProjectedShare]) -> tuple[dict, dict]:
    """The ranks' factors and module records in the single process's order (``keys``, sorted)."""
    factors, modules = {}, {}
    owner = {module: part for part in parts for module in part.factors}
    for key in keys:
        module = key[: -len(".weight")]
        factors[module] = owner[module].factors[module]
        modules[module] = owner[module].modules[module]
    return factors, modules


def _projected_share(
    old_folder: Path,
    new_folder: Path,
    targets: list[str] | str,
    config: ProjectionConfig,
    on_module: Callable[[str], None] | None = None,
) -> tuple[list[str], ProjectedShare, dict]:
    """This rank's share, on this rank's device: every targeted key (the same on every rank), its factors and
    its line of ``ranks``."""
    world = distributed.current()
    device = distributed.rank_device(resolve_device(config.device))
    old, new, keys = checkpoint_pair(old_folder, new_folder, targets)
    mine = shares({k: math.prod(new.shape(k)) for k in keys}, world.size)[world.rank]
    part = project_modules(old, new, keys, config, device, on_module, share=set(mine))
    return keys, part, part.report(world.rank, device)


def _assembled(
    gathered: list[tuple[list[str], ProjectedShare, dict]] | None,
    targets: list[str] | str,
    config: ProjectionConfig,
    releases: tuple[str, str],
) -> Projection:
    """The whole projection from every rank's share (on rank 0, which alone holds them)."""
    assert gathered is not None
    keys = gathered[0][0]
    factors, modules = _merged(keys, [part for _keys, part, _line in gathered])
    return Projection(factors, projection_meta(targets, config, releases, modules, [line for *_, line in gathered]))


def publish_projection(
    old_uri: str,
    new_uri: str,
    targets: list[str] | str,
    config: ProjectionConfig,
    releases: tuple[str, str],
    output: str,
    on_module: Callable[[str], None] | None = None,
) -> dict:
    """Projects this rank's share, then rank 0 publishes the whole projection at ``output``.

    Returns (on every rank) ``modules`` (count), ``seconds`` (the slowest share's) and ``uri`` (the version
    published).

    Raises:
        BadInputError, StorageError, RankFailed: any rank's failure, with its exit code; nothing is published.
    """
    from relora_worker.storage import fetch, publish_folder

    # The randomized SVD draws from the generator, which torch seeds at random in each process: seeded here, a
    # projection is reproducible (the same inputs give the same factors, run after run), and every rank starts
    # where one process would.
    torch.manual_seed(SVD_SEED)

    def share() -> tuple[list[str], ProjectedShare, dict]:
        # Each rank fetches (a local path is used in place; S3 through the node's base cache, when set).
        with fetch(old_uri, "old base model") as old_folder, fetch(new_uri, "new base model") as new_folder:
            return _projected_share(old_folder, new_folder, targets, config, on_module)

    gathered = distributed.gathered_on_publisher(share)

    def publish() -> dict:
        projection = _assembled(gathered, targets, config, releases)
        meta = projection.meta
        with tempfile.TemporaryDirectory(prefix="relora-proj-") as tmp:
            projection.save(Path(tmp))
            manifest = publish_folder(
                Path(tmp), output, {k: v for k, v in meta.items() if k not in ("modules", "ranks")}
            )
        return {"modules": len(projection.factors), "seconds": meta["seconds"], "uri": manifest["uri"]}

    return distributed.done_on_publisher(publish)


def projection_on_every_rank(
    old_uri: str, new_folder: Path, targets: list[str] | str, config: ProjectionConfig, releases: tuple[str, str]
) -> Projection:
    """``readapt --old-base-model`` under torchrun: Π_r computed once across the ranks, whole on every rank.

    Each rank projects its share of the modules as ``project-delta`` does (the draws of the others replayed
    from the generator as readapt seeded it, so the factors and every rank's generator afterwards are the single
    process's), rank 0 assembles them and sends the projection to every rank: each builds the fused start of
    every adapted module. A world of N does 1/N of the reading and decomposing, not N copies of all of it.

    Raises:
        BadInputError, StorageError, RankFailed: any rank's failure, raised on every rank with its exit code.
    """
    from relora_worker.storage import fetch

    def share() -> tuple[list[str], ProjectedShare, dict]:
        with fetch(old_uri, "old base model") as old_folder:
            return _projected_share(old_folder, new_folder, targets, config)

    gathered = distributed.gathered_on_publisher(share)
    return distributed.done_on_publisher(lambda: _assembled(gathered, targets, config, releases))
