"""Builds ``ecosystem-npm-pypi.jsonl.gz``: which registry a package summary comes from (npm or PyPI).

    python bench/data/make_ecosystem.py /work/shared/data bench/data/ecosystem-npm-pypi.jsonl.gz

Source: lines 100,001–106,000 of ``corpus-npm-summaries.txt.gz`` and ``corpus-pypi-summaries.txt.gz`` of the
shared data folder (the benchmark's releases train on lines 1–100,000 only, so no task row was seen by a
release). Words that name the ecosystem outright (python, javascript, npm, node, react, …; see ``GIVEAWAYS``)
are deleted so that the task is about the rest of the text; rows left with fewer than
4 words are dropped, duplicates removed, the rest shuffled with seed 1234.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from pathlib import Path

FIRST, COUNT = 100_000, 6_000
GIVEAWAYS = re.compile(
    r"\b(python\d*|py|pypi|pip|django|flask|pytest|numpy|pandas|javascript|typescript|js|ts|npm|node(\.?js)?|"
    r"react|vue|angular|jquery|webpack|babel|eslint|express|deno|ecmascript|es\d+)\b",
    re.IGNORECASE,
)


def rows(path: Path, label: str) -> list[dict]:
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if number < FIRST:
                continue
            if number >= FIRST + COUNT:
                break
            text = " ".join(GIVEAWAYS.sub(" ", line).split())
            if len(text.split()) >= 4:
                out.append({"text": text, "label": label})
    return out


def main(source: str, target: str) -> None:
    data = rows(Path(source) / "corpus-npm-summaries.txt.gz", "npm") + rows(
        Path(source) / "corpus-pypi-summaries.txt.gz", "pypi")
    seen: set[str] = set()
    unique = [r for r in data if not (r["text"].lower() in seen or seen.add(r["text"].lower()))]
    random.Random(1234).shuffle(unique)
    with gzip.GzipFile(target, "wb", mtime=0) as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in unique).encode())
    print(f"{len(unique)} rows ({sum(r['label'] == 'npm' for r in unique)} npm) -> {target}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
