"""The test kubelet's pure helpers: container-path rewriting and $(VAR) expansion."""

from __future__ import annotations

from tests.support.pod_env import expand
from tests.support.pod_files import PathMap


def test_path_map_rewrites_whole_paths_only() -> None:
    paths = PathMap({"/data": "/tmp/v/data", "/data/in": "/tmp/v/in", "/dev/termination-log": "/tmp/t/log"})
    assert paths.rewrite("/data") == "/tmp/v/data"
    assert paths.rewrite("/data/out/x.json") == "/tmp/v/data/out/x.json"
    assert paths.rewrite("/data/in/train.jsonl") == "/tmp/v/in/train.jsonl"  # the longest mount wins
    assert paths.rewrite("--output=/data/y") == "--output=/tmp/v/data/y"
    assert paths.rewrite("open('/dev/termination-log','w')") == "open('/tmp/t/log','w')"
    # Not a whole path: a longer name, or the mount path inside another path, stays as it is.
    assert paths.rewrite("/database") == "/database"
    assert paths.rewrite("/mnt/data/x") == "/mnt/data/x"
    assert paths.rewrite("s3://bucket/data/x") == "s3://bucket/data/x"


def test_path_map_does_not_rewrite_twice() -> None:
    # A host folder under /tmp must not be rewritten again by a /tmp mount.
    paths = PathMap({"/tmp": "/tmp/pytest/v/tmp", "/work": "/tmp/pytest/v/work"})
    assert paths.rewrite("/work/a /tmp/b") == "/tmp/pytest/v/work/a /tmp/pytest/v/tmp/b"


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"  # unknown references stay as written
    assert expand("$$(A)", env) == "$(A)"  # $$ escapes
    assert expand("cost $5", env) == "cost $5"


def test_path_map_keeps_the_images_own_files() -> None:
    # A checkout under /tmp: the worker script is part of the "image", a /tmp emptyDir must not shadow it.
    paths = PathMap({"/tmp": "/var/pods/p1/tmp"}, image_roots=("/tmp/ci/checkout", "/tmp/ci/checkout/.venv"))
    script = "/tmp/ci/checkout/tests/operator/fake_worker.py"
    assert paths.rewrite(script) == script
    assert paths.rewrite("/tmp/ci/checkout/.venv/bin/relora") == "/tmp/ci/checkout/.venv/bin/relora"
    assert paths.rewrite("/tmp/scratch/x") == "/var/pods/p1/tmp/scratch/x"  # other /tmp paths are the mount's
    assert paths.rewrite("/tmp/ci/checkout-other/x") == "/var/pods/p1/tmp/ci/checkout-other/x"  # whole paths only
    # A mount inside the image still shadows it, as in a real container.
    inner = PathMap({"/tmp/ci/checkout/cache": "/var/pods/p1/cache"}, image_roots=("/tmp/ci/checkout",))
    assert inner.rewrite("/tmp/ci/checkout/cache/a") == "/var/pods/p1/cache/a"
