"""The model as a method trains it: LoRA (peft) or frozen layers, the attention kernel, and what a
quantized base model allows."""
from __future__ import annotations

from . import attention
from .config import ConfigError, TrainerConfig


def method_settings(config: TrainerConfig, layers: int) -> dict:
    """LoRA: peft's LoraConfig keywords; freeze: which of the model's decoder layers train."""
    if config.finetuning_type == "lora":
        targets = "all-linear" if config.lora_target == "all" else [t.strip() for t in config.lora_target.split(",")]
        return {"r": config.lora_rank, "lora_alpha": config.lora_alpha or 2 * config.lora_rank,
                "lora_dropout": config.lora_dropout, "target_modules": targets, "task_type": "CAUSAL_LM"}
    if config.finetuning_type == "freeze":
        n = config.freeze_trainable_layers
        return {"trainable_layers": sorted(range(layers - n, layers) if n > 0 else range(-n))}
    return {}


def apply_method(model, config: TrainerConfig):
    if config.finetuning_type == "lora":
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(**method_settings(config, 0)))
    if config.finetuning_type == "freeze":
        layers = model.model.layers
        trainable = method_settings(config, len(layers))["trainable_layers"]
        for p in model.parameters():
            p.requires_grad = False
        for i in trainable:
            for p in layers[i].parameters():
                p.requires_grad = True
    return model


def attention_kernel(config: TrainerConfig, on_gpu: bool) -> tuple[str, str]:
    """attention.choose for this process's GPU (registering varlen with transformers)."""
    import importlib.util

    import torch

    capability = torch.cuda.get_device_capability() if on_gpu else None
    try:
        kernel = attention.choose(config.attn_implementation, on_gpu, capability, config.bf16 or config.fp16,
                                  importlib.util.find_spec("flash_attn") is not None)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    attention.register()
    return kernel


def check_model(config: TrainerConfig, model_config) -> None:
    quant = getattr(model_config, "quantization_config", None)
    method = (quant or {}).get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    if method in ("gptq", "awq"):
        if config.zero_stage == 3 or config.deepspeed is not None:
            raise ConfigError(f"the base model is {method.upper()}-quantized: it cannot be sharded by ZeRO-3; use "
                              "zero_stage 0 or 2 with finetuning_type lora")
        if config.finetuning_type != "lora":
            raise ConfigError(f"the base model is {method.upper()}-quantized: only LoRA can train it")
