"""One training process (started per GPU — or once per CPU node — by torch's
elastic launcher): the run's order (preflight, data, model, method, DeepSpeed, Trainer,
checkpoints, export); the batches, the prepared data and the model set-up have modules of their own.

    python -m hyft_trainer.worker CONFIG      (normally through `hyft train`)

Over 300 lines: the run's order is one function, read top to bottom.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

from . import attention, fabric, flops, fsdp, gpus, offload, resize
from .batches import PaddingCollator, keeps_trained_logits, token_mean_loss
from .checkpoints import readable_by_all, starting_point
from .config import ConfigError, TrainerConfig, dump_config, load_config, passed_arguments
from .contract import ATTEMPT_ENV, EXIT_INVALID, PLANNED_NODES_ENV, POD_NAME_ENV, PREFLIGHT_SECONDS_ENV
from .estimate import load_shape
from .fsdp import FSDP
from .knobs import ARGS, KNOBS
from .loading import DataError
from .model_setup import (
    PREQUANTIZED,
    apply_method,
    attention_kernel,
    base_quantization,
    check_model,
    quantized_loading,
    trainer_class,
    upcast_norms,
)
from .moe import ROUTER_LOG_KEY, RouterLoss, make_moe_leaves, moe_blocks, routes_experts
from .preflight import PreflightError, check_gang, gang_minimum
from .prepared_data import build_datasets

# The launcher's folder for talking with its workers (torchrun passes only exit status 1 on):
LAUNCH_DIR_ENV = "HYFT_LAUNCH_DIR"
STOP_FILE = "stop"  # the launcher got SIGTERM: checkpoint at the next step and exit 0
EXIT_FILE = "exit"  # a worker stopped for a known reason: "<exit code>\n<message>", the launcher exits so
MODEL_LOADING = "loading the model from"  # the log's line when the slow part begins
STARTED_FILE = "started"  # a worker process ran: the gang assembled (its absence after a failure: it did not)


def launch_dir() -> Path | None:
    folder = os.environ.get(LAUNCH_DIR_ENV)
    return Path(folder) if folder else None


def launch_file(name: str) -> Path | None:
    folder = launch_dir()
    return folder / name if folder else None


def init_distributed(deepspeed: bool, timeout_s: int):
    """Trap: with no GPU accelerate would find no backend and report world size 1 on every rank
    (each rank then trains on the same batches). Configure the state explicitly first."""
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    timeout = timedelta(seconds=timeout_s)
    if deepspeed:
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # the state must be DeepSpeed's for the Trainer
    if torch.cuda.is_available():
        return PartialState(backend="nccl", timeout=timeout)
    if deepspeed:
        return PartialState(backend="gloo", timeout=timeout)
    # Plain DDP on CPU needs cpu=True: otherwise the state stays DistributedType.NO, the Trainer never
    # wraps the model in DDP, and every rank steps alone (seen: 2x logged loss, larger grad norms).
    return PartialState(cpu=True, backend="gloo", timeout=timeout)


def _batch_log(state) -> str | None:
    prefix = os.environ.get("HYFT_BATCH_LOG")
    return f"{prefix}.rank{state.process_index}" if prefix else None


def evaluates(config: TrainerConfig) -> bool:
    return bool(config.val_size) and config.eval_strategy != "no" and (
        config.eval_steps is not None or config.eval_strategy == "steps")


def scheduler_floor(kwargs: dict | str, learning_rate: float) -> dict:
    """lr_scheduler_kwargs with min_lr given as min_lr_rate: transformers turns min_lr into a rate by reading
    the optimizer's defaults, which DeepSpeed's ZeRO optimizers do not have (an AttributeError at start)."""
    kwargs = dict(json.loads(kwargs) if isinstance(kwargs, str) else kwargs)
    if "min_lr" in kwargs and "min_lr_rate" not in kwargs:
        kwargs["min_lr_rate"] = kwargs.pop("min_lr") / learning_rate
    return kwargs


def zero_stage(config: TrainerConfig, ds: dict | None) -> int | None:
    """The ZeRO stage the run trains with: the DeepSpeed config's, 0 for plain DDP, None under FSDP2."""
    if config.engine == FSDP:
        return None
    return 0 if ds is None else (ds.get("zero_optimization") or {}).get("stage", 0)


def resumed_universal(checkpoint: Path, ds: dict, state) -> dict:
    """Global rank 0 converts the ZeRO checkpoint to a universal one (once) while the others wait; the
    DeepSpeed config then loads it."""
    from .deepspeed_config import merge

    failure = None
    if state.is_main_process:
        try:
            resize.convert(checkpoint)
        except resize.ResizeError as err:
            failure = str(err)
    state.wait_for_everyone()
    if not resize.converted(checkpoint):
        raise RuntimeError(failure or f"global rank 0 could not convert {checkpoint} to DeepSpeed's universal "
                                      "checkpoint (its log says why)")
    return merge(ds, resize.UNIVERSAL)


def training_arguments(config: TrainerConfig, ds, on_gpu: bool, experts: bool = False):
    """The Trainer's arguments. With a ZeRO-3 DeepSpeed config, creating them makes every later
    from_pretrained load the model partitioned (zero.Init): each process holds its shard only. experts: the
    model is a mixture of experts (an expert may get no gradient in a step)."""
    from transformers import TrainingArguments

    if config.gradient_checkpointing == offload.AUTO:
        raise ValueError("gradient_checkpointing auto reached the training arguments: offload.resolve decides it")
    evaluating = evaluates(config)
    keywords = {knob.arg or knob.key: getattr(config, knob.key) for knob in KNOBS if knob.to == ARGS}
    keywords.update(  # hyft's defaults for transformers' own keys: a config that sets them is passed on
        per_device_eval_batch_size=config.per_device_eval_batch_size or config.per_device_train_batch_size,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=(config.eval_steps or config.logging_steps) if evaluating else None,
        load_best_model_at_end=bool(evaluating and config.early_stopping_steps),
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        data_seed=config.seed,
        # Plain DDP: where every trainable parameter gets a gradient each step (a dense model), the reducer
        # need not walk the autograd graph after each forward to find unused ones (transformers would for a
        # peft model, or without recomputation); LLaMA-Factory turns it off for LoRA alike.
        ddp_find_unused_parameters=experts,
    )
    if config.engine == FSDP:
        keywords.update(fsdp.arguments(config))
    keywords.update(passed_arguments(config))
    if isinstance(floor := keywords.get("lr_scheduler_kwargs"), (dict, str)):
        keywords["lr_scheduler_kwargs"] = scheduler_floor(floor, config.learning_rate)
    try:
        args = TrainingArguments(
            **keywords,
            # set by hyft (keys.OWNED)
            deepspeed=ds,
            ddp_backend=None if on_gpu else "gloo",
            accelerator_config={"use_configured_state": True},
            include_num_input_tokens_seen="non_padding",
            remove_unused_columns=False,
            disable_tqdm=True,
        )
    except ValueError as err:  # transformers' own checks of argument combinations
        raise ConfigError(f"training arguments: {err}") from None
    mismatches = getattr(getattr(args, "hf_deepspeed_config", None), "mismatches", None)
    if mismatches:
        raise ConfigError("the DeepSpeed JSON disagrees with the training arguments (write \"auto\" there):\n"
                          + "\n".join(mismatches))
    return args


def mfu_basis(config: TrainerConfig, on_gpu: bool, world_size: int, says: bool) -> float | None:
    """A token's model FLOPs over the gang's dense peak FLOP/s (MFU = tokens/s x this); None on a CPU, in
    fp32, or on a GPU whose peak flops.py does not know (said once per node)."""
    import torch

    if not on_gpu or not (config.bf16 or config.fp16):
        return None
    name = torch.cuda.get_device_name()
    if not (peak := flops.peak_flops(name)):
        if says:
            print(f"hyft: MFU: not exported: no dense bf16/fp16 peak known for {name} (hyft_trainer/flops.py)",
                  flush=True)
        return None
    return flops.flops_per_token(load_shape(config.model_name_or_path), config.cutoff_len) / (world_size * peak)


def train(config: TrainerConfig) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, EarlyStoppingCallback, set_seed

    from .callbacks import CompleteMarker, StopOnSignal, Timeline
    from .deepspeed_config import nvcc_available, settle
    from .metrics import MetricsCallback, TrainingMetrics

    # Serve the metrics before anything slow: the operator's start-up timeout and the alerts see a
    # trainer that hangs while loading (process start and heartbeat, no step yet).
    node_rank = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    metrics = TrainingMetrics(config.job_name or Path(config.output_dir).name, node_rank, launch_dir=launch_dir(),
                              local_rank=local_rank)
    if config.metrics_port and local_rank == 0:
        metrics.serve(config.metrics_port)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    remote = config.trust_remote_code
    model_config = AutoConfig.from_pretrained(config.model_name_or_path, trust_remote_code=remote)
    on_gpu = torch.cuda.is_available()
    nnodes = int(os.environ.get("NNODES", os.environ.get("PET_NNODES", "1")))
    memory, per_node = gpus.memory_bytes(), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    asked = config
    config, decision = offload.for_node(asked, memory, nnodes, per_node)
    check_model(config, model_config)  # with the stage decided
    settled = settle(config, world_size, on_gpu, nvcc_available())  # the launcher printed its notes
    config, ds = settled.config, settled.deepspeed
    kernel, kernel_why = attention_kernel(config, on_gpu)
    state = init_distributed(ds is not None, config.ddp_timeout)
    preflight_seconds = float(os.environ.get(PREFLIGHT_SECONDS_ENV, "0"))
    if state.num_processes > 1:  # before anything slow: a broken gang fails in seconds, with its reason
        preflight_seconds += check_gang(config.output_dir, config.preflight_timeout, state.device)
        # Each node decided from its own GPUs and memory; nodes unlike in either must still run one plan (one
        # ZeRO stage; ZeRO-3 with parameters offloaded on some ranks only does not train): the gang's smallest
        # GPU and host memory decide.
        host = gpus.host_memory_bytes() or 0
        smallest, least_host = (gang_minimum(value, state.device) for value in (min(memory, default=0), host))
        if decision.decided and (smallest, least_host) != (min(memory, default=0), host):
            config, decision = offload.for_node(asked, (smallest,) if memory else (), nnodes, per_node, least_host)
            settled = settle(config, world_size, on_gpu, nvcc_available())
            config, ds = settled.config, settled.deepspeed
            if state.is_local_main_process:
                print(f"hyft: another node has less GPU or host memory ({smallest / 2**30:.1f} GiB a GPU, "
                      f"{least_host / 2**30:.1f} GiB a node): the gang follows it: {decision.message}", flush=True)
    resume = starting_point(config)
    planned_world = int(os.environ.get(PLANNED_NODES_ENV, nnodes)) * per_node
    try:
        resized = resize.plan(resume, state.num_processes, config.per_device_train_batch_size,
                              config.gradient_accumulation_steps, zero_stage(config, ds)) if resume else None
        # a gang the operator shrank (runPolicy.resize) keeps the global batch the job plans, whatever resumes
        shrunk = resize.below_plan(planned_world, state.num_processes, config.per_device_train_batch_size,
                                   config.gradient_accumulation_steps)
    except resize.ResizeError as err:
        raise ConfigError(str(err)) from None
    if resized or shrunk:
        if state.is_local_main_process:
            for note in (resized and resized.note, shrunk and shrunk[1]):
                if note:
                    print(f"hyft: {note}", flush=True)
        accumulation = shrunk[0] if shrunk else resized.accumulation
        config = config.model_copy(update={"gradient_accumulation_steps": accumulation})
        settled = settle(config, world_size, on_gpu, nvcc_available())
        config, ds = settled.config, settled.deepspeed
        if resized and resized.zero:
            ds = resumed_universal(resume, ds, state)
    metrics.preflight.set(preflight_seconds)
    fabric_facts, fabric_warnings = fabric.read(nnodes, on_gpu)
    if state.local_process_index == 0:
        nccl = f"NCCL {fabric_facts['nccl_version']}, " if on_gpu else ""
        print(f"hyft: fabric: {nccl}RDMA devices: {', '.join(fabric_facts['rdma_devices']) or 'none'}; "
              f"NCCL settings: {fabric_facts['nccl_env'] or 'none'}", flush=True)
        for warning in fabric_warnings:
            print(f"hyft: WARNING: {warning}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path, trust_remote_code=remote)
    trainer_cls = trainer_class(config, on_gpu)  # imports the Trainer (and datasets): not counted as the data's memory
    quantized = quantized_loading(config, ds, str(state.device))  # a brought DeepSpeed JSON's stage: refused now
    rss_before_data = _peak_rss()
    train_ds, eval_ds, report, cache = build_datasets(config, tokenizer, state)
    cache["peak_rss_growth_by_rank"] = _gathered(state, _peak_rss() - rss_before_data)
    args = training_arguments(config, ds, on_gpu, routes_experts(model_config))

    set_seed(config.seed)  # before the model: LoRA's A matrices are initialised randomly
    dtype = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    before_load = _anon_rss()
    if state.local_process_index == 0:
        print(f"hyft: attention: {kernel} ({kernel_why})", flush=True)
        print(f"hyft: {MODEL_LOADING} {config.model_name_or_path}", flush=True)
    loading = dict(quantized)
    if quantized:
        from transformers import BitsAndBytesConfig

        loading["quantization_config"] = BitsAndBytesConfig(**quantized["quantization_config"])
    model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path, dtype=dtype, attn_implementation=kernel,
                                                 trust_remote_code=remote, **loading)
    model.config.use_cache = False  # training; also lets packed rows get their block-diagonal mask
    # the model's own memory in this process: under ZeRO-3 its shard only
    held = _anon_rss() - before_load if before_load is not None else None
    measured = {"host_model_bytes_at_load": held, "host_model_bytes_at_load_by_rank": _gathered(state, held)}
    collator = PaddingCollator(tokenizer.pad_token_id, _batch_log(state), keeps_trained_logits(model),
                               documents=kernel == attention.VARLEN)
    measured["logits"] = "trained positions" if collator.keep_trained_logits else "every position"
    measured["data_cache"] = cache
    # QLoRA: what bitsandbytes made of the base; a GPTQ/AWQ base: what gptqmodel loaded (quantized layers, counted)
    method = config.quantization_method if quantized else base_quantization(model.config)
    library = "bitsandbytes" if quantized else "gptqmodel"
    measured["quantization"] = {
        "method": method, "bits": config.quantization_bit or base_quantization(model.config, "bits"),
        "layers": sum(type(m).__module__.startswith(library) for m in model.modules())} \
        if quantized or method in PREQUANTIZED else None
    measured.update(omp_threads=torch.get_num_threads(), fabric=fabric_facts,
                    attention={"implementation": kernel, "why": kernel_why},
                    offload={"zero_stage": zero_stage(config, ds),
                             "optimizer": config.offload_optimizer, "param": config.offload_param,
                             "gradient_checkpointing": config.gradient_checkpointing,
                             "decided_on_node": decision.decided, "reason": decision.message})
    if (leaves := make_moe_leaves(model, config)) and state.is_local_main_process:
        print(f"hyft: ZeRO-3 leaf modules (moe_leaf_module): {', '.join(c.__name__ for c in leaves)}", flush=True)
    router = None
    if moe_blocks(model):  # the model then records its routers' logits, for the balance loss
        model.config.output_router_logits = True
        router = RouterLoss(model.config, config.moe_aux_loss_coef, config.gradient_accumulation_steps,
                            state.num_processes, args.average_tokens_across_devices)
    upcast_norms(model, config)
    model = apply_method(model, config)

    stop, timeline = StopOnSignal(launch_file(STOP_FILE)), Timeline()
    peak_per_token = mfu_basis(config, on_gpu, world_size, state.is_local_main_process)
    exporter = MetricsCallback(metrics, config.per_device_train_batch_size * config.gradient_accumulation_steps
                               * state.num_processes, peak_per_token)
    callbacks = [stop, timeline, CompleteMarker(config.output_dir, not config.save_only_model, zero_stage(config, ds)),
                 *([router] if router else []),  # before the metrics: they export what it logs
                 exporter]
    if args.load_best_model_at_end and config.early_stopping_steps:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_steps))
    if config.loraplus_lr_ratio and isinstance(ds, dict) and "optimizer" in ds:
        raise ConfigError("loraplus_lr_ratio: the DeepSpeed JSON's optimizer block makes DeepSpeed build its own "
                          "optimizer, without LoRA+'s learning rates; remove the block (the Trainer then builds "
                          "the optimizer that optim names) or loraplus_lr_ratio")
    trainer = trainer_cls(model=model, args=args, train_dataset=train_ds,
                          eval_dataset=eval_ds if evaluates(config) else None,
                          data_collator=collator,
                          processing_class=tokenizer, callbacks=callbacks,
                          compute_loss_func=functools.partial(token_mean_loss, router=router,
                                                              label_smoothing=config.label_smoothing_factor))
    measured["host_rss_before_training"] = _peak_rss()
    measured["resumed_from_world_size"] = resized.saved_world if resized else None
    started = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if on_gpu:  # every rank's peak, allocated (tensors) and reserved (what the caching allocator holds)
        measured["peak_gpu_memory_by_rank"] = _gathered(state, {"allocated": torch.cuda.max_memory_allocated(),
                                                                "reserved": torch.cuda.max_memory_reserved()})
    if stop.stopped_at is not None:
        if state.is_main_process:
            print(f"hyft: stopped by SIGTERM at step {stop.stopped_at}; checkpoint saved", flush=True)
    else:
        export(trainer, config, tokenizer, state, report, result, started, resume,
               {**measured, "peak_host_rss_bytes": _peak_rss(), "preflight_seconds": round(preflight_seconds, 3),
                "timeline": timeline.points, "overflow_skipped_steps": exporter.overflow_skipped_steps})
    # Leave together: a rank that exits while another still talks to it makes gloo abort.
    state.wait_for_everyone()
    state.destroy_process_group()
    return 0


def _return_freed_heap() -> None:
    """glibc keeps freed heap pages (loading's temporary tensors) in the process: hand them back first, so
    the figure is what the process still holds (without this, identical runs differed by up to 20 %)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure includes the allocator's cache
        pass


def _gathered(state, value) -> list:
    """value from every rank, in rank order."""
    if state.num_processes == 1:
        return [value]
    import torch.distributed as dist

    out = [None] * state.num_processes
    dist.all_gather_object(out, value)
    return out


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _anon_rss() -> int | None:
    """This process's own memory now (RssAnon: without the model file's pages, which are shared page cache)."""
    _return_freed_heap()
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def export(trainer, config: TrainerConfig, tokenizer, state, report, result, started: float, resume,
           measured: dict[str, object]) -> None:
    from .report import write_loss_curve

    out = Path(config.output_dir) / "export"
    if trainer.is_fsdp_enabled:  # save_model writes nothing for sharded checkpoints: gather the whole model
        weights = trainer.accelerator.get_state_dict(trainer.model)  # every rank takes part
        if state.is_main_process:
            trainer.accelerator.unwrap_model(trainer.model).save_pretrained(out, state_dict=weights)
    else:
        trainer.save_model(str(out))  # every rank: ZeRO-3 gathers the 16-bit weights
    if not state.is_main_process:
        return
    tokenizer.save_pretrained(out)
    (out / "hyft_config.yaml").write_text(dump_config(config))
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    run = {
        "steps": trainer.state.global_step,
        "tokens": trainer.state.num_input_tokens_seen,
        "seconds": round(time.time() - started, 3),
        "train_runtime": result.metrics.get("train_runtime"),
        "final_loss": losses[-1] if losses else None,
        "best_loss": min(losses) if losses else None,
        "best_eval_loss": min(evals) if evals else None,
        ROUTER_LOG_KEY: next((h[ROUTER_LOG_KEY] for h in reversed(history) if ROUTER_LOG_KEY in h), None),
        # load_best_model_at_end: the export holds this checkpoint's weights
        "best_checkpoint": trainer.state.best_model_checkpoint if trainer.args.load_best_model_at_end else None,
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "tokens_per_second": (trainer.state.num_input_tokens_seen / result.metrics["train_runtime"]
                              if result.metrics.get("train_runtime") else None),
        "resumed_from": str(resume) if resume else None,
        "world_size": state.num_processes,
        "attempt": int(os.environ.get(ATTEMPT_ENV, "0")),
        "pod": os.environ.get(POD_NAME_ENV),
        "finetuning_type": config.finetuning_type,
        "engine": _engine(trainer),
        "exported": {"adapter" if config.finetuning_type == "lora" else "model": str(out)},
        "data": {"samples": report.samples, "valid": report.valid, "invalid": dict(report.errors),
                 "invalid_examples": report.examples[:20], "chat_template_check": report.template_check},
        **measured,
        "log_history": history,
    }
    (Path(config.output_dir) / "report.json").write_text(json.dumps(run, indent=2))
    if config.plot_loss:
        write_loss_curve(history, Path(config.output_dir) / "loss.png")
    if refused := readable_by_all(Path(config.output_dir)):
        print(f"hyft: WARNING: {len(refused)} file(s) in {config.output_dir} belong to another uid and stay "
              f"unreadable to others, e.g. {refused[0]}", flush=True)


def _engine(trainer) -> str:
    """What wrapped the model for training (not what was asked): fsdp2, deepspeed, ddp or none."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    wrapped = trainer.model_wrapped
    return ("fsdp2" if isinstance(wrapped, FSDPModule) else "deepspeed" if trainer.is_deepspeed_enabled
            else "ddp" if isinstance(wrapped, DistributedDataParallel) else "none")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if started := launch_file(STARTED_FILE):
        started.touch()
    try:
        config = load_config(argv[0])
        code = train(config)
    except (ConfigError, DataError) as err:
        return _stop(EXIT_INVALID, str(err))
    except PreflightError as err:
        # at once: a collective still hanging in the backend (a daemon thread) must not hold the exit up
        _stop(err.exit_code, f"preflight: {err}")
        os._exit(err.exit_code)
    # Everything is saved and the process group is gone. Skip interpreter teardown: a DeepSpeed/gloo
    # thread still joinable at exit makes C++ abort ("terminate called without an active exception",
    # SIGABRT), and the other node's launcher then waits 300 s on its exit barrier.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _stop(code: int, message: str) -> int:
    """A known failure: said once, in plain words, and passed to the launcher with its exit code."""
    print(f"hyft: {message}", file=sys.stderr, flush=True)
    if path := launch_file(EXIT_FILE):
        path.write_text(f"{code}\n{message}")
    return code


if __name__ == "__main__":
    sys.exit(main())
