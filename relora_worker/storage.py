"""Where artifacts live: local paths, ``file://`` and ``s3://`` URIs, and atomic publication.

Reads: :func:`fetch` makes a local copy of a file or folder URI (S3 prefixes are downloaded into a temporary
folder). Writes: :func:`publish_folder` publishes a finished local folder so that a reader never sees a
half-written artifact: every data file first, then ``manifest.json`` with the sha256 and size of each file,
last. Locally the folder is assembled beside its destination and renamed into place; on S3 a stale manifest
is deleted before the first upload, so the only complete-looking state is the finished one.

S3 uses the standard AWS variables plus ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3`` for S3-compatible
servers, with bounded retries; an unreachable endpoint or a refusal ends as :class:`StorageError`, a missing
object as :class:`BadInputError` naming the URI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from relora_worker.errors import BadInputError, StorageError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Location:
    """A parsed URI: ``scheme`` is ``"file"`` (with ``path``) or ``"s3"`` (with ``bucket`` and ``key``)."""

    uri: str
    scheme: str
    path: Path | None = None
    bucket: str = ""
    key: str = ""

    def child(self, name: str) -> Location:
        if self.scheme == "s3":
            key = f"{self.key.rstrip('/')}/{name}" if self.key else name
            return Location(f"s3://{self.bucket}/{key}", "s3", bucket=self.bucket, key=key)
        assert self.path is not None
        return Location(str(self.path / name), "file", path=self.path / name)


def parse_uri(uri: str, what: str = "URI") -> Location:
    """Parses a local path, ``file:///abs/path`` or ``s3://bucket/key``; anything else is a BadInputError."""
    if not isinstance(uri, str) or not uri.strip():
        raise BadInputError(f"{what}: empty URI; expected a local path, file:///path or s3://bucket/key")
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise BadInputError(f"{what} {uri!r}: no bucket; expected s3://bucket/key")
        return Location(uri, "s3", bucket=parsed.netloc, key=parsed.path.lstrip("/"))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise BadInputError(f"{what} {uri!r}: file URIs must be file:///absolute/path")
        return Location(uri, "file", path=Path(unquote(parsed.path)))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter would be a Windows drive
        raise BadInputError(f"{what} {uri!r}: unsupported scheme {parsed.scheme!r}; expected a path, file:// or s3://")
    return Location(uri, "file", path=Path(uri).expanduser().resolve())


# --------------------------------------------------------------------------------------------------- S3


def s3_client() -> Any:
    """A boto3 S3 client configured from the environment, with bounded retries and timeouts."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    attempts = int(os.environ.get("RELORA_S3_MAX_ATTEMPTS", "4"))
    config = Config(
        retries={"max_attempts": attempts, "mode": "standard"},
        connect_timeout=5,
        read_timeout=120,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3", endpoint_url=endpoint, config=config, region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    )


@contextlib.contextmanager
def s3_errors(uri: str) -> Iterator[None]:
    """Translates botocore failures into errors that name the URI and say what to check."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "404", "NoSuchBucket", "NotFound"):
            raise BadInputError(f"{uri}: not found in object storage ({code})") from error
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"):
            raise StorageError(f"{uri}: access denied ({code}); check the S3 credentials and bucket policy") from error
        raise StorageError(f"{uri}: object storage error {code}: {error}") from error
    except NoCredentialsError as error:
        raise StorageError(f"{uri}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from error
    except EndpointConnectionError as error:
        raise StorageError(f"{uri}: S3 endpoint unreachable after retries ({error})") from error
    except BotoCoreError as error:
        raise StorageError(f"{uri}: object storage error: {error}") from error


def _s3_keys(client: Any, loc: Location) -> list[str]:
    prefix = loc.key.rstrip("/") + "/" if loc.key else ""
    keys: list[str] = []
    with s3_errors(loc.uri):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


# ------------------------------------------------------------------------------------------------ reading


@contextlib.contextmanager
def fetch(uri: str, what: str) -> Iterator[Path]:
    """A local path holding the file or folder at ``uri`` for the duration of the block.

    Local paths are used in place; S3 objects or prefixes are downloaded into a temporary folder that is
    removed afterwards. A missing file, folder, object or prefix is a BadInputError naming ``what`` and URI.
    """
    loc = parse_uri(uri, what)
    if loc.scheme == "file":
        assert loc.path is not None
        if not loc.path.exists():
            raise BadInputError(f"{what} {uri}: no such file or folder")
        yield loc.path
        return
    client = s3_client()
    with tempfile.TemporaryDirectory(prefix="relora-fetch-") as tmp:
        keys = _s3_keys(client, loc)
        if keys:  # a prefix: download the folder
            root = Path(tmp) / "folder"
            prefix = loc.key.rstrip("/") + "/"
            for key in keys:
                target = root / key[len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                with s3_errors(f"s3://{loc.bucket}/{key}"):
                    client.download_file(loc.bucket, key, str(target))
            yield root
            return
        target = Path(tmp) / (Path(loc.key).name or "object")
        with s3_errors(uri):
            try:
                client.download_file(loc.bucket, loc.key, str(target))
            except Exception as error:
                if "404" in str(error) or "Not Found" in str(error):
                    raise BadInputError(f"{what} {uri}: no such object or prefix in object storage") from error
                raise
        yield target


def read_json(uri: str, what: str) -> dict:
    """Reads a small JSON document from any supported URI."""
    with fetch(uri, what) as path:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise BadInputError(f"{what} {uri}: not readable JSON ({error})") from error


# ---------------------------------------------------------------------------------------------- publishing


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(folder: Path, metadata: dict | None = None) -> dict:
    """The manifest of every regular file under ``folder`` (sorted, relative paths)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return {"format": "relora-manifest/v1", "created": time.time(), "files": files, **(metadata or {})}


def publish_folder(folder: Path, dest_uri: str, metadata: dict | None = None) -> dict:
    """Publishes ``folder`` at ``dest_uri``: data files first, ``manifest.json`` last; returns the manifest."""
    manifest = build_manifest(folder, metadata)
    dest = parse_uri(dest_uri, "output")
    if dest.scheme == "s3":
        client = s3_client()
        manifest_key = dest.child(MANIFEST).key
        with s3_errors(dest.uri):
            client.delete_object(Bucket=dest.bucket, Key=manifest_key)
            for name in manifest["files"]:
                client.upload_file(str(folder / name), dest.bucket, dest.child(name).key)
            client.put_object(
                Bucket=dest.bucket,
                Key=manifest_key,
                Body=json.dumps(manifest, indent=2).encode(),
                ContentType="application/json",
            )
        return manifest
    assert dest.path is not None
    dest.path.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.path.parent / f".{dest.path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(folder, staging)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if dest.path.exists():
            retired = dest.path.parent / f".{dest.path.name}.old-{uuid.uuid4().hex[:8]}"
            dest.path.rename(retired)
            staging.rename(dest.path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(dest.path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def verify_published(uri: str) -> dict:
    """Checks a published folder against its manifest (every file present with its sha256); returns it."""
    with fetch(uri, "published artifact") as folder:
        manifest_path = folder / MANIFEST
        if not manifest_path.exists():
            raise BadInputError(f"{uri}: no {MANIFEST}; the artifact was never completely published")
        manifest = json.loads(manifest_path.read_text())
        for name, entry in manifest["files"].items():
            path = folder / name
            if not path.exists() or sha256_file(path) != entry["sha256"]:
                raise BadInputError(f"{uri}: {name} is missing or does not match the manifest's sha256")
        return manifest
