"""offload_optimizer / offload_param "auto": the least CPU offload whose GPU figure (estimate.py)
fits the GPU's memory with a margin. CPU offload costs a host-device copy of every parameter and
gradient per step and an optimizer step on the CPU; it is worth it only when the states do not fit.

Pure. The operator decides from spec.gpuMemory or the nvidia.com/gpu.product it selects, and writes
the decision into the trainer config; otherwise the launcher and each worker decide alike from the
smallest GPU the node shows them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .estimate import GIB, Estimate, Shape, estimate

AUTO = "auto"
GPU_MARGIN = 0.9  # of the GPU's memory: the caching allocator's fragmentation and what the estimate misses

# What each ZeRO stage can offload, least first (DeepSpeed offloads parameters only under ZeRO-3).
OPTIONS = {0: ((False, False),), 2: ((False, False), (True, False)),
           3: ((False, False), (True, False), (True, True))}

# nvidia.com/gpu.product, as NVIDIA's GPU feature discovery labels a node, to the memory CUDA reports
# (torch.cuda.get_device_properties().total_memory) in GiB. MIG slices and shared GPUs are not listed.
GPU_PRODUCTS = {
    "NVIDIA-H100-80GB-HBM3": 79.2, "NVIDIA-H100-PCIe": 79.2, "NVIDIA-H100-NVL": 93.1, "NVIDIA-H800": 79.2,
    "NVIDIA-H200": 139.8, "NVIDIA-H20": 95.6, "NVIDIA-B200": 178.4, "NVIDIA-GH200-480GB": 94.5,
    "NVIDIA-A100-SXM4-80GB": 79.2, "NVIDIA-A100-80GB-PCIe": 79.2, "NVIDIA-A800-SXM4-80GB": 79.2,
    "NVIDIA-A100-SXM4-40GB": 39.4, "NVIDIA-A100-PCIE-40GB": 39.4,
    "NVIDIA-L40S": 44.4, "NVIDIA-L40": 44.4, "NVIDIA-L20": 44.4, "NVIDIA-A10G": 22.1, "NVIDIA-L4": 22.0,
}


def label(optimizer: bool, param: bool) -> str:
    return "params+optimizer" if param else "optimizer" if optimizer else "none"


@dataclass(frozen=True)
class Decision:
    optimizer: bool
    param: bool
    decided: bool  # False: nothing was auto, or the GPU memory is unknown here (a node decides)
    message: str = ""
    fits: bool = True

    @property
    def label(self) -> str:
        return label(self.optimizer, self.param)


def decide(estimates: list[Estimate], stage: int, optimizer: bool | str, param: bool | str,
           gpu_bytes: float | None, on_gpu: bool = True) -> Decision:
    """The switches for stage: those set stay as set; an "auto" one takes the least offload whose GPU
    figure is within GPU_MARGIN of gpu_bytes, or the most when none is. gpu_bytes None (unknown): the
    most offload, undecided. estimates: estimate.estimate's options for this job (unused on CPU)."""
    if optimizer != AUTO and param != AUTO:
        return Decision(bool(optimizer), bool(param), decided=False)
    options = [o for o in OPTIONS[stage] if optimizer in (AUTO, o[0]) and param in (AUTO, o[1])]
    if not options:  # set switches the stage cannot honour: the config's own checks say so
        return Decision(optimizer is True, param is True, decided=False)
    most = options[-1]
    if not on_gpu:
        return Decision(*most, decided=True, message=f"offload {label(*most)}: no GPU, DeepSpeed's CPU Adam "
                                                      "steps the optimizer" if stage else "")
    if gpu_bytes is None:
        return Decision(*most, decided=False, message=f"offload {label(*most)} until the GPU's memory is known")
    usable = GPU_MARGIN * gpu_bytes
    need = {o: next(e.gpu_bytes_per_device for e in estimates if (e.stage, e.offload) == (stage, label(*o)))
            for o in options}
    chosen = next((o for o in options if need[o] <= usable), most)
    figures = ", ".join(f"{label(*o)} {need[o] / GIB:.1f} GiB" for o in options)
    fits = need[chosen] <= usable
    verdict = ("the least that fits" if fits else
               "does not fit even so: shorten cutoff_len, lower the batch or add GPUs")
    return Decision(*chosen, decided=True, fits=fits,
                    message=f"offload {label(*chosen)} ({verdict}): per GPU {figures}; usable "
                            f"{usable / GIB:.1f} GiB ({GPU_MARGIN:.0%} of {gpu_bytes / GIB:.1f} GiB)")


def options_for(config, shape: Shape, nodes: int, per_node: int, on_gpu: bool, method: str | None = None
                ) -> list[Estimate]:
    """estimate.estimate's options for a trainer config (the one mapping from settings to an estimate)."""
    return estimate(shape, nodes, per_node, method or ("lora" if config.finetuning_type == "lora" else "full"),
                    config.lora_rank, config.per_device_train_batch_size, config.cutoff_len,
                    config.gradient_checkpointing, half_precision=config.bf16 or config.fp16, on_gpu=on_gpu,
                    merge=config.merge_lora, weight_bits=config.quantization_bit or 16)


def resolve(config, shape: Shape | None, gpu_bytes: float | None, nodes: int, per_node: int, on_gpu: bool):
    """(config with concrete offload switches, the Decision). A brought DeepSpeed JSON decides itself."""
    if config.deepspeed is not None:
        return config, Decision(False, False, decided=False)
    estimates = options_for(config, shape, nodes, per_node, on_gpu) if shape and on_gpu and gpu_bytes else []
    decision = decide(estimates, config.zero_stage, config.offload_optimizer, config.offload_param,
                      gpu_bytes if estimates else None, on_gpu)
    return config.model_copy(update={"offload_optimizer": decision.optimizer,
                                     "offload_param": decision.param}), decision


def for_node(config, memory: tuple[int, ...], nodes: int, per_node: int):
    """resolve() as a node decides: from the smallest of its GPUs and the model folder's config.json (the
    launcher and each worker alike: the same inputs give the same decision)."""
    from .estimate import load_shape

    try:
        shape = load_shape(config.model_name_or_path)
    except (OSError, KeyError, ValueError):
        shape = None
    return resolve(config, shape, min(memory) if memory else None, nodes, per_node, on_gpu=bool(memory))
