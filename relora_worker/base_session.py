"""The base model of one or more re-adaptations on one base release: fetched once, loaded once.

``relora readapt`` uses a session for its one adapter (``keep=False``: nothing more is held than before).
``relora readapt-batch`` keeps one for the whole batch (``keep=True``): the first load also keeps a pristine
module tree of the freshly loaded model, and every later adapter gets a new module tree (a deep copy of the
modules with new ``Parameter`` objects) over the SAME weight tensors instead of a download and a load. The base
weights are frozen during re-adaptation and never written in place, so sharing them costs no memory and no copy
(on a GPU the base stays where it is); nothing else an adapter did — PEFT's LoRA wrapping, ``modules_to_save``
copies, fused starts, gradient-checkpointing hooks, ``.to()`` moves, config flags — reaches the next one, as
each adapter has its own tree. A fingerprint of every weight (a float32 sum per tensor, taken at load) is
checked before each reuse; should anything have written into the base, it is loaded again (and logged).

Exactly the same start as a solo run: a fresh load initialises the new classification head from the global
torch RNG, so the copy is only used when the RNG state before the load is the one the pristine copy was
loaded under (same seed, nothing else drawn); the RNG state after that load is then restored too. Otherwise
(another seed, another label count) the base is loaded again from the local folder (no second download).
Projections are kept the same way (a randomized SVD draws from the same RNG).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from relora_contract.batch import BaseCounters
from relora_worker import storage, transfers
from relora_worker.modelio import load_base_model, load_tokenizer

logger = logging.getLogger(__name__)


def _rng_state() -> list[torch.Tensor]:
    """The global RNG states a load or a projection may draw from (every GPU's too, whenever there is one: the
    same list before and after CUDA's lazy start, so that two states compare)."""
    states = [torch.get_rng_state()]
    if torch.cuda.is_available():
        states.extend(torch.cuda.get_rng_state_all())
    return states


def _set_rng_state(states: list[torch.Tensor]) -> None:
    torch.set_rng_state(states[0])
    if len(states) > 1:
        torch.cuda.set_rng_state_all(states[1:])


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _tensors(model: Any) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


def _fingerprint(model: Any) -> torch.Tensor:
    """One float32 sum per weight and buffer: changes if anything is written into the base."""
    with torch.no_grad():
        return torch.stack([torch.sum(t.detach(), dtype=torch.float32).cpu() for t in _tensors(model)])


def _new_tree(model: Any) -> Any:
    """A deep copy of ``model``'s modules whose parameters are new ``Parameter`` objects over the same tensors
    (tied weights stay tied): the copy's ``.to()`` or ``requires_grad`` never reach ``model``."""
    memo: dict[int, Any] = {}
    for param in model.parameters():
        memo[id(param)] = torch.nn.Parameter(param.data, requires_grad=param.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer  # a module's .to() replaces its buffer entry; the tensor itself is untouched
    return copy.deepcopy(model, memo)


@dataclass
class _Pristine:
    key: tuple
    model: Any  # never wrapped, never trained: its own module tree over the loaded weights
    fingerprint: torch.Tensor
    rng_before: list[torch.Tensor]
    rng_after: list[torch.Tensor]


@dataclass
class BaseSession:
    """One base model URI's folder, tokenizer, loaded model and projections, with what they cost."""

    uri: str
    stack: contextlib.ExitStack
    keep: bool = False
    model_loads: int = 0
    restores: int = 0
    projection_loads: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"fetch": 0.0, "load": 0.0, "restore": 0.0})
    _folder: Path | None = None
    _tokenizer: Any = None
    _bytes_before: int = 0
    _bytes_after: int | None = None
    _pristine: _Pristine | None = None
    _projections: dict[tuple, Any] = field(default_factory=dict)

    def folder(self) -> Path:
        if self._folder is None:
            started = time.perf_counter()
            self._bytes_before = transfers.downloaded_bytes()
            self._folder = self.stack.enter_context(storage.fetch(self.uri, "base model"))
            self._bytes_after = transfers.downloaded_bytes()
            self.seconds["fetch"] += time.perf_counter() - started
        return self._folder

    @property
    def bytes_downloaded(self) -> int:
        return 0 if self._bytes_after is None else self._bytes_after - self._bytes_before

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.folder())
        return self._tokenizer

    def projection(self, key: tuple, build: Callable[[], Any]) -> Any:
        """The projection for ``key`` (its source, rank and targets), built once per RNG state: a randomized
        SVD draws from the global RNG, so a reuse also replays the RNG state the build left behind."""
        before = _rng_state() if self.keep else []
        kept = self._projections.get(key)
        if kept is not None and _same(kept[1], before):
            _set_rng_state(kept[2])
            return kept[0]
        started = time.perf_counter()
        projection = build()
        self.projection_loads += 1
        self.seconds["projection"] = self.seconds.get("projection", 0.0) + time.perf_counter() - started
        if self.keep:
            self._projections[key] = (projection, before, _rng_state())
        return projection

    def model(self, task: str, num_labels: int | None, pad_token_id: int | None, device: torch.device) -> Any:
        """The base model for ``task``, exactly as a fresh load under the current RNG state would give it."""
        key = (task, num_labels, pad_token_id, str(device))
        before = _rng_state() if self.keep else []
        pristine = self._pristine
        if pristine is not None and pristine.key == key and _same(pristine.rng_before, before):
            started = time.perf_counter()
            if torch.equal(_fingerprint(pristine.model), pristine.fingerprint):
                model = _new_tree(pristine.model).to(device)
                _set_rng_state(pristine.rng_after)
                self.restores += 1
                self.seconds["restore"] += time.perf_counter() - started
                return model
            logger.error("the base model's weights changed during a re-adaptation; loading it again")
        folder = self.folder()
        started = time.perf_counter()
        model = load_base_model(folder, task, num_labels, pad_token_id, device)
        self.model_loads += 1
        self.seconds["load"] += time.perf_counter() - started
        if self.keep:
            self._pristine = _Pristine(key, _new_tree(model), _fingerprint(model), before, _rng_state())
            if self.model_loads > 1:
                logger.warning("base model loaded again (%d loads): another seed or label count", self.model_loads)
        return model

    def counters(self) -> BaseCounters:
        """The batch record's counters (also result.json's ``base`` section)."""
        return BaseCounters(
            base_bytes_downloaded=self.bytes_downloaded,
            model_loads=self.model_loads,
            restores=self.restores,
            projection_loads=self.projection_loads,
            seconds=dict(self.seconds),
        )
