"""Installed size of the images' locked wheel sets (hack/requirements-*.txt), measured on the identical versions
installed in .venv (same platform: CPython 3.11, x86_64 manylinux). Not an image size: the python:3.11 slim base
and layer compression are not included. Run: .venv/bin/python hack/lock_size.py"""

from __future__ import annotations

import re
from importlib.metadata import distribution
from pathlib import Path

HACK = Path(__file__).resolve().parent


def main() -> None:
    for extra in ("worker", "operator"):
        text = (HACK / f"requirements-{extra}.txt").read_text()
        names = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", text, re.MULTILINE)
        total = cuda = torch = 0
        for name in names:
            dist = distribution(name)
            size = sum(p.stat().st_size for f in dist.files or [] if (p := Path(str(dist.locate_file(f)))).exists())
            total += size
            cuda += size if name.startswith(("nvidia-", "cuda-")) else 0
            torch += size if name in ("torch", "triton") else 0
        print(
            f"{extra}: {len(names)} distributions, {total / 1e9:.2f} GB installed "
            f"(nvidia-*/cuda-* wheels {cuda / 1e9:.2f} GB, torch + triton {torch / 1e9:.2f} GB)"
        )


if __name__ == "__main__":
    main()
