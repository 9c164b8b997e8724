"""Generate the HunyuanFineTune CRD from the pydantic models.

    python -m hyft_operator.crdgen crds/     # writes crds/hyft.io_hunyuanfinetunes.yaml

Pydantic's JSON Schema becomes a Kubernetes structural schema: references
inlined, Optional[X] reduced to X, titles dropped, exclusive bounds in OpenAPI v3
form, pass-through Kubernetes objects marked x-kubernetes-preserve-unknown-fields,
and defaults for nested settings ({}) and optional lists ([]) so the API server fills them in.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from hyft_trainer.rules import CEL

from . import api

CRD_FILE = f"{api.GROUP}_{api.PLURAL}.yaml"


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Nodes", "type": "string", "jsonPath": ".status.readyNodes", "description": "ready/total pods"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progressSummary"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.path", "priority": 1},
    {"name": "Method", "type": "string", "jsonPath": ".spec.method.type", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        ref = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        rules = ref.get(CEL, []) + node.get(CEL, [])  # the model's rules and the field's rules
        node = {**ref, **node}
        if rules:
            node[CEL] = rules
    any_of = node.get("anyOf")
    if any_of and any(branch == {"type": "null"} for branch in any_of):
        rest = [branch for branch in any_of if branch != {"type": "null"}]
        node.pop("anyOf")
        if node.get("default", "") is None:
            node.pop("default")
        if len(rest) == 1:
            node = {**rest[0], **node} if "$ref" not in rest[0] else {**_structural(rest[0], defs), **node}
        else:
            node["anyOf"] = rest
    node.pop("title", None)
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
            node[bound.replace("exclusiveM", "m")] = node[bound]
            node[bound] = True
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")  # structural schemas prune unknown fields anyway
    if node.get("additionalProperties") is True:
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "object" and node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
    if "enum" in node and "type" not in node:
        node["type"] = "integer" if all(isinstance(v, int) for v in node["enum"]) else "string"
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out = {}
    for key, value in node.items():
        if key in ("properties",):
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not"):
            out[key] = _structural(value, defs)
        else:
            out[key] = value
    # Nested settings objects default to {} so that the API server applies their field defaults;
    # optional lists default to [] so that CEL rules can read them unguarded.
    for name, sub in out.get("properties", {}).items():
        if "default" in sub or name in out.get("required", []):
            continue
        if sub.get("type") == "object" and "properties" in sub and not sub.get("required"):
            sub["default"] = {}
        elif sub.get("type") == "array":
            sub["default"] = []
    return out


def openapi_schema(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def crd() -> dict[str, Any]:
    spec_schema = openapi_schema(api.HunyuanFineTuneSpec)
    # default {}: the API server fills status (phase Pending, ...) on every read, so
    # kubectl, Argo CD and Flux see a phase from the moment a resource is created,
    # before the operator writes one (the status subresource still drops a status
    # sent with the create).
    status_schema = {**openapi_schema(api.HunyuanFineTuneStatus), "default": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.PLURAL}.{api.GROUP}",
                     "labels": {"app.kubernetes.io/part-of": "hyft"}},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {"kind": api.KIND, "listKind": f"{api.KIND}List", "plural": api.PLURAL,
                      "singular": api.SINGULAR, "shortNames": api.SHORT_NAMES, "categories": api.CATEGORIES},
            "versions": [{
                "name": api.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": api.HunyuanFineTune.__doc__.strip(),
                    "required": ["spec"],
                    # an update's rule (oldSelf) is the API server's alone
                    CEL: [api.NAME_RULE.schema(), api.RESIZE_BETWEEN_ATTEMPTS],
                    "properties": {
                        "apiVersion": {"type": "string", "description": "hyft.io/v1alpha1"},
                        "kind": {"type": "string", "description": "HunyuanFineTune"},
                        "metadata": {"type": "object"},
                        "spec": {**spec_schema, "description": "What to fine-tune, on what data, how and where."},
                        "status": {**status_schema,
                                   "description": "Observed state, written by the operator only."},
                    },
                }},
            }],
        },
    }


def render() -> str:
    header = ("# GENERATED by `make regen` (python -m hyft_operator.crdgen) from hyft_operator/api.py and "
              "hyft_trainer/knobs.py: do not edit.\n")
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.stdout.write(render())
        return
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    (out / CRD_FILE).write_text(render())
    print(f"wrote {out / CRD_FILE}")


if __name__ == "__main__":
    main()
