"""The trainer's configuration: one pydantic model made from the settings declared in
knobs.py (LLaMA-Factory's and transformers' key names), so a LLaMA-Factory YAML runs as brought.

The operator writes exactly this schema into the job's ConfigMap, and `hyft train`
reads it back. This module must stay light (no torch import): the operator image
imports it.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, create_model, model_validator

from .knobs import KNOBS, PATH
from .llamafactory_keys import known_keys, translate
from .problems import describe


def map_paths(model: BaseModel, rewrite: Callable[[str], str]) -> BaseModel:
    """A copy of model with every path field (marked PATH, in nested models too) rewritten."""
    update: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if PATH in field.metadata and isinstance(value, str):
            update[name] = rewrite(value)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            update[name] = [map_paths(v, rewrite) for v in value]
    return model.model_copy(update=update)


class _Checks(BaseModel):
    """What holds across settings; the settings themselves are knobs.KNOBS."""

    model_config = ConfigDict(extra="forbid")

    # keys accepted without effect, said once at start-up (not part of the schema)
    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return self._notes

    @model_validator(mode="after")
    def _check(self) -> _Checks:
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 are mutually exclusive")
        if not self.dataset and not self.data_files:
            raise ValueError("no data: set dataset (names in dataset_info.json) or data_files")
        if self.dataset and not self.dataset_dir:
            raise ValueError("dataset names need dataset_dir (the folder with dataset_info.json)")
        if self.offload_param is True and self.zero_stage != 3:
            raise ValueError("offload_param needs zero_stage 3")
        if self.offload_optimizer is True and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs DeepSpeed: zero_stage 2 or 3")
        if self.save_only_model and self.early_stopping_steps and (self.deepspeed or self.zero_stage):
            raise ValueError("save_only_model and early_stopping_steps exclude each other under DeepSpeed: the best "
                             "checkpoint could not be reloaded at the end; drop one of them")
        return self


TrainerConfig = create_model("TrainerConfig", __base__=_Checks, __module__=__name__,
                             **{k.key: (k.annotation(), k.field()) for k in KNOBS})


class ConfigError(ValueError):
    pass


def _unknown_key_messages(data: dict[str, Any]) -> list[str]:
    known = set(TrainerConfig.model_fields)
    candidates = known | known_keys()
    messages = []
    for key in data:
        if key in known:
            continue
        # a hint only for a real near-miss (a typo), not for a different key that shares a word
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.85)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        messages.append(f"{key}: unknown key{hint}")
    return messages


def parse_config(data: Any, source: str = "config") -> TrainerConfig:
    """Validate a mapping into a TrainerConfig; errors name every bad key. LLaMA-Factory keys are
    read as llamafactory_keys says; those without effect end up in config.notes."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    data, problems, notes = translate(data)
    problems += _unknown_key_messages(data)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    try:
        config = TrainerConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: " + "; ".join(describe(err, whole="config"))) from None
    config._notes.extend(notes)
    return config


def load_config(path: str | Path) -> TrainerConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    return parse_config(data, str(path))


def dump_config(config: TrainerConfig) -> str:
    """YAML the trainer reads back with load_config (defaults included, for the record)."""
    # libyaml's emitter where the wheel has it: the operator writes one per gang it creates
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(config.model_dump(mode="json"), Dumper=dumper, sort_keys=False)
