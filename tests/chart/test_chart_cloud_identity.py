"""S3 without the static-key Secret: the operator and the worker pods reach S3 through the default AWS
credential chain, here a profile file (AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE / AWS_PROFILE) mounted
through the chart's extraVolumes and extraEnv, as IRSA / EKS Pod Identity would hand them a token file and
variables. The S3 server checks every request's signature against its IAM user (`s3_server_iam`), so nothing
gets through without those credentials; no `relora-s3` Secret exists anywhere.

The chart is installed namespaced (its worker ServiceAccount without token is created and used) and `helm test`
runs the chart's test hook against the installed operator."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
import yaml

from tests.chart.chartlib import ROOT
from tests.chart.cluster import chart_values, extra_namespace, installed
from tests.support.cli import CliRunner
from tests.support.waiting import wait_for

PROBE_WORKER = ROOT / "tests" / "chart" / "s3_identity_worker.py"
AWS_DIR = "/var/run/relora-aws"
FAMILY = "llama-3.1-8b"


@pytest.fixture
def _local_only(control_plane: Any) -> None:
    if control_plane.is_real:
        pytest.skip("runs the operator's Deployment as a local process: needs the test kubelet, not a real cluster")


def _profile_secret(kubectl: CliRunner, namespace: str, s3: Any) -> None:
    """The profile files (no AWS_* key variables): credentials under profile `relora`, its region in config."""
    credentials = f"[relora]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n"
    config = f"[profile relora]\nregion = {s3.region}\n"
    kubectl("create", "secret", "generic", "aws-profile", "-n", namespace,
            f"--from-literal=credentials={credentials}", f"--from-literal=config={config}")


PROFILE_ENV = [
    {"name": "AWS_CONFIG_FILE", "value": f"{AWS_DIR}/config"},
    {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": f"{AWS_DIR}/credentials"},
    {"name": "AWS_PROFILE", "value": "relora"},
]
PROFILE_VOLUMES = [{"name": "aws-profile", "secret": {"secretName": "aws-profile"}}]
PROFILE_MOUNTS = [{"name": "aws-profile", "mountPath": AWS_DIR, "readOnly": True}]


def _model(s3: Any, version: str) -> str:
    """A small model folder in the bucket (its digest is what the operator reads)."""
    client = s3.client()
    for name, body in (("config.json", b'{"model_type": "llama"}'), ("model.safetensors", version.encode() * 64)):
        client.put_object(Bucket=s3.bucket, Key=f"models/{version}/{name}", Body=body)
    return s3.uri(f"models/{version}/")


def _apply(kubectl: CliRunner, namespace: str, tmp: Path, obj: dict[str, Any]) -> None:
    path = tmp / f"{obj['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(obj))
    kubectl("apply", "-n", namespace, "-f", str(path))


def _release(version: str, model_uri: str) -> dict[str, Any]:
    return {
        "apiVersion": "relora.dev/v1alpha1",
        "kind": "BaseModelRelease",
        "metadata": {"name": f"{FAMILY}-{version}"},
        "spec": {"family": FAMILY, "version": version, "modelUri": model_uri},
    }


def _get(kubectl: CliRunner, namespace: str, kind: str) -> dict[str, dict[str, Any]]:
    items = json.loads(kubectl("get", kind, "-n", namespace, "-o", "json").stdout)["items"]
    return {i["metadata"]["name"]: i for i in items}


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == kind), {})


@pytest.mark.cluster
@pytest.mark.usefixtures("_local_only")
def test_operator_and_workers_use_the_default_credential_chain(
    helm: CliRunner, kubectl: CliRunner, namespace: str, test_kubelet: Any, s3_server_iam: Any, tmp_path: Path
) -> None:
    s3 = s3_server_iam
    # The server refuses what does not carry the IAM user's signature (so whatever gets through below used the
    # profile): a wrong key, and the right key with a wrong secret.
    for key, secret in (("AKIAWRONG", "x"), (s3.access_key, "not-the-secret")):
        wrong = boto3.client("s3", endpoint_url=s3.endpoint_url, aws_access_key_id=key, aws_secret_access_key=secret,
                             region_name=s3.region)
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            wrong.list_objects_v2(Bucket=s3.bucket)
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    probe_root = s3.uri("identity-probes")
    release = "cloud"
    with extra_namespace(kubectl, "relora-cloud") as system:
        for ns in (system, namespace):
            _profile_secret(kubectl, ns, s3)
        values = chart_values(
            watchNamespaces=[namespace],
            artifactRoot=s3.uri("relora"),
            # No Secret named relora-s3 exists: its keys are optional; the endpoint is the only S3 setting.
            s3={"endpoint": s3.endpoint_url},
            extraEnv=PROFILE_ENV,
            extraVolumes=PROFILE_VOLUMES,
            extraVolumeMounts=PROFILE_MOUNTS,
            worker={
                "command": f"python {PROBE_WORKER}",
                "cpu": "100m",
                "memory": "1Gi",
                "extraEnv": [*PROFILE_ENV, {"name": "RELORA_TEST_PROBE_ROOT", "value": probe_root}],
                "extraVolumes": PROFILE_VOLUMES,
                "extraVolumeMounts": PROFILE_MOUNTS,
            },
        )
        values["tests"] = {"url": f"http://127.0.0.1:{values['metrics']['port']}"}
        with installed(helm, kubectl, release, system, values, tmp_path):
            sa = json.loads(kubectl("get", "serviceaccount", "relora-worker", "-n", namespace, "-o", "json").stdout)
            assert sa["automountServiceAccountToken"] is False
            _apply(kubectl, namespace, tmp_path, _release("v1", _model(s3, "v1")))
            adapter = yaml.safe_load((ROOT / "examples" / "taskadapter-classifier.yaml").read_text())
            _apply(kubectl, namespace, tmp_path, adapter)
            _apply(kubectl, namespace, tmp_path, _release("v2", _model(s3, "v2")))

            # The operator reads both models' digests from S3 with the profile: StorageAvailable, digest recorded.
            def digests_read() -> dict[str, str] | None:
                releases = _get(kubectl, namespace, "basemodelreleases")
                ok = {
                    name: r["status"]["modelDigest"]
                    for name, r in releases.items()
                    if _condition(r, "StorageAvailable").get("status") == "True" and r["status"].get("modelDigest")
                }
                return ok if len(ok) == 2 else None

            digests = wait_for(digests_read, 90, "both releases' model digests read by the operator")
            assert len(set(digests.values())) == 2

            # The workers publish with the profile too, then the adapter is re-adapted as usual.
            def ready() -> dict[str, Any] | None:
                a = _get(kubectl, namespace, "taskadapters")[adapter["metadata"]["name"]]
                done = a.get("status", {}).get("readyRelease") == "v2" and _condition(a, "Ready").get("status")
                return a if done == "True" else None

            try:
                wait_for(ready, 120, "the adapter re-adapted to v2")
            except AssertionError as exc:
                a = _get(kubectl, namespace, "taskadapters")[adapter["metadata"]["name"]]
                raise AssertionError(f"{exc}: {a.get('status', {}).get('message')}") from exc
            jobs = _get(kubectl, namespace, "jobs")
            assert sorted(j["metadata"]["labels"]["app.kubernetes.io/component"] for j in jobs.values()) == [
                "adaptation",
                "projection",
            ]
            for job in jobs.values():
                pod = job["spec"]["template"]["spec"]
                assert pod["serviceAccountName"] == "relora-worker" and pod["automountServiceAccountToken"] is False
            listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="identity-probes/")
            probed = {obj["Key"].split("/")[1] for obj in listed.get("Contents", [])}
            assert len(probed) >= len(jobs), probed  # one probe per worker pod (a retry would add one)

            # `helm test`: the chart's hook pod reads the installed operator's metrics.
            out = helm("test", release, "-n", system, "--timeout=120s").stdout
            assert re.search(r"TEST SUITE:\s+\S+-test-metrics", out) and re.search(r"Phase:\s+Succeeded", out), out


# --- the worker's storage code in a process of its own, without a cluster ------------------------------------

PUBLISH = """
import sys, tempfile
from pathlib import Path
from relora_worker import storage
dest = sys.argv[1]
try:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "a.txt").write_text("profile")
        storage.publish_folder(Path(folder), dest)
    storage.verify_published(dest)
except storage.StorageError as exc:
    sys.exit(f"StorageError: {exc}")
print("published", dest)
"""


def _worker(tmp_path: Path, s3: Any, dest: str, profile: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    """The worker's publishing code with only what a pod would have: no AWS key variables, a HOME of its own,
    no instance metadata; the profile files when given."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "AWS_ENDPOINT_URL": s3.endpoint_url,
           "AWS_EC2_METADATA_DISABLED": "true", "RELORA_S3_MAX_ATTEMPTS": "1"}
    if profile is not None:
        for name, text in profile.items():
            (tmp_path / name).write_text(text)
        env.update(AWS_CONFIG_FILE=str(tmp_path / "config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"),
                   AWS_PROFILE="relora")
    return subprocess.run([sys.executable, "-c", PUBLISH, dest], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _profile(s3: Any, secret: str) -> dict[str, str]:
    return {
        "credentials": f"[relora]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {secret}\n",
        "config": f"[profile relora]\nregion = {s3.region}\n",
    }


def test_worker_publishes_with_a_profile_file_and_explains_missing_credentials(
    s3_server_iam: Any, tmp_path: Path
) -> None:
    s3 = s3_server_iam
    ok = _worker(tmp_path, s3, s3.uri("profile-probe/"), _profile(s3, s3.secret_key))
    assert ok.returncode == 0, ok.stderr[-2000:]
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="profile-probe/")["Contents"]]
    assert any(k.endswith("a.txt") for k in keys), keys
    wrong = _worker(tmp_path, s3, s3.uri("wrong-probe/"), _profile(s3, "not-the-secret"))
    assert wrong.returncode != 0 and "access denied" in wrong.stderr, wrong.stderr[-2000:]
    (tmp_path / "none").mkdir()
    none = _worker(tmp_path / "none", s3, s3.uri("none-probe/"), None)
    assert none.returncode != 0
    assert "no S3 credentials found by the default AWS chain" in none.stderr, none.stderr[-2000:]
    assert "IRSA" in none.stderr and "AWS_SHARED_CREDENTIALS_FILE" in none.stderr
    for refused in ("wrong-probe/", "none-probe/"):  # nothing was written without the right credentials
        assert not s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=refused).get("Contents")
