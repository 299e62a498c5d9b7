"""Shared pytest fixtures of the whole suite: the real servers the tests run against (docs/testing.md).

s3_server, s3_env, s3_server_iam       tests/support/s3server.py (s3_server_iam: IAM signatures checked)
control_plane, kubeconfig_path, k8s_api, kubectl, helm, namespace, test_kubelet
                                       tests/support/k8s_fixtures.py
"""

pytest_plugins = [
    "tests.support.s3server",
    "tests.support.k8s_fixtures",
]
