"""The trainer's configuration: one pydantic model made from the settings declared in
knobs.py (LLaMA-Factory's and transformers' key names) and transformers' training arguments that
hyft passes through (keys.PASSED), so a LLaMA-Factory YAML runs as brought; every other key gets
the fate keys.py gives it.

The operator writes exactly this schema into the job's ConfigMap, and `hyft train`
reads it back. This module must stay light (no torch import): the operator image
imports it.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model, model_validator
from pydantic_core import PydanticUndefined

from . import keys
from .fsdp import FSDP
from .knobs import KNOBS, PATH
from .llamafactory_keys import translate
from .offload import AUTO
from .problems import describe
from .upstream_keys import TRAINING_ARGUMENTS

# ZeRO-3 partitions bitsandbytes' 4-bit weights (stored in the training dtype), not its 8-bit ones
QUANTIZED_UNDER_ZERO3 = ("quantization_bit 8: ZeRO-3 shards 4-bit bitsandbytes weights only: use quantization_bit 4, "
                         "or zero_stage 2 (DeepSpeed, the optimizer offloadable) or 0 (plain DDP)")


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


def interleave_probs(value: str | list[float]) -> list[float]:
    """LLaMA-Factory writes "0.7,0.3"."""
    try:
        return [float(p) for p in (value.split(",") if isinstance(value, str) else value)]
    except ValueError:
        raise ValueError(f"interleave_probs: comma-separated numbers, got {value!r}") from None


class _Checks(BaseModel):
    """What holds across settings; the settings themselves are knobs.KNOBS."""

    model_config = ConfigDict(extra="forbid")

    # keys accepted without effect, said once at start-up (not part of the schema)
    _notes: list[str] = PrivateAttr(default_factory=list)
    _without_effect: dict[str, Any] = PrivateAttr(default_factory=dict)  # carried on by dump_config

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
        if self.engine == FSDP:
            self._check_fsdp()
        elif self.fsdp_config:
            raise ValueError("fsdp_config is for engine fsdp: set engine: fsdp (or LLaMA-Factory's fsdp: full_shard "
                             "auto_wrap), or remove it")
        if self.offload_param is True and self.zero_stage not in (3, AUTO):
            raise ValueError("offload_param needs zero_stage 3")
        if self.offload_optimizer is True and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs DeepSpeed: zero_stage 2 or 3")
        if "warmup_steps" in self.model_fields_set and self.warmup_ratio:
            raise ValueError("warmup_ratio and warmup_steps are one setting of transformers: set one of them")
        if self.save_only_model and self.early_stopping_steps and (self.deepspeed or self.zero_stage):
            raise ValueError("save_only_model and early_stopping_steps exclude each other under DeepSpeed: the best "
                             "checkpoint could not be reloaded at the end; drop one of them")
        floor = getattr(self, "lr_scheduler_kwargs", None) or {}
        if isinstance(floor, str):  # transformers reads a JSON string too
            try:
                floor = json.loads(floor)
            except ValueError:
                raise ValueError(f"lr_scheduler_kwargs: not JSON: {floor!r}") from None
        if self.lr_scheduler_type == "cosine_with_min_lr" and not ({"min_lr", "min_lr_rate"} & set(floor)):
            raise ValueError("lr_scheduler_type cosine_with_min_lr needs its floor: lr_scheduler_kwargs: {min_lr: ...} "
                             "(or min_lr_rate, a fraction of learning_rate)")
        if self.interleave_probs is not None:
            if self.mix_strategy == "concat":
                raise ValueError("interleave_probs needs an interleave mix_strategy (interleave_under, _over, _once)")
            probs = interleave_probs(self.interleave_probs)
            if any(p < 0 for p in probs) or abs(sum(probs) - 1) > 1e-6:
                raise ValueError(f"interleave_probs: shares from 0 to 1 that sum to 1, got {probs}")
        if (self.loraplus_lr_ratio or self.use_rslora) and self.finetuning_type != "lora":
            raise ValueError(f"{'loraplus_lr_ratio' if self.loraplus_lr_ratio else 'use_rslora'} is for "
                             f"finetuning_type lora, not {self.finetuning_type}")
        if self.upcast_layernorm and (self.zero_stage or self.deepspeed is not None):
            self._notes.append("upcast_layernorm: has no effect here: DeepSpeed keeps every parameter in the "
                               "training precision, FSDP2 every one in float32 (it applies with zero_stage 0)")
        if self.quantization_bit and self.finetuning_type != "lora":
            raise ValueError(f"quantization_bit (QLoRA) trains LoRA on the quantized base: finetuning_type lora, "
                             f"not {self.finetuning_type}")
        if self.quantization_bit == 8 and self.zero_stage == 3 and self.deepspeed is None:
            raise ValueError(QUANTIZED_UNDER_ZERO3)
        if self.merge_lora and self.finetuning_type != "lora":
            raise ValueError(f"merge_lora is for finetuning_type lora: a {self.finetuning_type} run exports the "
                             "whole model already")
        return self

    def _check_fsdp(self) -> None:
        """engine fsdp: FSDP2 shards like ZeRO-3 (zero_stage auto or 3), offloads all or nothing."""
        if self.deepspeed is not None:  # deepspeed_overrides: deepspeed_config.settle (a spec field, no CEL)
            raise ValueError("deepspeed: a DeepSpeed JSON, but engine is fsdp: choose one engine")
        if self.zero_stage not in (3, AUTO):
            raise ValueError(f"zero_stage {self.zero_stage} is DeepSpeed's, but engine is fsdp, which shards like "
                             "ZeRO-3: leave zero_stage auto or 3 (for ZeRO-2's memory/speed trade, "
                             "fsdp_config.reshard_after_forward: false)")
        if AUTO not in (self.offload_param, self.offload_optimizer) and self.offload_param != self.offload_optimizer:
            raise ValueError("offload_param and offload_optimizer differ, but FSDP2's CPU offload moves parameters, "
                             "gradients and optimizer states together: set both alike (or leave them auto)")
        if self.quantization_bit:
            raise ValueError("quantization_bit (QLoRA) with engine fsdp is not built: use engine deepspeed (4 bits "
                             "under ZeRO-3, 8 bits with zero_stage 2 or 0)")


def _passed_field(key: str) -> tuple[Any, Any]:
    """A pass-through key as transformers types it (upstream_keys.py); its default is transformers' own,
    and only a key the config sets reaches TrainingArguments."""
    kind, default = TRAINING_ARGUMENTS[key]
    mutable = isinstance(default, (list, dict))
    return eval(kind, {"Any": Any}), Field(default=PydanticUndefined if mutable else default,  # noqa: S307
                                           default_factory=(lambda: type(default)(default)) if mutable else None,
                                           description=f"transformers' TrainingArguments.{key}, passed through")


TrainerConfig = create_model("TrainerConfig", __base__=_Checks, __module__=__name__,
                             **{k.key: (k.annotation(), k.field()) for k in KNOBS},
                             **{key: _passed_field(key) for key in keys.PASSED})


class ConfigError(ValueError):
    pass


def passed_arguments(config: TrainerConfig) -> dict[str, Any]:
    """The pass-through keys the config sets, for TrainingArguments."""
    return {key: getattr(config, key) for key in keys.PASSED if key in config.model_fields_set}


def parse_config(data: Any, source: str = "config") -> TrainerConfig:
    """Validate a mapping into a TrainerConfig; errors name every bad key. Each key is read as keys.py
    gives its fate; those without effect end up in config.notes."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    read_notes: list[str] = []
    data_in, problems = translate(data, read_notes)
    data, judged, notes = keys.judge(data_in)
    notes = read_notes + notes
    problems += judged
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    try:
        config = TrainerConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: " + "; ".join(describe(err, whole="config"))) from None
    config._notes.extend(notes)
    config._without_effect = keys.without_effect(data_in)
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
    unset = {key for key in keys.PASSED if key not in config.model_fields_set}
    return yaml.dump({**config.model_dump(mode="json", exclude=unset), **config._without_effect}, Dumper=dumper,
                     sort_keys=False)
