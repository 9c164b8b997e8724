"""The trainer's configuration: one pydantic model, LLaMA-Factory key names where
they exist, so a LLaMA-Factory YAML mostly runs unchanged.

The operator writes exactly this schema into the job's ConfigMap, and `hyft train`
reads it back. This module must stay light (no torch import): the operator image
imports it.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The trainer/operator protocol: exit code 2 is a permanent error (invalid config or data); exit 0 with
# this termination message means SIGTERM stopped training after a checkpoint (restart, do not finish).
EXIT_INVALID = 2
STOPPED_EARLY = "hyft: stopped early by SIGTERM"

ChatFamily = Literal["auto", "small", "7b"]
DataFormat = Literal["auto", "sharegpt", "alpaca"]

LLAMAFACTORY_TEMPLATES = ("hunyuan", "hunyuan_small")

# LLaMA-Factory keys that hyft knows but does not implement: named as such, not "unknown".
UNSUPPORTED_LLAMAFACTORY_KEYS = {
    "stage": "hyft trains SFT only (stage: sft)",
    "do_train": "hyft always trains",
    "quantization_bit": "QLoRA is not supported",
    "quantization_method": "QLoRA is not supported",
    "use_unsloth": "unsloth is not supported",
    "flash_attn": "the attention implementation is chosen automatically",
    "rope_scaling": "use the model's own RoPE settings",
    "neat_packing": "hyft's packing never attends across samples",
    "preprocessing_num_workers": "hyft picks the worker count itself",
    "overwrite_cache": "hyft caches by content hash",
    "plot_loss": "hyft always writes the loss curve",
    "report_to": "hyft exports Prometheus metrics",
    "ddp_timeout": "set HYFT_DIST_TIMEOUT instead",
    "use_dora": "DoRA is not supported",
    "pissa_init": "PiSSA is not supported",
    "lora_rank_pattern": "per-module LoRA ranks are not supported",
}


class DataFile(BaseModel):
    """A data file or folder read directly (without dataset_info.json)."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="JSON or JSONL file, or a folder of them")
    format: DataFormat = Field("auto", description="sharegpt, alpaca, or auto (detected per file)")


class TrainerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # model
    model_name_or_path: str = Field(description="model folder (HF layout)")
    template: ChatFamily = Field("auto", description="chat family: small (0.5B/1.8B/4B), 7b, or auto")
    # method
    finetuning_type: Literal["lora", "full", "freeze"] = "lora"
    lora_rank: int = Field(8, ge=1)
    lora_alpha: int | None = Field(None, ge=1, description="default: 2 x lora_rank")
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target: str = Field("all", description="'all' or comma-separated module names")
    freeze_trainable_layers: int = Field(2, description="freeze: train the last N layers (negative: the first N)")
    # data
    dataset: list[str] = Field(default_factory=list, description="names in dataset_dir/dataset_info.json")
    dataset_dir: str | None = None
    data_files: list[DataFile] = Field(default_factory=list, description="files read without dataset_info.json")
    cutoff_len: int = Field(2048, ge=16)
    packing: bool = False
    train_on_prompt: bool = False
    mask_history: bool = False
    train_assistant_header: bool = False
    skip_invalid_samples: bool = False
    val_size: float = Field(0.0, ge=0)
    # training
    learning_rate: float = Field(1e-4, gt=0)
    num_train_epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, ge=-1)
    per_device_train_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                               "polynomial", "inverse_sqrt"] = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)  # transformers reads >= 1 as steps
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    seed: int = 42
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int | None = Field(None, ge=1)
    eval_steps: int | None = Field(None, ge=1)
    early_stopping_steps: int | None = Field(None, ge=1, description="stop after N evals without improvement")
    output_dir: str = "output"
    # DeepSpeed: a raw JSON (path or dict, like LLaMA-Factory's) or hyft's generated config
    deepspeed: str | dict[str, Any] | None = None
    zero_stage: Literal[0, 2, 3] = 3
    offload_optimizer: bool = True
    offload_param: bool = True
    deepspeed_overrides: dict[str, Any] = Field(default_factory=dict)
    # observability
    metrics_port: int | None = Field(9090, ge=1, le=65535)
    job_name: str | None = None

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 are mutually exclusive")
        if not self.dataset and not self.data_files:
            raise ValueError("no data: set dataset (names in dataset_info.json) or data_files")
        if self.dataset and not self.dataset_dir:
            raise ValueError("dataset names need dataset_dir (the folder with dataset_info.json)")
        if self.offload_param and self.zero_stage != 3:
            raise ValueError("offload_param needs zero_stage 3")
        return self


class ConfigError(ValueError):
    pass


def _unknown_key_messages(data: dict[str, Any]) -> list[str]:
    known = set(TrainerConfig.model_fields)
    messages = []
    for key in data:
        if key in known:
            continue
        if key in UNSUPPORTED_LLAMAFACTORY_KEYS:
            messages.append(f"{key}: a LLaMA-Factory key hyft does not support ({UNSUPPORTED_LLAMAFACTORY_KEYS[key]})")
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        messages.append(f"{key}: unknown key{hint}")
    return messages


def parse_config(data: Any, source: str = "config") -> TrainerConfig:
    """Validate a mapping into a TrainerConfig; errors name every bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys, got {type(data).__name__}")
    data = dict(data)
    if isinstance(data.get("dataset"), str):  # LLaMA-Factory writes "a,b"
        data["dataset"] = [d.strip() for d in data["dataset"].split(",") if d.strip()]
    if data.get("template") in LLAMAFACTORY_TEMPLATES:
        # LLaMA-Factory maps its `hunyuan` template to every Hunyuan model, though the small models use
        # other tokens; the tokenizer's own special tokens decide here.
        data["template"] = "auto"
    if data.get("stage", "sft") == "sft":
        data.pop("stage", None)
    data.pop("do_train", None)
    problems = _unknown_key_messages(data)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    try:
        return TrainerConfig.model_validate(data)
    except ValidationError as err:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"{source}: {details}") from None


def load_config(path: str | Path) -> TrainerConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    return parse_config(data, str(path))


def dump_config(config: TrainerConfig) -> str:
    """YAML the trainer reads back with load_config (defaults included, for the record)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
