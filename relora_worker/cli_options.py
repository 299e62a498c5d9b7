"""Command-line options built from the configuration dataclasses (relora_worker.config, fields made with
``knob``), and the configuration built back from the parsed options.

One walk over a configuration class gives, for a command, every option it offers (its flag, type, choices,
default and help, the default shown); nested configurations are walked too. Several fields may share one flag
(``--seed`` seeds the split, the search and the fine-tune): the option is declared once, and the test suite
checks that their defaults agree. Values are checked by the dataclasses themselves (``__post_init__``), so a
bad value is refused naming the field, whether it came from a flag or from ``--config``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from relora_worker.config import Knob
from relora_worker.errors import BadInputError


@dataclass(frozen=True)
class Option:
    """One configuration field as a command-line option."""

    path: tuple[str, ...]  # the field's place in the configuration, e.g. ("finetune", "max_steps")
    field: dataclasses.Field
    kind: Any  # the field's type, resolved
    knob: Knob
    group: str | None

    @property
    def flag(self) -> str:
        return str(self.knob.flag or "--" + self.field.name.replace("_", "-"))

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def default(self) -> Any:
        if self.field.default_factory is not dataclasses.MISSING:
            return self.field.default_factory()
        return self.field.default


def options(cls: type, command: str, path: tuple[str, ...] = ()) -> Iterator[Option]:
    """Every field of ``cls`` (and of its nested configurations) that ``command`` offers, in field order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from options(kind, command, (*path, f.name))
            continue
        knob = f.metadata.get("knob")
        if knob is not None and command in knob.commands:
            yield Option((*path, f.name), f, kind, knob, knob.group or getattr(cls, "GROUP", None))


def _scalar(kind: Any) -> Any:
    """``int`` for ``int``; ``X`` for ``X | None``."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return kind


def _argument_type(option: Option) -> Callable[[str], Any]:
    parse = option.knob.parse
    if parse is None:
        kind = _scalar(option.kind)
        return kind if kind in (int, float) else str

    def parsed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parsed.__name__ = option.dest
    return parsed


def _help(option: Option, command: str) -> str:
    if command in option.knob.required:
        return f"{option.knob.help} (required)"
    default = option.default
    shown = default is not None and default is not False and default != "" and "default" not in option.knob.help
    if isinstance(default, tuple):
        default = ",".join(str(x) for x in default)
    return f"{option.knob.help} (default: {default})" if shown else option.knob.help


def add_options(
    parser: argparse.ArgumentParser, cls: type, command: str, groups: Mapping[str, Any] | None = None
) -> None:
    """Declares ``command``'s options of ``cls`` on ``parser`` (in ``groups[option.group]`` when given)."""
    for option in options(cls, command):
        if option.knob.common or option.flag in parser._option_string_actions:
            continue  # declared already: by the command's common options, or by another field sharing the flag
        target = (groups or {}).get(option.group or "", parser)
        required = command in option.knob.required  # checked in config_from, after --config has had its say
        default = None if required else option.default
        kwargs: dict[str, Any] = {"default": default, "help": _help(option, command), "dest": option.dest}
        if _scalar(option.kind) is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = _argument_type(option)
            if option.knob.choices:
                kwargs["choices"] = option.knob.choices
            if option.knob.metavar:
                kwargs["metavar"] = option.knob.metavar
        target.add_argument(option.flag, **kwargs)


def config_from(args: argparse.Namespace, cls: type, command: str) -> Any:
    """``cls`` built from the parsed options of ``command``; fields it does not offer keep their defaults."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            values[f.name] = config_from(args, kind, command)
            continue
        knob = f.metadata.get("knob")
        if knob is None or command not in knob.commands:
            continue
        option = Option((f.name,), f, kind, knob, None)
        value = getattr(args, option.dest)
        if value is None and command in knob.required:
            raise BadInputError(f"{option.flag} is required (on the command line or in --config): {knob.help}")
        values[f.name] = knob.convert(value) if knob.convert is not None and value is not None else value
    return cls(**values)
