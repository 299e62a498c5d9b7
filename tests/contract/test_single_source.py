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
from relora_contract.cli_args import Flag
from relora_contract.exit_codes import ExitCode
from relora_contract.hashing import targets_hash
from relora_contract.result import ResultRecord
from relora_contract.summary import TerminationSummary

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p for folder in ("relora_worker", "operator") for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts
)
NAMES = set(strategies.NAMES)
CONTRACT_FUNCTIONS = {"targets_hash", "digest"}
# The summary's and result.json's own keys (snake_case: the API's keys are camelCase, so a match is not chance).
SUMMARY_KEYS = {k for model in (TerminationSummary, ResultRecord) for k in model.model_fields if "_" in k}
# No module is exempt: the ones that assemble or read result.json's whole record (readapt, the model card, the
# demo) name its declared keys through ResultRecord (record_fields to write them, ResultRecord.view to read
# them); the record's other keys (trajectory, search, config…) are theirs.


def _key(node: ast.AST) -> str | None:
    """The string a subscript, a ``.get(...)`` or a dict literal uses as a summary key, if it is one."""
    keys: list[ast.AST | None] = []
    if isinstance(node, ast.Subscript):
        keys = [node.slice]
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        keys = node.args[:1]
    elif isinstance(node, ast.Dict):
        keys = list(node.keys)
    for key in keys:
        if isinstance(key, ast.Constant) and key.value in SUMMARY_KEYS:
            return key.value
    return None


def _bare_keys(path: Path) -> list[str]:
    """Where ``path`` spells a summary or result.json key as a string instead of using the contract's models."""
    tree = ast.parse(path.read_text(), str(path))
    return [f"{node.lineno}: {key!r}" for node in ast.walk(tree) if (key := _key(node))]


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


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_spells_summary_keys(path: Path) -> None:
    # Both sides build and read the termination summary and result.json through relora_contract's models.
    assert not _bare_keys(path), f"{path.relative_to(ROOT)} uses summary keys as strings: {_bare_keys(path)}"


FLAGS = {f.value for f in Flag}
# Where the worker's options are declared and where the operator writes its command lines.
FLAG_SOURCES = [
    ROOT / "relora_worker" / "cli.py",
    ROOT / "relora_worker" / "config.py",
    *(p for p in SOURCES if p.is_relative_to(ROOT / "operator")),
]


def _bare_flags(path: Path) -> list[str]:
    """Where ``path`` spells one of the contract's flags (``--max-steps``, ``--max-steps=…``) as a string."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        # "--seed" itself, or "--seed=…" (also the head of an f-string: f"--seed={seed}")
        text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
        if text in FLAGS or ("=" in text and text.split("=", 1)[0] in FLAGS):
            found.append(f"{node.lineno}: {text!r}")
    return found


@pytest.mark.parametrize("path", FLAG_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_spells_the_workers_flags(path: Path) -> None:
    # The operator's Job builder and the worker's parser both name the options through relora_contract.cli_args.
    assert not _bare_flags(path), f"{path.relative_to(ROOT)} spells worker flags as strings: {_bare_flags(path)}"


def test_the_flag_scan_finds_bare_flags(tmp_path: Path) -> None:
    probe = tmp_path / "flags.py"
    probe.write_text('a = "--max-steps"\nb = f"--seed={s}"\nc = "--max-steps=3"\nd = "--namespace"\ne = "--lr-min"\n')
    assert sorted(line.split(":")[0] for line in _bare_flags(probe)) == ["1", "2", "3"]


def test_the_key_scan_finds_bare_keys(tmp_path: Path) -> None:
    probe = tmp_path / "bare.py"
    probe.write_text(
        'a = s["exit_code"]\nb = s.get("time_to_readiness_s")\nc = {"adapter_uri": 1}\nd = s["quality"]\n'
        'e = {"timeToReadinessSeconds": 1}\n'
    )
    assert [line.split(":")[0] for line in _bare_keys(probe)] == ["1", "2", "3"]


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
