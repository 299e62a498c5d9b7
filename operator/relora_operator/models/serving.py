"""TaskAdapter ``spec.serving``: where the served adapter is handed off to (one integration per adapter).

The operator keeps the chosen serving target pointing at ``status.served`` (see ``relora_operator.serving``).
Names and label values may contain ``{release}`` and ``{family}``: replaced by the served adapter's release
and the adapter's family, so the adapter reaches only the servers of the base it was adapted for.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from relora_operator.models.common import LABEL_KEY_PATTERN, CrdModel, cel

PLACEHOLDERS = ("{release}", "{family}")
# A name or label value before its placeholders are replaced; checked again once they are (serving.naming).
Template = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-A-Za-z0-9_.{}]+$")]
TemplateValue = Annotated[str, Field(max_length=253, pattern=r"^[-A-Za-z0-9_.{}]*$")]
LabelKey = Annotated[str, Field(min_length=1, max_length=253, pattern=LABEL_KEY_PATTERN)]


class SelectorRequirement(CrdModel):
    """A metav1.LabelSelectorRequirement."""

    key: LabelKey = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="In, NotIn, Exists, DoesNotExist.")
    values: list[TemplateValue] | None = Field(
        default=None, max_length=64, description="Values for In and NotIn; may contain {release} and {family}."
    )


class PodSelector(CrdModel):
    """A metav1.LabelSelector whose values may contain {release} and {family}."""

    match_labels: dict[str, TemplateValue] | None = Field(
        default=None,
        max_length=64,
        description='Labels the serving pods carry, e.g. {"model.aibrix.ai/name": "llama-{release}"}.',
    )
    match_expressions: list[SelectorRequirement] | None = Field(
        default=None, max_length=32, description="Label selector requirements (ANDed with matchLabels)."
    )


class AibrixTarget(CrdModel):
    """An AIBrix ModelAdapter (model.aibrix.ai/v1alpha1) created and kept by the operator."""

    name: Template | None = Field(
        default=None,
        description="Name of the ModelAdapter, which is also the LoRA model name clients request; default: the "
        "TaskAdapter's name.",
    )
    base_model: Template | None = Field(
        default=None,
        description="spec.baseModel of the ModelAdapter (the base model's served name), e.g. llama-{release}.",
    )
    pod_selector: PodSelector = Field(
        description="spec.podSelector: the pods serving the base the adapter was adapted for (use {release})."
    )
    credentials_secret: Template | None = Field(
        default=None, description="spec.credentialsSecretRef.name: a Secret AIBrix downloads the artifact with."
    )
    additional_config: dict[str, str] | None = Field(
        default=None, max_length=32, description="spec.additionalConfig, passed through as is."
    )
    require_serving_pods: bool = Field(
        default=True,
        description="Point the ModelAdapter at a release's adapter only once a pod matching its podSelector runs, "
        "so the previous base's pods keep their adapter until the new base is served; false: at once.",
    )


class KServeTarget(CrdModel):
    """A LoRA adapter entry on an existing KServe LLMInferenceService (serving.kserve.io)."""

    name: Template = Field(description="Name of the LLMInferenceService (same namespace), e.g. llama-{release}.")
    adapter_name: Template | None = Field(
        default=None,
        description="Name of the entry in spec.model.lora.adapters (the model name clients request); default: the "
        "TaskAdapter's name.",
    )
    api_version: Literal["v1alpha1", "v1alpha2"] = Field(
        default="v1alpha1", description="Version of serving.kserve.io the operator reads and writes."
    )
    match_model_uri: bool = Field(
        default=True,
        description="Hand off only while the service's spec.model.uri is the served release's modelUri (a "
        "trailing slash aside), so the adapter never reaches a server running another base; false: whatever it runs.",
    )


class ConfigMapTarget(CrdModel):
    """Name -> URI entries in a ConfigMap that a vLLM Deployment (--lora-modules) mounts or polls."""

    name: Template = Field(description="Name of the ConfigMap (same namespace); created when absent.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9{}]+$")] | None = Field(
        default=None, description="Data key (the LoRA name); default: the TaskAdapter's name. Value: the adapter URI."
    )


class Serving(CrdModel):
    """Hand-off to the serving stack: exactly one integration."""

    model_config = CrdModel.model_config | {
        "json_schema_extra": cel(
            {
                "rule": "[has(self.aibrix), has(self.kserve), has(self.configMap)].filter(x, x).size() == 1",
                "message": "set exactly one of aibrix, kserve, configMap",
            }
        )
    }

    aibrix: AibrixTarget | None = Field(default=None, description="Create and keep an AIBrix ModelAdapter.")
    kserve: KServeTarget | None = Field(default=None, description="Keep an entry on a KServe LLMInferenceService.")
    config_map: ConfigMapTarget | None = Field(default=None, description="Keep an entry in a ConfigMap (vLLM).")

    def selected(self) -> tuple[str, AibrixTarget | KServeTarget | ConfigMapTarget]:
        """(field name, target) of the one integration set."""
        for field in ("aibrix", "kserve", "config_map"):
            target = getattr(self, field)
            if target is not None:
                return field, target
        raise ValueError("spec.serving: set exactly one of aibrix, kserve, configMap")
