"""Every bad input ends with a one-line error naming it, a distinct exit code and nothing published."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from relora_worker.cli import main
from relora_worker.errors import EXIT_BAD_INPUT, EXIT_BELOW_THRESHOLD
from relora_worker.synthetic import Scenario
from tests.worker.conftest import readapt_args


def run(args: list[str], capsys: pytest.CaptureFixture, out: Path) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    assert not (out / "manifest.json").exists() or code in (0, EXIT_BELOW_THRESHOLD)
    return code, captured.err.strip()


def copy(path: str, tmp: Path, name: str) -> Path:
    target = tmp / name
    (shutil.copytree if Path(path).is_dir() else shutil.copy)(path, target)
    return target


def with_rows(tmp: Path, rows: list[dict]) -> Path:
    path = tmp / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def edit_adapter_config(tmp: Path, scenario: Scenario, **changes: object) -> Path:
    folder = copy(scenario.adapter_v1, tmp, "adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def shrink_rank(tmp: Path, scenario: Scenario) -> Path:
    folder = copy(scenario.adapter_v1, tmp, "adapter")
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    tensors = {
        k: (v[:4] if ".lora_A." in k else v[:, :4] if ".lora_B." in k else v).contiguous() for k, v in tensors.items()
    }
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def pickled_adapter(tmp: Path, scenario: Scenario) -> Path:
    folder = copy(scenario.adapter_v1, tmp, "adapter")
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    (folder / "adapter_model.safetensors").unlink()
    torch.save(tensors, folder / "adapter_model.bin")
    return folder


def reshaped_release(tmp: Path, scenario: Scenario) -> Path:
    folder = copy(scenario.base_v2, tmp, "base")
    weights = load_file(str(folder / "model.safetensors"))
    key = next(k for k in weights if k.endswith("attention.self.query.weight"))
    weights[key] = torch.zeros(weights[key].shape[0], weights[key].shape[1] + 4)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


# (what is wrong, how to break the arguments, what the message must say)
CASES: list[tuple[str, Callable[[Path, Scenario, list[str]], list[str]], str]] = [
    ("missing base model", lambda t, s, a: swap(a, "--base-model", str(t / "nowhere")), r"base model .*nowhere"),
    ("missing adapter", lambda t, s, a: swap(a, "--adapter", str(t / "gone")), r"adapter .*gone"),
    ("missing data", lambda t, s, a: swap(a, "--train-data", str(t / "x.jsonl")), r"dataset .*x\.jsonl"),
    (
        "unknown data type",
        lambda t, s, a: swap(a, "--train-data", str(with_rows(t, []).rename(t / "d.txt"))),
        r"d\.txt: unknown file type",
    ),
    (
        "bad URI scheme",
        lambda t, s, a: swap(a, "--train-data", "http://example.invalid/d.jsonl"),
        r"unsupported scheme 'http'",
    ),
    ("missing field", lambda t, s, a: [*a, "--text-field", "sentence"], r"no field 'sentence'"),
    (
        "unknown label",
        lambda t, s, a: swap(a, "--eval-data", str(with_rows(t, [{"text": "ast1", "label": "poetry"}]))),
        r"unknown label.*poetry",
    ),
    (
        "empty validation split",
        lambda t, s, a: swap(
            a,
            "--train-data",
            str(with_rows(t, [{"text": "ast1", "label": "astronomy"}, {"text": "mus1", "label": "music"}])),
        ),
        r"split is empty",
    ),
    (
        "target the base lacks",
        lambda t, s, a: swap(a, "--adapter", str(edit_adapter_config(t, s, target_modules=["gate_proj"]))),
        r"gate_proj",
    ),
    (
        "rank inconsistent",
        lambda t, s, a: swap(a, "--adapter", str(shrink_rank(t, s))),
        r"rank 4 but the config says r=8",
    ),
    (
        "bad scaling",
        lambda t, s, a: swap(a, "--adapter", str(edit_adapter_config(t, s, lora_alpha=-1))),
        r"lora_alpha=-1",
    ),
    ("pickled adapter", lambda t, s, a: swap(a, "--adapter", str(pickled_adapter(t, s))), r"pickled.*refusing"),
    ("shapes differ", lambda t, s, a: swap(a, "--base-model", str(reshaped_release(t, s))), r"scratch"),
    ("threshold out of range", lambda t, s, a: [*a, "--threshold", "1.5"], r"threshold=1\.5.*\(0, 1\]"),
    ("inverted bounds", lambda t, s, a: [*a, "--alpha-bounds", "1,-1"], r"alpha_bounds"),
    ("fused start without delta", lambda t, s, a: drop(a, "--old-base-model"), r"--projection or --old-base-model"),
]


def swap(args: list[str], flag: str, value: str) -> list[str]:
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


def drop(args: list[str], flag: str) -> list[str]:
    out = list(args)
    index = out.index(flag)
    del out[index : index + 2]
    return out


@pytest.mark.parametrize(("case", "breaker", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named_and_nothing_is_published(
    case: str, breaker: Callable, message: str, scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    args = breaker(tmp_path, scenario_cls, readapt_args(scenario_cls, out))
    term = tmp_path / "termination-log"
    code, err = run([*args, "--termination-message-path", str(term)], capsys, out)
    assert code == EXIT_BAD_INPUT, err
    assert err.count("\n") == 0 and err.startswith("relora readapt: error:"), err
    assert re.search(message, err), err
    assert not out.exists()
    summary = json.loads(term.read_text())
    assert summary["status"] == "error" and summary["exit_code"] == EXIT_BAD_INPUT and summary["error"]


def test_threshold_not_reached_is_published_with_its_own_exit_code(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    term = tmp_path / "term"
    args = readapt_args(
        scenario_cls, out, "--threshold", "1.0", "--termination-message-path", str(term), strategy="transfer-ft"
    )
    assert main(args) == EXIT_BELOW_THRESHOLD
    summary = json.loads(term.read_text())
    assert summary["status"] == "below-threshold" and summary["time_to_readiness_s"] is None
    assert (out / "manifest.json").exists() and len(term.read_bytes()) < 4096


def test_config_file_with_unknown_key_is_named(
    scenario_cls: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"base_model": scenario_cls.base_v2, "learning_rate": 1}))
    assert main(["readapt", "--config", str(config)]) == EXIT_BAD_INPUT
    assert "learning_rate" in capsys.readouterr().err
