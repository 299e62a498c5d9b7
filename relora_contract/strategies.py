"""Strategy names, and the groups of them that the operator and the worker branch on."""

from __future__ import annotations

from enum import StrEnum


class Strategy(StrEnum):
    AUTO = "auto"  # transfer check, capped search, the better start, improve after Ready (the default)
    RELORA = "relora"  # the paper's method: projected delta, (α, β) search, two-stage regularised fine-tune
    RELORA_NOREG = "relora-noreg"  # relora without the anchor regulariser
    TRANSFER = "transfer"  # the old adapter as it is on the new base
    TRANSFER_FT = "transfer-ft"  # fine-tune the old adapter on the new base
    SCRATCH = "scratch"  # a new adapter from PEFT's initialisation
    RANDOM_INIT = "random-init"  # the control: random factors of the old adapter's shape


DEFAULT = Strategy.AUTO
NAMES: tuple[str, ...] = tuple(s.value for s in Strategy)
# Strategies that read the projected delta Π_r(ΔΘ) (the operator creates a projection Job for them).
USES_DELTA: frozenset[str] = frozenset(s.value for s in (Strategy.AUTO, Strategy.RELORA, Strategy.RELORA_NOREG))
# Strategies whose start is always a fused point (α, β): they cannot run without the delta.
FUSED: frozenset[str] = frozenset(s.value for s in (Strategy.RELORA, Strategy.RELORA_NOREG))
# Strategies whose fine-tune is anchored to its start (relora's regulariser; random-init is relora's control).
ANCHORED: frozenset[str] = frozenset(s.value for s in (Strategy.RELORA, Strategy.RANDOM_INIT))
# Strategies that fine-tune (a trajectory, a step budget).
TRAINED: frozenset[str] = frozenset(
    s.value
    for s in (Strategy.RELORA, Strategy.RELORA_NOREG, Strategy.TRANSFER_FT, Strategy.SCRATCH, Strategy.RANDOM_INIT)
)
