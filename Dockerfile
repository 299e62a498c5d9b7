# syntax=docker/dockerfile:1
# Two images from one Dockerfile (build from the repository root):
#
#   docker build --target operator -t ghcr.io/relora-operator/relora-operator:0.1.0 .
#   docker build --target worker   -t ghcr.io/relora-operator/relora-worker:0.1.0 .
#
# operator: the kopf operator (`relora-operator`), Python only: no torch, no CUDA. The Helm chart
#           (charts/relora-operator) runs it with `command: ["relora-operator"]` as UID 10001.
# worker:   the re-adaptation worker (`relora`) on the CUDA runtime with torch. The operator's Jobs run it
#           with `command: ["relora", ...]` (RELORA_WORKER_COMMAND) as UID 1000 (RELORA_WORKER_RUN_AS_USER).
#
# Base images are pinned to exact versions; pin digests too (image@sha256:...) in your own registry mirror.

############################################################################################################
# operator
############################################################################################################
FROM python:3.11.11-slim-bookworm AS operator-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/relora
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY relora_worker/ relora_worker/
RUN /opt/relora/bin/pip install --no-cache-dir ".[operator]" \
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
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS worker-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 DEBIAN_FRONTEND=noninteractive
# The distribution's Python 3.12 (security updates come with the base image; apt versions are not pinned
# because Ubuntu drops superseded package versions from its archive).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python3.12 -m venv /opt/relora
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY relora_worker/ relora_worker/
RUN /opt/relora/bin/pip install --no-cache-dir ".[worker]" \
    && /opt/relora/bin/relora --help >/dev/null

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS worker
# image: ghcr.io/relora-operator/relora-worker
LABEL org.opencontainers.image.title="relora-worker" \
      org.opencontainers.image.description="ReLoRA re-adaptation worker (relora CLI): CUDA runtime + torch" \
      org.opencontainers.image.source="https://github.com/relora-operator/relora-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=worker-build /opt/relora /opt/relora
# The worker pods' root filesystem is read-only: HOME, caches and temporary files live in the /tmp emptyDir.
ENV PATH=/opt/relora/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/hf \
    XDG_CACHE_HOME=/tmp/cache
# Numeric, non-root: the operator's Jobs run the worker as RELORA_WORKER_RUN_AS_USER (default 1000).
USER 1000:1000
ENTRYPOINT ["relora"]
