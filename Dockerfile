# syntax=docker/dockerfile:1
# Two images from one Dockerfile (build from the repository root):
#
#   docker build --target operator -t ghcr.io/relora-operator/relora-operator:0.1.0 .
#   docker build --target worker   -t ghcr.io/relora-operator/relora-worker:0.1.0 .
#
# operator: the kopf operator (`relora-operator`), Python only: no torch, no CUDA. The Helm chart
#           (charts/relora-operator) runs it with `command: ["relora-operator"]` as UID 10001.
# worker:   the re-adaptation worker (`relora`): torch with its CUDA wheels (nvidia-* from PyPI) on the same slim
#           Python base, so there is one CUDA stack (the node's driver is mounted by the NVIDIA container
#           toolkit; torch's CUDA 13 wheels need driver >= 580). The operator's Jobs run it with
#           `command: ["relora", ...]` (RELORA_WORKER_COMMAND) as UID 1000 (RELORA_WORKER_RUN_AS_USER).
#
# Dependencies come only from the hash-locked files hack/requirements-{operator,worker}.txt (exact versions of
# hack/constraints.txt; regenerate with hack/lock.sh), binary wheels only, checked with --require-hashes; the
# project itself is built without network (--no-build-isolation, setuptools from the lock).
# Base images are pinned to exact versions; pin digests too (image@sha256:...) in your own registry mirror.

############################################################################################################
# operator
############################################################################################################
FROM python:3.11.11-slim-bookworm AS operator-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/relora
COPY hack/requirements-operator.txt hack/
RUN /opt/relora/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: -r hack/requirements-operator.txt
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY relora_contract/ relora_contract/
COPY relora_worker/ relora_worker/
RUN /opt/relora/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
    && /opt/relora/bin/pip check \
    && /opt/relora/bin/python -c "import relora_operator.handlers" \
    && ! /opt/relora/bin/python -c "import torch" 2>/dev/null

FROM python:3.11.11-slim-bookworm AS operator
# image: ghcr.io/relora-operator/relora-operator
LABEL org.opencontainers.image.title="relora-operator" \
      org.opencontainers.image.description="ReLoRA Kubernetes operator (kopf); no torch, no CUDA" \
      org.opencontainers.image.source="https://github.com/relora-operator/relora-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=operator-build /opt/relora /opt/relora
ENV PATH=/opt/relora/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# Numeric, non-root (the chart's podSecurityContext runs as 10001 with runAsNonRoot).
USER 10001:10001
# 8080: /metrics (RELORA_METRICS_PORT), 8081: /healthz (RELORA_LIVENESS_PORT).
EXPOSE 8080 8081
ENTRYPOINT ["relora-operator"]

############################################################################################################
# worker
############################################################################################################
FROM python:3.11.11-slim-bookworm AS worker-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/relora
# The dependencies first (their layer is reused while only the project's code changes): torch and its CUDA
# runtime wheels (nvidia-cublas, nvidia-cudnn-cu13, ...), nothing else of CUDA.
COPY hack/requirements-worker.txt hack/
RUN /opt/relora/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: -r hack/requirements-worker.txt
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY relora_contract/ relora_contract/
COPY relora_worker/ relora_worker/
RUN /opt/relora/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
    && /opt/relora/bin/pip check \
    && /opt/relora/bin/relora --version

FROM python:3.11.11-slim-bookworm AS worker
# image: ghcr.io/relora-operator/relora-worker
LABEL org.opencontainers.image.title="relora-worker" \
      org.opencontainers.image.description="ReLoRA re-adaptation worker (relora CLI): torch with its CUDA wheels" \
      org.opencontainers.image.source="https://github.com/relora-operator/relora-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=worker-build /opt/relora /opt/relora
# The worker pods' root filesystem is read-only: HOME, caches and temporary files live in the /tmp emptyDir.
# NVIDIA_*: what the NVIDIA container toolkit mounts from the node (driver libraries, nvidia-smi).
ENV PATH=/opt/relora/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/hf \
    XDG_CACHE_HOME=/tmp/cache \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# Numeric, non-root: the operator's Jobs run the worker as RELORA_WORKER_RUN_AS_USER (default 1000).
USER 1000:1000
ENTRYPOINT ["relora"]
