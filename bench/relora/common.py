"""Shared pieces of the ReLoRA benchmark: data splits, tokenizers, profiles, small helpers.

Data are read from ``bench/data/`` (copies of ``../shared/data`` with their provenance note), never from the
shared folder at run time.
"""

from __future__ import annotations

import gzip
import json
import random
import tarfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from relora_contract import strategies

DATA = Path(__file__).resolve().parents[1] / "data"
DEBIAN = DATA / "debian-sections.jsonl.gz"
ECOSYSTEM = DATA / "ecosystem-npm-pypi.jsonl.gz"  # issue 17's new task family (bench/data/README.md)
PYPI = DATA / "corpus-pypi-summaries.100k.txt.gz"
NPM = DATA / "corpus-npm-summaries.100k.txt.gz"
SPLIT_SEED = 1234
SUBSET4 = ("net", "science", "games", "sound")
STRATEGIES = ("relora", "relora-noreg", "transfer", "transfer-ft", "scratch", "random-init")
# ``auto`` runs with the task's real threshold (b) and improve-after-Ready: its decisions depend on the threshold
# (the other arms run with threshold 1.0 and have (a)/(b) applied to their trajectories afterwards).
TRAINED = strategies.TRAINED  # the contract's (relora_contract)


@dataclass(frozen=True)
class Arm:
    """One row of the comparison: a worker strategy, optionally with its own first-stage learning rate η1.

    The paper's arms use η1 = 5e-4 for every strategy. The ``-lr1e-4`` arms test the proposed change to the
    method (protect the fused start with a gentler η1) and give ``transfer-ft`` the same chance, so that the
    comparison is each method at its better η1, not a tuned ReLoRA against an untuned baseline.
    """

    label: str
    strategy: str
    lr: float | None = None  # None: the paper's η1

    @property
    def overrides(self) -> dict[str, float]:
        return {} if self.lr is None else {"lr": self.lr}


PAPER_ARMS = tuple(Arm(s, s) for s in STRATEGIES)
GENTLE_LR = 1e-4
GENTLE_ARMS = (Arm("relora-lr1e-4", "relora", GENTLE_LR), Arm("transfer-ft-lr1e-4", "transfer-ft", GENTLE_LR))
AUTO_ARM = Arm("auto", "auto")
ARMS = PAPER_ARMS + GENTLE_ARMS + (AUTO_ARM,)
# What issue 17's new scenarios run: the policy, the method, and both η1 of the baseline it must not lose to.
AUTO_ARMS = (AUTO_ARM, Arm("relora", "relora"), Arm("transfer-ft", "transfer-ft"), *GENTLE_ARMS[1:])


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task: which sections, how many eval rows, the re-adaptation budget."""

    name: str
    labels: tuple[str, ...] | None  # None: all 16 sections
    eval_rows: int
    old_adapter_steps: int
    readapt_steps: int
    stage1_steps: int
    eval_every: int
    max_train_rows: int | None = None
    source: str = "debian"  # "debian" (Debian sections) or "ecosystem" (npm vs PyPI summaries)


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run (``gpu``: the real one; ``cpu``: a smoke test of the code path)."""

    name: str
    tiny_models: bool
    seeds: tuple[int, ...]
    encoder_tasks: tuple[TaskSpec, ...]
    causal_tasks: tuple[TaskSpec, ...]
    corpus_lines: int
    release_steps: int
    release_seconds: float
    release_batch: int
    lm_pretrain_steps: int
    lm_pretrain_seconds: float
    lm_release_steps: int
    lm_release_seconds: float
    lm_batch: int
    lm_block: int
    search_budget: int
    grid_size: int
    lambda_pairs: tuple[tuple[float, float], ...]
    val_size: int = 512
    extra: dict[str, Any] = field(default_factory=dict)
    # issue 17: MiniLM released by full-parameter training (another kind of update), on the new task family
    # and the main Debian task
    full_tasks: tuple[TaskSpec, ...] = ()
    full_release_seconds: float = 30.0


PROFILES = {
    "gpu": Profile(
        name="gpu", tiny_models=False, seeds=(0, 1, 2),
        encoder_tasks=(
            TaskSpec("debian16", None, eval_rows=1500, old_adapter_steps=1000, readapt_steps=500, stage1_steps=170,
                     eval_every=10),
            TaskSpec("debian4", SUBSET4, eval_rows=1000, old_adapter_steps=500, readapt_steps=300, stage1_steps=100,
                     eval_every=10),
        ),
        # The causal-LM scenario at the size that fits one 10-minute device call next to nothing else: 55 s of
        # pre-training on all 100k npm lines (v1), 22 s continued on PyPI (v2), 200 re-adaptation steps.
        causal_tasks=(
            TaskSpec("debian16", None, eval_rows=256, old_adapter_steps=400, readapt_steps=200, stage1_steps=70,
                     eval_every=20),
        ),
        corpus_lines=100_000, release_steps=1000, release_seconds=50.0, release_batch=128,
        lm_pretrain_steps=3000, lm_pretrain_seconds=55.0, lm_release_steps=1200, lm_release_seconds=22.0,
        lm_batch=128, lm_block=64, search_budget=20, grid_size=5,
        lambda_pairs=((5e-4, 1e-4), (5e-3, 1e-4), (1e-2, 1e-4), (1e-3, 5e-4), (1e-3, 1e-5)),
        extra={"lm_corpus_lines": 100_000, "ablations": ("encoder",)},
        # Sized to fit one 10-minute device call with the auto arms: 300 re-adaptation steps, 600 old-adapter steps.
        full_tasks=(
            TaskSpec("ecosystem", None, eval_rows=1000, old_adapter_steps=600, readapt_steps=300, stage1_steps=100,
                     eval_every=10, source="ecosystem"),
            TaskSpec("debian16", None, eval_rows=1500, old_adapter_steps=600, readapt_steps=300, stage1_steps=100,
                     eval_every=10),
        ),
    ),
    "cpu": Profile(
        name="cpu", tiny_models=True, seeds=(0,),
        encoder_tasks=(
            TaskSpec("debian4", SUBSET4, eval_rows=96, old_adapter_steps=15, readapt_steps=8, stage1_steps=3,
                     eval_every=4, max_train_rows=400),
        ),
        causal_tasks=(
            TaskSpec("debian4", SUBSET4, eval_rows=24, old_adapter_steps=10, readapt_steps=6, stage1_steps=2,
                     eval_every=3, max_train_rows=300),
        ),
        corpus_lines=1500, release_steps=6, release_seconds=30.0, release_batch=16,
        lm_pretrain_steps=10, lm_pretrain_seconds=30.0, lm_release_steps=5, lm_release_seconds=30.0,
        lm_batch=16, lm_block=32, search_budget=5, grid_size=2, lambda_pairs=((5e-3, 1e-4),), val_size=48,
        extra={"ablations": ("encoder", "causal-lm")},
        full_tasks=(
            TaskSpec("ecosystem", None, eval_rows=96, old_adapter_steps=15, readapt_steps=8, stage1_steps=3,
                     eval_every=4, max_train_rows=400, source="ecosystem"),
        ),
    ),
}

# The second GPU run of session 2 (device time was short after run 1): the 4-section task with the grid and λ
# ablations, and the causal-LM scenario at the size the `gpu` profile has used since (60k npm lines then).
PROFILES["gpu2"] = replace(
    PROFILES["gpu"],
    name="gpu2",
    encoder_tasks=PROFILES["gpu"].encoder_tasks[1:],
    release_seconds=90.0,
    lambda_pairs=((5e-3, 1e-4), (1e-2, 1e-4), (1e-3, 1e-5)),
    extra={"lm_corpus_lines": 60_000, "ablations": ("encoder",)},
)


def read_corpus(path: Path, lines: int) -> list[str]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                out.append(line)
            if len(out) >= lines:
                break
    return out


def read_debian(path: Path = DEBIAN) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_splits(spec: TaskSpec, folder: Path, val_size: int, prompt: bool) -> dict[str, Any]:
    """Writes train/val/eval JSONL for ``spec`` (fixed shuffle seed); ``prompt`` phrases rows for a causal LM."""
    rows = read_debian(ECOSYSTEM if spec.source == "ecosystem" else DEBIAN)
    random.Random(SPLIT_SEED).shuffle(rows)
    if spec.labels is not None:
        rows = [r for r in rows if r["label"] in spec.labels]
    labels = sorted({r["label"] for r in rows})
    if prompt:
        rows = [{"text": f"Debian package: {r['text']}\nSection:", "label": r["label"]} for r in rows]
    else:
        rows = [{"text": r["text"], "label": r["label"]} for r in rows]
    evaluation, val, train = rows[: spec.eval_rows], rows[spec.eval_rows : spec.eval_rows + val_size], \
        rows[spec.eval_rows + val_size :]
    if spec.max_train_rows:
        train = train[: spec.max_train_rows]
    paths = {}
    for name, split in (("train", train), ("val", val), ("eval", evaluation)):
        paths[name] = str(folder / f"{name}.jsonl")
        write_jsonl(folder / f"{name}.jsonl", split)
    return {"labels": labels, "paths": paths, "sizes": {"train": len(train), "val": len(val), "eval": len(evaluation)}}


def train_bpe_tokenizer(texts: list[str], vocab_size: int, kind: str, folder: Path):  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer trained on ``texts``; BERT-style ([CLS] x [SEP]) or Llama-style (<s> x)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] if kind == "bert" else ["<pad>", "<s>", "</s>", "<unk>"]
    tokenizer = Tokenizer(models.BPE(unk_token=special[1] if kind == "bert" else "<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    index = {t: tokenizer.token_to_id(t) for t in special}
    if kind == "bert":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", index["[CLS]"]), ("[SEP]", index["[SEP]"])])
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    else:
        tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                                 special_tokens=[("<s>", index["<s>"])])
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>",
                                       bos_token="<s>", eos_token="</s>")
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return fast


class RunArchive:
    """Keeps every run record; re-writes one tar.gz after each run so a cut-off run still returns its records."""

    def __init__(self, folder: Path, archive: Path | None):
        self.folder = folder
        self.archive = archive
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, record: dict) -> None:
        (self.folder / f"{name}.json").write_text(json.dumps(record, indent=1, default=str))
        self.flush()

    def flush(self) -> None:
        if self.archive is None:
            return
        tmp = self.archive.with_suffix(".tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(self.folder, arcname=self.folder.name)
        tmp.replace(self.archive)


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def profile_dict(profile: Profile) -> dict:
    return asdict(profile)
