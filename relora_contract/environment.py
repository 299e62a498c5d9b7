"""Environment variables of the worker that the operator (or the chart) sets: one spelling for both sides."""

from __future__ import annotations

# A folder where base models fetched from S3 are cached and shared (relora_worker/base_cache.py): the chart's
# worker.baseCache (one per node or volume claim), else the operator's per-pod cache of a multi-GPU Job.
BASE_CACHE_DIR = "RELORA_BASE_CACHE_DIR"
