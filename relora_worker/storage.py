"""Where artifacts live: local paths, ``file://`` and ``s3://`` URIs; confined reads, verified immutable publishing.

Reads: :func:`fetch` gives a local path holding a file or folder URI. S3 prefixes are downloaded into a
temporary folder, and every key must stay inside it (no ``..``, absolute, backslash or empty segment). A folder
that carries a relora ``manifest.json`` is verified: every file it names must have its sha256, else the read is
refused (:class:`BadInputError` naming the file). A pointer (below) is followed to the version it names.

Writes: :func:`publish_folder` never changes bytes that a reader may already hold (the layout, as git or a
package registry treats published content):

* S3: ``<prefix>/versions/<version>/`` receives every file and then that version's ``manifest.json``
  (sha256 + size of each file); then ONE small object, ``<prefix>/manifest.json`` (the pointer, format
  ``relora-pointer/v1``: ``current``, ``version``, ``manifest_sha256``), makes it current. The pointer write
  is conditional (``If-Match`` the pointer seen before the upload, ``If-None-Match: *`` if there was none),
  so of two racing publishers one wins and the other withdraws its version with a :class:`PublishConflict`.
* Local: ``<path>.versions/<version>/`` receives the files and the manifest, then ``<path>`` becomes a
  relative symlink to it, swapped with one ``rename`` under an ``flock`` that re-checks the link it replaces.
  Readers of ``<path>/result.json`` keep working; ``<path>`` must not exist yet, be empty, or be our symlink.

Until the pointer is written nothing is current; an interrupted publish (killed at any point, S3 outage)
leaves the previous version current and intact. A version that never got its manifest is garbage: the next
publish to the same destination removes it once it is older than ``RELORA_PUBLISH_GRACE_S`` (default one
hour, so that a racing publisher's upload in progress is never touched). Complete older versions are kept.

S3 uses the standard AWS variables plus ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``; timeouts and retries
are bounded (``RELORA_S3_CONNECT_TIMEOUT``, ``RELORA_S3_READ_TIMEOUT`` seconds, ``RELORA_S3_MAX_ATTEMPTS``),
so an endpoint that hangs ends as :class:`StorageError` (exit 4). ``RELORA_FAULT_AT=<stage>[:<signal>]`` is a
test hook: the process sends itself the signal (default SIGKILL) at that publishing stage.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from relora_worker import signals, transfers
from relora_worker.errors import BadInputError, PublishConflict, StorageError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "relora-manifest/v1"
POINTER_FORMAT = "relora-pointer/v1"
VERSIONS = "versions"  # S3: <prefix>/versions/<id>/; local: <path>.versions/<id>/
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
PUBLISHED_ONLY = ("projection",)  # inputs only relora writes: always read with their manifest, never without
_VERSION_RE = re.compile(r"^[0-9]{8}T[0-9]{6}[0-9]{6}Z-[0-9a-f]{8}$")


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
    """Parses a local path, ``file:///abs/path`` or ``s3://bucket/key``; anything else is a BadInputError.

    Local paths are made absolute lexically (``..`` folded), without following symlinks: a published output
    is itself a symlink that must be replaced, not followed.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise BadInputError(f"{what}: empty URI; expected a local path, file:///path or s3://bucket/key")
    if "\x00" in uri:
        raise BadInputError(f"{what} {uri!r}: contains a NUL character")
    if uri.startswith("s3://"):
        # Split by hand: urlparse would drop a '#' or '?' that is part of an S3 key.
        bucket, _, key = uri[len("s3://") :].partition("/")
        if not bucket:
            raise BadInputError(f"{what} {uri!r}: no bucket; expected s3://bucket/key")
        return Location(uri, "s3", bucket=bucket, key=key.lstrip("/"))
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise BadInputError(f"{what} {uri!r}: file URIs must be file:///absolute/path")
        return Location(uri, "file", path=Path(os.path.abspath(unquote(parsed.path))))
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter would be a Windows drive
        raise BadInputError(f"{what} {uri!r}: unsupported scheme {parsed.scheme!r}; expected a path, file:// or s3://")
    return Location(uri, "file", path=Path(os.path.abspath(os.path.expanduser(uri))))


def _key_segments(key: str) -> tuple[str, ...]:
    """An S3 key as normalised segments (empty and ``.`` dropped, ``..`` folded) for overlap checks."""
    parts: list[str] = []
    for segment in key.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    return tuple(parts)


def _local_forms(path: Path) -> set[Path]:
    """The lexical and the symlink-resolved form of ``path`` (both must be kept apart from an output)."""
    return {Path(os.path.abspath(path)), Path(os.path.realpath(path))}


def _relation(a: tuple[str, ...] | Path, b: tuple[str, ...] | Path) -> str | None:
    if a == b:
        return "is the same location as"
    if isinstance(a, Path) and isinstance(b, Path):
        return "is inside" if b in a.parents else "contains" if a in b.parents else None
    assert isinstance(a, tuple) and isinstance(b, tuple)
    return "is inside" if a[: len(b)] == b else "contains" if b[: len(a)] == a else None


def check_output_apart(output: str, inputs: dict[str, str | None]) -> None:
    """Refuses an output equal to, inside or containing any input (after normalising both sides).

    Args:
        output: the ``--output`` URI.
        inputs: flag -> URI of every input (None for absent ones).

    Raises:
        BadInputError: naming both flags and URIs, before any work is done.
    """
    out = parse_uri(output, "--output")
    if out.scheme == "file":
        assert out.path is not None
        if out.path == Path(out.path.anchor):
            raise BadInputError(f"--output {output}: a filesystem root; expected a folder to publish into")
        versions = out.path.parent / f"{out.path.name}.{VERSIONS}"
        out_forms: set[Any] = _local_forms(out.path) | _local_forms(versions)
    else:
        out_forms = {(out.bucket, *_key_segments(out.key))}
    for flag, uri in inputs.items():
        if not uri:
            continue
        loc = parse_uri(uri, flag)
        if loc.scheme != out.scheme:
            continue
        if loc.scheme == "file":
            assert loc.path is not None
            in_forms: set[Any] = _local_forms(loc.path)
        else:
            in_forms = {(loc.bucket, *_key_segments(loc.key))}
        for a in out_forms:
            for b in in_forms:
                relation = _relation(a, b)
                if relation:
                    raise BadInputError(
                        f"--output {output} {relation} {flag} {uri}: publishing there could overwrite an input; "
                        "choose an output outside every input"
                    )


def check_output_target(output: str) -> None:
    """Refuses a local output that exists as something relora would have to destroy to publish there."""
    loc = parse_uri(output, "--output")
    if loc.scheme != "file":
        return
    assert loc.path is not None
    path = loc.path
    if path.is_symlink():
        target = os.readlink(path)
        if not _our_link(path, target):
            raise BadInputError(
                f"--output {output}: a symlink to {target} not made by relora; expected a new path or a "
                f"previous relora output (a link into {path.name}.{VERSIONS}/)"
            )
    elif path.is_dir():
        if any(path.iterdir()):
            raise BadInputError(
                f"--output {output}: an existing folder with files (not a relora output); relora never "
                "replaces a folder it did not publish: choose a new path or move it away"
            )
    elif path.exists():
        raise BadInputError(f"--output {output}: an existing file; expected a folder path")


def _our_link(path: Path, target: str) -> bool:
    prefix = f"{path.name}.{VERSIONS}/"
    return target.startswith(prefix) and _VERSION_RE.match(target[len(prefix) :]) is not None


# --------------------------------------------------------------------------------------------------- S3


def _env_float(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        raise BadInputError(f"environment {name}={text!r}: expected a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise BadInputError(f"environment {name}={text!r}: expected a positive number of seconds")
    return value


def s3_settings() -> dict[str, float]:
    """Connect/read timeouts (seconds) and attempts; bounded so that a hanging endpoint ends in an error."""
    attempts_text = os.environ.get("RELORA_S3_MAX_ATTEMPTS", "4")
    if not attempts_text.isdigit() or int(attempts_text) < 1:
        raise BadInputError(f"environment RELORA_S3_MAX_ATTEMPTS={attempts_text!r}: expected a positive integer")
    return {
        "connect_timeout": _env_float("RELORA_S3_CONNECT_TIMEOUT", 5.0),
        "read_timeout": _env_float("RELORA_S3_READ_TIMEOUT", 60.0),
        "attempts": int(attempts_text),
    }


_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def s3_client() -> Any:
    """A boto3 S3 client configured from the environment, with bounded retries and timeouts.

    Clients are thread-safe and costly to build (each loads the service model), so one is kept per distinct
    configuration; it is built under a lock because boto3 sessions are not thread-safe.
    """
    import boto3
    from botocore.config import Config

    settings = s3_settings()
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    names = (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    )
    identity = hashlib.sha256("\0".join(os.environ.get(n, "") for n in names).encode()).hexdigest()  # never kept raw
    key = (endpoint, region, identity, tuple(sorted(settings.items())))
    with _clients_lock:
        if key not in _clients:
            config = Config(
                retries={"max_attempts": int(settings["attempts"]), "mode": "standard"},
                connect_timeout=settings["connect_timeout"],
                read_timeout=settings["read_timeout"],
                s3={"addressing_style": "path"},
                max_pool_connections=16,
            )
            session = boto3.session.Session()
            _clients[key] = session.client("s3", endpoint_url=endpoint, config=config, region_name=region)
        return _clients[key]


@contextlib.contextmanager
def s3_errors(uri: str) -> Iterator[None]:
    """Translates botocore failures into errors that name the URI and say what to check."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

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
        raise StorageError(
            f"{uri}: no S3 credentials found by the default AWS chain: give the pod a cloud identity (IRSA or EKS "
            "Pod Identity on its ServiceAccount), a profile file (AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE), "
            "or the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the S3 Secret)"
        ) from error
    except (ReadTimeoutError, ConnectTimeoutError) as error:
        settings = s3_settings()
        raise StorageError(
            f"{uri}: S3 endpoint did not answer in time ({type(error).__name__}; connect "
            f"{settings['connect_timeout']:g} s, read {settings['read_timeout']:g} s, "
            f"{int(settings['attempts'])} attempt(s); RELORA_S3_READ_TIMEOUT / RELORA_S3_MAX_ATTEMPTS)"
        ) from error
    except EndpointConnectionError as error:
        raise StorageError(f"{uri}: S3 endpoint unreachable after retries ({error})") from error
    except BotoCoreError as error:
        raise StorageError(f"{uri}: object storage error: {error}") from error


def _error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _s3_objects(client: Any, bucket: str, prefix: str, uri: str) -> list[dict]:
    objects: list[dict] = []
    with s3_errors(uri):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects.extend(page.get("Contents", []))
    return objects


def _s3_get(client: Any, bucket: str, key: str, limit: int = MAX_MANIFEST_BYTES) -> tuple[bytes, str] | None:
    """A small object's bytes and ETag, or None when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if _error_code(error) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
    data = response["Body"].read(limit + 1)
    if len(data) > limit:
        raise BadInputError(f"s3://{bucket}/{key}: larger than {limit} bytes; not a relora manifest")
    return data, str(response.get("ETag", ""))


# ------------------------------------------------------------------------------------------- confinement


def safe_relative(name: str, where: str) -> str:
    """``name`` if it is a relative path that stays inside its folder, else a BadInputError naming it."""
    segments = name.split("/")
    bad = (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or re.match(r"^[A-Za-z]:", name) is not None
        or any(s in ("", ".", "..") for s in segments)
    )
    if bad:
        raise BadInputError(
            f"{where}: refusing path {name!r}; expected a relative path without '..', '.', empty segments, "
            "backslashes or a leading '/'"
        )
    return name


def _confined(root: Path, name: str, where: str) -> Path:
    target = root / safe_relative(name, where)
    resolved_root = root.resolve()
    if resolved_root not in target.resolve().parents:
        raise BadInputError(f"{where}: path {name!r} resolves outside the folder")
    return target


# ------------------------------------------------------------------------------------------ verification


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_json(data: bytes, where: str) -> dict:
    try:
        value = json.loads(data)
    except ValueError as error:
        raise BadInputError(f"{where}: not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise BadInputError(f"{where}: expected a JSON object")
    return value


def _manifest_files(manifest: dict, where: str) -> dict[str, dict]:
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BadInputError(f"{where}: field files is missing; expected an object of name -> sha256/size")
    for name, entry in files.items():
        safe_relative(name, where)
        if name == MANIFEST or not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise BadInputError(f"{where}: entry {name!r} has no sha256")
    return files


def _pointer_target(pointer: dict, where: str) -> str:
    version = pointer.get("version")
    if not isinstance(version, str) or not _VERSION_RE.match(version) or pointer.get("current") != (
        f"{VERSIONS}/{version}/"
    ):
        raise BadInputError(f"{where}: pointer names no valid version ({pointer.get('current')!r})")
    if not isinstance(pointer.get("manifest_sha256"), str):
        raise BadInputError(f"{where}: pointer has no manifest_sha256")
    return version


def verify_folder(folder: Path, manifest: dict, where: str) -> dict:
    """Checks every file the manifest names against its sha256 (and size); returns the manifest."""
    for name, entry in _manifest_files(manifest, where).items():
        path = _confined(folder, name, where)
        if not path.is_file():
            raise BadInputError(f"{where}: {name} is missing; the artifact is torn (expected by its manifest)")
        if path.stat().st_size != entry.get("size", path.stat().st_size) or sha256_file(path) != entry["sha256"]:
            raise BadInputError(f"{where}: {name} does not match the manifest's sha256; refusing a torn/tampered file")
    return manifest


def _our_format(manifest: dict) -> str | None:
    value = manifest.get("format")
    return value if value in (MANIFEST_FORMAT, POINTER_FORMAT) else None


def _verify_local(path: Path, uri: str, required: bool) -> Path:
    """The folder to read: ``path`` itself or the version its pointer names, verified against its manifest."""
    if path.is_symlink():
        # A published output is a link that the next publish swaps: read the immutable version it names now,
        # so that every file read comes from the same version.
        path = Path(os.path.realpath(path))
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        if required:
            raise BadInputError(f"{uri}: no {MANIFEST}; the artifact was never completely published")
        return path
    data = manifest_path.read_bytes()
    manifest = _parse_json(data, f"{uri} {MANIFEST}")
    kind = _our_format(manifest)
    if kind is None:
        if required:
            raise BadInputError(f"{uri}: {MANIFEST} is not a relora manifest (format {manifest.get('format')!r})")
        return path  # someone else's manifest.json: an ordinary file of a user-made folder
    if kind == POINTER_FORMAT:  # e.g. an S3 output copied to disk with `aws s3 sync`
        version = _pointer_target(manifest, uri)
        folder = _confined(path, f"{VERSIONS}/{version}", uri)
        inner = (folder / MANIFEST).read_bytes() if (folder / MANIFEST).is_file() else b""
        if hashlib.sha256(inner).hexdigest() != manifest["manifest_sha256"]:
            raise BadInputError(f"{uri}: {VERSIONS}/{version}/{MANIFEST} is missing or does not match the pointer")
        verify_folder(folder, _parse_json(inner, f"{uri} {VERSIONS}/{version}/{MANIFEST}"), uri)
        return folder
    verify_folder(path, manifest, uri)
    return path


# ------------------------------------------------------------------------------------------------ reading


@contextlib.contextmanager
def fetch(uri: str, what: str, require_manifest: bool = False) -> Iterator[Path]:
    """A local path holding the file or folder at ``uri`` for the duration of the block.

    Local paths are used in place; S3 objects or prefixes are downloaded into a temporary folder that is
    removed afterwards (confined: a key that would land outside it is refused). A folder with a relora
    manifest is verified file by file; a pointer is followed to its version. ``require_manifest`` (implied for
    ``what`` in :data:`PUBLISHED_ONLY`, e.g. projections) refuses a folder without one.

    Raises:
        BadInputError: missing, torn, tampered or unsafe input, naming ``what``, the URI and the file.
        StorageError: the storage cannot be reached or refuses access.
    """
    loc = parse_uri(uri, what)
    require_manifest = require_manifest or what in PUBLISHED_ONLY
    if loc.scheme == "file":
        assert loc.path is not None
        if not loc.path.exists():
            raise BadInputError(f"{what} {uri}: no such file or folder")
        yield _verify_local(loc.path, f"{what} {uri}", require_manifest) if loc.path.is_dir() else loc.path
        return
    client = s3_client()
    with tempfile.TemporaryDirectory(prefix="relora-fetch-") as tmp:
        prefix = loc.key.rstrip("/") + "/" if loc.key.rstrip("/") else ""
        objects = _s3_objects(client, loc.bucket, prefix, uri)
        if objects:

            def download(root: Path) -> Path:
                return _download_prefix(client, loc, prefix, objects, root, what, require_manifest)

            from relora_worker import base_cache  # a node-wide cache of base models (RELORA_BASE_CACHE_DIR)

            cache = base_cache.cache_dir() if what in base_cache.CACHED else None
            if cache is not None:
                key = base_cache.listing_key(prefix, objects)
                yield base_cache.fetch(cache, key, uri, download, Path(tmp))
                return
            yield download(Path(tmp) / "folder")
            return
        target = Path(tmp) / (Path(loc.key).name or "object")
        with s3_errors(uri):
            try:
                transfers.download(client, loc.bucket, loc.key, str(target))
            except Exception as error:
                if "404" in str(error) or "Not Found" in str(error):
                    raise BadInputError(f"{what} {uri}: no such object or prefix in object storage") from error
                raise
        yield target


def _download_prefix(
    client: Any, loc: Location, prefix: str, objects: list[dict], root: Path, what: str, required: bool
) -> Path:
    where = f"{what} {loc.uri}"
    root.mkdir(parents=True)
    keys = {obj["Key"]: obj for obj in objects}
    manifest_key = prefix + MANIFEST
    if manifest_key in keys:
        with s3_errors(f"s3://{loc.bucket}/{manifest_key}"):
            found = _s3_get(client, loc.bucket, manifest_key)
        if found is not None:
            data = found[0]
            manifest = _parse_json(data, f"{where} {MANIFEST}")
            kind = _our_format(manifest)
            if kind == POINTER_FORMAT:
                version = _pointer_target(manifest, where)
                vprefix = f"{prefix}{VERSIONS}/{version}/"
                with s3_errors(f"s3://{loc.bucket}/{vprefix}{MANIFEST}"):
                    inner = _s3_get(client, loc.bucket, vprefix + MANIFEST)
                if inner is None or hashlib.sha256(inner[0]).hexdigest() != manifest["manifest_sha256"]:
                    raise BadInputError(f"{where}: {VERSIONS}/{version}/{MANIFEST} is missing or does not match")
                data, prefix = inner[0], vprefix
                manifest = _parse_json(data, f"{where} {VERSIONS}/{version}/{MANIFEST}")
            if kind is not None:
                for name, entry in _manifest_files(manifest, where).items():
                    target = _confined(root, name, where)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with s3_errors(f"s3://{loc.bucket}/{prefix}{name}"):
                        try:
                            size = entry.get("size") if isinstance(entry.get("size"), int) else None
                            transfers.download(client, loc.bucket, prefix + name, str(target), size)
                        except Exception as error:
                            if "404" in str(error) or "Not Found" in str(error):
                                raise BadInputError(f"{where}: {name} is missing; the artifact is torn") from error
                            raise
                (root / MANIFEST).write_bytes(data)
                verify_folder(root, manifest, where)
                return root
    if required:
        raise BadInputError(f"{where}: no relora {MANIFEST}; the artifact was never completely published")
    for key, obj in keys.items():
        rest = key[len(prefix) :]
        if obj.get("Size", 0) == 0 and (rest == "" or rest.endswith("/")):
            continue  # a "folder" marker some tools create
        target = _confined(root, rest, f"{where}: object key {key!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with s3_errors(f"s3://{loc.bucket}/{key}"):
            transfers.download(client, loc.bucket, key, str(target), obj.get("Size"))
    return root


def read_json(uri: str, what: str) -> dict:
    """Reads a small JSON document from any supported URI."""
    with fetch(uri, what) as path:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise BadInputError(f"{what} {uri}: not readable JSON ({error})") from error


def finite_json(value: Any) -> Any:
    """``value`` with every NaN/±Inf float replaced by None, so that it serialises as strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def dumps_strict(value: Any, **kwargs: Any) -> str:
    """JSON that every parser accepts: non-finite numbers become null (never the non-standard NaN)."""
    return json.dumps(finite_json(value), allow_nan=False, default=str, **kwargs)


# ---------------------------------------------------------------------------------------------- publishing


def new_version() -> str:
    """A sortable, unique version id: UTC time to the microsecond and 8 random hex digits."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int((now % 1) * 1e6):06d}Z"
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def version_uri(dest_uri: str, version: str) -> str:
    """Where ``version`` of the artifact published at ``dest_uri`` lives (immutable once published)."""
    dest = parse_uri(dest_uri, "--output")
    if dest.scheme == "s3":
        return dest.child(VERSIONS).child(version).uri + "/"
    assert dest.path is not None
    return str(dest.path.parent / f"{dest.path.name}.{VERSIONS}" / version)


_published: dict[str, str] = {}  # destination URI (normalised) -> the version URI this process published there


def _dest_key(uri: str) -> str:
    loc = parse_uri(uri)
    return f"s3://{loc.bucket}/{'/'.join(_key_segments(loc.key))}" if loc.scheme == "s3" else str(loc.path)


def pinned(uri: str) -> str:
    """The immutable version URI this process published at ``uri`` (or at its folder, for ``.../result.json``);
    ``uri`` itself otherwise. Summaries report these, so that what is served never moves under a reader."""
    with contextlib.suppress(BadInputError):
        if _dest_key(uri) in _published:
            return _published[_dest_key(uri)]
        folder, _, name = uri.rstrip("/").rpartition("/")
        if folder and _dest_key(folder) in _published:
            return _published[_dest_key(folder)].rstrip("/") + "/" + name
    return uri


def build_manifest(folder: Path, metadata: dict | None = None) -> dict:
    """The manifest of every regular file under ``folder`` (sorted, relative paths)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return {"format": MANIFEST_FORMAT, "created": time.time(), "files": files, **(metadata or {})}


def _fault(stage: str) -> None:
    """Test hook: ``RELORA_FAULT_AT=stage[:SIGNAL]`` makes this process signal itself at ``stage``."""
    spec = os.environ.get("RELORA_FAULT_AT", "")
    if not spec:
        return
    where, _, name = spec.partition(":")
    if where == stage:
        os.kill(os.getpid(), getattr(signal, f"SIG{name or 'KILL'}"))
        time.sleep(0.05)  # let a Python-level handler run here, at the stage named


def _grace() -> float:
    """Seconds an unfinished version is left alone (it may be a racing publisher's upload in progress)."""
    text = os.environ.get("RELORA_PUBLISH_GRACE_S", "")
    try:
        value = float(text) if text else 3600.0
    except ValueError:
        value = 3600.0
    return value if math.isfinite(value) and value >= 0 else 3600.0


def _pointer(manifest: dict, manifest_bytes: bytes, version: str) -> dict:
    keep = {k: v for k, v in manifest.items() if k not in ("files", "format", "created")}
    return {
        "format": POINTER_FORMAT,
        "current": f"{VERSIONS}/{version}/",
        "version": version,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        "created": manifest["created"],
        **keep,
    }


def publish_folder(folder: Path, dest_uri: str, metadata: dict | None = None, version: str | None = None) -> dict:
    """Publishes ``folder`` as a new immutable version at ``dest_uri`` and makes it current (module docstring).

    Args:
        folder: the finished local folder (every file is published; ``manifest.json`` is written here).
        dest_uri: the destination (local path, file:// or s3://).
        metadata: extra manifest fields (kind, strategy, ...).
        version: the version id (from :func:`new_version`) when the caller must know it in advance.

    Returns:
        The manifest, with ``version`` and ``uri`` (the version's own URI) added.

    Raises:
        PublishConflict: another publisher made a version current while this one uploaded; ours is withdrawn.
        StorageError: storage failed; nothing of this version is current.
    """
    version = version or new_version()
    manifest = finite_json({**build_manifest(folder, metadata), "version": version})
    manifest_bytes = json.dumps(manifest, indent=2, allow_nan=False).encode()
    dest = parse_uri(dest_uri, "--output")
    _fault("publish-start")
    if dest.scheme == "s3":
        _publish_s3(folder, dest, manifest, manifest_bytes, version)
    else:
        _publish_local(folder, dest, manifest, manifest_bytes, version)
    _published[_dest_key(dest_uri)] = version_uri(dest_uri, version)
    return {**manifest, "uri": version_uri(dest_uri, version)}


def _publish_s3(folder: Path, dest: Location, manifest: dict, manifest_bytes: bytes, version: str) -> None:
    from botocore.exceptions import ClientError

    client = s3_client()
    pointer_key = dest.child(MANIFEST).key
    vdir = dest.child(VERSIONS).child(version)
    with s3_errors(dest.uri):
        try:
            seen = client.head_object(Bucket=dest.bucket, Key=pointer_key)["ETag"]
        except ClientError as error:
            if _error_code(error) not in ("404", "NoSuchKey", "NotFound"):
                raise
            seen = None
    committed = False
    try:
        with s3_errors(dest.uri):
            for index, name in enumerate(manifest["files"], 1):
                transfers.upload(client, str(folder / name), dest.bucket, vdir.child(name).key)
                _fault(f"file-{index}")
            _fault("files")
            client.put_object(Bucket=dest.bucket, Key=vdir.child(MANIFEST).key, Body=manifest_bytes)
            _fault("version")
        body = json.dumps(_pointer(manifest, manifest_bytes, version), indent=2, allow_nan=False).encode()
        condition = {"IfMatch": seen} if seen else {"IfNoneMatch": "*"}
        with signals.deferred():  # the one write that makes the version current is never cut in half
            try:
                with s3_errors(dest.uri):
                    try:
                        client.put_object(Bucket=dest.bucket, Key=pointer_key, Body=body, **condition)
                    except ClientError as error:
                        if _error_code(error) != "NotImplemented":
                            raise
                        # An S3-compatible server without conditional writes: last writer wins (still whole).
                        logger.warning("%s: no conditional writes; racing publishers are not detected", dest.uri)
                        client.put_object(Bucket=dest.bucket, Key=pointer_key, Body=body)
            except StorageError as error:
                if not isinstance(error.__cause__, ClientError) or _error_code(error.__cause__) not in (
                    "PreconditionFailed",
                    "412",
                    "ConditionalRequestConflict",
                    "409",
                ):
                    raise
                now = _s3_get(client, dest.bucket, pointer_key)
                winner = json.loads(now[0]).get("version") if now else None
                raise PublishConflict(
                    f"--output {dest.uri}: another publisher made version {winner} current while this one "
                    f"uploaded; version {version} was withdrawn and nothing of this run is published"
                ) from error
            committed = True
            _fault("pointer")
            verify_published(vdir.uri + "/", expected=manifest_bytes)
    finally:
        if not committed:
            with signals.deferred(), contextlib.suppress(Exception):
                _s3_delete_prefix(client, dest.bucket, vdir.key + "/")
    with contextlib.suppress(Exception):
        _s3_collect(client, dest, version)


def _s3_delete_prefix(client: Any, bucket: str, prefix: str) -> None:
    keys = [o["Key"] for o in _s3_objects(client, bucket, prefix, f"s3://{bucket}/{prefix}")]
    for start in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[start : start + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


def _s3_collect(client: Any, dest: Location, keep: str) -> None:
    """Removes versions that never got their manifest (interrupted publishes) older than the grace period."""
    grace = _grace()
    prefix = dest.child(VERSIONS).key + "/"
    versions: dict[str, list[dict]] = {}
    for obj in _s3_objects(client, dest.bucket, prefix, dest.uri):
        versions.setdefault(obj["Key"][len(prefix) :].split("/", 1)[0], []).append(obj)
    now = time.time()
    for name, objects in versions.items():
        complete = any(o["Key"] == f"{prefix}{name}/{MANIFEST}" for o in objects)
        newest = max(o["LastModified"].timestamp() for o in objects)
        if name != keep and not complete and now - newest >= grace:
            _s3_delete_prefix(client, dest.bucket, f"{prefix}{name}/")
    with contextlib.suppress(Exception):  # parts of an upload killed mid-way
        uploads = client.list_multipart_uploads(Bucket=dest.bucket, Prefix=prefix).get("Uploads", [])
        for upload in uploads:
            if now - upload["Initiated"].timestamp() >= grace:
                client.abort_multipart_upload(Bucket=dest.bucket, Key=upload["Key"], UploadId=upload["UploadId"])


def put_bytes(uri: str, data: bytes, what: str) -> None:
    """Writes one small object whole or not at all (a reader never sees half of it): S3's PUT is atomic;
    a local file is written beside its target, synced, and renamed over it."""
    loc = parse_uri(uri, what)
    if loc.scheme == "s3":
        with s3_errors(uri):
            s3_client().put_object(Bucket=loc.bucket, Key=loc.key, Body=data)
        return
    assert loc.path is not None
    try:
        loc.path.parent.mkdir(parents=True, exist_ok=True)
        partial = loc.path.parent / f".{loc.path.name}.{uuid.uuid4().hex[:8]}.tmp"
        partial.write_bytes(data)
        _fsync(partial)
        os.replace(partial, loc.path)
    except OSError as error:
        raise BadInputError(f"{what} {uri}: cannot be written ({error})") from error


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_local(folder: Path, dest: Location, manifest: dict, manifest_bytes: bytes, version: str) -> None:
    assert dest.path is not None
    path = dest.path
    check_output_target(str(path))
    versions = path.parent / f"{path.name}.{VERSIONS}"
    versions.mkdir(parents=True, exist_ok=True)
    seen = os.readlink(path) if path.is_symlink() else None
    vdir = versions / version
    committed = False
    try:
        vdir.mkdir()
        for index, name in enumerate(manifest["files"], 1):
            target = vdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, target)
            _fsync(target)
            _fault(f"file-{index}")
        _fault("files")
        partial = vdir / f".{MANIFEST}.tmp"
        partial.write_bytes(manifest_bytes)
        _fsync(partial)
        os.replace(partial, vdir / MANIFEST)  # a version is complete exactly when its manifest exists
        _fsync(vdir)
        _fault("version")
        link = versions / f".link-{version}"
        with signals.deferred(), (versions / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = os.readlink(path) if path.is_symlink() else None
            if current != seen:
                raise PublishConflict(
                    f"--output {path}: another publisher made {current} current while this one copied; "
                    f"version {version} was withdrawn and nothing of this run is published"
                )
            check_output_target(str(path))
            os.symlink(f"{versions.name}/{version}", link)
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # empty (checked above): nothing to lose
            os.replace(link, path)  # the one step that makes the version current
            _fsync(path.parent)
            committed = True
            _fault("pointer")
            verify_published(str(vdir), expected=manifest_bytes)
    finally:
        if not committed:
            with signals.deferred(), contextlib.suppress(OSError):
                shutil.rmtree(vdir, ignore_errors=True)
                (versions / f".link-{version}").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        _local_collect(versions, version)


def _local_collect(versions: Path, keep: str) -> None:
    """Removes interrupted versions (no manifest) and stray temporary links older than the grace period."""
    grace, now = _grace(), time.time()
    for entry in versions.iterdir():
        if entry.name == keep or now - entry.lstat().st_mtime < grace:
            continue
        if entry.name.startswith(".link-"):
            entry.unlink(missing_ok=True)
        elif entry.is_dir() and not (entry / MANIFEST).exists():
            shutil.rmtree(entry, ignore_errors=True)


def verify_published(uri: str, expected: bytes | None = None) -> dict:
    """Checks a published artifact (pointer, version folder or plain manifest) file by file; returns its manifest.

    ``expected`` (the manifest bytes just written) also pins the manifest itself: a publisher checks that
    storage holds exactly what it wrote before it reports success.
    """
    loc = parse_uri(uri, "published artifact")
    if loc.scheme == "file" and loc.path is not None and loc.path.is_dir():
        folder = _verify_local(loc.path, f"published artifact {uri}", required=True)
        data = (folder / MANIFEST).read_bytes()
    else:
        with fetch(uri, "published artifact", require_manifest=True) as folder:
            data = (folder / MANIFEST).read_bytes()
    if expected is not None and data != expected:
        raise StorageError(f"{uri}: the stored {MANIFEST} differs from the one just written")
    return json.loads(data)
