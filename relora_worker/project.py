"""Π_r over two checkpoints: one shared projection per (old release, new release, targets, rank).

Both checkpoints are read tensor by tensor (``safe_open``), one targeted module at a time, so at most two
weight matrices (and, while one is decomposed, the next pair being read by a prefetch thread) are in
memory: never two full models. The SVD runs on the GPU when there is one. Across torchrun's ranks
(:mod:`relora_worker.sharded_projection`) each process projects a share of the modules (``share``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from relora_contract.hashing import targets_hash
from relora_worker.config import ProjectionConfig
from relora_worker.errors import BadInputError
from relora_worker.modelio import Checkpoint, target_weight_keys
from relora_worker.projection import project_delta

PROJECTION_FILE = "projection.safetensors"
PROJECTION_META = "projection.json"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"device {name!r}: CUDA is not available on this machine; use --device cpu or auto")
    return torch.device(name)


@dataclass
class Projection:
    """Unit-scaled Π_r factors per module key (the module's path in the base checkpoint)."""

    factors: dict[str, tuple[Tensor, Tensor]]  # key -> (delta_B d_out × r, delta_A r × d_in)
    meta: dict = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for key, (b, a) in self.factors.items():
            tensors[f"{key}.delta_B"] = b.contiguous().cpu()
            tensors[f"{key}.delta_A"] = a.contiguous().cpu()
        save_file(tensors, str(folder / PROJECTION_FILE), metadata={"format": "relora-projection/v1"})
        (folder / PROJECTION_META).write_text(json.dumps(self.meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> Projection:
        """Reads a saved projection; a corrupt file, a NaN/Inf factor or a half pair is refused by name."""
        from relora_worker.modelio import load_safetensors, read_json_object

        if not (folder / PROJECTION_FILE).is_file() or not (folder / PROJECTION_META).is_file():
            raise BadInputError(f"projection {folder}: expected {PROJECTION_FILE} and {PROJECTION_META}")
        tensors = load_safetensors(folder / PROJECTION_FILE, "projection")
        keys = sorted({k.rsplit(".", 1)[0] for k in tensors})
        for k in keys:
            if f"{k}.delta_B" not in tensors or f"{k}.delta_A" not in tensors:
                raise BadInputError(f"projection {folder / PROJECTION_FILE}: module {k} lacks delta_A or delta_B")
        factors = {k: (tensors[f"{k}.delta_B"], tensors[f"{k}.delta_A"]) for k in keys}
        return cls(factors, read_json_object(folder / PROJECTION_META, "projection"))


@dataclass
class ProjectedShare:
    """The factors of some targeted modules (one process's share, or all of them) and what reading them cost."""

    factors: dict[str, tuple[Tensor, Tensor]]
    modules: dict[str, dict]
    bytes_read: int
    seconds: float

    def report(self, rank: int, device: torch.device) -> dict:
        """This share's line of ``projection.json``'s ``ranks``."""
        return {
            "rank": rank,
            "device": str(device),
            "modules": len(self.factors),
            "bytes_read": self.bytes_read,
            "seconds": self.seconds,
        }


def checkpoint_pair(
    old_folder: Path, new_folder: Path, targets: list[str] | str
) -> tuple[Checkpoint, Checkpoint, list[str]]:
    """Both checkpoints' headers and the weight keys to project (sorted), checked before any tensor is read.

    Raises:
        BadInputError: a targeted module is missing from either release or changed shape (then the adapter
            cannot be carried over: retrain with ``--strategy scratch``), or ``targets`` match nothing.
    """
    old, new = Checkpoint(old_folder, "old base model"), Checkpoint(new_folder, "new base model")
    keys = target_weight_keys(new, targets)
    if not keys:
        raise BadInputError(f"target_modules {targets} match no 2-D weight in the new base model {new_folder}")
    old_keys = set(old.keys())
    for key in keys:
        if key not in old_keys:
            raise BadInputError(
                f"{key} exists in the new base model but not in the old one {old_folder}; "
                "the releases differ in architecture: use --strategy scratch"
            )
        if old.shape(key) != new.shape(key):
            raise BadInputError(
                f"{key} changed shape between releases ({old.shape(key)} -> {new.shape(key)}); "
                "the adapter cannot be projected: use --strategy scratch"
            )
    return old, new, keys


def _replay_draw(shape: tuple[int, ...], config: ProjectionConfig, device: torch.device) -> None:
    """Draws what ``torch.svd_lowrank`` draws for a ``shape`` matrix (its range finder's min(m, n) × q Gaussian,
    as :func:`relora_worker.projection.low_rank_factors` calls it), without the matrix.

    A process projecting a share of the modules replays the draws of the modules before each of its own, so its
    generator is where one process projecting every module would have it: each module's factors are the single
    process's, bit for bit on the same device kind (checked by tests/worker/test_distributed_projection.py)."""
    if config.method != "randomized":
        return
    rank = min(config.rank, *shape)
    torch.randn(min(shape), min(rank + config.oversample, *shape), dtype=torch.float32, device=device)


def _finite(checkpoint: Checkpoint, key: str, tensor: Tensor) -> Tensor:
    if not bool(torch.isfinite(tensor).all()):
        raise BadInputError(
            f"{checkpoint.what} {checkpoint.folder}: {key} holds NaN or Inf values; its delta cannot be projected"
        )
    return tensor


def project_modules(
    old: Checkpoint,
    new: Checkpoint,
    keys: list[str],
    config: ProjectionConfig,
    device: torch.device,
    on_module: Callable[[str], None] | None = None,
    share: Collection[str] | None = None,
) -> ProjectedShare:
    """Π_r of the weights ``keys`` (checked by :func:`checkpoint_pair`, in order), one pair of tensors at a time;
    with ``share`` only those of ``keys`` in it (read and decomposed; the others' random draws replayed).

    Raises:
        BadInputError: a weight holds NaN or Inf values (named with its release).
    """
    started = time.perf_counter()
    factors: dict[str, tuple[Tensor, Tensor]] = {}
    modules: dict[str, dict] = {}
    bytes_read = 0
    mine = [key for key in keys if share is None or key in share]
    skipped: dict[str, list[str]] = {}  # each of mine -> the others projected before it by one process
    others: list[str] = []
    for key in keys:
        if share is None or key in share:
            skipped[key], others = others, []
        else:
            others.append(key)

    def read(key: str) -> tuple[Tensor, Tensor]:
        return _finite(old, key, old.tensor(key, device)), _finite(new, key, new.tensor(key, device))

    # Read the next pair while the current one is decomposed: I/O and SVD overlap.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, mine[0]) if mine else None
        for index, key in enumerate(mine):
            assert pending is not None
            w_old, w_new = pending.result()
            if index + 1 < len(mine):
                pending = pool.submit(read, mine[index + 1])
            bytes_read += w_old.nbytes + w_new.nbytes
            for other in skipped[key]:
                _replay_draw(new.shape(other), config, device)
            projected = project_delta(
                w_old, w_new, config.rank, config.method, config.oversample, config.power_iterations
            )
            del w_old, w_new
            module = key[: -len(".weight")]
            factors[module] = (projected.delta_b.cpu(), projected.delta_a.cpu())
            modules[module] = {
                "shape": list(new.shape(key)),
                "delta_norm": projected.delta_norm,
                "residual_norm": projected.residual_norm,
                "relative_error": projected.residual_norm / projected.delta_norm if projected.delta_norm else 0.0,
            }
            if on_module:
                on_module(module)
    for other in others:  # the modules after this share's last: every rank's generator ends where one process's does
        _replay_draw(new.shape(other), config, device)
    return ProjectedShare(factors, modules, bytes_read, time.perf_counter() - started)


def projection_meta(
    targets: list[str] | str,
    config: ProjectionConfig,
    releases: tuple[str, str],
    modules: dict[str, dict],
    ranks: list[dict],
) -> dict:
    """``projection.json``: the same keys from one process or several (``ranks`` has one line per process;
    ``seconds`` and ``device`` are the slowest share's and rank 0's)."""
    return {
        "kind": "projection",
        "old_release": releases[0],
        "new_release": releases[1],
        "target_modules": targets if isinstance(targets, str) else sorted(targets),
        "targets_hash": targets_hash(targets),
        "rank": config.rank,
        "svd": config.method,
        "svd_requested": config.svd,
        "device": ranks[0]["device"],
        "seconds": max(line["seconds"] for line in ranks),
        "ranks": ranks,
        "modules": modules,
    }


def compute_projection(
    old_folder: Path,
    new_folder: Path,
    targets: list[str] | str,
    config: ProjectionConfig,
    releases: tuple[str, str] = ("", ""),
    on_module: Callable[[str], None] | None = None,
) -> Projection:
    """Π_r(W' − W) for every module of the new checkpoint matched by ``targets``, in this process.

    Raises:
        BadInputError: see :func:`checkpoint_pair` and :func:`project_modules`.
    """
    old, new, keys = checkpoint_pair(old_folder, new_folder, targets)
    device = resolve_device(config.device)
    share = project_modules(old, new, keys, config, device, on_module)
    meta = projection_meta(targets, config, releases, share.modules, [share.report(0, device)])
    return Projection(share.factors, meta)
