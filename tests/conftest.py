"""Shared pytest fixtures of the whole suite: the real servers the tests run against (docs/testing.md)."""

pytest_plugins = [
    "tests.support.s3server",
]
