"""The fleet's release: one new base, N old adapters and their data, published where the workers read them.

The models come from bench/scale/build.py (a random-weight real shape, or ``tiny`` on CPU). The N adapters are
the built adapter with its ``lora_B`` factors scaled by a per-adapter random factor (distinct weights, the
same shape, as N tenants' adapters of one family would be); they share one training/validation/evaluation
set (data is fetched per adapter either way, so sharing it changes no base count).

``publish_s3`` uploads everything to the benchmark's S3 server with a plain boto3 client of the bench (not the
worker's code, which is what is measured); ``publish_local`` writes the adapters beside the built models for
the file:// variant (the device has no S3 server).
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class Release:
    """URIs (s3:// or local paths) the plans and command lines name."""

    base: str
    adapters: list[str]
    train: str
    val: str
    eval: str
    base_prefix: str | None = None  # the base's key prefix in the bucket (server-side byte counts), S3 only
    base_files: dict[str, int] | None = None  # key -> size of every object of the base, S3 only


def make_adapters(template: Path, root: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` adapter folders under ``root``: the template with lora_B scaled by 1 ± 0.1 per adapter."""
    from safetensors.torch import load_file, save_file

    weights = load_file(str(template / ADAPTER_WEIGHTS))
    rng = random.Random(seed)
    folders = []
    for index in range(count):
        folder = root / f"adapter-{index:04d}"
        shutil.copytree(template, folder)
        factor = 1.0 + rng.uniform(-0.1, 0.1)
        scaled = {k: (v * factor if ".lora_B." in k else v).contiguous() for k, v in weights.items()}
        save_file(scaled, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        folders.append(folder)
    return folders


def _upload_folder(client: Any, bucket: str, folder: Path, prefix: str) -> dict[str, int]:
    sizes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            client.upload_file(str(path), bucket, key)
            sizes[key] = path.stat().st_size
    return sizes


def publish_s3(client: Any, bucket: str, base: Path, adapters: list[Path], data: dict[str, Path]) -> Release:
    """Uploads the base, the adapters and the data under ``fleet/`` in ``bucket``."""
    base_files = _upload_folder(client, bucket, base, "fleet/base")
    adapter_uris = []
    for folder in adapters:
        _upload_folder(client, bucket, folder, f"fleet/adapters/{folder.name}")
        adapter_uris.append(f"s3://{bucket}/fleet/adapters/{folder.name}")
    for path in data.values():
        client.upload_file(str(path), bucket, f"fleet/data/{path.name}")
    uri = {name: f"s3://{bucket}/fleet/data/{path.name}" for name, path in data.items()}
    return Release(
        base=f"s3://{bucket}/fleet/base",
        adapters=adapter_uris,
        train=uri["train"],
        val=uri["val"],
        eval=uri["eval"],
        base_prefix="fleet/base/",
        base_files=base_files,
    )


def publish_local(base: Path, adapters: list[Path], data: dict[str, Path]) -> Release:
    """The same release as local paths (the GPU variant: no S3 server on the device)."""
    return Release(
        base=str(base),
        adapters=[str(a) for a in adapters],
        train=str(data["train"]),
        val=str(data["val"]),
        eval=str(data["eval"]),
    )
