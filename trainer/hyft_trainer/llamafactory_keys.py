"""LLaMA-Factory's keys that hyft reads in its own way: its spellings of hyft settings (READ_AS,
translate), keys without effect here (accepted and reported once at start-up, with the reason),
and keys refused because ignoring them would silently change the result (the message says what
to do). keys.py gives every other key its fate.

Pure and torch-free: the operator image imports it through config.py.
"""
from __future__ import annotations

from typing import Any

from . import fsdp

LLAMAFACTORY_TEMPLATES = ("hunyuan", "hunyuan_small")

_MEDIA = "Hunyuan's text models take no images, audio or video"
_RAY = "hyft places processes with its operator's pods and torch's launcher, not Ray"

# Accepted; has no effect here, because ...
NO_EFFECT = {
    "overwrite_cache": "the preprocessing cache is keyed by the data files' size, modification time and the "
                       "settings, so it is never stale",
    "overwrite_output_dir": "hyft resumes from the newest complete checkpoint in output_dir (that is how a restarted "
                            "gang continues); to start over, use a new output_dir",
    "tokenized_path": "hyft caches the tokenized data itself, keyed by content, and always goes on to train",
    "enable_thinking": "each assistant turn is rendered with the thinking markup its sample has (slow, fast or none)",
    "print_param_status": "the trainable parameter count is in the log",
    "logging_dir": "transformers 5 removed it: TensorBoard logs go to output_dir/runs",
    "cache_dir": "the model is read from model_name_or_path's folder, never downloaded",
    **dict.fromkeys(("hf_hub_token", "ms_hub_token", "om_hub_token"), "the trainer pods reach no model hub: the "
                    "model is read from model_name_or_path's folder"),
    **dict.fromkeys(("infer_backend", "infer_dtype", "use_kv_cache", "offload_folder"),
                    "an inference setting, not training"),
    **dict.fromkeys(("image_max_pixels", "image_min_pixels", "video_max_pixels", "video_min_pixels", "video_fps",
                     "video_maxlen", "audio_sampling_rate", "media_dir", "image_dir", "freeze_vision_tower",
                     "freeze_multi_modal_projector", "freeze_language_model", "use_audio_in_video"), _MEDIA),
    **dict.fromkeys(("ray_run_name", "ray_storage_path", "ray_storage_filesystem", "ray_num_workers",
                     "resources_per_worker", "placement_strategy", "ray_init_kwargs"), _RAY),
}

# Refused when set to anything but off (False, None, 0, ""); the text says what to do.
REFUSED = {
    "use_unsloth": "unsloth is not supported: remove the key",
    "use_dora": "DoRA is not supported: remove the key for plain LoRA",
    "pissa_init": "PiSSA is not supported: remove the key for plain LoRA initialisation",
    "lora_rank_pattern": "per-module LoRA ranks are not supported: one lora_rank applies to every target",
    "rope_scaling": "RoPE scaling is not supported: the model's own RoPE settings are used",
    "eval_dataset": "separate evaluation datasets are not supported: use val_size to split one off",
    "streaming": "streaming datasets are not supported: the data is read from local files",
    "use_galore": "GaLore is not supported: remove the key",
    "use_badam": "BAdam is not supported: remove the key",
    "use_adam_mini": "Adam-mini is not supported: remove the key",
    "use_llama_pro": "LLaMA Pro is not supported: remove the key",
    "train_from_scratch": "hyft fine-tunes pretrained weights only",
    "adapter_name_or_path": "starting from an existing adapter is not supported: merge it into the model first",
}


# LLaMA-Factory's spellings, read as hyft's settings by translate()
READ_AS = {
    "stage": "sft only: hyft trains supervised fine-tuning",
    "do_train": "true only: hyft always trains",
    "disable_gradient_checkpointing": "gradient_checkpointing: false",
    "flash_attn": "attn_implementation (auto, disabled: eager, sdpa, fa2: flash_attention_2)",
    "neat_packing": "packing (hyft's packing never attends across samples)",
    "activation_checkpointing": "gradient_checkpointing (transformers 5's new name for it)",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs (transformers 5's new name for it)",
    "use_reentrant_gc": "activation_checkpointing_kwargs: {use_reentrant: ...}",
    "fsdp": "engine: fsdp (full_shard, shard_grad_op: fsdp_config.reshard_after_forward; offload: offload_param "
            "and offload_optimizer)",
}


def off(value: Any) -> bool:
    return value is None or value is False or value == 0 or value == ""


def translate(data: dict[str, Any], notes: list[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """(the config with LLaMA-Factory's spellings turned into hyft's, problems); notes: gets what is read
    without effect inside a key (fsdp_config's FSDP1 keys)."""
    data = dict(data)
    problems: list[str] = []
    fsdp.translate(data, problems, [] if notes is None else notes)
    if isinstance(data.get("dataset"), str):  # LLaMA-Factory writes "a,b"
        data["dataset"] = [d.strip() for d in data["dataset"].split(",") if d.strip()]
    if data.get("template") in LLAMAFACTORY_TEMPLATES:
        # LLaMA-Factory maps its `hunyuan` template to every Hunyuan model, though the small models use
        # other tokens; the tokenizer's own special tokens decide here.
        data["template"] = "auto"
    stage = data.pop("stage", "sft")
    if stage != "sft":
        problems.append(f"stage: hyft trains supervised fine-tuning only (stage: sft), not {stage!r}")
    if data.pop("do_train", True) is not True:
        problems.append("do_train: hyft always trains; remove the key")
    if data.pop("disable_gradient_checkpointing", False):  # LLaMA-Factory checkpoints unless told not to
        data["gradient_checkpointing"] = False
    # transformers 5 renamed gradient checkpointing to activation checkpointing; hyft's setting keeps
    # LLaMA-Factory's name, its keywords go on under the new one
    for spelling, key in (("activation_checkpointing", "gradient_checkpointing"),
                          ("gradient_checkpointing_kwargs", "activation_checkpointing_kwargs")):
        if spelling in data:
            value = data.pop(spelling)
            if key in data and data[key] != value:
                problems.append(f"{spelling}: another name of {key}, which says otherwise: set one of them")
            data[key] = value
    if "use_reentrant_gc" in data:  # LLaMA-Factory's spelling of a checkpointing keyword
        kwargs = data.get("activation_checkpointing_kwargs")
        data["activation_checkpointing_kwargs"] = {**(kwargs if isinstance(kwargs, dict) else {}),
                                                   "use_reentrant": data.pop("use_reentrant_gc")}
    if "flash_attn" in data:
        flash = data.pop("flash_attn")
        if flash not in FLASH_ATTN:
            problems.append(f"flash_attn: {flash!r} is not one of {', '.join(FLASH_ATTN)}")
        else:
            data["attn_implementation"] = FLASH_ATTN[flash]
    if data.pop("neat_packing", False):
        data["packing"] = True  # hyft's packing never attends across samples: it is neat packing
    report_to = data.get("report_to")
    if report_to is not None:
        data["report_to"] = _report_to(report_to, problems)
    return data, problems


# LLaMA-Factory's flash_attn values as transformers' attn_implementation
FLASH_ATTN = {"auto": "auto", "disabled": "eager", "sdpa": "sdpa", "fa2": "flash_attention_2"}
REPORTERS = ("tensorboard",)


def _report_to(value: Any, problems: list[str]) -> list[str]:
    """transformers' report_to: "none", "all", one name or a list; hyft ships TensorBoard's writer."""
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else None
    if names is None or not all(isinstance(n, str) for n in names):
        problems.append(f"report_to: expected a name or a list of names, got {value!r}")
        return []
    names = [n for n in names if n != "none"]
    if "all" in names:
        return list(REPORTERS)
    unknown = [n for n in names if n not in REPORTERS]
    if unknown:
        problems.append(f"report_to: {', '.join(unknown)} is not in the hyft image; use tensorboard or none "
                        "(hyft also exports Prometheus metrics)")
    return [n for n in names if n in REPORTERS]
