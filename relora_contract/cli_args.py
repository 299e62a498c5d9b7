"""The worker's command-line options that the operator passes (``relora project-delta`` / ``relora readapt``).

The operator's Job builder (relora_operator.builders.jobs) writes its command lines with these names and the
worker's parser (relora_worker.cli) declares its options with them, so a renamed flag changes both at once;
tests/operator/test_worker_contract.py parses every flag the builder emits with the real parser.
"""

from __future__ import annotations

from enum import StrEnum


class Flag(StrEnum):
    # both commands
    OUTPUT = "--output"
    OLD_RELEASE = "--old-release"
    NEW_RELEASE = "--new-release"
    SVD = "--svd"
    JSON = "--json"
    TERMINATION_MESSAGE_PATH = "--termination-message-path"
    # project-delta
    OLD_MODEL = "--old-model"
    NEW_MODEL = "--new-model"
    TARGET_MODULES = "--target-modules"
    RANK = "--rank"
    # readapt-batch
    PLAN = "--plan"
    # readapt: inputs
    BASE_MODEL = "--base-model"
    ADAPTER = "--adapter"
    PROJECTION = "--projection"
    TRAIN_DATA = "--train-data"
    VAL_DATA = "--val-data"
    EVAL_DATA = "--eval-data"
    # readapt: task
    TASK = "--task"
    TEXT_FIELD = "--text-field"
    LABEL_FIELD = "--label-field"
    LABELS = "--labels"
    METRIC = "--metric"
    THRESHOLD = "--threshold"
    # readapt: strategy and its knobs
    STRATEGY = "--strategy"
    MAX_STEPS = "--max-steps"
    SEARCH_BUDGET = "--search-budget"
    ALPHA_BOUNDS = "--alpha-bounds"
    BETA_BOUNDS = "--beta-bounds"
    SEED = "--seed"
    LR = "--lr"
    BATCH_SIZE = "--batch-size"
    EVAL_EVERY = "--eval-every"
    STOP_AT_READY = "--stop-at-ready"
    IMPROVE_AFTER_READY = "--improve-after-ready"
    IMPROVE_MAX_STEPS = "--improve-max-steps"

    @property
    def dest(self) -> str:
        """The attribute argparse stores the option under (``--max-steps`` -> ``max_steps``)."""
        return self.value.removeprefix("--").replace("-", "_")

    def __call__(self, value: object) -> str:
        """``--flag=value``: one argument, so that a value such as ``-2.0,1.0`` is never taken for an option."""
        return f"{self.value}={value}"


# The options each command takes from the operator.
_PROJECTION_ONLY = frozenset({Flag.OLD_MODEL, Flag.NEW_MODEL, Flag.TARGET_MODULES, Flag.RANK})
_SHARED = frozenset(
    {Flag.OUTPUT, Flag.OLD_RELEASE, Flag.NEW_RELEASE, Flag.SVD, Flag.JSON, Flag.TERMINATION_MESSAGE_PATH}
)
PROJECT_DELTA: tuple[Flag, ...] = tuple(f for f in Flag if f in _PROJECTION_ONLY | _SHARED)
READAPT: tuple[Flag, ...] = tuple(f for f in Flag if f not in _PROJECTION_ONLY | {Flag.PLAN})
# One plan names every adapter's inputs and options; the command line only says where the plan is.
READAPT_BATCH: tuple[Flag, ...] = (Flag.PLAN, Flag.JSON, Flag.TERMINATION_MESSAGE_PATH)

# ``relora launch --nproc-per-node N <command> …`` (relora_worker.launch): the command on N local processes, one
# per GPU of the pod; what the operator puts before a command whose pod has several GPUs.
LAUNCH = "launch"
NPROC_PER_NODE = "--nproc-per-node"
