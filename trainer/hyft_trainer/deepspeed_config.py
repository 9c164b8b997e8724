"""The DeepSpeed JSON: generated from the trainer config, or brought (pure).

"auto" values are filled by transformers from the training arguments. User
overrides are merged on top; a raw DeepSpeed JSON (path or dict, like
LLaMA-Factory's ds_z3_offload_config.json) replaces the generated one, and
`settle` reconciles its concrete values with the training arguments.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ConfigError, TrainerConfig
from .fsdp import FSDP


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def generated(config: TrainerConfig, on_gpu: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": config.zero_stage, "contiguous_gradients": True}
    if not on_gpu:  # on GPU DeepSpeed's own default: communication overlaps the backward pass under ZeRO-3
        zero["overlap_comm"] = False
    if config.zero_stage == 3:
        zero.update({
            "sub_group_size": 1_000_000_000,
            # Tencent's Hunyuan recipe's (ds_zero3_offload_hy.json): 1e8 gradient elements per reduction, 200 MB
            # in 16 bits, within the estimate's NCCL allowance. transformers' auto (hidden_size squared) splits a
            # narrow model's gradients into many small collectives: 22 % fewer tokens/s on the bench's 512-wide
            # model (bench/default_vs_recipe.py)
            "reduce_bucket_size": 100_000_000,
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


@dataclass(frozen=True)
class Settled:
    """What a run uses: the config with values taken from the DeepSpeed JSON and the device, the JSON
    itself (None for plain DDP), and one line for each change made."""

    config: TrainerConfig
    deepspeed: dict[str, Any] | None
    notes: tuple[str, ...] = ()


# DeepSpeed keys that must agree with a training argument (transformers refuses a mismatch at step 0).
AGREEING = (
    (("train_micro_batch_size_per_gpu",), "per_device_train_batch_size"),
    (("gradient_accumulation_steps",), "gradient_accumulation_steps"),
    (("gradient_clipping",), "max_grad_norm"),
    (("bf16", "enabled"), "bf16"),
    (("fp16", "enabled"), "fp16"),
    (("optimizer", "params", "lr"), "learning_rate"),
    (("optimizer", "params", "weight_decay"), "weight_decay"),
)


def _get(ds: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        ds = ds.get(key) if isinstance(ds, dict) else None
    return ds


def nvcc_available() -> bool:
    """Whether DeepSpeed could JIT-build its CUDA ops here (the trainer image has no nvcc)."""
    import os
    import shutil

    return shutil.which("nvcc") is not None or Path(os.environ.get("CUDA_HOME", "/nonexistent"), "bin", "nvcc").exists()


def settle_optimizer(ds: dict[str, Any], on_gpu: bool, nvcc: bool) -> tuple[dict[str, Any], str | None]:
    """A brought JSON's Adam/AdamW on GPU without CPU offload makes DeepSpeed build FusedAdam, which needs
    nvcc: without one, torch's own fused AdamW (the same update, a CUDA kernel torch ships) instead."""
    optimizer = ds.get("optimizer")
    if not on_gpu or nvcc or not isinstance(optimizer, dict) or str(optimizer.get("type", "")).lower() not in (
            "adam", "adamw"):
        return ds, None
    params = optimizer.get("params") or {}
    offloaded = _get(ds, ("zero_optimization", "offload_optimizer", "device")) in ("cpu", "nvme")
    if offloaded or params.get("torch_adam"):
        return ds, None
    ds = merge(ds, {"optimizer": {"params": {"torch_adam": True, "fused": True}}})
    return ds, (f"deepspeed optimizer {optimizer['type']}: torch's fused AdamW instead of DeepSpeed's FusedAdam, "
                "which needs nvcc to build (not in this image); set optimizer.params.torch_adam to choose yourself")


def settle(config: TrainerConfig, world_size: int, on_gpu: bool, nvcc: bool = False) -> Settled:
    """Reconcile the DeepSpeed JSON with the training arguments before transformers sees either: a
    value set in one place only is taken by the other, a value set differently in both is an error
    naming both, and half precision without a GPU is turned off in both (with a note). nvcc: whether
    DeepSpeed can build CUDA ops here (settle_optimizer)."""
    stage_unset = config.zero_stage == "auto" and config.engine != FSDP  # FSDP2 has no stage
    if config.deepspeed is None and config.zero_stage != 0 and \
            (stage_unset or "auto" in (config.offload_optimizer, config.offload_param)):
        raise ValueError("zero_stage or offload auto reached settle: offload.resolve decides them first")
    if config.deepspeed is not None:
        ds = merge(load_raw(config.deepspeed), config.deepspeed_overrides)
    elif config.engine == FSDP and config.deepspeed_overrides:
        raise ConfigError("deepspeed_overrides: DeepSpeed's settings, but engine is fsdp: remove them")
    elif config.zero_stage == 0 or config.engine == FSDP:
        ds = None
    else:
        check_overrides(config)
        ds = merge(generated(config, on_gpu), config.deepspeed_overrides)
    notes: list[str] = []
    update: dict[str, Any] = {}
    for path, field in AGREEING if ds is not None else ():
        value, ours = _get(ds, path), getattr(config, field)
        if value is None or value == "auto" or value == ours:
            continue
        where = f"deepspeed {'.'.join(path)}"
        if field in config.model_fields_set:
            raise ConfigError(f"{where} is {json.dumps(value)} but {field} is {json.dumps(ours)}: make them "
                              f"agree, or write \"auto\" in the DeepSpeed JSON to use {field}")
        update[field] = value
        notes.append(f"{field}: {json.dumps(value)}, from {where}")
    config = config.model_copy(update=update)
    if config.bf16 and config.fp16:
        raise ConfigError("bf16 and fp16 are both on (between the config and the DeepSpeed JSON): choose one")
    if not on_gpu and (config.bf16 or config.fp16):
        precision = "bf16" if config.bf16 else "fp16"
        config = config.model_copy(update={"bf16": False, "fp16": False})
        if ds is not None:
            ds = merge(ds, {"bf16": {"enabled": False}, "fp16": {"enabled": False}})
        notes.append(f"{precision}: off, no GPU here: training in float32"
                     + (" (config and DeepSpeed JSON)" if ds is not None else ""))
    if config.engine == FSDP and not on_gpu and (config.offload_param or config.offload_optimizer):
        config = config.model_copy(update={"offload_param": False, "offload_optimizer": False})
        notes.append("offload: off, no GPU here: FSDP2's CPU offload moves GPU state to the host, where it is")
    if ds is not None:
        check_batch_sizes(ds, config, world_size)
        ds, note = settle_optimizer(ds, on_gpu, nvcc)
        notes += [note] if note else []
    return Settled(config, ds, tuple(notes))


def check_overrides(config: TrainerConfig) -> None:
    """Overrides refine the generated config; one that contradicts the ZeRO stage or an offload
    switch would silently win over the setting the user (and `hyft estimate`) reads."""
    zero = config.deepspeed_overrides.get("zero_optimization")
    if not isinstance(zero, dict):
        return
    if "stage" in zero and zero["stage"] != config.zero_stage:
        raise ConfigError(f"zero_optimization.stage is {json.dumps(zero['stage'])} but zero_stage is "
                          f"{config.zero_stage}: set the stage itself, not an override")
    for key, field in (("offload_optimizer", "offload_optimizer"), ("offload_param", "offload_param")):
        device = _get(zero, (key, "device"))
        if device is None:
            continue
        offloaded = device in ("cpu", "nvme")
        if offloaded != getattr(config, field):
            raise ConfigError(f"zero_optimization.{key}.device is {json.dumps(device)} but {field} is "
                              f"{json.dumps(getattr(config, field))}: set {field} itself, not an override")


def check_batch_sizes(ds: dict[str, Any], config: TrainerConfig, world_size: int) -> None:
    """DeepSpeed asserts train_batch_size == micro x accumulation x world; say it in our words first."""
    total = ds.get("train_batch_size", "auto")
    micro, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    if total != "auto" and total != micro * accumulation * world_size:
        raise ConfigError(f"deepspeed: train_batch_size {total} != per_device_train_batch_size {micro} x "
                          f"gradient_accumulation_steps {accumulation} x world size {world_size} "
                          f"(= {micro * accumulation * world_size}); set it to \"auto\"")
