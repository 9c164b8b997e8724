"""`hyft estimate` against DeepSpeed's published figures for Hunyuan sizes."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from hyft_trainer.estimate import (
    CUDA_CONTEXT_BYTES,
    CUDA_PROCESS_BASE_BYTES,
    GIB,
    LOGITS_BYTES,
    NCCL_BUFFER_BYTES,
    NODE_BASE_BYTES,
    PROCESS_BASE_BYTES,
    Shape,
    activations,
    estimate,
    layer_activations,
    load_shape,
    render,
)


@pytest.mark.parametrize("size, low, high", [("0.5B", 0.50, 0.58), ("1.8B", 1.75, 1.83), ("4B", 4.1, 4.3),
                                             ("7B", 7.5, 8.1)])
def test_parameter_counts_match_the_model_cards(size, low, high):
    assert low <= load_shape(size).params / 1e9 <= high


def test_1_8b_on_one_gpu_matches_deepspeeds_estimator():
    by_option = {e.label: e for e in estimate(load_shape("1.8B"), nodes=1, gpus_per_node=1)}
    full_offload = by_option["ZeRO-3, offload params+optimizer"]
    assert full_offload.host_states_bytes_per_node / GIB == pytest.approx(45, rel=0.03)  # 18·P·1.5
    # plus one trainer process, the node's launcher and agent, and the 16-bit export on rank 0
    assert full_offload.host_bytes_per_node == pytest.approx(
        full_offload.host_states_bytes_per_node + CUDA_PROCESS_BASE_BYTES + NODE_BASE_BYTES
        + 2 * load_shape("1.8B").params)
    assert full_offload.host_bytes_per_process == pytest.approx(full_offload.host_bytes_per_node - NODE_BASE_BYTES)
    no_offload = by_option["ZeRO-3, offload none"]
    states = no_offload.gpu_bytes_per_device - no_offload.activation_bytes - CUDA_CONTEXT_BYTES  # one GPU: no NCCL
    assert states / GIB == pytest.approx(31, rel=0.05)  # 4·largest + 18·P
    assert full_offload.gpu_bytes_per_device < no_offload.gpu_bytes_per_device


def test_more_nodes_need_less_host_memory_each_and_lora_needs_far_less():
    shape = load_shape("7B")
    one = {e.label: e for e in estimate(shape, nodes=1, gpus_per_node=8)}["ZeRO-3, offload params+optimizer"]
    two = {e.label: e for e in estimate(shape, nodes=2, gpus_per_node=8)}["ZeRO-3, offload params+optimizer"]
    assert two.host_states_bytes_per_node == pytest.approx(one.host_states_bytes_per_node / 2, rel=0.01)
    assert two.host_base_bytes_per_node == one.host_base_bytes_per_node  # every node runs its 8 processes
    lora = {e.label: e for e in estimate(shape, 1, 8, method="lora")}["ZeRO-3, offload params+optimizer"]
    assert lora.host_bytes_per_node < one.host_bytes_per_node / 5


def test_a_lora_merge_counts_the_16bit_base_on_the_master_node():
    shape = load_shape("7B")
    plain, merged = ({e.label: e for e in estimate(shape, 2, 8, method=m, merge=True)} for m in ("full", "lora"))
    lora = {e.label: e for e in estimate(shape, 2, 8, method="lora")}
    label = "ZeRO-3, offload params+optimizer"
    assert merged[label].export_bytes - lora[label].export_bytes == 2 * shape.params
    assert plain[label].export_bytes == 2 * shape.params  # full: the export is the model, nothing to merge


def test_a13b_counts_every_expert_in_memory_and_the_routed_ones_in_flops():
    """Tencent's published A13B config reads as the A13B size: 80B parameters, 13B of them per token."""
    from hyft_trainer.flops import flops_per_token
    from tests.llamafactory_corpus import TENCENT

    shape = load_shape(str(TENCENT / "hunyuan_a13b_config.json"))
    assert shape == load_shape("A13B")
    assert 79e9 < shape.params < 81e9 and 12.5e9 < shape.active_params < 13.5e9
    assert flops_per_token(shape, 0) == 6 * shape.active_params
    dense = load_shape("7B")
    assert dense.active_params == dense.params
    lora = {e.label: e for e in estimate(shape, 2, 8, method="lora")}["ZeRO-3, offload none"]
    assert shape.lora_params(8) == 32 * 8 * (2 * (4096 + 4096) + 2 * (4096 + 1024))  # the attention only
    assert lora.gpu_bytes_per_device > 2 * shape.params / 16  # the frozen experts, sharded over 16 GPUs
    assert render(shape, [lora], None).startswith(
        "model: 80.39B parameters (12.75B per token: 8 of 64 experts and 1 shared)")


def test_reads_a_model_folder_and_marks_what_fits(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "intermediate_size": 128, "vocab_size": 900, "tie_word_embeddings": True}))
    shape = load_shape(str(tmp_path))
    assert shape.head_dim == 16 and shape.params < 200_000
    text = render(load_shape("7B"), estimate(load_shape("7B"), 1, 1), gpu_memory_gib=24)
    assert "ZeRO-3, offload params+optimizer" in text and "  yes" in text and "  no" in text
    assert shape.weight_bits == 16


def test_a_gptq_folder_is_priced_at_its_own_bits(tmp_path):
    """A GPTQ model folder (quantization_config.bits 4, as Tencent's Hunyuan-*-GPTQ-Int4): its LoRA job is
    priced as QLoRA at 4 bits, by hyft estimate and by the offload decision's options alike."""
    from hyft_trainer.config import parse_config
    from hyft_trainer.offload import options_for

    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 2048, "num_hidden_layers": 32, "num_attention_heads": 16, "num_key_value_heads": 4,
        "head_dim": 128, "intermediate_size": 6144, "vocab_size": 120818, "tie_word_embeddings": True,
        "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True}}))
    shape = load_shape(str(tmp_path))
    assert shape.weight_bits == 4
    job = parse_config({"model_name_or_path": str(tmp_path), "data_files": [{"path": "/d"}], "zero_stage": 2})
    zero2 = (2, "none")
    priced = next(e for e in options_for(job, shape, 1, 1, on_gpu=True) if (e.stage, e.offload) == zero2)
    sixteen = next(e for e in estimate(replace(shape, weight_bits=16), 1, 1, "lora", seq=job.cutoff_len,
                                       half_precision=False) if (e.stage, e.offload) == zero2)
    four = next(e for e in estimate(replace(shape, weight_bits=16), 1, 1, "lora", seq=job.cutoff_len,
                                    half_precision=False, weight_bits=4) if (e.stage, e.offload) == zero2)
    assert priced == four and priced.gpu_bytes_per_device < sixteen.gpu_bytes_per_device


def test_a_gpu_process_counts_cuda_and_nccl_and_a_cpu_process_neither():
    shape = load_shape("1.8B")

    def option(**kw):
        return {e.label: e for e in estimate(shape, **kw)}["ZeRO-3, offload none"]

    one, eight, cpu = option(nodes=1, gpus_per_node=1), option(nodes=1, gpus_per_node=8), \
        option(nodes=1, gpus_per_node=8, on_gpu=False)
    states = eight.gpu_bytes_per_device - eight.activation_bytes - CUDA_CONTEXT_BYTES - NCCL_BUFFER_BYTES
    assert cpu.gpu_bytes_per_device - cpu.activation_bytes == pytest.approx(states)
    assert one.gpu_bytes_per_device - one.activation_bytes > states  # one GPU holds every shard
    assert eight.host_base_bytes_per_node - cpu.host_base_bytes_per_node == \
        pytest.approx(8 * (CUDA_PROCESS_BASE_BYTES - PROCESS_BASE_BYTES))
    assert eight.gpu_bytes_per_node == pytest.approx(8 * eight.gpu_bytes_per_device)



def test_a_cpu_run_counts_its_device_memory_in_host_memory():
    """With no GPU, what ZeRO keeps "on the device" (parameter shards, activations) is host memory too: a CPU
    pod's admission must count it; on a GPU it is not host memory."""
    shape = load_shape("1.8B")
    for on_gpu in (True, False):
        for e in estimate(shape, nodes=1, gpus_per_node=2, on_gpu=on_gpu):
            device = e.gpu_bytes_per_device * e.processes_per_node
            assert (e.host_bytes_per_node >= device + e.host_states_bytes_per_node) is not on_gpu, e.label
            assert (e.host_bytes_per_process >= e.gpu_bytes_per_device) or on_gpu, e.label

def test_logits_at_their_backward_peak_and_swiglu_activations():
    shape = load_shape("7B")
    # without recompute: every layer's activations, plus 14 bytes per position and vocabulary entry
    body = activations(shape, 1, 4096, checkpointing=False) - 4096 * shape.vocab * LOGITS_BYTES
    assert body == pytest.approx(shape.layers * layer_activations(shape, 4096))
    assert LOGITS_BYTES == 2 + 4 + 4 + 4
    # GPT's 4h GeLU MLP keeps 34·s·h bytes per layer with dropout (Korthikanti et al.); Hunyuan-7B's SwiGLU
    # (ffn 3.5h, gate and up) keeps more
    per_token_hidden = layer_activations(shape, 1) / shape.hidden
    assert 36 < per_token_hidden < 48
    gpt = Shape(hidden=4096, layers=1, heads=32, kv_heads=32, head_dim=128, ffn=0, vocab=1, tied=True)
    gelu_mlp = 2 * (4096 + 2 * 4 * 4096)  # the MLP's input, the GeLU's input and output, in bf16
    assert (layer_activations(gpt, 1) - 2 * 4096 + gelu_mlp) / 4096 == 34 - 2  # less the two dropout masks


def test_plain_ddp_holds_the_whole_model_on_every_gpu():
    shape = load_shape("0.5B")
    ddp = next(e for e in estimate(shape, 1, 8) if e.stage == 0)
    zero3 = next(e for e in estimate(shape, 1, 8) if e.label == "ZeRO-3, offload none")
    zero2 = next(e for e in estimate(shape, 1, 8) if e.label == "ZeRO-2, offload none")
    assert ddp.label == "plain DDP, offload none"
    assert ddp.host_states_bytes_per_node == zero2.host_states_bytes_per_node  # each rank loads it whole
    cpu = next(e for e in estimate(shape, 1, 8, on_gpu=False) if e.stage == 0)
    assert cpu.host_states_bytes_per_node == 0  # the host memory it trains in, counted as its "GPU" figure
    assert ddp.gpu_bytes_per_device - ddp.activation_bytes - CUDA_CONTEXT_BYTES - NCCL_BUFFER_BYTES == \
        pytest.approx(8 * shape.params)  # bf16 weights, gradients and both AdamW moments
    assert ddp.gpu_bytes_per_device > zero3.gpu_bytes_per_device
    lora = next(e for e in estimate(shape, 1, 8, method="lora") if e.stage == 0)
    assert lora.gpu_bytes_per_device < ddp.gpu_bytes_per_device


@pytest.mark.parametrize("bits, per_weight", [(4, 0.5 + 4 / 64), (8, 1.0)])
def test_qlora_holds_the_decoder_layers_at_their_bits_and_the_embeddings_at_16(bits, per_weight):
    shape = load_shape("7B")
    for stage in (0, 2):
        plain, quantized = (next(e for e in estimate(shape, 1, 8, method="lora", weight_bits=b)
                                 if (e.stage, e.offload) == (stage, "none")) for b in (16, bits))
        kept = shape.embedding_params * (1 if shape.tied else 2)
        frozen = shape.params - shape.lora_params(8)
        saved = plain.gpu_bytes_per_device - quantized.gpu_bytes_per_device
        assert saved == pytest.approx((frozen - kept) * (2 - per_weight))
    qlora = next(e for e in estimate(shape, 1, 1, method="lora", seq=1024, weight_bits=4) if e.stage == 0)
    assert qlora.gpu_bytes_per_device < 12 * GIB  # QLoRA's point: a 7B on one consumer GPU
    assert {e.stage for e in estimate(shape, 1, 8, method="lora", weight_bits=8)} == {0, 2}  # 8 bits: no ZeRO-3
