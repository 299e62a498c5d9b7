"""Where the control plane's binaries are, building them (hack/build-k8s.sh) when they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-k8s.sh"
NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")


def _complete(directory: Path, names: tuple[str, ...]) -> bool:
    return all(os.access(directory / n, os.X_OK) for n in names)


def bin_dir(names: tuple[str, ...] = NAMES, *, build: bool = True) -> Path:
    """The folder holding `names`.

    RELORA_K8S_BIN_DIR wins (and is also where the build script writes). Otherwise the build script is run:
    it is a no-op printing its versioned cache folder when everything is built, and otherwise builds the
    missing binaries from their Go modules (a cold build takes many minutes; see docs/testing.md).
    """
    override = os.environ.get("RELORA_K8S_BIN_DIR")
    if override and _complete(Path(override), names):
        return Path(override)
    if not build:
        raise FileNotFoundError(f"{', '.join(names)} not built; run {BUILD_SCRIPT}")
    # stderr goes to the terminal (progress + timings); stdout's last line is the folder.
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    directory = Path(result.stdout.strip().splitlines()[-1])
    if not _complete(directory, names):
        raise FileNotFoundError(f"{BUILD_SCRIPT} finished but {directory} lacks some of {names}")
    return directory


def tool(name: str) -> Path:
    """One client tool (kubectl, helm): from our build when present, else from PATH (real-cluster runs)."""
    try:
        return bin_dir((name,), build=False) / name
    except FileNotFoundError:
        pass
    default = _default_cache_dir()
    if default is not None and os.access(default / name, os.X_OK):
        return default / name
    found = shutil.which(name)
    if found:
        return Path(found)
    return bin_dir((name,)) / name


def _default_cache_dir() -> Path | None:
    """The newest versioned folder under .cache/k8s-bin, without running the script."""
    root = REPO_ROOT / ".cache" / "k8s-bin"
    folders = sorted(root.glob("*"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return folders[-1] if folders else None
