"""What the S3 server served, from its own access log: the counts a bug in the worker could not fake.

moto's server logs one werkzeug line per request (``"GET /bucket/key?query HTTP/1.1" 200 -``), without the
response size. A GET of an object without a query string and answered 200 is a whole-object download, so its
bytes are the object's size; a 206 (a ranged GET: a multipart download of a file at least
``RELORA_S3_MULTIPART_THRESHOLD_MB`` big) carries an unknown share of it and is refused here rather than
guessed (the bench sets the threshold above every file it uploads).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

LINE = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')


@dataclass
class Served:
    """Requests the server answered for one bucket prefix between two offsets of its log."""

    object_gets: int = 0  # whole-object GETs of keys under the prefix
    bytes: int = 0  # their sizes
    downloads: int = 0  # complete copies: GETs of the prefix's largest file (its weights)
    other: dict[str, int] = field(default_factory=dict)  # other requests by method (lists, HEADs, PUTs)


class AccessLog:
    """Reads the server's log from a remembered offset on."""

    def __init__(self, path: Path, bucket: str) -> None:
        self.path = path
        self.bucket = bucket
        self.offset = 0

    def mark(self) -> None:
        """Forget everything logged so far."""
        self.offset = self.path.stat().st_size

    def since_mark(self, prefix: str, sizes: dict[str, int]) -> Served:
        """Requests for ``prefix`` since :meth:`mark`; ``sizes`` maps each of its keys to its size."""
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            text = handle.read().decode(errors="replace")
        served = Served()
        largest = max(sizes, key=lambda k: sizes[k])
        for method, target, status in LINE.findall(text):
            path, _, query = target.partition("?")
            key = urllib.parse.unquote(path).removeprefix(f"/{self.bucket}/")
            if method == "GET" and status == "206" and key.startswith(prefix):
                raise RuntimeError(f"ranged GET of {key}: raise RELORA_S3_MULTIPART_THRESHOLD_MB above its size")
            if method == "GET" and status == "200" and not query and key in sizes:
                served.object_gets += 1
                served.bytes += sizes[key]
                served.downloads += key == largest
            elif key.startswith(prefix) or f"prefix={urllib.parse.quote(prefix, safe='')}" in query:
                served.other[method] = served.other.get(method, 0) + 1
        return served
