"""What goes wrong when one side reads the other's summary or record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class ContractError(ValueError):
    """A summary or record that this version cannot read: the message names the field or version at fault."""


def explain(error: ValidationError) -> str:
    """pydantic's errors in one line: ``field: what was wrong`` for each."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']} (got {e.get('input')!r})"
        for e in error.errors(include_url=False)
    )


def parse_versioned(model: type[Model], value: Any, where: str, expected: str) -> Model:
    """``value`` as ``model``, whose version is its ``format`` (``expected``; absent reads as ``expected``): a
    ContractError naming ``where`` for another format, a value that is no object, or a field that is wrong."""
    if not isinstance(value, Mapping):
        raise ContractError(f"{where}: expected a JSON object, got {type(value).__name__}")
    found = value.get("format", expected)
    if found != expected:
        raise ContractError(f"{where}: format {found!r} is not one this version reads (expected {expected!r})")
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise ContractError(f"{where}: {explain(error)}") from None
