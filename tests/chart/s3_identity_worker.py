"""The operator tests' stand-in worker (tests/operator/fake_worker.py: the `relora` contract, instant) that first
does real S3 I/O with the real worker's storage code: it publishes a small folder under the artifact root
(relora_worker.storage.publish_folder, the worker's one publishing path) and verifies it, with whatever
credentials boto3's default chain finds in the pod. tests/chart/test_chart_cloud_identity.py runs it in pods
that have no AWS key variables, against an S3 server that refuses unsigned or wrongly signed requests."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from relora_worker import storage  # noqa: E402
from tests.operator import fake_worker  # noqa: E402

PROBE_ROOT_ENV = "RELORA_TEST_PROBE_ROOT"  # s3://bucket/prefix the probes go under (set in the pod template)


def probe() -> str:
    if "AWS_ACCESS_KEY_ID" in os.environ or "AWS_SECRET_ACCESS_KEY" in os.environ:
        raise SystemExit("the pod has static AWS keys in its environment: this probe is about the other sources")
    dest = f"{os.environ[PROBE_ROOT_ENV].rstrip('/')}/{os.environ.get('HOSTNAME', 'pod')}/"
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "identity.txt").write_text("written with credentials from the default AWS chain\n")
        storage.publish_folder(Path(folder), dest)
    storage.verify_published(dest)
    return dest


if __name__ == "__main__":
    print(f"published {probe()}", flush=True)
    sys.exit(fake_worker.main(sys.argv[1:]))
