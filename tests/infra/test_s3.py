"""The loopback S3 server is real S3: objects round-trip through boto3 and the worker's env variables."""

from __future__ import annotations

import os

import boto3

from tests.support.s3server import S3Server


def test_s3_round_trip(s3_server: S3Server) -> None:
    client = s3_server.client()
    client.put_object(Bucket=s3_server.bucket, Key="smoke/hello.txt", Body=b"hello relora")
    body = client.get_object(Bucket=s3_server.bucket, Key="smoke/hello.txt")["Body"].read()
    assert body == b"hello relora"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_server.bucket, Prefix="smoke/")["Contents"]]
    assert keys == ["smoke/hello.txt"]


def test_s3_env_configures_a_plain_client(s3_env: S3Server) -> None:
    # A client built from the environment alone (as the worker does in a pod) reaches the same server.
    assert os.environ["AWS_ENDPOINT_URL"] == s3_env.endpoint_url
    client = boto3.client("s3")
    client.put_object(Bucket=s3_env.bucket, Key="smoke/env.txt", Body=b"from env")
    assert s3_env.client().get_object(Bucket=s3_env.bucket, Key="smoke/env.txt")["Body"].read() == b"from env"
