"""The method as it meets the model: which parameters train under freeze (layers, their modules, modules
outside them) and LoRA's additional targets; a module name the model lacks is refused, not ignored."""
from __future__ import annotations

import copy

import pytest

from hyft_trainer.config import ConfigError, parse_config
from hyft_trainer.model_setup import apply_method
from tests.unit.test_knobs import accelerate_state  # noqa: F401  (a fixture)

BASE = {"model_name_or_path": "/m", "data_files": [{"path": "/d.jsonl"}]}


def trainable(model):
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def test_freeze_trains_the_named_modules_of_the_last_layers_and_the_extra_ones(tiny_model):
    model = copy.deepcopy(tiny_model[1])
    last = len(model.model.layers) - 1
    config = parse_config({**BASE, "finetuning_type": "freeze", "freeze_trainable_layers": 1,
                           "freeze_trainable_modules": "mlp", "freeze_extra_modules": "norm"})
    names = trainable(apply_method(model, config))
    assert names and all(n.startswith(f"model.layers.{last}.mlp.") or n == "model.norm.weight" for n in names)
    assert "model.norm.weight" in names and any(".mlp.down_proj." in n for n in names)


def test_freeze_all_modules_trains_whole_layers(tiny_model):
    model = copy.deepcopy(tiny_model[1])
    config = parse_config({**BASE, "finetuning_type": "freeze", "freeze_trainable_layers": 1})
    last = len(model.model.layers) - 1
    assert trainable(apply_method(model, config)) == sorted(
        f"model.layers.{last}.{n}" for n, _ in model.model.layers[last].named_parameters())


def test_lora_additional_targets_train_in_full_beside_the_adapter(tiny_model):
    model = copy.deepcopy(tiny_model[1])
    config = parse_config({**BASE, "finetuning_type": "lora", "additional_target": "embed_tokens"})
    names = trainable(apply_method(model, config))
    assert any("lora_" in n for n in names) and any("embed_tokens" in n and "lora_" not in n for n in names)


@pytest.mark.parametrize("keys, message", [
    ({"finetuning_type": "freeze", "freeze_trainable_modules": "feed_forward"},
     "freeze_trainable_modules: the model has no module feed_forward"),
    ({"finetuning_type": "freeze", "freeze_extra_modules": "wte"}, "freeze_extra_modules: the model has no module wte"),
    ({"finetuning_type": "lora", "additional_target": "embeddings"}, "additional_target: the model has no module"),
])
def test_a_module_the_model_lacks_is_refused(tiny_model, keys, message):
    with pytest.raises(ConfigError, match=message):
        apply_method(copy.deepcopy(tiny_model[1]), parse_config({**BASE, **keys}))


@pytest.fixture(scope="module")
def tiny_moe():
    from transformers import AutoModelForCausalLM, HunYuanMoEV1Config

    return AutoModelForCausalLM.from_config(HunYuanMoEV1Config(
        vocab_size=64, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, num_experts=4, moe_topk=2))


@pytest.mark.parametrize("target, modules, parameters", [
    ("all", ["k_proj", "o_proj", "q_proj", "v_proj"], None),  # a MoE's all: the attention, as Tencent's
    ("q_proj,experts", ["q_proj"], ["experts.down_proj", "experts.gate_up_proj"]),
])
def test_lora_on_a_moe_targets_the_attention_and_the_experts_own_weights(tiny_moe, target, modules, parameters):
    model = apply_method(copy.deepcopy(tiny_moe), parse_config({**BASE, "finetuning_type": "lora",
                                                                 "lora_target": target}))
    lora = model.peft_config["default"]
    assert sorted(lora.target_modules) == modules
    assert (sorted(lora.target_parameters) if lora.target_parameters else None) == parameters
    assert not any("gate.wg" in n for n in trainable(model))  # the routers stay as trained


def test_loraplus_gives_the_b_matrices_their_own_learning_rate(tiny_model, accelerate_state, tmp_path):  # noqa: F811
    from transformers import TrainingArguments

    from hyft_trainer.model_setup import trainer_class

    config = parse_config({**BASE, "finetuning_type": "lora", "learning_rate": 1e-4, "loraplus_lr_ratio": 16})
    model = apply_method(copy.deepcopy(tiny_model[1]), config)
    args = TrainingArguments(str(tmp_path), learning_rate=1e-4, report_to=[], use_cpu=True)
    trainer = trainer_class(config, on_gpu=False)(model=model, args=args)
    groups = trainer.create_optimizer().param_groups
    by_lr = {g["lr"]: len(g["params"]) for g in groups if g["params"]}
    assert set(by_lr) == {1e-4, 16e-4} and by_lr[1e-4] == by_lr[16e-4]  # one A and one B per adapted layer
    plain = parse_config({**BASE, "finetuning_type": "lora", "use_rslora": True})
    model = apply_method(copy.deepcopy(tiny_model[1]), plain)
    assert model.peft_config["default"].use_rslora
    trainer = trainer_class(plain, on_gpu=False)(model=model, args=args)
    assert {g["lr"] for g in trainer.create_optimizer().param_groups} == {1e-4}


def test_upcast_layernorm_keeps_the_norms_in_float32_without_deepspeed(tiny_model):
    import torch

    from hyft_trainer.model_setup import upcast_norms

    model = copy.deepcopy(tiny_model[1]).to(torch.bfloat16)
    ddp = parse_config({**BASE, "upcast_layernorm": True, "zero_stage": 0, "offload_optimizer": False,
                        "offload_param": False})
    assert upcast_norms(model, ddp) > 0
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if "norm" in n)
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if "norm" not in n)
    zero3 = parse_config({**BASE, "upcast_layernorm": True})
    assert upcast_norms(model, zero3) == 0
    assert any(n.startswith("upcast_layernorm: has no effect here: DeepSpeed") for n in zero3.notes)


@pytest.mark.parametrize("settings, deepspeed, device, want", [
    ({}, None, "cpu", {}),
    ({"quantization_bit": 4, "zero_stage": 2, "bf16": True}, {"zero_optimization": {"stage": 2}}, "cuda:3",
     {"quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                              "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "bfloat16"},
      "device_map": {"": "cuda:3"}}),  # the whole model on the rank's own GPU: bitsandbytes quantizes it there
    ({"quantization_bit": 4, "zero_stage": 0, "quantization_type": "fp4", "double_quantization": False}, None, "cpu",
     {"quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4", "bnb_4bit_use_double_quant": False,
                              "bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_storage": "float32"},
      "device_map": {"": "cpu"}}),
    ({"quantization_bit": 8, "zero_stage": 0, "fp16": True}, None, "cuda:0",
     {"quantization_config": {"load_in_8bit": True}, "device_map": {"": "cuda:0"}}),
    ({"quantization_bit": 4, "bf16": True}, {"zero_optimization": {"stage": 3}}, "cuda:1",  # no device map
     {"quantization_config": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                              "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "bfloat16"}}),
])
def test_qlora_loads_the_base_through_bitsandbytes_on_the_ranks_device(settings, deepspeed, device, want):
    from hyft_trainer.model_setup import quantized_loading

    assert quantized_loading(parse_config({**BASE, **settings}), deepspeed, device) == want


def test_qlora_is_refused_in_8_bits_under_zero3_without_lora_or_on_an_already_quantized_base():
    from types import SimpleNamespace

    from hyft_trainer.model_setup import check_model, quantized_loading

    with pytest.raises(ConfigError, match="ZeRO-3 shards 4-bit bitsandbytes weights only"):
        parse_config({**BASE, "quantization_bit": 8, "zero_stage": 3})
    with pytest.raises(ConfigError, match="finetuning_type lora, not full"):
        parse_config({**BASE, "quantization_bit": 4, "finetuning_type": "full"})
    brought = parse_config({**BASE, "quantization_bit": 8, "zero_stage": 2})
    with pytest.raises(ConfigError, match="ZeRO-3 shards 4-bit"):  # a brought DeepSpeed JSON's own stage
        quantized_loading(brought, {"zero_optimization": {"stage": 3}}, "cpu")
    gptq = SimpleNamespace(quantization_config={"quant_method": "gptq", "bits": 4})
    with pytest.raises(ConfigError, match="GPTQ-quantized already"):
        check_model(brought, gptq)
