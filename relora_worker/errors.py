"""Errors the worker reports to its caller, each with the exit code the CLI documents.

A :class:`ReloraError` always carries a one-line message that names the file, field or URI at fault and
says what was expected; the CLI prints it and exits with :attr:`ReloraError.exit_code`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_BELOW_THRESHOLD = 3
EXIT_STORAGE = 4


class ReloraError(Exception):
    """Base class of every expected failure; ``exit_code`` is what the CLI returns."""

    exit_code = EXIT_INTERNAL


class BadInputError(ReloraError, ValueError):
    """A model, adapter, dataset, field, option or URI is wrong. Nothing is published."""

    exit_code = EXIT_BAD_INPUT


class StorageError(ReloraError):
    """Object storage is unreachable or refuses access (after bounded retries)."""

    exit_code = EXIT_STORAGE
