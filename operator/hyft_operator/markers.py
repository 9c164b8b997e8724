"""The spec's building blocks: ApiModel (its RULES become CEL on the CRD and Python checks
alike), the Trainer marker (a spec field passed to the trainer config unchanged) and
with_knobs (the spec fields that hyft_trainer/knobs.py declares 1:1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, create_model, model_validator

from hyft_trainer import knobs
from hyft_trainer.rules import CEL, Rule

from .formats import PASSTHROUGH


@dataclass(frozen=True)
class Trainer:
    """Marks a spec field passed to the trainer config unchanged, under this key (builders maps
    every marked field; only fields that need a conversion are mapped by hand there)."""

    key: str


def _model_rules_to_cel(schema: dict[str, Any], cls: type) -> None:
    rules = getattr(cls, "RULES", ())
    if rules:
        schema.setdefault(CEL, []).extend(rule.schema() for rule in rules)


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_model_rules_to_cel)
    RULES: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _rules_hold(self) -> ApiModel:
        broken = [f"{rule.field + ': ' if rule.field else ''}{rule.message}" for rule in self.RULES
                  if not rule.holds(self)]
        if broken:
            raise ValueError("; ".join(broken))
        return self


def with_knobs(base: type[ApiModel], group: str) -> Any:
    """base plus the settings that hyft_trainer.knobs exposes 1:1 under spec.<group>, each marked
    Trainer(key) (builders passes every marked field to the trainer config)."""
    fields = {name: (Annotated[knob.annotation(spec=True), Trainer(knob.key)],
                     knob.field({"json_schema_extra": PASSTHROUGH} if knob.type == dict[str, Any] else None, spec=True))
              for name, knob in knobs.under(group)}
    return create_model(base.__name__.lstrip("_"), __base__=base, __module__="hyft_operator.api", __doc__=base.__doc__,
                        **fields)
