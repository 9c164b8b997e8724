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

from dataclasses import dataclass, replace

from .estimate import GIB, Estimate, Shape, estimate, stage_name
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


# zero_stage auto: the stages it chooses from, cheapest first. Plain DDP (0) keeps the whole model and its
# optimizer states on every GPU and leaves DeepSpeed out of the step (no partitioning, no CPU Adam); ZeRO-2
# keeps the whole 16-bit parameters on every GPU (ZeRO-3 gathers each layer's twice a step, forward and
# backward) and shards gradients and optimizer states as ZeRO-3 does.
AUTO_STAGES = (0, 2, 3)
OFFLOADS = ((False, False), (True, False), (True, True))  # least first
Plan = tuple[int, tuple[bool, bool], bool]  # (ZeRO stage, (offload optimizer, offload parameters), recompute)


def label(optimizer: bool, param: bool) -> str:
    return "params+optimizer" if param else "optimizer" if optimizer else "none"


def stages(config, shape: Shape | None = None) -> tuple[int, ...]:
    """The ZeRO stages config's zero_stage allows, cheapest first (auto: those the rest of the config can
    train with; shape: the model folder's, whose GPTQ/AWQ weights ZeRO-3 cannot shard)."""
    if config.zero_stage != AUTO:
        return (config.zero_stage,)
    if config.engine == FSDP or config.offload_param is True:
        return (3,)  # FSDP2 shards like ZeRO-3; DeepSpeed offloads parameters under ZeRO-3 only
    allowed = AUTO_STAGES if ddp_trains_alike(config, shape) else AUTO_STAGES[1:]
    if config.quantization_bit == 8 or (shape is not None and shape.weight_bits < 16):
        return tuple(s for s in allowed if s != 3)  # ZeRO-3 shards neither bitsandbytes' 8-bit weights nor GPTQ/AWQ's
    return allowed


def ddp_trains_alike(config, shape: Shape | None) -> bool:
    """Whether plain DDP trains this job as DeepSpeed would: torch's AdamW keeps no float32 master copy of
    16-bit weights (full or freeze fine-tuning in bf16/fp16 would step in 16 bits), and a mixture of experts
    leaves experts without a gradient in a step, which DDP's reducer would have to search for every step.
    The model's shape unknown: not chosen."""
    return (shape is not None and not shape.experts
            and (config.finetuning_type == "lora" or not (config.bf16 or config.fp16)))


@dataclass(frozen=True)
class Decision:
    optimizer: bool
    param: bool
    decided: bool  # False: nothing was auto, or the memory is unknown here (a node decides)
    message: str = ""
    fits: bool = True
    recompute: bool = True  # gradient checkpointing
    stage: int = 3  # the ZeRO stage

    @property
    def label(self) -> str:
        return label(self.optimizer, self.param)


def decide(estimates: list[Estimate], zero_stages: tuple[int, ...], optimizer: bool | str, param: bool | str,
           memory_bytes: float | None, on_gpu: bool = True, recompute: bool | str = True,
           without_recompute: list[Estimate] = (), engine: str = DEEPSPEED,
           host_bytes: float | None = None) -> Decision:
    """The plan: the switches set stay as set; the "auto" ones take the least costly plan whose GPU figure is
    within GPU_MARGIN of memory_bytes, one GPU's (least offload first; at each, without recomputation first;
    at each, the cheapest stage first), or the most offload (recomputing, the last stage) when none is.
    zero_stages: the ZeRO stages to choose from (stages(): one where it is set); a cheaper stage than the
    last is taken only where its host figure fits within HOST_MARGIN of host_bytes, the node's memory (plain
    DDP and ZeRO-2 load the whole model in every rank's host memory): unknown, the node decides.
    memory_bytes None (unknown): the most, undecided. estimates: estimate.estimate's options for this job
    with recomputation as set (auto: on), without_recompute: with it off (read when recompute is auto). On
    CPU (on_cpu) the offload is fixed per stage and memory_bytes is the node's host memory: recomputation is
    dropped, and the cheaper stage taken, where the host figure fits within HOST_MARGIN of it."""
    auto_recompute, auto_stage = recompute == AUTO, len(zero_stages) > 1
    if optimizer != AUTO and param != AUTO and not auto_recompute and not auto_stage:
        return Decision(bool(optimizer), bool(param), decided=False, recompute=bool(recompute), stage=zero_stages[0])
    recomputes = (False, True) if auto_recompute else (bool(recompute),)
    plans = [(s, o, r) for o in OFFLOADS if optimizer in (AUTO, o[0]) and param in (AUTO, o[1])
             for r in recomputes for s in zero_stages if o in options(engine, s)]
    if not plans:  # set switches the stage cannot honour: the config's own checks say so
        return Decision(optimizer is True, param is True, decided=False, recompute=recompute is not False,
                        stage=zero_stages[-1])
    if not on_gpu:
        return on_cpu(plans, engine, recompute, memory_bytes, estimates, without_recompute)
    most = plans[-1]
    if memory_bytes is None:
        return Decision(*most[1], decided=False, recompute=most[2], stage=most[0],
                        message=f"{f'{stage_name(most[0])}, ' if auto_stage else ''}offload {label(*most[1])} "
                                "until the GPU's memory is known")
    usable = GPU_MARGIN * memory_bytes

    def figure(plan: Plan) -> Estimate:
        return figure_of(plan, engine, estimates if not auto_recompute or plan[2] else without_recompute)

    def fits(plan: Plan) -> bool:
        return figure(plan).gpu_bytes_per_device <= usable and (
            plan[0] == most[0] or host_bytes is None or figure(plan).host_bytes_per_node <= HOST_MARGIN * host_bytes)

    chosen = next((p for p in plans if fits(p)), most)
    s, option, recomputing = chosen
    figures = ", ".join(f"{named(p, auto_stage, auto_recompute)} {figure(p).gpu_bytes_per_device / GIB:.1f} GiB"
                        for p in plans)
    if s != most[0] and host_bytes is None:
        return Decision(*most[1], decided=False, recompute=most[2], stage=most[0],
                        message=f"{stage_name(s)}, offload {label(*option)} would fit the GPU (per GPU {figures}), "
                                f"but {stage_name(s)} loads the whole model in every rank's host memory "
                                f"({figure(chosen).host_bytes_per_node / GIB:.1f} GiB a node) and the node's memory "
                                "is unknown here: each node decides")
    fit = fits(chosen)
    verdict = ("the least that fits" if fit else
               "does not fit even so: shorten cutoff_len, lower the batch or add GPUs")
    checkpointing = f", gradient checkpointing {'on' if recomputing else 'off'}" if auto_recompute else ""
    cheapest = next(p for p in plans if p[1:] == (option, recomputing))  # at this offload and recomputation
    host = (f"; host memory for {stage_name(cheapest[0])} {figure(cheapest).host_bytes_per_node / GIB:.1f} GiB a "
            f"node, usable {HOST_MARGIN * host_bytes / GIB:.1f} GiB ({HOST_MARGIN:.0%} of {host_bytes / GIB:.1f} GiB)"
            if auto_stage and host_bytes is not None and cheapest[0] != most[0] else "")
    return Decision(*option, decided=True, fits=fit, recompute=recomputing, stage=s,
                    message=f"{f'{stage_name(s)}, ' if auto_stage else ''}offload {label(*option)}{checkpointing} "
                            f"({verdict}): per GPU {figures}; usable {usable / GIB:.1f} GiB ({GPU_MARGIN:.0%} of "
                            f"{memory_bytes / GIB:.1f} GiB){host}")


def figure_of(plan: Plan, engine: str, figures: list[Estimate]) -> Estimate:
    """The estimate of a plan among figures (estimate.estimate's options, recomputing as the plan does)."""
    s, option, _ = plan
    return next(e for e in figures if (e.engine, e.stage, e.offload) == (engine, s, label(*option)))


def named(plan: Plan, stage: bool, recompute: bool) -> str:
    """A plan as the decision's message lists it: its stage and recomputation where they were chosen."""
    s, option, recomputing = plan
    what = "plain DDP" if stage and s == 0 else f"{f'{stage_name(s)} ' if stage else ''}{label(*option)}"
    return what + (" without recomputation" if recompute and not recomputing else "")


def on_cpu(plans: list[Plan], engine: str, recompute: bool | str,
           host_bytes: float | None, estimates: list[Estimate], without_recompute: list[Estimate]) -> Decision:
    """decide() on a node with no GPU. The offload, per stage: under DeepSpeed its CPU Adam, and the
    parameters left in place (offloading them would copy host memory to host memory every step and save
    none; Tencent's recipe does the same); nothing under plain DDP (torch's AdamW on the CPU already) nor
    under FSDP2, which keeps everything in host memory already. Recomputation and the stage, where auto: the
    first plan (without recomputation first, the cheaper stage first) whose host figure fits within
    HOST_MARGIN of host_bytes (the node's memory, the pod's limit where it has one), else recomputing at the
    last stage (LLaMA-Factory's default); undecided while host_bytes is unknown (the operator leaves it to
    the node)."""
    def offload_on_cpu(stage: int) -> tuple[bool, bool]:
        if engine == FSDP:
            return False, False
        return max((o for s, o, _ in plans if s == stage), key=lambda o: (o[0], not o[1]))

    plans = [p for p in plans if p[1] == offload_on_cpu(p[0])]
    auto_stage, auto_recompute = len({s for s, _, _ in plans}) > 1, recompute == AUTO
    last = plans[-1]

    def said(stage: int) -> list[str]:
        chosen = offload_on_cpu(stage)
        why = (["no GPU, FSDP2 keeps everything in host memory already"] if engine == FSDP else
               ["no GPU"] + ["DeepSpeed's CPU Adam steps the optimizer"] * chosen[0]
               + ["the parameters stay where they are (host memory already)"] * (stage == 3 and not chosen[1]))
        return [f"offload {label(*chosen)}: {', '.join(why)}"] if stage or engine == FSDP else []

    if not auto_recompute and not auto_stage:
        return Decision(*last[1], decided=True, recompute=bool(recompute), stage=last[0],
                        message="; ".join(said(last[0])))

    def chosen_by(s: int, recomputing: bool) -> str:
        return ", ".join([stage_name(s)] * auto_stage
                         + [f"gradient checkpointing {'on' if recomputing else 'off'}"] * auto_recompute)

    if host_bytes is None or not (without_recompute if auto_recompute else estimates):
        unknown = f"{chosen_by(last[0], last[2])} until the node's memory and the model's size are known"
        return Decision(*last[1], decided=False, recompute=last[2], stage=last[0],
                        message="; ".join(said(last[0]) + [unknown]))

    def need(plan: Plan) -> float:
        figures = estimates if not auto_recompute or plan[2] else without_recompute
        return figure_of(plan, engine, figures).host_bytes_per_node

    usable = HOST_MARGIN * host_bytes
    s, option, recomputing = next((p for p in plans if need(p) <= usable), last)
    figures = ", ".join(f"{named(p, auto_stage, auto_recompute)} {need(p) / GIB:.1f} GiB" for p in plans)
    return Decision(*option, decided=True, recompute=recomputing, stage=s, message="; ".join(
        said(s) + [f"{chosen_by(s, recomputing)} (host memory: {figures}; usable {usable / GIB:.1f} GiB, "
                   f"{HOST_MARGIN:.0%} of the node's {host_bytes / GIB:.1f} GiB)"]))


def options_for(config, shape: Shape, nodes: int, per_node: int, on_gpu: bool, method: str | None = None,
                recompute: bool | None = None) -> list[Estimate]:
    """estimate.estimate's options for a trainer config (the one mapping from settings to an estimate);
    recompute: gradient checkpointing, if not the config's (auto counts as on)."""
    recompute = config.gradient_checkpointing is not False if recompute is None else recompute
    return estimate(shape, nodes, per_node, method or ("lora" if config.finetuning_type == "lora" else "full"),
                    config.lora_rank, config.per_device_train_batch_size, config.cutoff_len,
                    recompute, half_precision=config.bf16 or config.fp16, on_gpu=on_gpu,
                    merge=config.merge_lora, weight_bits=config.quantization_bit or shape.weight_bits)


def resolve(config, shape: Shape | None, memory_bytes: float | None, nodes: int, per_node: int, on_gpu: bool,
            host_bytes: float | None = None):
    """(config with concrete stage, offload and gradient checkpointing switches, the Decision); memory_bytes:
    one GPU's, or with no GPU the node's host memory; host_bytes: the node's host memory beside a GPU. A
    brought DeepSpeed JSON decides the offload and the stage itself (and an auto gradient checkpointing stays
    on)."""
    if config.deepspeed is not None:
        recompute = config.gradient_checkpointing is not False
        stage = brought_stage(config)
        return (config.model_copy(update={"gradient_checkpointing": recompute, "zero_stage": stage}),
                Decision(False, False, decided=False, recompute=recompute, stage=stage))
    known = bool(shape and memory_bytes)
    estimates = options_for(config, shape, nodes, per_node, on_gpu) if known else []
    without = options_for(config, shape, nodes, per_node, on_gpu, recompute=False) \
        if known and config.gradient_checkpointing == AUTO else []
    decision = decide(estimates, stages(config, shape), config.offload_optimizer, config.offload_param,
                      memory_bytes if known else None, on_gpu, config.gradient_checkpointing, without,
                      config.engine, host_bytes)
    return config.model_copy(update={"offload_optimizer": decision.optimizer, "offload_param": decision.param,
                                     "gradient_checkpointing": decision.recompute,
                                     "zero_stage": decision.stage}), decision


def brought_stage(config) -> int | str:
    """The stage of a brought DeepSpeed JSON (DeepSpeed's default 0 where it names none) where zero_stage is
    auto; as set otherwise, or where the JSON cannot be read here (a path on the pod's volume, seen from the
    operator: the node reads it)."""
    from .config import ConfigError
    from .deepspeed_config import load_raw

    if config.zero_stage != AUTO:
        return config.zero_stage
    try:
        stage = (load_raw(config.deepspeed).get("zero_optimization") or {}).get("stage", 0)
    except (ConfigError, OSError, ValueError):
        return AUTO
    return stage if stage in (0, 1, 2, 3) else AUTO


def for_node(config, memory: tuple[int, ...], nodes: int, per_node: int, host: int | None = None):
    """resolve() as a node decides: from the smallest of its GPUs, the node's host memory (host: the gang's
    smallest, where it is known), the model folder's config.json and the checkpoint it resumes, whose stage
    zero_stage auto keeps (the launcher and each worker alike: the same inputs give the same decision)."""
    from .checkpoints import starting_point
    from .estimate import load_shape
    from .gpus import host_memory_bytes
    from .resize import saved_stage

    try:
        shape = load_shape(config.model_name_or_path)
    except (OSError, KeyError, ValueError):
        shape = None
    host = host or host_memory_bytes()
    resumed = saved_stage(checkpoint := starting_point(config)) if config.zero_stage == AUTO else None
    if resumed is not None:  # DeepSpeed resumes a checkpoint under its own stage only (resize.py)
        config = config.model_copy(update={"zero_stage": resumed})
    config, decision = resolve(config, shape, min(memory) if memory else host, nodes, per_node, on_gpu=bool(memory),
                               host_bytes=host)
    if resumed is not None:
        decision = replace(decision, message=f"{stage_name(resumed)}, the stage {checkpoint.name} was written under; "
                                             f"{decision.message}".rstrip("; "))
    return config, decision
