"""A value other than its default for each setting of hyft_trainer/knobs.py (tests/unit/test_knobs.py,
and test_spec_coverage.py for the spec fields they make)."""
from __future__ import annotations

import typing

from hyft_trainer import knobs

BASE = {"model_name_or_path": "/m", "data_files": [{"path": "/d.jsonl"}]}
# Values no generic rule can pick (or that need a companion to stay valid).
CHANGED = {
    "model_name_or_path": "/other", "lora_target": "q_proj,v_proj", "output_dir": "/elsewhere",
    "data_files": [{"path": "/e.jsonl"}], "dataset": ["chat"], "dataset_dir": "/data",
    "deepspeed": {"zero_optimization": {"stage": 2}},
    "deepspeed_overrides": {"zero_optimization": {"overlap_comm": True}},
    "report_to": ["tensorboard"], "resume_from_checkpoint": "/ckpt", "job_name": "job", "data_cache_dir": "/cache",
    "eval_strategy": "steps", "zero_stage": 2, "offload_optimizer": False, "offload_param": True, "val_size": 0.5,
    "gradient_checkpointing": False,
    "warmup_ratio": 0.5, "freeze_trainable_layers": -2, "additional_target": "embed_tokens",
    "freeze_trainable_modules": "mlp", "freeze_extra_modules": "norm", "default_system": "Be brief.",
    "interleave_probs": "0.8,0.2", "quantization_bit": 4,
}
COMPANIONS = {"freeze_trainable_layers": {"finetuning_type": "freeze"}, "zero_stage": {"offload_param": False},
              "freeze_trainable_modules": {"finetuning_type": "freeze"},
              "freeze_extra_modules": {"finetuning_type": "freeze"},
              "interleave_probs": {"mix_strategy": "interleave_over"}}


def changed(knob: knobs.Knob):
    if knob.key in CHANGED:
        return CHANGED[knob.key]
    value = knob.default
    choices = typing.get_args(knob.type) if typing.get_origin(knob.type) is typing.Literal else ()
    if choices:
        return next(c for c in choices if c != value)
    if isinstance(value, bool):
        return not value
    if value is None:  # optional: the lower bound, or 2
        return knob.bounds.get("ge", 1) + 1
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.25
    raise AssertionError(f"{knob.key}: add a changed value to CHANGED")
