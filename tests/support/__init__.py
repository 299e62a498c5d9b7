"""Test infrastructure: a real S3 server, a real Kubernetes control plane and a test kubelet on loopback.

See docs/testing.md for how the pieces fit together.
"""
