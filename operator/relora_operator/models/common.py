"""Shared pieces of the CRD models: API group, base model config, URI and name rules, conditions."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
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
# Well-formed: s3://<bucket>[/<key>] with a valid bucket name, or file:///<absolute path>; no whitespace.
URI_FORM_RULE = {
    "rule": "(self.matches('^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$') || self.startsWith('file:///'))"
    " && !self.matches('\\\\s')",
    "message": "must be s3://<bucket>/<key> (bucket: 3-63 lowercase letters, digits, dots, hyphens) or "
    "file:///<absolute path>, without whitespace",
}
# Credentials never ride in a URI (userinfo, a presigned URL's query string, key parameters): they would be
# copied into status, Events, logs and Job arguments. redaction.CREDENTIAL_PARAMS is the same list.
CREDENTIAL_RULE = {
    "rule": "!self.matches('^[a-zA-Z0-9+.-]+://[^/]*@') && !self.contains('?') && !self.matches("
    "'(?i)(x-amz-[a-z-]+|awsaccesskeyid|signature|sig|access_?key(_?id)?|secret(_?access)?_?key|"
    "(security_?|session_?)?token|password|passwd|credential)=')",
    "message": "must not carry credentials (user:password@, a query string such as a presigned URL's "
    "X-Amz-Signature, or key parameters): store them in the S3 Secret (operator setting RELORA_S3_SECRET, "
    "chart value s3.secretName) and reference it instead",
}
# A Kubernetes resource quantity as the operator accepts it: a positive decimal with an optional SI or binary
# suffix (e.g. 500m, 4, 1.5, 32Gi); what the API server would refuse in a Job is refused here, at admission.
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
# Label keys (optional DNS-subdomain prefix + name) and values, as in a nodeSelector or a toleration's key.
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"


def cel(*rules: dict[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules (x-kubernetes-validations) into the generated CRD."""
    return {"x-kubernetes-validations": list(rules)}


def immutable(field: str) -> dict[str, str]:
    return {"rule": "self == oldSelf", "message": f"{field} is immutable"}


class CrdModel(BaseModel):
    """camelCase on the wire (Kubernetes style), snake_case in Python; unknown fields are an error."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


_S3_FORM = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
_CREDENTIAL_PARAM = re.compile(
    r"(?i)(x-amz-[a-z-]+|awsaccesskeyid|signature|sig|access_?key(_?id)?|secret(_?access)?_?key|"
    r"(security_?|session_?)?token|password|passwd|credential)="
)


def uri_problem(uri: str) -> str | None:
    """The URI rules of the CRD (URI_RULE, URI_FORM_RULE, CREDENTIAL_RULE) in Python: the message of the
    first one ``uri`` breaks, or None. Objects stored before a rule existed are caught here (InvalidSpec)."""
    if not (uri.startswith("s3://") or uri.startswith("file://")):
        return URI_RULE["message"]
    if re.match(r"^[a-zA-Z0-9+.-]+://[^/]*@", uri) or "?" in uri or _CREDENTIAL_PARAM.search(uri):
        return CREDENTIAL_RULE["message"]
    if not (_S3_FORM.match(uri) or uri.startswith("file:///")) or re.search(r"\s", uri):
        return URI_FORM_RULE["message"]
    return None


def _check_uri(uri: str) -> str:
    problem = uri_problem(uri)
    if problem:
        raise ValueError(problem)
    return uri


# A URI field's type: the CRD's CEL rules come with uri_field, the same rules in Python with this type.
Uri = Annotated[str, AfterValidator(_check_uri)]


def uri_field(description: str, **kwargs: Any) -> Any:
    return Field(
        description=description,
        min_length=6,
        max_length=1024,
        json_schema_extra=cel(URI_RULE, URI_FORM_RULE, CREDENTIAL_RULE),
        **kwargs,
    )


def quantity_field(description: str) -> Any:
    return Field(default=None, min_length=1, max_length=32, pattern=QUANTITY_PATTERN, description=description)


class Condition(CrdModel):
    """A metav1.Condition."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    type: str = Field(description="Condition type: Ready, Progressing or Degraded.")
    status: str = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason of the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="metadata.generation it was computed for.")
