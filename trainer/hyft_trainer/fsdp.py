"""The FSDP2 engine's settings (engine: fsdp): LLaMA-Factory's and transformers' `fsdp` and `fsdp_config` keys,
and accelerate's FSDP config keys (its `fsdp_` prefix dropped, as transformers drops it), read as hyft's settings
and the fsdp_config that hyft hands to transformers.

FSDP2 (torch's fully_shard) shards parameters, gradients and optimizer states like ZeRO-3, with the decoder
layer as the unit; its CPU offload moves all three to host memory at once (parameters and optimizer, never one
alone). FSDP1-only settings are translated where FSDP2 has the same meaning, and said to have no effect where
FSDP2 does it itself.

Pure and torch-free: the operator image imports it through config.py.
"""
from __future__ import annotations

from typing import Any

DEEPSPEED, FSDP = "deepspeed", "fsdp"

# FSDP1's sharding strategies as FSDP2's reshard_after_forward (accelerate numbers them from 1)
_RESHARD = {"FULL_SHARD": True, "1": True, "SHARD_GRAD_OP": False, "2": False}
_FSDP1_ONLY = ("FSDP1's setting: FSDP2 prefetches, keeps the original parameters and syncs the module states "
               "itself")

# fsdp_config keys hyft passes on to transformers as they are
PASSED = {
    "reshard_after_forward": "true: free each layer's gathered parameters after its forward (full_shard); false: "
                             "keep them until the backward (shard_grad_op: faster, more memory)",
    "transformer_layer_cls_to_wrap": "the module classes that are FSDP units (default: the model's decoder layer)",
    "auto_wrap_policy": "TRANSFORMER_BASED_WRAP (default) or SIZE_BASED_WRAP",
    "min_num_params": "SIZE_BASED_WRAP: the parameters of one unit",
    "cpu_ram_efficient_loading": "accelerate shards the model from global rank 0's weights, broadcast; with "
                                 "transformers 5 every rank still reads the whole model at load, so it saves no "
                                 "host memory (report.json: host_model_bytes_at_load_by_rank)",
}
# fsdp_config keys read as hyft's settings: the setting
READ_AS = {
    "cpu_offload": "offload_param and offload_optimizer",
    "offload_params": "offload_param and offload_optimizer",
    "activation_checkpointing": "gradient_checkpointing",
    "sharding_strategy": "reshard_after_forward (FULL_SHARD: true, SHARD_GRAD_OP: false)",
    "version": "2 (FSDP2); a version 1 config is read as FSDP2 (transformers is removing FSDP1)",
}
NO_EFFECT = {
    "state_dict_type": "hyft's checkpoints are always sharded (torch's distributed checkpoint, which resumes on "
                       "another world size); the export is a whole model either way",
    **dict.fromkeys(("backward_prefetch", "forward_prefetch", "use_orig_params", "sync_module_states",
                     "limit_all_gathers"), _FSDP1_ONLY),
}
REFUSED = dict.fromkeys(("xla", "xla_fsdp_v2", "xla_fsdp_grad_ckpt", "xla_fsdp_settings"),
                        "hyft trains on GPUs or CPUs, not TPUs: remove it")


def _bool(value: Any) -> bool | None:
    """transformers reads its fsdp_config flags as strings too ("true")."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    return True if text in ("true", "1", "yes") else False if text in ("false", "0", "no") else None


def translate(data: dict[str, Any], problems: list[str], notes: list[str]) -> None:
    """Read a config's `fsdp` and `fsdp_config` (in place): `fsdp` set turns engine fsdp on; its options and
    the fsdp_config keys that are hyft's settings become those settings; fsdp_config keeps the rest (a
    rendered config read again says the same notes). What cannot be read is a problem naming the key."""
    options, raw = data.pop("fsdp", None), data.pop("fsdp_config", None)
    kept: dict[str, Any] = {}
    if options not in (None, False, "", []):
        if data.setdefault("engine", FSDP) != FSDP:
            problems.append(f"fsdp: asks for FSDP, but engine is {data['engine']!r}: set one of them")
        items = options.split() if isinstance(options, str) else options if isinstance(options, list) else []
        for item in items:
            if item in ("full_shard", "shard_grad_op"):
                _agree(kept, "reshard_after_forward", item == "full_shard", f"fsdp: {item}", problems)
            elif item == "offload":
                for key in ("offload_param", "offload_optimizer"):
                    _agree(data, key, True, "fsdp: offload", problems)
            elif item in ("hybrid_shard", "hybrid_shard_zero2", "no_shard"):
                problems.append(f"fsdp: {item} is FSDP1's (transformers is removing it): hyft runs FSDP2; write "
                                "full_shard (or shard_grad_op: keep the layers gathered until the backward)")
            elif item != "auto_wrap":
                problems.append(f"fsdp: unknown option {item!r} (full_shard, shard_grad_op, offload, auto_wrap)")
    if raw is not None and not isinstance(raw, dict):
        problems.append("fsdp_config: write the settings as a mapping (an accelerate config's fsdp_config block, "
                        "or transformers' fsdp_config), not a file path")
        raw = None
    for name, value in (raw or {}).items():
        key, where = name.removeprefix("fsdp_"), f"fsdp_config.{name}"
        if key == "reshard_after_forward" or key == "sharding_strategy":
            # FSDP1 spells it as a strategy (FULL_SHARD, SHARD_GRAD_OP, or accelerate's numbers)
            reshard = _bool(value) if _bool(value) is not None else _RESHARD.get(str(value).upper())
            if reshard is None:
                problems.append(f"{where}: {value!r}: FSDP2 shards fully (true, FULL_SHARD) or keeps the layers "
                                "gathered until the backward (false, SHARD_GRAD_OP); FSDP1's other strategies "
                                "are not run by hyft")
            else:
                _agree(kept, "reshard_after_forward", reshard, where, problems)
        elif key in PASSED:
            kept[key] = value
        elif key == "version":  # kept, like the keys without effect: the trainer says its note again
            if str(value) not in ("1", "2"):
                problems.append(f"{where}: 1 or 2, got {value!r}")
            elif str(value) == "1":
                notes.append(f"{where}: 1: read as FSDP2 (hyft runs FSDP2; transformers is removing FSDP1)")
            kept[key] = value
        elif key in ("cpu_offload", "offload_params"):
            for setting in ("offload_param", "offload_optimizer"):
                _agree(data, setting, _bool(value), where, problems)
        elif key == "activation_checkpointing":
            _agree(data, "gradient_checkpointing", _bool(value), where, problems)
        elif key in NO_EFFECT:
            notes.append(f"{where}: has no effect here: {NO_EFFECT[key]}")
            kept[key] = value
        elif key in REFUSED:
            if _bool(value) is not False and value not in (None, {}):
                problems.append(f"{where}: {REFUSED[key]}")
        else:
            problems.append(f"{where}: unknown key (hyft reads {', '.join([*PASSED, *READ_AS, *NO_EFFECT])})")
    if options not in (None, False, "", []) or raw is not None:
        data["fsdp_config"] = kept


def _agree(target: dict[str, Any], key: str, value: Any, where: str, problems: list[str]) -> None:
    """target[key] = value, unless the config says otherwise already."""
    if value is None:
        problems.append(f"{where}: true or false")
    elif target.get(key, value) not in (value, "auto"):
        problems.append(f"{where}: means {key}: {value}, but {key} is {target[key]}: set one of them")
    else:
        target[key] = value


def arguments(config) -> dict[str, Any]:
    """transformers' fsdp, fsdp_config and activation_checkpointing keywords for engine fsdp: FSDP2, the decoder
    layer as the unit (the model's own _no_split_modules unless the config names classes), sharded checkpoints,
    the offload and gradient checkpointing as decided. Checkpointing is FSDP's own (the Trainer's gathers each
    layer's parameters once more in the backward), except for LoRA: peft 0.21 finds no adapter weights in a
    model whose layers FSDP wrapped for checkpointing, and its checkpoints would hold none."""
    recompute, lora = bool(config.gradient_checkpointing), config.finetuning_type == "lora"
    return {"fsdp": True, "activation_checkpointing": recompute and lora, "fsdp_config": {
        **{k: v for k, v in config.fsdp_config.items() if k in PASSED}, "version": 2,
        "state_dict_type": "SHARDED_STATE_DICT", "cpu_offload": bool(config.offload_param),
        "activation_checkpointing": recompute and not lora}}
