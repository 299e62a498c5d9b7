"""A real S3-compatible server on loopback (moto's standalone server as a subprocess), one bucket a session.

Fixtures:
  s3_server  (session)  -> S3Server: endpoint_url, bucket, access_key, secret_key, region, env, client()
  s3_env     (function) -> S3Server, with its variables put into os.environ for the test

The credentials travel in the same environment variables the production chart gives worker pods
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL); `secret_data()` gives the
Secret's `stringData` with those keys, for tests that create the Secret in a namespace.
"""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import LOOPBACK, free_port
from tests.support.procs import ManagedProcess, wait_until


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str
    access_key: str = "relora-test"
    secret_key: str = "relora-test-secret"
    region: str = "us-east-1"
    log_path: Path | None = field(default=None, compare=False)

    @property
    def env(self) -> dict[str, str]:
        """The environment a worker pod gets from the chart's S3 Secret."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def secret_data(self) -> dict[str, str]:
        """`stringData` of an S3 credentials Secret (keys = the variable names, used with envFrom)."""
        return dict(self.env)

    def uri(self, key: str) -> str:
        """s3:// URI of `key` in the session bucket."""
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    def client(self) -> Any:
        """A boto3 S3 client bound to this server (boto3 is typed loosely, hence Any)."""
        import boto3  # imported here: only tests that talk to S3 pay for it

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:  # moto answers / with 200
        return bool(resp.status < 500)


def start_s3_server(workdir: Path, bucket: str = "relora-test") -> tuple[S3Server, ManagedProcess]:
    """Start moto's server on a free loopback port, wait until it answers, create `bucket`."""
    port = free_port()
    log_path = workdir / "moto.log"
    proc = ManagedProcess(
        "moto-s3",
        [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
        log_path,
    )
    endpoint = f"http://{LOOPBACK}:{port}"
    try:
        wait_until(lambda: _answers(endpoint), timeout=30, what=f"moto S3 server on {endpoint}", process=proc)
        server = S3Server(endpoint_url=endpoint, bucket=bucket, log_path=log_path)
        server.client().create_bucket(Bucket=bucket)
    except BaseException:
        proc.stop()
        raise
    return server, proc


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server, proc = start_s3_server(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        proc.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The session S3 server with its credentials and endpoint in os.environ for this test only."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    # A stray AWS_ENDPOINT_URL_S3 / profile on the developer's machine would win over ours; drop them.
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return s3_server


# --- a variant that checks credentials ---------------------------------------------------------------------
#
# moto's standalone server accepts any request unless IAM authentication is switched on (its reset-auth API:
# the number of requests still let through unauthenticated). `s3_server_iam` creates an IAM user with an
# S3-only policy and its access key, the bucket, then switches authentication on: from then on a request is
# served only when it is signed with that key (signature checked) and the user's policy allows the action.
# A process without the key, or with a wrong one, gets 403 (InvalidAccessKeyId / SignatureDoesNotMatch).

S3_ONLY = (
    '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
)


def start_s3_server_iam(workdir: Path, bucket: str = "relora-iam") -> tuple[S3Server, ManagedProcess]:
    """moto's server with IAM authentication on; the returned S3Server carries the IAM user's key."""
    import boto3

    server, proc = start_s3_server(workdir, bucket="relora-setup")
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint_url,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
            region_name=server.region,
        )
        iam.create_user(UserName="relora")
        iam.put_user_policy(UserName="relora", PolicyName="s3-only", PolicyDocument=S3_ONLY)
        key = iam.create_access_key(UserName="relora")["AccessKey"]
        keyed = S3Server(
            endpoint_url=server.endpoint_url,
            bucket=bucket,
            access_key=key["AccessKeyId"],
            secret_key=key["SecretAccessKey"],
            region=server.region,
            log_path=server.log_path,
        )
        keyed.client().create_bucket(Bucket=bucket)
        request = urllib.request.Request(  # a form content type would hide the body from moto
            f"{server.endpoint_url}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
    except BaseException:
        proc.stop()
        raise
    return keyed, proc


@pytest.fixture(scope="module")
def s3_server_iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3 server that serves only requests signed with its IAM user's key (module-scoped: the switch is
    process-wide in moto, so it never shares a process with the unauthenticated `s3_server`)."""
    server, proc = start_s3_server_iam(tmp_path_factory.mktemp("s3-iam"))
    try:
        yield server
    finally:
        proc.stop()
