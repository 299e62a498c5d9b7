"""Each fact of the operator–worker contract is defined once, in relora_contract (issue 16): a module of the
worker, the operator or the benchmarks that writes its own copy — an exit code as a number, a set of strategy
names, another hash of targets — fails here; and both sides' uses agree with the contract."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from relora_operator.builders.jobs import FINAL_EXIT_CODES
from relora_operator.crdgen import all_crds
from relora_operator.models.adapter import STRATEGIES_WITH_DELTA

from relora_contract import exit_codes, strategies
from relora_contract.exit_codes import ExitCode
from relora_contract.hashing import targets_hash

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p for folder in ("relora_worker", "operator") for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts
)
NAMES = set(strategies.NAMES)
CONTRACT_FUNCTIONS = {"targets_hash", "digest"}


def _copies(path: Path) -> list[str]:
    """What ``path`` defines that the contract owns: line numbers with what was found."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Tuple | ast.Set | ast.List):
            named = {e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in NAMES}
            if len(named) >= 2:
                found.append(f"{node.lineno}: strategy names {sorted(named)}")
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple):
            named = {e.value for e in node.slice.elts if isinstance(e, ast.Constant) and e.value in NAMES}
            if len(named) >= 2:
                found.append(f"{node.lineno}: Literal of strategy names {sorted(named)}")
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
                    numeric = all(isinstance(v, ast.Constant) and isinstance(v.value, int) for v in values)
                    if isinstance(name, ast.Name) and name.id.startswith("EXIT_") and numeric:
                        found.append(f"{node.lineno}: {name.id} = a number")
        elif isinstance(node, ast.FunctionDef) and node.name in CONTRACT_FUNCTIONS:
            found.append(f"{node.lineno}: def {node.name}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_restates_the_contract(path: Path) -> None:
    assert not _copies(path), f"{path.relative_to(ROOT)} defines contract facts itself: {_copies(path)}"


def test_the_scan_finds_a_copy(tmp_path: Path) -> None:
    # the detector itself: each kind of copy it must catch
    probe = tmp_path / "copy.py"
    probe.write_text('EXIT_BAD_INPUT = 2\nX = ("relora", "auto")\ndef targets_hash(m):\n    return m\n')
    assert sorted(line.split(":")[0] for line in _copies(probe)) == ["1", "2", "3"]


def test_both_sides_use_the_contracts_values() -> None:
    # the Job's pod failure policy fails at once on exactly the final codes
    assert FINAL_EXIT_CODES == (2, 3) and set(FINAL_EXIT_CODES) == {int(c) for c in exit_codes.FINAL}
    assert STRATEGIES_WITH_DELTA == strategies.USES_DELTA and strategies.FUSED < strategies.USES_DELTA
    # the CRD offers exactly the contract's strategies, and the CLI too
    crd = all_crds()["taskadapters.relora.dev.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    enum = crd["properties"]["spec"]["properties"]["strategy"]["properties"]["name"]["enum"]
    assert enum == list(strategies.NAMES)
    from relora_worker.cli import build_parser

    readapt = next(
        a for a in build_parser()._subparsers._group_actions[0].choices["readapt"]._actions if a.dest == "strategy"
    )
    assert tuple(readapt.choices) == strategies.NAMES and readapt.default == strategies.DEFAULT


def test_every_exit_code_is_documented_in_the_worker_contract() -> None:
    table = (ROOT / "docs" / "worker-contract.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)} | {
        int(m) for m in re.findall(r"\((\d+): ", table)
    }
    assert documented == {int(c) for c in ExitCode}


def test_the_hash_ignores_order_and_repeats() -> None:
    assert targets_hash(["v_proj", "q_proj"]) == targets_hash(["q_proj", "v_proj", "q_proj"])
    assert targets_hash(["q_proj"]) != targets_hash(["v_proj"]) and len(targets_hash(["q_proj"])) == 8
