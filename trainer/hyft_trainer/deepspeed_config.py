"""The DeepSpeed JSON, generated from the trainer config (pure).

"auto" values are filled by transformers from the training arguments, so batch
sizes, learning rate and precision can never disagree. User overrides are merged
on top; a raw DeepSpeed JSON (path or dict, like LLaMA-Factory's
ds_z3_offload_config.json) replaces the generated one.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from .config import ConfigError, TrainerConfig


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def generated(config: TrainerConfig) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": config.zero_stage, "overlap_comm": False, "contiguous_gradients": True}
    if config.zero_stage == 3:
        zero.update({
            "sub_group_size": 1_000_000_000,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1_000_000_000,
            "stage3_max_reuse_distance": 1_000_000_000,
            # full fine-tuning exports consolidated 16-bit weights instead of ZeRO shards
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    if config.zero_stage >= 2:
        if config.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if config.offload_param:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
                 "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
        "steps_per_print": 1_000_000_000,
        "wall_clock_breakdown": False,
    }


def load_raw(value: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        return copy.deepcopy(value)
    try:
        data = json.loads(Path(value).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"deepspeed: cannot read {value}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"deepspeed: {value} must hold a JSON object")
    return data


def deepspeed_config(config: TrainerConfig, world_size: int) -> dict[str, Any] | None:
    """None for plain DDP (zero_stage 0 and no raw JSON)."""
    if config.deepspeed is not None:
        ds = merge(load_raw(config.deepspeed), config.deepspeed_overrides)
    elif config.zero_stage == 0:
        return None
    else:
        ds = merge(generated(config), config.deepspeed_overrides)
    check_batch_sizes(ds, config, world_size)
    return ds


def check_batch_sizes(ds: dict[str, Any], config: TrainerConfig, world_size: int) -> None:
    """DeepSpeed asserts train_batch_size == micro x accumulation x world; say it in our words first."""
    micro = ds.get("train_micro_batch_size_per_gpu", "auto")
    accumulation = ds.get("gradient_accumulation_steps", "auto")
    total = ds.get("train_batch_size", "auto")
    micro = config.per_device_train_batch_size if micro == "auto" else micro
    accumulation = config.gradient_accumulation_steps if accumulation == "auto" else accumulation
    if micro != config.per_device_train_batch_size:
        raise ConfigError(f"deepspeed: train_micro_batch_size_per_gpu {micro} != per_device_train_batch_size "
                          f"{config.per_device_train_batch_size}")
    if accumulation != config.gradient_accumulation_steps:
        raise ConfigError(f"deepspeed: gradient_accumulation_steps {accumulation} != "
                          f"gradient_accumulation_steps {config.gradient_accumulation_steps} in the config")
    if total != "auto" and total != micro * accumulation * world_size:
        raise ConfigError(f"deepspeed: train_batch_size {total} != per_device_train_batch_size {micro} x "
                          f"gradient_accumulation_steps {accumulation} x world size {world_size} "
                          f"(= {micro * accumulation * world_size}); set it to \"auto\"")
