"""`make demo` prints the README's table (issue 19): same verdict on every machine, README generated from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
from update_readme_demo import README, readme_block, run_demo, verdict_block  # noqa: E402


@pytest.mark.slow
def test_make_demo_prints_the_readmes_table(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    stdout = run_demo(out)  # exactly `make demo`'s command: every strategy, default budget, pinned numerics
    printed = verdict_block(stdout)
    assert printed == readme_block(README.read_text()), (
        "README.md's demo table differs from what `relora demo` prints on this machine.\n"
        f"printed:\n{printed}\n\nIf the change is intended: .venv/bin/python hack/update_readme_demo.py "
        "(library versions must be those of hack/constraints.txt)"
    )
    assert (out / "quality_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert results["relora"]["search"]["probes"][0]["source"] == "transfer"
    # The verdict table is the run's record, not a separate computation.
    for strategy, record in results.items():
        row = next(line for line in printed.splitlines() if line.split()[0] == strategy)
        ready = record["time_to_readiness_s"] is not None
        assert f"{record['quality']:.3f}" in row.split() and ("yes" in row.split()) == ready


def test_verdict_block_is_cut_from_the_printed_tables() -> None:
    stdout = (
        "[4/4] ...\n\nstrategy  ready\n--------  -----\nrelora    yes\nthreshold = x\n\n"
        "seconds ...\nstrategy  ready after s\n"
    )
    assert verdict_block(stdout) == "strategy  ready\n--------  -----\nrelora    yes\nthreshold = x"
