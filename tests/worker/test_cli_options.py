"""The command line is built from the configuration dataclasses (relora_worker.config ``knob`` fields, through
relora_worker.cli_options): every field is reachable from some command with the dataclass's default, each
option sets its field, a new knob is one field (it shows in --help and reaches the configuration), and bad
values are refused naming the field."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from relora_worker.cli import _apply_config_file, build_parser, readapt_config_from
from relora_worker.cli_options import Option, add_options, config_from, options
from relora_worker.config import (
    EVALUATE,
    PROJECT_DELTA,
    READAPT,
    ProjectionConfig,
    ReadaptConfig,
    TaskConfig,
    knob,
)
from relora_worker.errors import BadInputError

# The least each command needs to parse (URIs are only checked later, by precheck).
MINIMAL = {
    READAPT: ["readapt", "--threshold", str(ReadaptConfig().task.threshold)],  # required by readapt, as by the CRD
    PROJECT_DELTA: ["project-delta", "--old-model", "a", "--new-model", "b", "--target-modules", "q", "--output", "o"],
    EVALUATE: ["evaluate", "--base-model", "a", "--adapter", "b", "--data", "c"],
}
ROOTS = {READAPT: ReadaptConfig, PROJECT_DELTA: ProjectionConfig, EVALUATE: TaskConfig}


def _leaves(cls: type, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    hints = typing.get_type_hints(cls)
    out: set[tuple[str, ...]] = set()
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        out |= _leaves(kind, (*path, f.name)) if dataclasses.is_dataclass(kind) else {(*path, f.name)}
    return out


def _get(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def _parse(command: str, *extra: str) -> argparse.Namespace:
    return build_parser().parse_args([*MINIMAL[command], *extra])


def test_every_config_field_is_reachable_from_the_cli() -> None:
    # (class, field) pairs: ProjectionConfig.rank is offered by project-delta, not by readapt (the adapter's rank).
    reachable = {(_owner(root, o.path), o.path[-1]) for command, root in ROOTS.items() for o in options(root, command)}
    every = {(_owner(ReadaptConfig, path), path[-1]) for path in _leaves(ReadaptConfig)}
    missing = sorted(f"{cls.__name__}.{name}" for cls, name in every - reachable)
    assert not missing, f"configuration fields no command offers: {missing}"


def _owner(root: type, path: tuple[str, ...]) -> type:
    cls = root
    for name in path[:-1]:
        cls = typing.get_type_hints(cls)[name]
    return cls


@pytest.mark.parametrize("command", list(ROOTS))
def test_the_cli_defaults_are_the_dataclasses(command: str) -> None:
    args = _parse(command)
    built = readapt_config_from(args) if command == READAPT else config_from(args, ROOTS[command], command)
    assert built == ROOTS[command]()
    # Fields that share a flag (--seed, --device) agree on its default, and the option shows it.
    sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    by_flag = {a.option_strings[-1]: a for a in sub._actions}
    for option in options(ROOTS[command], command):
        action = by_flag[option.flag]
        if command in option.knob.required:  # no default is assumed: the option says it is required
            assert action.default is None and "(required)" in action.help, option.flag
            continue
        assert action.default == option.default, f"{option.flag}: {action.default!r} != {option.path}'s default"
        if not option.knob.common:
            assert option.knob.help in action.help


# A value other than the default, valid for the dataclass, for each option of `relora readapt`.
SPECIAL: dict[str, tuple[str, Any]] = {
    "--alpha-bounds": ("-1.0,0.5", (-1.0, 0.5)),
    "--beta-bounds": ("0.5,2.0", (0.5, 2.0)),
    "--labels": ('["a, b","c"]', ("a, b", "c")),
    "--readiness-confidence": ("0.9", 0.9),
    "--stage1-steps": ("7", 7),
    "--task": ("seq-cls", "seq-cls"),
}


def _other_value(option: Option) -> tuple[list[str], Any]:
    """The argument (``--flag=text``, as the operator writes them) and the value it should give the field."""
    default = option.default
    if option.flag in SPECIAL:
        text, value = SPECIAL[option.flag]
    elif option.knob.choices:
        text = value = next(c for c in option.knob.choices if c != default)
    elif isinstance(default, bool):
        return [option.flag], True
    elif isinstance(default, int):
        text, value = str(default + 1), default + 1
    elif isinstance(default, float):
        value = default / 2 if default else 0.05
        text = repr(value)
    else:
        text = value = f"x{default}"
    return [f"{option.flag}={text}"], value


@pytest.mark.parametrize("option", list(options(ReadaptConfig, READAPT)), ids=lambda o: ".".join(o.path))
def test_each_readapt_option_sets_its_field(option: Option) -> None:
    if option.knob.common:
        argv, value = ["--device", "cpu"], "cpu"
    else:
        argv, value = _other_value(option)
    base = ["--task", "causal-lm"] if option.flag != "--task" else []  # exact-match needs causal-lm
    config = readapt_config_from(_parse(READAPT, *base, *argv))
    assert _get(config, option.path) == value
    for other in options(ReadaptConfig, READAPT):  # a shared flag sets every field that shares it
        if other.flag == option.flag:
            assert _get(config, other.path) == value


def test_bad_values_are_refused_naming_the_field() -> None:
    with pytest.raises(BadInputError, match=r"readiness\.confidence=2\.0"):
        readapt_config_from(_parse(READAPT, "--readiness-confidence", "2"))
    with pytest.raises(BadInputError, match=r"lr_min=0\.1: expected a number <= lr"):
        readapt_config_from(_parse(READAPT, "--lr-min", "0.1"))
    with pytest.raises(BadInputError, match="--labels"):
        readapt_config_from(_parse(READAPT, "--labels", "a,a"))
    with pytest.raises(SystemExit):  # argparse: the usage line and the reason, exit 2 (bad input)
        _parse(READAPT, "--alpha-bounds", "x")


@dataclass(frozen=True)
class _Inner:
    GROUP: ClassVar[str] = "widgets"

    spokes: int = knob(3, "spokes per wheel")


@dataclass(frozen=True)
class _Knobs:
    widgets: int = knob(7, "how many widgets", commands=(READAPT,))
    colour: str = knob("red", "the widgets' colour", choices=("red", "blue"))
    hidden: int = knob(1, "only for another command", commands=(EVALUATE,))
    inner: _Inner = field(default_factory=_Inner)


def test_a_new_knob_is_one_field_it_shows_in_help_and_reaches_the_config() -> None:
    parser = argparse.ArgumentParser(prog="probe")
    add_options(parser, _Knobs, READAPT, {"widgets": parser.add_argument_group("widgets")})
    text = parser.format_help()
    assert "--widgets WIDGETS" in text and "how many widgets (default: 7)" in text
    assert "--colour {red,blue}" in text and "--spokes SPOKES" in text and "\nwidgets:\n" in text
    assert "--hidden" not in text
    config = config_from(parser.parse_args(["--widgets", "9", "--colour", "blue", "--spokes", "5"]), _Knobs, READAPT)
    assert config == _Knobs(widgets=9, colour="blue", inner=_Inner(spokes=5))
    assert config_from(parser.parse_args([]), _Knobs, READAPT) == _Knobs()


def test_readapt_requires_a_threshold_on_the_command_line_or_in_the_config_file(tmp_path: Path) -> None:
    """The CRD requires a threshold; so does the CLI, instead of deciding Ready against an assumed 0.8."""
    with pytest.raises(BadInputError, match=r"--threshold is required .*\(0, 1\]"):
        readapt_config_from(build_parser().parse_args(["readapt"]))
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"threshold": 0.65}))
    args = _apply_config_file(build_parser(), ["readapt", "--config", str(config)])
    assert readapt_config_from(args).task.threshold == 0.65
