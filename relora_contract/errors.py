"""What goes wrong when one side reads the other's summary or record."""

from __future__ import annotations

from pydantic import ValidationError


class ContractError(ValueError):
    """A summary or record that this version cannot read: the message names the field or version at fault."""


def explain(error: ValidationError) -> str:
    """pydantic's errors in one line: ``field: what was wrong`` for each."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']} (got {e.get('input')!r})"
        for e in error.errors(include_url=False)
    )
