"""deepspeed offload "auto": the least offload whose GPU figure fits, decided by the operator where
it knows one GPU's memory and the model's size, else by each node (hyft_trainer.offload, sizing)."""
from __future__ import annotations

import json

import pytest

from hyft_operator import admission, api, builders, sizing
from hyft_trainer import offload
from hyft_trainer.choices import SIZES
from hyft_trainer.config import parse_config
from hyft_trainer.estimate import GIB, Estimate, Shape
from tests.jobs import cpu_job

pytestmark = pytest.mark.unit


def figures(stage=3, none=100, optimizer=50, params=10):
    """Estimates whose GPU figures (GiB per device) are the given ones."""
    return [Estimate(stage, label, 0, 0, 0, 1, gib * GIB, 0) for label, gib in
            (("none", none), ("optimizer", optimizer), ("params+optimizer", params))]


@pytest.mark.parametrize("stage, optimizer, param, gpu_gib, chosen, fits", [
    (3, "auto", "auto", 200, (False, False), True),  # fits without: no offload
    (3, "auto", "auto", 80, (True, False), True),  # 100 > 72, 50 fits
    (3, "auto", "auto", 40, (True, True), True),
    (3, "auto", "auto", 8, (True, True), False),  # nothing fits: the most, and it says so
    (3, "auto", False, 40, (True, False), False),  # parameters kept on the GPU as asked
    (3, False, "auto", 80, (False, False), False),  # no optimizer offload asked: parameters alone are not an option
    (2, "auto", "auto", 80, (True, False), True),  # ZeRO-2 never offloads parameters
    (0, "auto", "auto", 8, (False, False), False),  # DDP: nothing to offload, and it says what does not fit
])
def test_the_least_offload_that_fits(stage, optimizer, param, gpu_gib, chosen, fits):
    decision = offload.decide(figures(stage), (stage,), optimizer, param, gpu_gib * GIB)
    assert (decision.optimizer, decision.param) == chosen and decision.fits is fits and decision.decided
    assert decision.message.startswith(f"offload {decision.label} (")
    assert f"{0.9 * gpu_gib:.1f} GiB (90% of {gpu_gib:.1f} GiB)" in decision.message
    if not fits:
        assert "does not fit even so" in decision.message


@pytest.mark.parametrize("gpu_gib, chosen, recompute", [
    (200, (False, False), False),  # everything fits: no offload, no recomputation
    (100, (False, False), True),  # 120 without recomputation > 90; 80 with it fits: recompute before offloading
    (60, (True, False), False),  # offloading the optimizer is needed anyway: then without recomputation (50)
    (50, (True, False), True),  # 50 > 45: recompute as well (30)
    (8, (True, True), True),  # nothing fits: the most of both
])
def test_auto_gradient_checkpointing_is_dropped_only_where_the_least_offload_fits_without_it(gpu_gib, chosen,
                                                                                            recompute):
    with_, without = figures(none=80, optimizer=30, params=10), figures(none=120, optimizer=50, params=40)
    decision = offload.decide(with_, (3,), "auto", "auto", gpu_gib * GIB, recompute="auto", without_recompute=without)
    assert ((decision.optimizer, decision.param), decision.recompute) == (chosen, recompute) and decision.decided
    assert f", gradient checkpointing {'on' if recompute else 'off'} (" in decision.message
    assert "none without recomputation 120.0 GiB" in decision.message
    # set, it stays as set, and the offload alone is decided
    kept = offload.decide(with_, (3,), "auto", "auto", 200 * GIB, recompute=True)
    assert kept.recompute and (kept.optimizer, kept.param) == (False, False) and "checkpointing" not in kept.message
    # where the memory is unknown it stays on, undecided (the node decides)
    unknown = offload.decide([], (3,), "auto", "auto", None, on_gpu=False, recompute="auto")
    assert unknown.recompute and not unknown.decided
    assert not offload.decide([], (3,), "auto", "auto", None, on_gpu=False, recompute=False).recompute
    assert offload.decide(with_, (3,), "auto", "auto", None, recompute="auto").recompute


def staged(zero2, zero3):
    """ZeRO-2 and ZeRO-3 estimates: {offload: (GiB per GPU, GiB of host memory a node)} for each."""
    return [Estimate(stage, label, host * GIB, 0, 0, 1, gpu * GIB, 0)
            for stage, table in ((2, zero2), (3, zero3)) for label, (gpu, host) in table.items()]


STAGED = staged(zero2={"none": (70, 300), "optimizer": (30, 400)},
                zero3={"none": (50, 20), "optimizer": (20, 200), "params+optimizer": (10, 250)}) + \
    [Estimate(0, "none", 300 * GIB, 0, 0, 1, 90 * GIB, 0)]  # plain DDP


@pytest.mark.parametrize("zero_stages, gpu_gib, host_gib, chosen, decided", [
    ((2, 3), 100, 1000, (2, "none"), True),  # ZeRO-2 fits the GPU and the host: whole parameters, no gathering
    ((2, 3), 100, 300, (3, "none"), True),  # ZeRO-2 loads more than 80% of the host: ZeRO-3, offloading nothing
    ((2, 3), 70, 1000, (3, "none"), True),  # ZeRO-2 over 90% of the GPU (63): ZeRO-3 before any offload
    ((2, 3), 40, 1000, (2, "optimizer"), True),  # nothing fits without offload: the cheaper stage offloading
    ((2, 3), 40, 450, (3, "optimizer"), True),
    ((2, 3), 100, None, (3, "params+optimizer"), False),  # ZeRO-2 fits the GPU, the host unknown: the node decides
    ((2, 3), 70, None, (3, "none"), True),  # only ZeRO-3 fits the GPU: the host does not matter
    ((0, 2, 3), 120, 1000, (0, "none"), True),  # the whole model and its optimizer states fit every GPU: DDP
    ((0, 2, 3), 90, 1000, (2, "none"), True),  # DDP over 90% of the GPU (81): ZeRO-2
    ((0, 2, 3), 120, 300, (3, "none"), True),  # DDP and ZeRO-2 load more than 80% of the host: ZeRO-3
    ((0, 2, 3), 40, 1000, (2, "optimizer"), True),  # an offload is needed, which DDP has not
    ((0, 2, 3), 120, None, (3, "params+optimizer"), False),  # DDP fits the GPU, the host unknown
])
def test_zero_stage_auto_takes_the_cheapest_stage_the_gpu_and_the_host_hold(zero_stages, gpu_gib, host_gib,
                                                                             chosen, decided):
    decision = offload.decide(STAGED, zero_stages, "auto", "auto", gpu_gib * GIB, recompute=True,
                              host_bytes=host_gib and host_gib * GIB)
    assert ((decision.stage, decision.label), decision.decided) == (chosen, decided), decision.message
    ddp = "plain DDP 90.0 GiB, " if 0 in zero_stages else ""
    if decided:
        assert decision.message.startswith(f"{offload.stage_name(chosen[0])}, offload {chosen[1]} (the least that "
                                           f"fits): per GPU {ddp}ZeRO-2 none 70.0 GiB, ZeRO-3 none 50.0 GiB")
    else:
        assert decision.message.startswith(f"{offload.stage_name(zero_stages[0])}, offload none would fit the GPU")
        assert "(300.0 GiB a node) and the node's memory is unknown here: each node decides" in decision.message


def test_stages_zero_stage_auto_chooses_from():
    config = parse_config({"model_name_or_path": "/m", "data_files": [{"path": "/d"}]})
    dense, moe = Shape(**SIZES["7B"]), Shape(**SIZES["A13B"])
    gptq = Shape(**{**SIZES["7B"], "weight_bits": 4})
    assert config.zero_stage == "auto" and config.finetuning_type == "lora" and offload.stages(config) == (2, 3)
    for update, shape, stages in (
            ({}, dense, (0, 2, 3)),  # LoRA on a dense model: plain DDP first
            ({"finetuning_type": "full", "bf16": True}, dense, (2, 3)),  # no float32 master weights under DDP
            ({"finetuning_type": "full"}, dense, (0, 2, 3)),  # float32: DDP steps as DeepSpeed does
            ({"finetuning_type": "freeze", "fp16": True}, dense, (2, 3)),
            ({}, moe, (2, 3)),  # experts without a gradient in a step
            ({"zero_stage": 0}, None, (0,)), ({"engine": "fsdp"}, dense, (3,)),
            ({"offload_param": True}, dense, (3,)), ({"quantization_bit": 8}, None, (2,)),
            ({"quantization_bit": 8}, dense, (0, 2)), ({}, gptq, (0, 2)), ({"quantization_bit": 4}, None, (2, 3))):
        assert offload.stages(config.model_copy(update=update), shape) == stages, update


def host_figures(none, optimizer, params, stage=3):
    """CPU estimates whose host figures (GiB per node: the device's bytes are host bytes there) are these."""
    return [Estimate(stage, label, 0, 0, 0, 1, gib * GIB, 0, on_gpu=False) for label, gib in
            (("none", none), ("optimizer", optimizer), ("params+optimizer", params))]


@pytest.mark.parametrize("host_gib, stage, engine, recompute", [
    (100, 3, "deepspeed", False),  # the CPU plan (optimizer offloaded) without recomputation: 50 <= 80
    (60, 3, "deepspeed", True),  # 50 > 48: recompute
    (100, 3, "fsdp", True),  # FSDP2 on CPU offloads nothing: "none", 90 > 80
    (120, 3, "fsdp", False),
    (100, 2, "deepspeed", False),
])
def test_on_cpu_recomputation_is_dropped_where_the_nodes_memory_holds_the_job_without_it(host_gib, stage, engine,
                                                                                          recompute):
    without = host_figures(none=90, optimizer=50, params=40, stage=stage)
    without += [Estimate(3, "none", 0, 0, 0, 1, 90 * GIB, 0, engine="fsdp", on_gpu=False)]
    with_ = host_figures(none=70, optimizer=30, params=20, stage=stage)
    with_ += [Estimate(3, "none", 0, 0, 0, 1, 70 * GIB, 0, engine="fsdp", on_gpu=False)]
    decision = offload.decide(with_, (stage,), "auto", "auto", host_gib * GIB, on_gpu=False, recompute="auto",
                              without_recompute=without, engine=engine)
    assert decision.recompute is recompute and decision.decided
    assert (decision.optimizer, decision.param) == ((False, False) if engine == "fsdp" else (True, False))
    plan = "none" if engine == "fsdp" else "optimizer"
    without_it, with_it = (90, 70) if engine == "fsdp" else (50, 30)
    assert (f"gradient checkpointing {'on' if recompute else 'off'} (host memory: {plan} without recomputation "
            f"{without_it:.1f} GiB, {plan} {with_it:.1f} GiB; usable {0.8 * host_gib:.1f} GiB, 80% of the node's "
            f"{host_gib:.1f} GiB)" in decision.message)
    assert decision.message.startswith("offload none: no GPU, FSDP2" if engine == "fsdp" else
                                       "offload optimizer: no GPU")


def test_switches_set_stay_as_set_and_unknown_memory_takes_the_most_undecided():
    assert offload.decide(figures(), (3,), True, False, 200 * GIB) == offload.Decision(True, False, decided=False)
    unknown = offload.decide(figures(), (3,), "auto", "auto", None)
    assert (unknown.optimizer, unknown.param, unknown.decided) == (True, True, False)
    cpu = offload.decide([], (3,), "auto", "auto", None, on_gpu=False)  # CPU Adam; the parameters in place
    assert (cpu.optimizer, cpu.param, cpu.decided) == (True, False, True) and "no GPU" in cpu.message
    assert offload.decide([], (3,), "auto", True, None, on_gpu=False).param  # set, it stays as set
    assert (offload.decide([], (2,), "auto", "auto", None, on_gpu=False).optimizer,
            offload.decide([], (0,), "auto", "auto", None, on_gpu=False).optimizer) == (True, False)


def test_a_brought_deepspeed_json_decides_itself():
    config = parse_config({"model_name_or_path": "/m", "data_files": [{"path": "/d"}], "deepspeed": {"a": 1}})
    resolved, decision = offload.resolve(config, None, 80 * GIB, 1, 8, on_gpu=True)
    # the JSON's own offload and stage (DeepSpeed's default 0: it names none); gradient checkpointing auto
    # stays on (LLaMA-Factory's default)
    assert resolved == config.model_copy(update={"gradient_checkpointing": True, "zero_stage": 0})
    assert not decision.decided and decision.message == ""


def test_a_node_decides_from_its_smallest_gpu_and_the_model_folder(tmp_path):
    """What the launcher and each worker do (offload.for_node): the same inputs, the same decision."""
    (tmp_path / "config.json").write_text(json.dumps({  # Hunyuan-7B's shape
        "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 128, "intermediate_size": 14336, "vocab_size": 128167, "tie_word_embeddings": False}))
    config = parse_config({"model_name_or_path": str(tmp_path), "data_files": [{"path": "/d"}],
                           "finetuning_type": "full", "bf16": True, "cutoff_len": 4096})
    on_141 = offload.for_node(config, (141 * GIB, 141 * GIB), nodes=1, per_node=2)
    on_mixed = offload.for_node(config, (141 * GIB, 80 * GIB), nodes=1, per_node=2)
    assert (on_141[1].label, on_mixed[1].label) == ("none", "optimizer")
    assert on_mixed[0].offload_optimizer is True and on_mixed[0].offload_param is False
    # gradient checkpointing auto: the resolved config says what was chosen (transformers gets a bool)
    assert {on_141[0].gradient_checkpointing, on_mixed[0].gradient_checkpointing} <= {True, False}
    # CPU: CPU Adam, the parameters in place; 7B at 4096 tokens without recomputation needs more than 80% of
    # this machine's memory (the test host's, whatever it is: the estimate is far above any CI machine)
    on_cpu = offload.for_node(config, (), 1, 1)
    assert on_cpu[1].label == "optimizer" and on_cpu[0].gradient_checkpointing is True
    assert "ZeRO-3, gradient checkpointing on (host memory: ZeRO-2 optimizer without recomputation" in \
        on_cpu[1].message and on_cpu[0].zero_stage == 3
    unreadable = config.model_copy(update={"model_name_or_path": str(tmp_path / "none")})
    assert not offload.for_node(unreadable, (80 * GIB,), 1, 1)[1].decided


def job(**spec):
    body = cpu_job("sized", nodes=1, gpusPerNode=2, training={"precision": "bf16"}, method={"type": "full"},
                   data={"files": [{"volume": "shared", "path": "data/chat.jsonl"}], "cutoffLen": 4096}, **spec)
    body["spec"]["model"]["parameters"] = "7B"
    return api.HunyuanFineTune.model_validate(body)


def test_the_operator_decides_from_gpu_memory_or_a_known_product_else_leaves_it_to_the_nodes():
    by_memory = builders.trainer_config(job(gpuMemory="80Gi", memory="512Gi"))
    assert (by_memory.zero_stage, by_memory.offload_optimizer, by_memory.offload_param) == (2, True, False)
    # ZeRO-2 would fit the GPUs, but every rank loads the whole model in host memory: without spec.memory
    # the operator cannot tell whether the node holds it, so the nodes decide
    unknown_host = job(gpuMemory="80Gi")
    assert builders.trainer_config(unknown_host).zero_stage == "auto"
    status = sizing.offload_decision(unknown_host, builders.spec_config(unknown_host))[2]
    assert status.startswith("ZeRO-2, offload optimizer would fit the GPU") and "each node decides" in status
    h200 = job(scheduling={"nodeSelector": {sizing.GPU_PRODUCT_LABEL: "NVIDIA-H200"}}, memory="512Gi")
    assert (builders.trainer_config(h200).offload_optimizer, builders.trainer_config(h200).offload_param) == \
        (False, False)
    assert sizing.gpu_memory(h200)[1] == "NVIDIA-H200, from the nodeSelector"
    unknown = job(scheduling={"nodeSelector": {sizing.GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"}})
    config = builders.trainer_config(unknown)
    assert (config.offload_optimizer, config.offload_param) == ("auto", "auto")
    status = sizing.offload_decision(unknown, builders.spec_config(unknown))[2]
    assert status.startswith("offload auto: the GPU's memory unknown here") and "set spec.gpuMemory" in status
    as_set = job(deepspeed={"stage": 3, "offloadOptimizer": True, "offloadParams": True}, gpuMemory="141Gi")
    assert sizing.offload_decision(as_set, builders.spec_config(as_set))[2] == \
        "offload params+optimizer (as set in spec.deepspeed)"


def test_the_host_memory_check_counts_the_decided_offload_or_else_the_most():
    decided = admission.check_memory(job(gpuMemory="141Gi", memory="64Gi"))  # no offload: states on the GPUs
    undecided = admission.check_memory(job(memory="64Gi"))
    assert decided.estimate.offload == "none" and undecided.estimate.offload == "params+optimizer"
    assert decided.need_bytes < undecided.need_bytes and undecided.at_risk and not decided.at_risk
