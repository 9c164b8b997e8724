"""Rule: one validation written twice, side by side, CEL for the API server and Python for
everything else. Shared by the spec (hyft_operator.api) and the trainer settings (knobs).
Torch-free and Kubernetes-free."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic_core import core_schema

CEL = "x-kubernetes-validations"


@dataclass(frozen=True)
class Rule:
    """One validation rule written twice, side by side: CEL for the API server, and a Python
    predicate for `hyft render`, `hyft run --local` and the operator. The shared invalid table
    (tests/invalid_specs.py) holds the two to the same verdicts.

    On a model (its RULES) `holds` gets the model and `field` names the part it is about; on a
    field (Annotated[type, Rule(...)]) `holds` gets the value."""

    cel: str
    message: str
    holds: Callable[[Any], bool]
    field: str = ""

    def schema(self) -> dict[str, str]:
        return {"rule": self.cel, "message": self.message, **({"fieldPath": f".{self.field}"} if self.field else {})}

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        def check(value: Any) -> Any:
            if not self.holds(value):
                raise ValueError(self.message)
            return value
        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        out = handler(schema)
        out.setdefault(CEL, []).append(self.schema())
        return out

