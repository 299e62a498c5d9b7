"""Shared pieces of the CRD models: API group, base model config, URI and name rules, conditions."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "relora.dev"
VERSION = "v1alpha1"

# Release versions and families become parts of Job names, labels and artifact keys, so they are kept to a
# DNS-label-like alphabet (dots allowed, as in "v3.1").
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

URI_RULE = {
    "rule": "self.startsWith('s3://') || self.startsWith('file://')",
    "message": "must be an s3:// or file:// URI",
}


def cel(*rules: dict[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules (x-kubernetes-validations) into the generated CRD."""
    return {"x-kubernetes-validations": list(rules)}


def immutable(field: str) -> dict[str, str]:
    return {"rule": "self == oldSelf", "message": f"{field} is immutable"}


class CrdModel(BaseModel):
    """camelCase on the wire (Kubernetes style), snake_case in Python; unknown fields are an error."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def uri_field(description: str, **kwargs: Any) -> Any:
    return Field(description=description, min_length=6, max_length=1024, json_schema_extra=cel(URI_RULE), **kwargs)


class Condition(CrdModel):
    """A metav1.Condition."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    type: str = Field(description="Condition type: Ready, Progressing or Degraded.")
    status: str = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason of the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="metadata.generation it was computed for.")
