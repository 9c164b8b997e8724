"""`hyft estimate` against DeepSpeed's published figures for Hunyuan sizes."""
from __future__ import annotations

import json

import pytest

from hyft_trainer.estimate import GIB, NODE_BASE_BYTES, PROCESS_BASE_BYTES, estimate, load_shape, render


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
        full_offload.host_states_bytes_per_node + PROCESS_BASE_BYTES + NODE_BASE_BYTES + 2 * load_shape("1.8B").params)
    assert full_offload.host_bytes_per_process == pytest.approx(full_offload.host_bytes_per_node - NODE_BASE_BYTES)
    no_offload = by_option["ZeRO-3, offload none"]
    states = no_offload.gpu_bytes_per_device - no_offload.activation_bytes
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


def test_reads_a_model_folder_and_marks_what_fits(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "intermediate_size": 128, "vocab_size": 900, "tie_word_embeddings": True}))
    shape = load_shape(str(tmp_path))
    assert shape.head_dim == 16 and shape.params < 200_000
    text = render(load_shape("7B"), estimate(load_shape("7B"), 1, 1), gpu_memory_gib=24)
    assert "ZeRO-3, offload params+optimizer" in text and "  yes" in text and "  no" in text
