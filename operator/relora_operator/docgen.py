"""Renders the reference part of docs/operator.md (fields of both resources, settings) from the models.

``python -m relora_operator.docgen`` prints it; a test checks that docs/operator.md contains it verbatim.
"""

from __future__ import annotations

from typing import Any

from relora_operator.crdgen import all_crds
from relora_operator.settings import settings_table


def _rows(schema: dict[str, Any], prefix: str, required: set[str]) -> list[str]:
    rows = []
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        kind = prop.get("type", "object")
        if kind == "array":
            kind = f"[]{prop.get('items', {}).get('type', 'object')}"
        extra = []
        if "enum" in prop:
            extra.append("one of " + ", ".join(f"`{v}`" for v in prop["enum"]))
        for rule in prop.get("x-kubernetes-validations", []):
            extra.append(f"rule: {rule['message']}")
        default = f"`{prop['default']}`" if "default" in prop else ("required" if name in required else "")
        desc = prop.get("description", "") + ("" if not extra else " (" + "; ".join(extra) + ")")
        rows.append(f"| `{path}` | {kind} | {default} | {desc} |")
        if prop.get("type") == "object" and "properties" in prop:
            rows += _rows(prop, path, set(prop.get("required", [])))
        if prop.get("type") == "array" and "properties" in prop.get("items", {}):
            rows += _rows(prop["items"], path + "[]", set(prop["items"].get("required", [])))
    return rows


def reference() -> str:
    out = []
    for crd in all_crds().values():
        names = crd["spec"]["names"]
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        out.append(
            f"## {names['kind']} (`{crd['spec']['group']}/{version['name']}`, short name "
            f"`{names['shortNames'][0]}`, category `relora`)\n"
        )
        out.append(schema["description"] + "\n")
        for part in ("spec", "status"):
            sub = schema["properties"][part]
            rules = [r["message"] for r in sub.get("x-kubernetes-validations", [])]
            out.append(f"### {part}\n")
            if rules:
                out.append("Cross-field rules: " + "; ".join(rules) + ".\n")
            out.append("| Field | Type | Default | Description |\n| --- | --- | --- | --- |")
            out += _rows(sub, part, set(sub.get("required", [])))
            out.append("")
        cols = ", ".join(
            c["name"] + (" (wide)" if c.get("priority") else "") for c in version["additionalPrinterColumns"]
        )
        out.append(f"`kubectl get {names['plural']}` columns: {cols}.\n")
    out.append("## Settings (environment variables of the operator)\n")
    out.append(settings_table())
    return "\n".join(out)


if __name__ == "__main__":
    print(reference(), end="")
