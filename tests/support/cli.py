"""Runners for the kubectl and helm binaries, bound to one kubeconfig."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path


class CommandFailed(subprocess.CalledProcessError):
    """A CalledProcessError whose message carries the command's stderr (pytest shows it on failure)."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class CliRunner:
    """`runner("get", "pods", "-n", ns)` runs `<binary> <base args> get pods -n ns` and returns the
    CompletedProcess (text mode); a non-zero exit raises CommandFailed unless check=False."""

    def __init__(self, binary: Path, base_args: list[str], env: Mapping[str, str] | None = None) -> None:
        self.binary = binary
        self.base_args = base_args
        self.env = {**os.environ, **(env or {})}

    def __call__(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), *self.base_args, *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and result.returncode != 0:
            raise CommandFailed(result.returncode, argv, result.stdout, result.stderr)
        return result


def kubectl_runner(binary: Path, kubeconfig: Path) -> CliRunner:
    return CliRunner(binary, [f"--kubeconfig={kubeconfig}"])


def helm_runner(binary: Path, kubeconfig: Path, home: Path) -> CliRunner:
    """helm with its cache/config/data folders in `home`, so tests never touch the user's helm setup."""
    env = {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(kubeconfig),
    }
    return CliRunner(binary, [f"--kubeconfig={kubeconfig}"], env)
