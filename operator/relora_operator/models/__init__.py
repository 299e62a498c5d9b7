"""Typed models of the custom resources: the one source of truth for the CRDs (see ``crdgen``)."""

from relora_operator.models.adapter import TaskAdapterSpec, TaskAdapterStatus
from relora_operator.models.common import GROUP, VERSION, Condition
from relora_operator.models.release import BaseModelReleaseSpec, BaseModelReleaseStatus

__all__ = [
    "GROUP",
    "VERSION",
    "BaseModelReleaseSpec",
    "BaseModelReleaseStatus",
    "Condition",
    "TaskAdapterSpec",
    "TaskAdapterStatus",
]
