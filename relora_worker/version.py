"""The worker's version: the installed distribution's (pyproject.toml's version, the images' default tag)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "relora-operator"


def installed_version() -> str:
    """``relora --version``; the distribution is what the images install (a source checkout has none)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed)"
