"""Fixtures of the fault suite: a tiny scenario, published artifacts to guard, byte snapshots, a worker runner.

Every fault test guards what was published before it: :func:`snapshot` records the sha256 of every byte under
a location (local folder and its versions, or an S3 prefix), and the test asserts it is unchanged afterwards.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relora_worker.storage import VERSIONS, parse_uri
from relora_worker.synthetic import Scenario, ScenarioSize, build_scenario

REPO = Path(__file__).resolve().parents[2]
# The smallest scenario the worker accepts: what is measured here is refusal and integrity, not quality.
FAULT_SIZE = ScenarioSize(train_rows=80, eval_rows=40, pretrain_steps=4, release_steps=4, adapter_steps=4)

# Publishes a folder in a separate interpreter (the real publishing code, killed at a stage by RELORA_FAULT_AT).
PUBLISHER = (
    "import sys; from pathlib import Path; from relora_worker.storage import publish_folder; "
    "publish_folder(Path(sys.argv[1]), sys.argv[2], {'kind': 'test'})"
)


@pytest.fixture(scope="session")
def fault_scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return build_scenario(tmp_path_factory.mktemp("fault-scenario"), task="seq-cls", seed=0, size=FAULT_SIZE)


def publish_projection(tmp: Path, s: Scenario, name: str = "proj", edit: Any = None) -> str:
    """Π_r of the scenario's releases (rank 8), optionally edited (``edit(factors)``), published at tmp/name."""
    from relora_worker.config import ProjectionConfig
    from relora_worker.project import compute_projection
    from relora_worker.storage import publish_folder

    projection = compute_projection(
        Path(s.base_v1), Path(s.base_v2), s.target_modules, ProjectionConfig(rank=8, svd="exact", device="cpu")
    )
    if edit is not None:
        edit(projection.factors)
    projection.save(tmp / f"{name}-src")
    publish_folder(tmp / f"{name}-src", str(tmp / name), {"kind": "projection"})
    return str(tmp / name)


def make_folder(root: Path, tag: str, files: int = 3) -> Path:
    """A small artifact folder whose bytes say which publisher wrote them (``tag``)."""
    root.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        (root / f"part-{index}.bin").write_bytes(f"{tag}:{index}:".encode() * (200 + index))
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "result.json").write_text(f'{{"tag": "{tag}"}}')
    return root


def snapshot(uri: str, s3: Any = None) -> dict[str, str]:
    """sha256 of every byte under ``uri``: the local path, its ``.versions`` sibling, or the S3 prefix."""
    loc = parse_uri(uri)
    out: dict[str, str] = {}
    if loc.scheme == "s3":
        prefix = loc.key.rstrip("/") + "/"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=loc.bucket, Key=obj["Key"])["Body"].read()
                out[obj["Key"][len(prefix) :]] = hashlib.sha256(body).hexdigest()
        return out
    assert loc.path is not None
    for root in (loc.path, loc.path.parent / f"{loc.path.name}.{VERSIONS}"):
        if root.is_symlink():
            out[f"link:{root.name}"] = os.readlink(root)
            continue
        if not root.exists():
            continue
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.name != ".lock":
                out[f"{root.name}/{path.relative_to(root)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def kept(before: dict[str, str], after: dict[str, str]) -> bool:
    """Every byte published before is still there, unchanged (a pointer/link may move: it is not content)."""
    return all(after.get(k) == v for k, v in before.items() if not k.startswith("link:") and k != "manifest.json")


def orphans(uri: str, s3: Any = None) -> list[str]:
    """Staging leftovers: versions without a manifest, temporary links, ``*.old``/``.staging*``/``.tmp`` names."""
    loc = parse_uri(uri)
    found: list[str] = []
    if loc.scheme == "s3":
        prefix = loc.key.rstrip("/") + f"/{VERSIONS}/"
        names: dict[str, set[str]] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                version, _, rest = obj["Key"][len(prefix) :].partition("/")
                names.setdefault(version, set()).add(rest)
        found = [v for v, files in names.items() if "manifest.json" not in files]
        uploads = s3.list_multipart_uploads(Bucket=loc.bucket, Prefix=prefix).get("Uploads", [])
        return found + [u["Key"] for u in uploads]
    assert loc.path is not None
    versions = loc.path.parent / f"{loc.path.name}.{VERSIONS}"
    if versions.exists():
        for entry in versions.iterdir():
            if entry.name.startswith(".link-") or (entry.is_dir() and not (entry / "manifest.json").exists()):
                found.append(entry.name)
    for entry in loc.path.parent.iterdir():
        if entry.name.endswith(".old") or ".staging" in entry.name or ".tmp-" in entry.name or ".old-" in entry.name:
            found.append(entry.name)
    return found


def run_worker(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m relora_worker ARGS`` in a fresh interpreter (real exit code, real signals)."""
    return subprocess.run(
        [sys.executable, "-m", "relora_worker", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def run_publisher(folder: Path, dest: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PUBLISHER, str(folder), dest],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.fixture
def s3_fault_env(s3_env: Any) -> Iterator[Any]:
    """The session S3 server in os.environ, with short retries (faults are expected here)."""
    os.environ["RELORA_S3_MAX_ATTEMPTS"] = "2"
    try:
        yield s3_env
    finally:
        os.environ.pop("RELORA_S3_MAX_ATTEMPTS", None)


def project_delta_args(scenario: Any, output: str, *extra: str, old_model: str | None = None) -> list[str]:
    """`relora project-delta` of the fault scenario's release at rank 4 on CPU, into ``output``."""
    return [
        "project-delta",
        "--old-model",
        old_model or scenario.base_v1,
        "--new-model",
        scenario.base_v2,
        "--target-modules",
        ",".join(scenario.target_modules),
        "--rank",
        "4",
        "--output",
        output,
        "--device",
        "cpu",
        *extra,
    ]
