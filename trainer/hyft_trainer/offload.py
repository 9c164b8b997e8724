"""offload_optimizer / offload_param / gradient_checkpointing "auto": the least costly plan whose GPU
figure (estimate.py) fits the GPU's memory with a margin. CPU offload costs a host-device copy of every
parameter and gradient per step and an optimizer step on the CPU; recomputing activations (gradient
checkpointing) costs about a third more forward compute, less than any offload: so the plans are tried
least offload first and, at each, without recomputation first. Either is worth it only when the job does
not fit without it (recomputation changes no gradient: the loss is the same).

Pure. The operator decides from spec.gpuMemory or the nvidia.com/gpu.product it selects, and writes
the decision into the trainer config; otherwise the launcher and each worker decide alike from the
smallest GPU the node shows them.
"""
from __future__ import annotations

from dataclasses import dataclass

from .estimate import GIB, Estimate, Shape, estimate
from .fsdp import DEEPSPEED, FSDP

AUTO = "auto"
GPU_MARGIN = 0.9  # of the GPU's memory: the caching allocator's fragmentation and what the estimate misses
# of a CPU node's memory: the allocator, the data pipeline, page cache the job reads through
HOST_MARGIN = 0.8

# What each ZeRO stage can offload, least first (DeepSpeed offloads parameters only under ZeRO-3).
OPTIONS = {0: ((False, False),), 2: ((False, False), (True, False)),
           3: ((False, False), (True, False), (True, True))}
# FSDP2 shards like ZeRO-3 (its memory is ZeRO-3's estimate); its CPU offload moves parameters, gradients and
# optimizer states at once, and needs a GPU (pinned host memory)
FSDP_OPTIONS = ((False, False), (True, True))


def options(engine: str, stage: int) -> tuple[tuple[bool, bool], ...]:
    return FSDP_OPTIONS if engine == FSDP else OPTIONS[stage]

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
    recompute: bool = True  # gradient checkpointing

    @property
    def label(self) -> str:
        return label(self.optimizer, self.param)


def decide(estimates: list[Estimate], stage: int, optimizer: bool | str, param: bool | str,
           memory_bytes: float | None, on_gpu: bool = True, recompute: bool | str = True,
           without_recompute: list[Estimate] = (), engine: str = DEEPSPEED) -> Decision:
    """The switches for stage: those set stay as set; the "auto" ones take the least costly plan whose GPU
    figure is within GPU_MARGIN of memory_bytes, one GPU's (least offload first, at each without
    recomputation first), or the most offload (recomputing) when none is. memory_bytes None (unknown): the
    most, undecided. estimates: estimate.estimate's options for this job with recomputation as set (auto:
    on), without_recompute: with it off (read when recompute is auto). On CPU the offload is fixed (only the
    optimizer, for DeepSpeed's CPU Adam; nothing under FSDP2, whose offload needs a GPU) and memory_bytes is
    the node's host memory: recomputation is dropped where the host figure fits within HOST_MARGIN of it."""
    auto_recompute = recompute == AUTO
    if optimizer != AUTO and param != AUTO and not auto_recompute:
        return Decision(bool(optimizer), bool(param), decided=False, recompute=bool(recompute))
    allowed = [o for o in options(engine, stage) if optimizer in (AUTO, o[0]) and param in (AUTO, o[1])]
    if not allowed:  # set switches the stage cannot honour: the config's own checks say so
        return Decision(optimizer is True, param is True, decided=False, recompute=recompute is not False)
    recomputes = (False, True) if auto_recompute else (bool(recompute),)
    most = allowed[-1]
    if not on_gpu:
        return on_cpu(allowed, stage, engine, recompute, memory_bytes, without_recompute)
    if memory_bytes is None:
        return Decision(*most, decided=False, recompute=recomputes[-1],
                        message=f"offload {label(*most)} until the GPU's memory is known")
    usable = GPU_MARGIN * memory_bytes

    def need(option: tuple[bool, bool], recomputing: bool) -> float:
        figures = without_recompute if auto_recompute and not recomputing else estimates
        return next(e.gpu_bytes_per_device for e in figures
                    if (e.engine, e.stage, e.offload) == (engine, stage, label(*option)))

    plans = [(o, r) for o in allowed for r in recomputes]
    chosen, recomputing = next((p for p in plans if need(*p) <= usable), plans[-1])
    figures = ", ".join(f"{label(*o)}{' without recomputation' if auto_recompute and not r else ''} "
                        f"{need(o, r) / GIB:.1f} GiB" for o, r in plans)
    fits = need(chosen, recomputing) <= usable
    verdict = ("the least that fits" if fits else
               "does not fit even so: shorten cutoff_len, lower the batch or add GPUs")
    checkpointing = f", gradient checkpointing {'on' if recomputing else 'off'}" if auto_recompute else ""
    return Decision(*chosen, decided=True, fits=fits, recompute=recomputing,
                    message=f"offload {label(*chosen)}{checkpointing} ({verdict}): per GPU {figures}; usable "
                            f"{usable / GIB:.1f} GiB ({GPU_MARGIN:.0%} of {memory_bytes / GIB:.1f} GiB)")


def on_cpu(allowed: list[tuple[bool, bool]], stage: int, engine: str, recompute: bool | str,
           host_bytes: float | None, without_recompute: list[Estimate]) -> Decision:
    """decide() on a node with no GPU. The offload: DeepSpeed's CPU Adam, and the parameters left in place
    (offloading them would copy host memory to host memory every step and save none; Tencent's recipe does
    the same); nothing under FSDP2, which keeps everything in host memory already. Recomputation auto: off
    where the job's host figure without it fits within HOST_MARGIN of host_bytes (the node's memory, the
    pod's limit where it has one), else on (LLaMA-Factory's default); undecided while host_bytes is unknown
    (the operator leaves it to the node)."""
    chosen = (False, False) if engine == FSDP else max(allowed, key=lambda o: (o[0], not o[1]))
    why = (["no GPU, FSDP2 keeps everything in host memory already"] if engine == FSDP else
           ["no GPU"] + ["DeepSpeed's CPU Adam steps the optimizer"] * chosen[0]
           + ["the parameters stay where they are (host memory already)"] * (stage == 3 and not chosen[1]))
    said = [f"offload {label(*chosen)}: {', '.join(why)}"] if stage or engine == FSDP else []
    if recompute != AUTO:
        return Decision(*chosen, decided=True, recompute=bool(recompute), message="; ".join(said))
    if host_bytes is None or not without_recompute:
        unknown = "gradient checkpointing on until the node's memory and the model's size are known"
        return Decision(*chosen, decided=False, recompute=True, message="; ".join(said + [unknown]))
    need = next(e.host_bytes_per_node for e in without_recompute
                if (e.engine, e.stage, e.offload) == (engine, stage, label(*chosen)))
    usable = HOST_MARGIN * host_bytes
    fits = need <= usable
    said.append(f"gradient checkpointing {'off' if fits else 'on'} (host memory without it {need / GIB:.1f} GiB "
                f"{'within' if fits else 'over'} {usable / GIB:.1f} GiB, {HOST_MARGIN:.0%} of the node's "
                f"{host_bytes / GIB:.1f} GiB)")
    return Decision(*chosen, decided=True, recompute=not fits, message="; ".join(said))


def options_for(config, shape: Shape, nodes: int, per_node: int, on_gpu: bool, method: str | None = None,
                recompute: bool | None = None) -> list[Estimate]:
    """estimate.estimate's options for a trainer config (the one mapping from settings to an estimate);
    recompute: gradient checkpointing, if not the config's (auto counts as on)."""
    recompute = config.gradient_checkpointing is not False if recompute is None else recompute
    return estimate(shape, nodes, per_node, method or ("lora" if config.finetuning_type == "lora" else "full"),
                    config.lora_rank, config.per_device_train_batch_size, config.cutoff_len,
                    recompute, half_precision=config.bf16 or config.fp16, on_gpu=on_gpu,
                    merge=config.merge_lora, weight_bits=config.quantization_bit or shape.weight_bits)


def resolve(config, shape: Shape | None, memory_bytes: float | None, nodes: int, per_node: int, on_gpu: bool):
    """(config with concrete offload and gradient checkpointing switches, the Decision); memory_bytes: one
    GPU's, or with no GPU the node's host memory. A brought DeepSpeed JSON decides the offload itself (and an
    auto gradient checkpointing stays on)."""
    if config.deepspeed is not None:
        recompute = config.gradient_checkpointing is not False
        return (config.model_copy(update={"gradient_checkpointing": recompute}),
                Decision(False, False, decided=False, recompute=recompute))
    known = bool(shape and memory_bytes)
    estimates = options_for(config, shape, nodes, per_node, on_gpu) if known else []
    without = options_for(config, shape, nodes, per_node, on_gpu, recompute=False) \
        if known and config.gradient_checkpointing == AUTO else []
    decision = decide(estimates, config.zero_stage, config.offload_optimizer, config.offload_param,
                      memory_bytes if known else None, on_gpu, config.gradient_checkpointing, without,
                      config.engine)
    return config.model_copy(update={"offload_optimizer": decision.optimizer, "offload_param": decision.param,
                                     "gradient_checkpointing": decision.recompute}), decision


def for_node(config, memory: tuple[int, ...], nodes: int, per_node: int):
    """resolve() as a node decides: from the smallest of its GPUs (with none, the node's host memory) and the
    model folder's config.json (the launcher and each worker alike: the same inputs give the same decision)."""
    from .estimate import load_shape
    from .gpus import host_memory_bytes

    try:
        shape = load_shape(config.model_name_or_path)
    except (OSError, KeyError, ValueError):
        shape = None
    return resolve(config, shape, min(memory) if memory else host_memory_bytes(), nodes, per_node,
                   on_gpu=bool(memory))
