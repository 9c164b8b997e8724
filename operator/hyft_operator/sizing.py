"""What the operator knows of a job's model and GPUs from the spec alone (it cannot read the model
volume, nor see a node before the scheduler picks it): the model's shape, one GPU's memory, and so
the offload decision (hyft_trainer.offload) that status.offload reports."""
from __future__ import annotations

import re

from kubernetes.utils import parse_quantity

from hyft_trainer import offload
from hyft_trainer.choices import SIZES
from hyft_trainer.config import TrainerConfig
from hyft_trainer.estimate import GIB, Shape

from .api import HunyuanFineTune

SIZE_IN_NAME = re.compile(r"(?<![0-9.])([Aa]?)([0-9]+(?:\.[0-9]+)?)[Bb](?![A-Za-z])")  # 7B, 1.8B, A13B
# Tencent's quantized releases name their bits: Hunyuan-1.8B-Instruct-GPTQ-Int4, Hunyuan-7B-Instruct-AWQ-Int4
BITS_IN_NAME = re.compile(r"(?:GPTQ|AWQ)-Int(4|8)(?![0-9])", re.IGNORECASE)
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # set on GPU nodes by NVIDIA's GPU feature discovery


def model_shape(job: HunyuanFineTune) -> tuple[Shape, str] | None:
    """The model's shape from the spec: its parameters, or a size in its path's name; its weights at the bits a
    GPTQ/AWQ release names in the path (the folder's quantization_config, which the operator cannot read)."""
    path = job.spec.model.path
    bits = next((int(b) for b in BITS_IN_NAME.findall(path)), 16)
    quantized = f", {bits}-bit weights from the model path" if bits < 16 else ""
    if job.spec.model.parameters:
        size = job.spec.model.parameters.upper()
        return Shape(**SIZES[size], weight_bits=bits), f"model.parameters {size}{quantized}"
    for active, size in SIZE_IN_NAME.findall(path)[::-1]:
        name = f"{active.upper()}{float(size):g}B"
        if name in SIZES:
            return Shape(**SIZES[name], weight_bits=bits), f"{name}, from the model path{quantized}"
    return None


def gpu_memory(job: HunyuanFineTune) -> tuple[float, str] | None:
    """(bytes, where from) of one GPU: spec.gpuMemory, else the product the nodeSelector asks for."""
    if job.spec.gpuMemory:
        return float(parse_quantity(job.spec.gpuMemory)), f"spec.gpuMemory {job.spec.gpuMemory}"
    product = job.spec.scheduling.nodeSelector.get(GPU_PRODUCT_LABEL)
    if product in offload.GPU_PRODUCTS:
        return offload.GPU_PRODUCTS[product] * GIB, f"{product}, from the nodeSelector"
    return None


def offload_decision(job: HunyuanFineTune, config: TrainerConfig) -> tuple[TrainerConfig, offload.Decision, str]:
    """(config with concrete offload switches, the decision, the status line). The config's switches
    count only where decision.decided or nothing was auto; else each node decides (the config keeps
    auto) and these are the most offload, for the checks that need a value."""
    spec = job.spec
    shape, memory = model_shape(job), gpu_memory(job)
    on_gpu = spec.gpusPerNode > 0  # with none, the node decides from its own (cgroup) memory
    host = float(parse_quantity(spec.memory)) if spec.memory else None  # the pod's limit
    resolved, decision = offload.resolve(config, shape and shape[0], memory[0] if memory and on_gpu else None,
                                         spec.nodes, max(spec.gpusPerNode, 1), on_gpu=on_gpu, host_bytes=host)
    auto = offload.AUTO in (config.zero_stage, config.offload_optimizer, config.offload_param) \
        and config.deepspeed is None
    if not auto or config.zero_stage == 0:
        status = f"offload {decision.label}" + (" (as set in spec.deepspeed)" if config.zero_stage else " (ZeRO off)")
    elif decision.decided or not on_gpu:
        status = decision.message + (f" [{memory[1]}; {shape[1]}]" if memory and shape and on_gpu else "")
    elif memory and shape:  # a cheaper ZeRO stage fits the GPU, but the node's host memory is unknown here
        status = f"{decision.message} (its log and report.json say what it chose); set spec.memory to decide it here"
    else:
        missing = " and ".join(w for w, known in (("the GPU's memory", memory), ("the model's size", shape))
                               if not known)
        status = (f"offload auto: {missing} unknown here, so each node decides from its GPUs and the model's "
                  "config.json "
                  "(its log and report.json say what it chose); set spec.gpuMemory"
                  + (" and spec.model.parameters" if not shape else "") + " to decide it here")
    return resolved, decision, status
