"""The model as a method trains it: LoRA (peft) or frozen layers, the attention kernel, and what a
quantized base model allows."""
from __future__ import annotations

import importlib.util
import os

from . import attention
from .config import QUANTIZED_UNDER_ZERO3, ConfigError, TrainerConfig
from .fsdp import FSDP
from .moe import moe_blocks


def _names(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").split(",") if t.strip()]


# lora_target `all` on a mixture of experts: the attention projections, as Tencent's own A13B script
# (peft's all-linear would also adapt the routers and the shared expert)
MOE_LORA_ALL = ["q_proj", "k_proj", "v_proj", "o_proj"]


def method_settings(config: TrainerConfig, layers: int, moe: bool = False) -> dict:
    """LoRA: peft's LoraConfig keywords; freeze: which of the model's decoder layers train, which of their
    modules (None: all), and which modules outside them."""
    if config.finetuning_type == "lora":
        if config.lora_target == "all":
            targets = MOE_LORA_ALL if moe else "all-linear"
        else:
            targets = _names(config.lora_target)
        settings = {"r": config.lora_rank, "lora_alpha": config.lora_alpha or 2 * config.lora_rank,
                    "lora_dropout": config.lora_dropout, "target_modules": targets, "task_type": "CAUSAL_LM",
                    "use_rslora": config.use_rslora}
        if extra := _names(config.additional_target):
            settings["modules_to_save"] = extra
        return settings
    if config.finetuning_type == "freeze":
        n = config.freeze_trainable_layers
        modules = config.freeze_trainable_modules
        return {"trainable_layers": sorted(range(layers - n, layers) if n > 0 else range(-n)),
                "trainable_modules": None if modules == "all" else _names(modules),
                "extra_modules": _names(config.freeze_extra_modules)}
    return {}


def _named(name: str, module: str) -> bool:
    """Whether a parameter's dotted name lies in a module of that (dotted) name."""
    return f".{module}." in f".{name}."


def _unmatched(key: str, wanted: list[str], names: list[str]) -> None:
    if missing := [m for m in wanted if not any(_named(n, m) for n in names)]:
        raise ConfigError(f"{key}: the model has no module {', '.join(missing)}")


def parameter_targets(model, targets) -> dict:
    """A named target that is no linear layer but holds weights itself (a MoE's `experts`: one 3-D tensor
    per projection) is adapted through peft's target_parameters, each of its weights."""
    import torch

    if not isinstance(targets, list):
        return {}
    holders = {t: sorted({p for name, m in model.named_modules() if name.split(".")[-1] == t
                          and not isinstance(m, torch.nn.Linear) for p, _ in m.named_parameters(recurse=False)})
               for t in targets}
    holders = {t: weights for t, weights in holders.items() if weights}
    if not holders:
        return {}
    return {"target_modules": [t for t in targets if t not in holders],
            "target_parameters": [f"{t}.{w}" for t, weights in holders.items() for w in weights]}


def upcast_norms(model, config: TrainerConfig) -> int:
    """upcast_layernorm without DeepSpeed: the normalisation layers' weights in float32 (autocast then runs the
    rest in half precision). Returns how many tensors it cast."""
    if not config.upcast_layernorm or config.zero_stage or config.deepspeed is not None:
        return 0
    import torch

    cast = 0
    for name, param in model.named_parameters():
        if param.ndim == 1 and "norm" in name and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast


def apply_method(model, config: TrainerConfig):
    if config.finetuning_type == "lora":
        from peft import LoraConfig, get_peft_model

        settings = method_settings(config, 0, moe=bool(moe_blocks(model)))
        if settings["target_modules"] == "all-linear" and base_quantization(model.config) in PREQUANTIZED:
            settings["target_modules"] = linear_names(model)
        settings.update(parameter_targets(model, settings["target_modules"]))
        _unmatched("additional_target", settings.get("modules_to_save", []),
                   [n for n, _ in model.named_parameters()])
        return get_peft_model(model, LoraConfig(**settings))
    if config.finetuning_type == "freeze":
        layers = model.model.layers
        settings = method_settings(config, len(layers))
        modules, extra = settings["trainable_modules"], settings["extra_modules"]
        _unmatched("freeze_trainable_modules", modules or [], [n for n, _ in layers[0].named_parameters()])
        outside = [n for n, _ in model.named_parameters() if not _named(n, "layers")]
        _unmatched("freeze_extra_modules", extra, outside)
        for p in model.parameters():
            p.requires_grad = False
        for i in settings["trainable_layers"]:
            for name, p in layers[i].named_parameters():
                p.requires_grad = modules is None or any(_named(name, m) for m in modules)
        for name, p in model.named_parameters():
            if name in outside and any(_named(name, m) for m in extra):
                p.requires_grad = True
    return model


def attention_kernel(config: TrainerConfig, on_gpu: bool) -> tuple[str, str]:
    """attention.choose for this process's GPU (registering varlen with transformers)."""
    import torch

    capability = torch.cuda.get_device_capability() if on_gpu else None
    try:
        kernel = attention.choose(config.attn_implementation, on_gpu, capability, config.bf16 or config.fp16,
                                  importlib.util.find_spec("flash_attn") is not None)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    attention.register()
    return kernel


# quantization methods whose models arrive quantized (their config's quantization_config), loaded by gptqmodel
PREQUANTIZED = ("gptq", "awq")


def base_quantization(model_config, key: str = "quant_method"):
    """A key of the model's own quantization_config (a GPTQ/AWQ folder's: quant_method, bits), or None; loaded,
    transformers holds it as an object, quant_method an enum."""
    quant = getattr(model_config, "quantization_config", None)
    value = (quant or {}).get(key) if isinstance(quant, dict) else getattr(quant, key, None)
    return str(getattr(value, "value", value)).lower() if key == "quant_method" and value else value


def linear_names(model) -> list[str]:
    """lora_target all on a GPTQ/AWQ base: peft's all-linear matches torch.nn.Linear alone, which gptqmodel's
    quantized layers are not: the leaf names of every linear layer, quantized or not, but the output layer
    (peft's rule); the layers the model left unquantized stay targets."""
    import torch
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    output = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, (torch.nn.Linear, BaseQuantLinear)) and module is not output})


def check_model(config: TrainerConfig, model_config) -> None:
    method = base_quantization(model_config)
    if method and config.quantization_bit:
        raise ConfigError(f"quantization_bit: the base model is {method.upper()}-quantized already (its config's "
                          "quantization_config): remove quantization_bit, or point model_name_or_path at the "
                          "16-bit model")
    if method in PREQUANTIZED:
        if missing := [m for m in ("gptqmodel", "optimum") if importlib.util.find_spec(m) is None]:
            raise ConfigError(f"the base model is {method.upper()}-quantized, and loading it needs "
                              f"{' and '.join(missing)}, which this environment lacks: use hyft's trainer image, "
                              "or install hyft's gptq extra with docker/install-gptq.sh")
        if config.merge_lora:
            raise ConfigError(f"merge_lora: the base model is {method.upper()}-quantized, and a LoRA cannot be merged "
                              "into its quantized weights: leave merge_lora off and merge the exported adapter onto "
                              "the 16-bit model the quantized one was made from (model_name_or_path: that model, "
                              "with peft's PeftModel.from_pretrained(...).merge_and_unload())")
        if config.zero_stage == 3 or config.deepspeed is not None:
            raise ConfigError(f"the base model is {method.upper()}-quantized: it cannot be sharded by "
                              f"{'FSDP2' if config.engine == FSDP else 'ZeRO-3'}; use engine deepspeed with "
                              "zero_stage 0 or 2 and finetuning_type lora")
        if config.finetuning_type != "lora":
            raise ConfigError(f"the base model is {method.upper()}-quantized: only LoRA can train it")


def quantized_loading(config: TrainerConfig, deepspeed: dict | None, device: str) -> dict:
    """from_pretrained's keywords for QLoRA: bitsandbytes' settings as LLaMA-Factory builds them (4-bit weights
    stored in the training dtype, which ZeRO-3 can partition); {} without QLoRA. Without ZeRO-3 the model is
    placed whole on this process's device, where bitsandbytes quantizes it; under ZeRO-3 transformers refuses
    a device map and its quantizer takes the current device (accelerate set it to the local rank's GPU)."""
    if not config.quantization_bit:
        return {}
    zero3 = (deepspeed or {}).get("zero_optimization", {}).get("stage") == 3
    if zero3 and config.quantization_bit == 8:
        raise ConfigError(QUANTIZED_UNDER_ZERO3)
    dtype = "bfloat16" if config.bf16 else "float16" if config.fp16 else "float32"
    quant = {"load_in_8bit": True} if config.quantization_bit == 8 else {
        "load_in_4bit": True, "bnb_4bit_quant_type": config.quantization_type,
        "bnb_4bit_use_double_quant": config.double_quantization, "bnb_4bit_compute_dtype": dtype,
        "bnb_4bit_quant_storage": dtype}
    return {"quantization_config": quant} if zero3 else {"quantization_config": quant, "device_map": {"": device}}


def trainer_class(config: TrainerConfig, on_gpu: bool):
    """transformers' Trainer, with what hyft adds where the config asks for it:
    - LoRA+: an optimizer that gives the B matrices their own learning rate (peft's create_loraplus_optimizer
      over the optimizer the arguments choose; under DeepSpeed the Trainer hands it to the engine);
    - engine fsdp on CPU: accelerate engages its FSDP plugin on accelerator devices only (AcceleratorState,
      accelerate 1.15) and would train plain DDP instead; FSDP2's fully_shard runs over gloo, so the state is
      made FSDP's right after the Trainer creates it (on a GPU accelerate does it itself); its checkpoints can
      be the best one."""
    from transformers import Trainer

    class HyftTrainer(Trainer):
        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            if config.engine == FSDP and not on_gpu:
                from accelerate.state import AcceleratorState, PartialState
                from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

                plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
                # both: AcceleratorState copies PartialState's type whenever it is constructed again
                PartialState._shared_state["distributed_type"] = DistributedType.FSDP
                AcceleratorState._shared_state.update(distributed_type=DistributedType.FSDP, fsdp_plugin=plugin)
                self.is_fsdp_enabled = True
            if config.engine == FSDP and not self.accelerator.is_fsdp2:
                raise RuntimeError(f"engine fsdp, but accelerate set up {self.accelerator.distributed_type}")

        def save_model(self, output_dir=None, _internal_call=False):
            # FSDP2's sharded checkpoints are written after this (with the optimizer), and without the training
            # arguments: the folder must exist now, or transformers never records it as the best checkpoint
            # (load_best_model_at_end)
            if self.is_fsdp_enabled and _internal_call and output_dir:
                os.makedirs(output_dir, exist_ok=True)
                if self.args.should_save:
                    import torch
                    from transformers.trainer import TRAINING_ARGS_NAME

                    torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))
            super().save_model(output_dir, _internal_call)

        def create_optimizer(self, model=None):
            if self.optimizer is None and config.loraplus_lr_ratio:
                from peft.optimizers import create_loraplus_optimizer

                optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
                self.optimizer = create_loraplus_optimizer(
                    self.model, optimizer_cls, loraplus_lr_ratio=config.loraplus_lr_ratio,
                    loraplus_lr_embedding=config.loraplus_lr_embedding, loraplus_weight_decay=self.args.weight_decay,
                    **kwargs)
            return super().create_optimizer(model)

    return HyftTrainer
