"""The trainer's configuration: one pydantic model, LLaMA-Factory key names where
they exist, so a LLaMA-Factory YAML mostly runs unchanged.

The operator writes exactly this schema into the job's ConfigMap, and `hyft train`
reads it back. This module must stay light (no torch import): the operator image
imports it.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .choices import ChatFamily, DataFormat, FinetuningType, LrSchedulerType
from .data_check import TEMPLATE_CHECK_SAMPLES
from .llamafactory_keys import known_keys, translate
from .problems import describe


class _FileSystemPath:
    """Marks a config field that holds a path (map_paths rewrites them: `hyft run --local`)."""


PATH = _FileSystemPath()


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


class DataFile(BaseModel):
    """A data file or folder read directly (without dataset_info.json)."""

    model_config = ConfigDict(extra="forbid")
    path: Annotated[str, PATH] = Field(description="JSON or JSONL file, or a folder of them")
    format: DataFormat = Field("auto", description="sharegpt, alpaca, or auto (detected per file)")


class TrainerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # model
    model_name_or_path: Annotated[str, PATH] = Field(description="model folder (HF layout)")
    trust_remote_code: bool = Field(False, description="run the model folder's own Python code (auto_map)")
    template: ChatFamily = Field("auto", description="chat family: small (0.5B/1.8B/4B), 7b, or auto")
    # method
    finetuning_type: FinetuningType = "lora"
    lora_rank: int = Field(8, ge=1)
    lora_alpha: int | None = Field(None, ge=1, description="default: 2 x lora_rank")
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    lora_target: str = Field("all", description="'all' or comma-separated module names")
    freeze_trainable_layers: int = Field(2, description="freeze: train the last N layers (negative: the first N)")
    # data
    dataset: list[str] = Field(default_factory=list, description="names in dataset_dir/dataset_info.json")
    dataset_dir: Annotated[str | None, PATH] = None
    data_files: list[DataFile] = Field(default_factory=list, description="files read without dataset_info.json")
    cutoff_len: int = Field(2048, ge=16)
    packing: bool = False
    train_on_prompt: bool = False
    mask_history: bool = False
    train_assistant_header: bool = False
    skip_invalid_samples: bool = False
    template_check_samples: int = Field(TEMPLATE_CHECK_SAMPLES, ge=0, description="conversations rendered by the "
                                        "model's own chat_template at start-up and compared token for token (0: off)")
    max_samples: int | None = Field(None, ge=1, description="use at most the first N samples of each dataset")
    preprocessing_num_workers: int | None = Field(None, ge=1, description="processes for validation and "
                                                  "tokenization (default: up to 8, by data size)")
    val_size: float = Field(0.0, ge=0)
    data_cache_dir: Annotated[str | None, PATH] = Field(
        None, description="where global rank 0 keeps the prepared (tokenized, packed) data for every rank and later "
                          "runs, one folder per content and settings (default: output_dir/.hyft-data-cache)")
    # training
    learning_rate: float = Field(1e-4, gt=0)
    num_train_epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, ge=-1)
    per_device_train_batch_size: int = Field(1, ge=1)
    per_device_eval_batch_size: int | None = Field(None, ge=1, description="default: the training batch size")
    gradient_accumulation_steps: int = Field(1, ge=1)
    lr_scheduler_type: LrSchedulerType = "cosine"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)  # transformers reads >= 1 as steps
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    seed: int = 42
    dataloader_num_workers: int = Field(0, ge=0)
    ddp_timeout: int = Field(1800, ge=1, description="seconds a collective may wait for the other ranks")
    preflight_timeout: int = Field(600, ge=1, description="seconds the gang may take to assemble: a worker node "
                                   "waits this long for the master's address (exit 3), the master for every node "
                                   "to join (exit 6), each rank for the preflight all-reduce (exit 7)")
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int | None = Field(None, ge=1)
    save_only_model: bool = Field(False, description="checkpoints without optimizer state: smaller, but a restart "
                                  "cannot resume from them and starts over")
    resume_from_checkpoint: Annotated[str | bool | None, PATH] = Field(
        None, description="a checkpoint to start from when output_dir has none of its own (hyft resumes its own)")
    eval_strategy: Literal["no", "steps"] | None = Field(None, description="steps: evaluate the val_size split "
                                                         "every eval_steps (default logging_steps)")
    eval_steps: int | None = Field(None, ge=1)
    early_stopping_steps: int | None = Field(None, ge=1, description="stop after N evals without improvement")
    output_dir: Annotated[str, PATH] = "output"
    # DeepSpeed: a raw JSON (path or dict, like LLaMA-Factory's) or hyft's generated config
    deepspeed: Annotated[str | dict[str, Any] | None, PATH] = None
    zero_stage: Literal[0, 2, 3] = 3
    offload_optimizer: bool = True
    offload_param: bool = True
    deepspeed_overrides: dict[str, Any] = Field(default_factory=dict)
    # observability
    metrics_port: int | None = Field(9090, ge=1, le=65535)
    job_name: str | None = None
    report_to: list[Literal["tensorboard"]] = Field(default_factory=list, description="also log to TensorBoard "
                                                    "(output_dir/runs)")
    plot_loss: bool = Field(True, description="write output_dir/loss.png")

    # keys accepted without effect, said once at start-up (not part of the schema)
    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return self._notes

    @property
    def evaluating(self) -> bool:
        return bool(self.val_size) and self.eval_strategy != "no" and (
            self.eval_steps is not None or self.eval_strategy == "steps")

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
        if self.save_only_model and self.early_stopping_steps and (self.deepspeed or self.zero_stage):
            raise ValueError("save_only_model and early_stopping_steps exclude each other under DeepSpeed: the best "
                             "checkpoint could not be reloaded at the end; drop one of them")
        return self


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
