"""Generate the reference (docs/reference.md) from the API models and the trainer's settings.

    python -m hyft_operator.docgen > docs/reference.md     (make regen)
"""
from __future__ import annotations

import json
import sys
from typing import Any

from hyft_trainer import fsdp, keys, knobs
from hyft_trainer.config import TrainerConfig
from hyft_trainer.contract import EXIT_MEANINGS
from hyft_trainer.upstream_keys import LLAMAFACTORY_ARGUMENTS, TRANSFORMERS_VERSION

from . import api
from .crdgen import openapi_schema
from .settings import OperatorSettings
from .status import ConditionType, Reason


def _type(schema: dict[str, Any] | bool) -> str:
    if not isinstance(schema, dict) or "$ref" in schema:
        return "any" if not isinstance(schema, dict) else "object"
    if "const" in schema:
        return f"`{schema['const']}`"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "object")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        return f"map of {_type(schema['additionalProperties'])}"
    return kind


def _rows(schema: dict[str, Any], prefix: str) -> list[str]:
    rows = []
    required = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{name}"
        default = sub.get("default")
        default_text = "" if default is None or default in ({}, []) else f"`{json.dumps(default)}`"
        bounds = ", ".join(f"{k} {sub[k]}" for k in ("minimum", "maximum", "maxItems", "pattern") if k in sub)
        desc = sub.get("description", "").replace("\n", " ").replace("|", "\\|")
        rules = [r["message"] for r in sub.get("x-kubernetes-validations", [])]
        notes = "; ".join(filter(None, [bounds, *rules]))
        rows.append(f"| `{path}` | {_type(sub)} | {'yes' if name in required else ''} | {default_text} | "
                    f"{desc}{' *(' + notes + ')*' if notes else ''} |")
        item = sub.get("items", {})
        if sub.get("properties"):
            rows += _rows(sub, path)
        elif item.get("properties") and not item.get("x-kubernetes-preserve-unknown-fields"):
            rows += _rows(item, f"{path}[]")
    return rows


def _trainer_rows() -> list[str]:
    """One row per setting of knobs.py: the `hyft train` config key, and the spec field that sets it."""
    properties = TrainerConfig.model_json_schema()["properties"]
    rows = []
    for knob in knobs.KNOBS:
        schema = properties[knob.key]
        kinds = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
        kind = " or ".join(map(_type, kinds)) or "any"
        default = "*required*" if knob.default is knobs.REQUIRED else f"`{json.dumps(knob.default)}`"
        bounds = ", ".join(f"{k} {v}" for k, v in knob.bounds.items())
        notes = "; ".join(filter(None, [bounds, *(c.message for c in knob.checks if hasattr(c, "message")),
                                        knob.why and f"default differs from {knob.origin}'s: {knob.why}"]))
        rows.append(f"| `{knob.key}` | {kind} | {default} | {f'`spec.{knob.spec}`' if knob.spec else ''} | "
                    f"{knob.origin} | {knob.to} | {knob.doc}{' *(' + notes + ')*' if notes else ''} |")
    return rows


def _key_rows() -> list[str]:
    """Every key that is not a hyft setting, with its fate (keys.py)."""
    return [f"| `{key}` | {fate} | {why} |" for key, (fate, why) in sorted(keys.every_key().items())
            if fate != keys.Fate.IMPLEMENTED]


def _fsdp_rows() -> list[str]:
    """fsdp_config's keys with their fate (fsdp.py)."""
    tables = ((keys.Fate.PASSED, fsdp.PASSED), (keys.Fate.READ_AS, fsdp.READ_AS), (keys.Fate.NO_EFFECT, fsdp.NO_EFFECT),
              (keys.Fate.REFUSED, fsdp.REFUSED))
    return [f"| `{key}` | {fate} | {why} |" for fate, table in tables for key, why in table.items()]


def _settings_rows() -> list[str]:
    properties = OperatorSettings.model_json_schema()["properties"]
    return [f"| `{OperatorSettings.env_name(name)}` | {_type(properties[name])} | `{json.dumps(field.default)}` | "
            f"{field.description} |" for name, field in OperatorSettings.model_fields.items()]


def _condition_rows() -> list[str]:
    rows = [f"| condition | `{t}` | {t.meaning} |" for t in ConditionType]
    rows += [f"| reason | `{r}` | {r.meaning} |" for r in Reason]
    return rows + [f"| reason | `{m.preflight_reason}` | PreflightPassed False: a pod exited {code} ({m.text}) |"
                   for code, m in EXIT_MEANINGS.items() if m.preflight_reason]


def render() -> str:
    spec, status = openapi_schema(api.HunyuanFineTuneSpec), openapi_schema(api.HunyuanFineTuneStatus)
    header = "| field | type | required | default | description |\n|---|---|---|---|---|\n"
    spec_rules = "\n".join(f"- {r['message']}" for r in spec.get("x-kubernetes-validations", []))
    return (
        "<!-- GENERATED by `make regen` from hyft_operator/api.py and hyft_trainer/knobs.py: do not edit. -->\n"
        f"# HunyuanFineTune reference (`{api.GROUP}/{api.VERSION}`)\n\n"
        f"{api.HunyuanFineTune.__doc__.strip()} Short name: `hft`.\n\n"
        "## spec\n\n" + header + "\n".join(_rows(spec, "spec")) + "\n\n"
        "Rules across fields (checked by the API server):\n\n" + spec_rules + "\n\n"
        "## status (written by the operator only)\n\n" + header + "\n".join(_rows(status, "status")) + "\n\n"
        "### Conditions and reasons\n\n"
        "A phase condition that is False has the reason Not<Type>; Ready's reason is the phase.\n\n"
        "| | name | meaning |\n|---|---|---|\n" + "\n".join(_condition_rows()) + "\n\n"
        "## Trainer config (`hyft train CONFIG`)\n\n"
        "Every key a trainer config takes, from hyft_trainer/knobs.py. *origin*: whose key it is (a LLaMA-Factory "
        "YAML means the same by it, with the same default unless the row says why not); *to*: what receives "
        "it; *spec*: the HunyuanFineTune field that sets it.\n\n"
        "| key | type | default | spec | origin | to | description |\n|---|---|---|---|---|---|---|\n"
        + "\n".join(_trainer_rows()) + "\n\n"
        "### Every other key\n\n"
        f"transformers' Seq2SeqTrainingArguments ({TRANSFORMERS_VERSION}) and LLaMA-Factory's argument classes "
        f"({', '.join(sorted({r for *_, found_in in LLAMAFACTORY_ARGUMENTS.values() for r in found_in}))}), each "
        "with its fate: *passed* to TrainingArguments as given; "
        "*set by hyft* (refused unless at its default); *read as* a hyft setting; *no effect* (said once at "
        "start-up); *refused* unless off. Any other key is unknown.\n\n"
        "| key | fate | meaning or reason |\n|---|---|---|\n" + "\n".join(_key_rows()) + "\n\n"
        "### fsdp_config keys\n\n"
        "engine fsdp's settings as transformers' `fsdp_config` or an accelerate config's FSDP block writes them "
        "(the `fsdp_` prefix dropped).\n\n"
        "| key | fate | meaning or reason |\n|---|---|---|\n" + "\n".join(_fsdp_rows()) + "\n\n"
        "## Operator settings\n\n"
        "Environment variables of the operator (the chart sets them from its values), read once at start-up.\n\n"
        "| variable | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(_settings_rows()) + "\n"
    )


if __name__ == "__main__":
    sys.stdout.write(render())
