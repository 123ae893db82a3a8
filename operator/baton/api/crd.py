"""Generate CustomResourceDefinitions from the pydantic types.

The types are the single source of truth; this module only translates pydantic's JSON Schema
(2020-12, with `$ref`s) into the structural OpenAPI v3 subset Kubernetes accepts: references
inlined, `Optional` unwrapped, `const` turned into a one-value enum, free-form objects marked
`x-kubernetes-preserve-unknown-fields`, and the CEL rules declared on the models kept.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import to_jsonable_python

from baton.api import KINDS
from baton.api.common import GROUP, VERSION, Resource

# JSON-Schema keywords Kubernetes' structural schemas accept; anything else pydantic emits
# (title, examples, ...) is dropped.
_KEPT_KEYWORDS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "default",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "maxProperties",
    "format",
    "additionalProperties",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
}


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also publish `default_factory` values as schema defaults.

    Without them the API server would store `rollout: {}` as is, and a CEL rule on the omitted
    `steps` would fail with "no such key" although pydantic fills in the default steps: both
    sides must default alike.
    """

    def default_schema(self, schema):  # type: ignore[no-untyped-def]
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            # exclude_none: Kubernetes refuses `null` defaults; unset is what None means here.
            default = to_jsonable_python(factory(), by_alias=True, exclude_none=True)
            schema = {**{k: v for k, v in schema.items() if k != "default_factory"}, "default": default}
        return super().default_schema(schema)


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s, merging sibling keys (a field's own description beats the type's docstring)."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        merged = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
        return _resolve(merged, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Rewrite one resolved JSON-Schema node into Kubernetes' structural OpenAPI subset."""
    node = dict(node)
    if "anyOf" in node:
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"only Optional[X] unions are supported in CRD types, got {variants}")
        if node.get("default", ...) is None:
            del node["default"]
        node = {**variants[0], **node}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "exclusiveMinimum" in node:
        node["minimum"], node["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        node["maximum"], node["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if node.get("additionalProperties") is False:
        # extra="forbid": Kubernetes rejects unknown fields by strict field validation instead.
        del node["additionalProperties"]
    if node.get("type") == "object" and node.get("additionalProperties") is True:
        del node["additionalProperties"]
        node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        node["x-kubernetes-preserve-unknown-fields"] = True
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _structural(prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value)
        elif key in _KEPT_KEYWORDS or key in ("exclusiveMinimum", "exclusiveMaximum"):
            out[key] = value
    return out


def openapi_schema(resource: type[Resource]) -> dict[str, Any]:
    """The `openAPIV3Schema` of one kind."""
    raw = resource.model_json_schema(by_alias=True, mode="validation", schema_generator=_WithFactoryDefaults)
    resolved = _resolve({k: v for k, v in raw.items() if k != "$defs"}, raw.get("$defs", {}))
    schema = _structural(resolved)
    # Kubernetes owns metadata's schema; a CRD may only say it is an object.
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"type": "string", "description": "APIVersion of the object."}
    schema["properties"]["kind"] = {"type": "string", "description": "Kind of the object."}
    schema["description"] = resource.description
    schema["required"] = [name for name in schema.get("required", []) if name in ("spec",)]
    return schema


def custom_resource_definition(resource: type[Resource]) -> dict[str, Any]:
    """The full CRD document of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": resource.kind_name,
                "listKind": f"{resource.kind_name}List",
                "plural": resource.plural,
                "singular": resource.kind_name.lower(),
                "shortNames": list(resource.short_names),
                "categories": ["baton"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": column.name,
                            "type": column.type,
                            "jsonPath": column.json_path,
                            "description": column.description,
                            **({"priority": column.priority} if column.priority else {}),
                        }
                        for column in (*resource.printer_columns, resource.age_column())
                    ],
                    "schema": {"openAPIV3Schema": openapi_schema(resource)},
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name → YAML text for every baton CRD (deterministic, so it can be diffed in tests)."""
    header = "# Generated by `baton crds` from operator/baton/api. Do not edit.\n"
    return {
        f"{cls.plural}.{GROUP}.yaml": header
        + yaml.safe_dump(custom_resource_definition(cls), sort_keys=False, width=100, allow_unicode=True)
        for cls in KINDS.values()
    }
