"""Bad inputs to the worker: each is refused with exit 2 and one line naming the file/field/tensor/URI, and the
artifact published at the output before the bad run keeps every byte (checksums before/after)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from relora_worker.cli import main
from relora_worker.errors import EXIT_BAD_INPUT
from relora_worker.storage import publish_folder, verify_published
from relora_worker.synthetic import Scenario
from tests.faults.conftest import REPO, make_folder, publish_projection, snapshot


def _args(s: Scenario, out: str, *extra: str, strategy: str = "transfer") -> list[str]:
    return [
        "readapt",
        "--threshold",
        "0.8",
        "--base-model",
        s.base_v2,
        "--adapter",
        s.adapter_v1,
        "--train-data",
        s.train,
        "--output",
        out,
        "--strategy",
        strategy,
        "--max-steps",
        "2",
        "--eval-every",
        "1",
        "--val-size",
        "8",
        "--eval-size",
        "8",
        "--device",
        "cpu",
        "--progress",
        "off",
        *extra,
    ]


def _swap(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


def _adapter(tmp: Path, s: Scenario, config: dict | None = None, tensors: Callable | None = None) -> str:
    folder = tmp / "adapter"
    shutil.copytree(s.adapter_v1, folder)
    if config is not None:
        path = folder / "adapter_config.json"
        # Written as text so that NaN / Infinity literals and strings survive exactly as a user would type them.
        text = path.read_text()
        for key, literal in config.items():
            text = re.sub(rf'"{key}": [^,\n}}]+', f'"{key}": {literal}', text)
        path.write_text(text)
    if tensors is not None:
        weights = folder / "adapter_model.safetensors"
        save_file(tensors(load_file(str(weights))), str(weights))
    return str(folder)


def _with_nan(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    key = sorted(k for k in tensors if ".lora_A." in k)[1]
    tensors[key] = tensors[key].clone()
    tensors[key][0, 0] = float("nan")
    return tensors


def _rank(r: int) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    def resize(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in tensors.items():
            if ".lora_A." in k:
                v = torch.zeros(r, v.shape[1])
            elif ".lora_B." in k:
                v = torch.zeros(v.shape[0], r)
            out[k] = v
        return out

    return resize


def _wider(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    key = sorted(k for k in tensors if "query.lora_A." in k)[0]
    tensors[key] = torch.zeros(tensors[key].shape[0], tensors[key].shape[1] + 3)
    return tensors


def _truncated(tmp: Path, s: Scenario) -> str:
    folder = Path(_adapter(tmp, s))
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    return str(folder)


def _no_tokenizer(tmp: Path, s: Scenario) -> str:
    folder = tmp / "base"
    shutil.copytree(s.base_v2, folder)
    for path in folder.iterdir():
        if path.name.startswith(("tokenizer", "vocab", "special_tokens")):
            path.unlink()
    return str(folder)


def _data(tmp: Path, text: str, name: str = "d.csv") -> str:
    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp / name).write_text(text)
    return str(tmp / name)


def _nan_projection(tmp: Path, s: Scenario) -> str:
    def poison(factors: dict) -> None:
        first = sorted(factors)[0]
        b, a = factors[first]
        a = a.clone()
        a[0, 0] = float("inf")
        factors[first] = (b, a)

    return publish_projection(tmp, s, edit=poison)


def _unpublished_projection(tmp: Path, s: Scenario) -> str:
    shutil.copytree(_nan_projection(tmp, s), tmp / "copied")  # a copy of the files, its manifest removed
    (tmp / "copied" / "manifest.json").unlink()
    return str(tmp / "copied")


def _unsafe_manifest(tmp: Path, s: Scenario) -> str:
    folder = Path(_adapter(tmp, s))
    (folder / "manifest.json").write_text(
        json.dumps({"format": "relora-manifest/v1", "files": {"../../etc/passwd": {"sha256": "0" * 64}}})
    )
    return str(folder)


BASE = 64  # the fault scenario's hidden size: a rank above it is not low-rank anywhere

# (case, how to break the arguments (tmp, scenario, args) -> args, what the one-line message must match)
CASES: list[tuple[str, Callable[[Path, Scenario, list[str]], list[str]], str]] = [
    (
        "truncated adapter weights",
        lambda t, s, a: _swap(a, "--adapter", _truncated(t, s)),
        r"adapter_model\.safetensors: not a valid safetensors file",
    ),
    (
        "NaN in an adapter tensor",
        lambda t, s, a: _swap(a, "--adapter", _adapter(t, s, tensors=_with_nan)),
        r"tensor base_model\.\S+\.lora_A\.weight holds 1 NaN/Inf",
    ),
    (
        "lora_alpha NaN",
        lambda t, s, a: _swap(a, "--adapter", _adapter(t, s, {"lora_alpha": "NaN"})),
        r"adapter_config\.json: field lora_alpha=nan",
    ),
    (
        "lora_alpha Infinity",
        lambda t, s, a: _swap(a, "--adapter", _adapter(t, s, {"lora_alpha": "Infinity"})),
        r"field lora_alpha=inf",
    ),
    (
        "lora_alpha a string",
        lambda t, s, a: _swap(a, "--adapter", _adapter(t, s, {"lora_alpha": '"16"'})),
        r"field lora_alpha='16'",
    ),
    ("r a string", lambda t, s, a: _swap(a, "--adapter", _adapter(t, s, {"r": '"8"'})), r"field r='8'"),
    ("r a boolean", lambda t, s, a: _swap(a, "--adapter", _adapter(t, s, {"r": "true"})), r"field r=True"),
    ("r fractional", lambda t, s, a: _swap(a, "--adapter", _adapter(t, s, {"r": "8.5"})), r"field r=8\.5"),
    (
        "use_rslora \"no\"",
        lambda t, s, a: _swap(a, "--adapter", _adapter(t, s, {"use_rslora": '"no"'})),
        r"field use_rslora='no'; expected true or false",
    ),
    (
        "rank above min(in, out)",
        lambda t, s, a: _swap(a, "--adapter", _adapter(t, s, {"r": str(BASE + 1)}, _rank(BASE + 1))),
        rf"r={BASE + 1} exceeds min\(d_in, d_out\)={BASE} of module \S+ \(\d+×\d+\)",
    ),
    (
        "factor shape mismatch",
        lambda t, s, a: _swap(a, "--adapter", _adapter(t, s, tensors=_wider)),
        r"module \S+query: \S+lora_A\.weight has shape \(8, 67\) but the base model needs \(8, 64\)",
    ),
    (
        "no tokenizer",
        lambda t, s, a: _swap(a, "--base-model", _no_tokenizer(t, s)),
        r"base model \S+base: no tokenizer files; expected one of tokenizer\.json",
    ),
    (
        "NaN/Inf in a projection",
        lambda t, s, a: [*_swap(a, "--strategy", "relora"), "--projection", _nan_projection(t, s)],
        r"projection \S+projection\.safetensors: tensor \S+\.delta_A holds 1 NaN/Inf",
    ),
    (
        "projection never published",
        lambda t, s, a: [*_swap(a, "--strategy", "relora"), "--projection", _unpublished_projection(t, s)],
        r"copied: no manifest\.json; the artifact was never completely published",
    ),
    (
        "manifest naming ../",
        lambda t, s, a: _swap(a, "--adapter", _unsafe_manifest(t, s)),
        r"refusing path '\.\./\.\./etc/passwd'",
    ),
    (
        "CSV with a duplicate column",
        lambda t, s, a: _swap(a, "--train-data", _data(t, "text,label,text\nx,a,y\n")),
        r"d\.csv: column\(s\) \['text'\] appear more than once",
    ),
    (
        "--labels disagree with the adapter",
        lambda t, s, a: [*a, "--labels", ",".join(reversed(s.labels))],
        r"--labels \[.+\] disagree with the adapter's relora_task\.json labels",
    ),
    ("--labels with an empty label", lambda t, s, a: [*a, "--labels", "a,,b"], r"--labels 'a,,b': an empty label"),
    (
        "output is the adapter",
        lambda t, s, a: _swap(a, "--output", s.adapter_v1 + "/"),
        r"--output \S+ is the same location as --adapter",
    ),
    (
        "output inside the base model",
        lambda t, s, a: _swap(a, "--output", f"file://{s.base_v2}/sub/../out"),
        r"--output \S+ is inside --base-model",
    ),
    (
        "output contains the data",
        lambda t, s, a: _swap(
            _swap(a, "--train-data", _data(t, Path(s.train).read_text(), "data/t.jsonl")), "--output", f"{t}/data/"
        ),
        r"--output \S+/data/ contains --train-data \S+/data/t\.jsonl",
    ),
    (
        "output a symlink to the adapter",
        lambda t, s, a: _swap(a, "--output", _link(t, s.adapter_v1)),
        r"--output \S+link (is the same location as|contains) --adapter",
    ),
    (
        "output a folder relora did not publish",
        lambda t, s, a: _swap(a, "--output", _full_folder(t)),
        r"--output \S+full: an existing folder with files",
    ),
]


def _link(tmp: Path, target: str) -> str:
    (tmp / "link").symlink_to(target)
    return str(tmp / "link")


def _full_folder(tmp: Path) -> str:
    return str(make_folder(tmp / "full", "user"))


@pytest.mark.parametrize(("case", "breaker", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_it_and_publishes_nothing(
    case: str, breaker: Callable, message: str, fault_scenario: Scenario, tmp_path: Path, capsys: Any
) -> None:
    out = str(tmp_path / "out")
    previous = publish_folder(make_folder(tmp_path / "previous", "previous"), out)["version"]
    guarded = {p: snapshot(p) for p in (out, fault_scenario.adapter_v1, fault_scenario.base_v2)}
    args = breaker(tmp_path, fault_scenario, _args(fault_scenario, out))
    term = tmp_path / "termination-log"

    code = main([*args, "--termination-message-path", str(term)])

    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT, err
    assert err.count("\n") == 0 and re.search(message, err), err
    summary = json.loads(term.read_text())
    assert summary["exit_code"] == EXIT_BAD_INPUT and re.search(message, summary["error"])
    assert {p: snapshot(p) for p in guarded} == guarded  # nothing published, nothing overwritten
    assert verify_published(out)["version"] == previous


# Arguments alone are wrong: refused by a fresh interpreter before torch is ever imported.
FAST = (
    ("output equals input", lambda s, o: _swap(_args(s, o), "--output", s.adapter_v1), "is the same location as"),
    (
        "missing input",
        lambda s, o: _swap(_args(s, o), "--train-data", "/nonexistent/t.jsonl"),
        r"/nonexistent/t\.jsonl",
    ),
    ("bad labels", lambda s, o: [*_args(s, o), "--labels", "a,a"], "appear twice"),
    ("bad option value", lambda s, o: [*_args(s, o), "--threshold", "nan"], "threshold"),
    (
        "s3 output inside s3 input",
        lambda s, o: _swap(_swap(_args(s, o), "--adapter", "s3://b/ad"), "--output", "s3://b//ad/./v2/"),
        r"--output s3://b//ad/\./v2/ is inside --adapter s3://b/ad",
    ),
)
CHECK = (
    "import sys; from relora_worker.cli import main; code = main(sys.argv[1:]); "
    "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported torch'; sys.exit(code)"
)


@pytest.mark.parametrize(("case", "breaker", "message"), FAST, ids=[c[0] for c in FAST])
def test_argument_errors_are_refused_before_torch_is_imported(
    case: str, breaker: Callable, message: str, fault_scenario: Scenario, tmp_path: Path
) -> None:
    args = breaker(fault_scenario, str(tmp_path / "out"))
    done = subprocess.run(
        [sys.executable, "-c", CHECK, *args], capture_output=True, text=True, timeout=120, cwd=REPO, env=os.environ
    )
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert done.stderr.count("\n") == 1 and re.search(message, done.stderr), done.stderr
    assert not (tmp_path / "out").exists()
