"""One training process (started per GPU — or once per CPU node — by torch's
elastic launcher): data, model, method, DeepSpeed, Trainer, checkpoints, export.

    python -m hyft_trainer.worker CONFIG      (normally through `hyft train`)
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from . import attention, fabric, gpus, offload
from .checkpoints import newest_complete
from .config import ConfigError, TrainerConfig, dump_config, load_config
from .contract import ATTEMPT_ENV, EXIT_INVALID, POD_NAME_ENV, PREFLIGHT_SECONDS_ENV
from .encode import IGNORE, MaskOptions
from .knobs import ARGS, DATA, KNOBS
from .loading import DataError, sources_for_config
from .packing import first_fit_decreasing, pack
from .preflight import PreflightError, check_gang

# The launcher's folder for talking with its workers (torchrun passes only exit status 1 on):
LAUNCH_DIR_ENV = "HYFT_LAUNCH_DIR"
STOP_FILE = "stop"  # the launcher got SIGTERM: checkpoint at the next step and exit 0
EXIT_FILE = "exit"  # a worker stopped for a known reason: "<exit code>\n<message>", the launcher exits so
MODEL_LOADING = "loading the model from"  # the log's line when the slow part begins
STARTED_FILE = "started"  # a worker process ran: the gang assembled (its absence after a failure: it did not)


def launch_file(name: str) -> Path | None:
    folder = os.environ.get(LAUNCH_DIR_ENV)
    return Path(folder) / name if folder else None


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


def trained_positions(labels):
    """The positions whose logits the loss reads: position p predicts token p + 1, so p is kept
    when labels[p + 1] is a target. Prompts, padding and each row's last position are not."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:].ne(IGNORE)
    return keep


def keeps_trained_logits(model) -> bool:
    """transformers' own causal LMs take a boolean `logits_to_keep` (B, T) and project only those
    positions onto the vocabulary; remote-code models may slice it differently, so they get all."""
    import inspect

    return (type(model).__module__.startswith("transformers.")
            and "logits_to_keep" in inspect.signature(type(model).forward).parameters)


PAD_MULTIPLE = 8  # tensor cores take matrix sizes in multiples of 8


class PaddingCollator:
    """Pads to the longest in the batch, rounded up to a multiple of 8; packed rows carry position_ids
    and NO attention mask, so transformers builds a block-diagonal causal mask from the restarting
    positions (or varlen cuts them into documents). With documents (varlen) every row carries
    position ids, a pad its own one-token document, and no row a mask. With keep_trained_logits the
    batch says which positions need logits: the LM head (vocabulary x hidden, and its float32 copy
    for the loss) then runs on the target tokens only."""

    def __init__(self, pad_id: int, batch_log: str | None = None, keep_trained_logits: bool = False,
                 documents: bool = False):
        self.pad_id = pad_id
        self.batch_log = batch_log  # diagnostics: which samples this rank trained on
        self.keep_trained_logits = keep_trained_logits
        self.documents = documents

    def __call__(self, rows):
        import torch

        if self.batch_log:
            with open(self.batch_log, "a") as f:
                f.write(json.dumps([hash(tuple(r["input_ids"])) for r in rows]) + "\n")

        longest = -(-max(len(r["input_ids"]) for r in rows) // PAD_MULTIPLE) * PAD_MULTIPLE

        def padded(key, value):
            return torch.tensor([r[key] + [value] * (longest - len(r[key])) for r in rows])

        batch = {"input_ids": padded("input_ids", self.pad_id), "labels": padded("labels", IGNORE)}
        if "position_ids" in rows[0]:
            batch["position_ids"] = padded("position_ids", 0)
        elif self.documents:
            batch["position_ids"] = torch.tensor([list(range(len(r["input_ids"])))
                                                  + [0] * (longest - len(r["input_ids"])) for r in rows])
        else:
            batch["attention_mask"] = torch.tensor([[1] * len(r["input_ids"]) + [0] * (longest - len(r["input_ids"]))
                                                    for r in rows])
        if self.keep_trained_logits:
            batch["logits_to_keep"] = trained_positions(batch["labels"])
        return batch


def prepare_data(config: TrainerConfig, tokenizer):
    """Validate, tokenize, split and pack (global rank 0, for every rank: build_datasets)."""
    from datasets import Dataset

    from .data_check import prepare

    opts = MaskOptions(config.train_on_prompt, config.mask_history, config.train_assistant_header)
    encoded, report = prepare(sources_for_config(config), tokenizer, config.template, config.cutoff_len,
                              opts=opts, num_proc=config.preprocessing_num_workers, max_samples=config.max_samples,
                              template_check_samples=config.template_check_samples)
    if encoded is None or not encoded.num_rows:
        check_prepared(config, report, rows=0)
    encoded = encoded.select_columns(["input_ids", "labels"])
    eval_ds = None
    if config.val_size:
        count = config.val_size >= 1  # LLaMA-Factory: a whole number of samples
        split = encoded.train_test_split(test_size=int(config.val_size) if count else config.val_size,
                                         seed=config.seed)
        encoded, eval_ds = split["train"], split["test"]
    if config.packing:
        rows = encoded.to_dict()
        samples = list(zip(rows["input_ids"], rows["labels"], strict=True))
        packs = [pack(samples, g) for g in first_fit_decreasing([len(s[0]) for s in samples], config.cutoff_len)]
        encoded = Dataset.from_list(packs)
    return encoded, eval_ds, report


def check_prepared(config: TrainerConfig, report, rows: int) -> None:
    """What stops training after preparation, the same on every rank."""
    if report.template_mismatch:
        raise ConfigError(report.template_mismatch)
    if report.failed and not config.skip_invalid_samples:
        raise DataError("invalid training data (set skip_invalid_samples to train without these):\n"
                        + report.render())
    if not rows:
        raise DataError("no valid training samples" + (":\n" + report.render() if report.failed else ""))


def data_cache_key(config: TrainerConfig) -> str:
    from . import data_cache

    settings = {k.key: getattr(config, k.key) for k in KNOBS if k.to == DATA}
    settings["seed"] = config.seed  # the validation split's
    sources = sources_for_config(config)
    settings["sources"] = [(str(s.path), s.format, s.name, s.dataset, repr(s.columns)) for s in sources]
    return data_cache.key([s.path for s in sources], Path(config.model_name_or_path), settings)


def build_datasets(config: TrainerConfig, tokenizer, state):
    """(train, eval, report, cache facts): prepared once per job by global rank 0 into the shared data cache,
    memory-mapped by every rank (data_cache)."""
    import torch.distributed as dist

    from . import data_cache

    key = [data_cache_key(config) if state.is_main_process else None]
    if state.num_processes > 1:
        dist.broadcast_object_list(key, src=0)
    folder = Path(config.data_cache_dir or Path(config.output_dir) / data_cache.FOLDER) / key[0]
    built = False
    if not data_cache.complete(folder):
        if state.is_main_process:
            print(f"hyft: preparing the data once for every rank into {folder}", flush=True)
            data_cache.clear_failure(folder)
            try:
                data_cache.save(folder, *prepare_data(config, tokenizer))
                built = True
            except (ConfigError, DataError) as err:
                data_cache.save_failure(folder, type(err).__name__, str(err))
        elif state.local_process_index == 0:
            print(f"hyft: waiting for global rank 0 to prepare the data into {folder} "
                  f"(at most ddp_timeout, {config.ddp_timeout}s)", flush=True)
        state.wait_for_everyone()
    if failed := data_cache.failure(folder):
        raise (ConfigError if failed["kind"] == "ConfigError" else DataError)(failed["message"])
    train_ds, eval_ds, report = data_cache.load(folder)
    if not built and state.local_process_index == 0:
        print(f"hyft: loaded the prepared data from {folder} ({train_ds.num_rows} rows; prepared earlier or by "
              "global rank 0)", flush=True)
    check_prepared(config, report, train_ds.num_rows)
    if report.failed and state.is_main_process:
        print(f"hyft: {report.skipped_summary()}", flush=True)
    return train_ds, eval_ds, report, {"folder": str(folder), "built_here": built}


def method_settings(config: TrainerConfig, layers: int) -> dict:
    """LoRA: peft's LoraConfig keywords; freeze: which of the model's decoder layers train."""
    if config.finetuning_type == "lora":
        targets = "all-linear" if config.lora_target == "all" else [t.strip() for t in config.lora_target.split(",")]
        return {"r": config.lora_rank, "lora_alpha": config.lora_alpha or 2 * config.lora_rank,
                "lora_dropout": config.lora_dropout, "target_modules": targets, "task_type": "CAUSAL_LM"}
    if config.finetuning_type == "freeze":
        n = config.freeze_trainable_layers
        return {"trainable_layers": sorted(range(layers - n, layers) if n > 0 else range(-n))}
    return {}


def apply_method(model, config: TrainerConfig):
    if config.finetuning_type == "lora":
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(**method_settings(config, 0)))
    if config.finetuning_type == "freeze":
        layers = model.model.layers
        trainable = method_settings(config, len(layers))["trainable_layers"]
        for p in model.parameters():
            p.requires_grad = False
        for i in trainable:
            for p in layers[i].parameters():
                p.requires_grad = True
    return model


def attention_kernel(config: TrainerConfig, on_gpu: bool) -> tuple[str, str]:
    """attention.choose for this process's GPU (registering varlen with transformers)."""
    import importlib.util

    import torch

    capability = torch.cuda.get_device_capability() if on_gpu else None
    try:
        kernel = attention.choose(config.attn_implementation, on_gpu, capability, config.bf16 or config.fp16,
                                  importlib.util.find_spec("flash_attn") is not None)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    attention.register()
    return kernel


def check_model(config: TrainerConfig, model_config) -> None:
    quant = getattr(model_config, "quantization_config", None)
    method = (quant or {}).get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    if method in ("gptq", "awq"):
        if config.zero_stage == 3 or config.deepspeed is not None:
            raise ConfigError(f"the base model is {method.upper()}-quantized: it cannot be sharded by ZeRO-3; use "
                              "zero_stage 0 or 2 with finetuning_type lora")
        if config.finetuning_type != "lora":
            raise ConfigError(f"the base model is {method.upper()}-quantized: only LoRA can train it")


def token_mean_loss(outputs, labels, num_items_in_batch=None):
    """Cross-entropy summed over this rank's target tokens, divided by the target tokens of the whole
    global batch (all ranks, all accumulation steps): every token weighs the same, however the batch
    is split, so N nodes train exactly like one process with the same global batch."""
    import torch

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    targets = labels[..., 1:]
    if logits.dim() == 2:  # the trained positions' logits only (trained_positions), in the targets' order
        targets = targets[targets.ne(IGNORE)]
    else:
        logits = logits[..., :-1, :]
    targets = targets.reshape(-1).to(logits.device)
    total = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets,
                                              ignore_index=IGNORE, reduction="sum")
    if num_items_in_batch is None:
        return total / targets.ne(IGNORE).sum().clamp(min=1)
    return total / num_items_in_batch


def _batch_log(state) -> str | None:
    prefix = os.environ.get("HYFT_BATCH_LOG")
    return f"{prefix}.rank{state.process_index}" if prefix else None


def evaluates(config: TrainerConfig) -> bool:
    return bool(config.val_size) and config.eval_strategy != "no" and (
        config.eval_steps is not None or config.eval_strategy == "steps")


def training_arguments(config: TrainerConfig, ds, on_gpu: bool):
    """The Trainer's arguments. With a ZeRO-3 DeepSpeed config, creating them makes every later
    from_pretrained load the model partitioned (zero.Init): each process holds its shard only."""
    from transformers import TrainingArguments

    evaluating = evaluates(config)
    try:
        args = TrainingArguments(
            **{knob.arg or knob.key: getattr(config, knob.key) for knob in KNOBS if knob.to == ARGS},
            per_device_eval_batch_size=config.per_device_eval_batch_size or config.per_device_train_batch_size,
            eval_strategy="steps" if evaluating else "no",
            eval_steps=(config.eval_steps or config.logging_steps) if evaluating else None,
            load_best_model_at_end=bool(evaluating and config.early_stopping_steps),
            metric_for_best_model="eval_loss",
            greater_is_better=False,
            data_seed=config.seed,
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


def starting_point(config: TrainerConfig) -> Path | None:
    """This run's own newest resumable checkpoint; else the one resume_from_checkpoint names."""
    own = newest_complete(config.output_dir)
    if own is not None or not isinstance(config.resume_from_checkpoint, str):
        return own
    return Path(config.resume_from_checkpoint)


def train(config: TrainerConfig) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, EarlyStoppingCallback, Trainer, set_seed

    from .callbacks import CompleteMarker, StopOnSignal, Timeline
    from .deepspeed_config import nvcc_available, settle
    from .metrics import MetricsCallback, TrainingMetrics

    # Serve the metrics before anything slow: the operator's start-up timeout and the alerts see a
    # trainer that hangs while loading (process start and heartbeat, no step yet).
    node_rank = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")))
    metrics = TrainingMetrics(config.job_name or Path(config.output_dir).name, node_rank)
    if config.metrics_port and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        metrics.serve(config.metrics_port)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    remote = config.trust_remote_code
    model_config = AutoConfig.from_pretrained(config.model_name_or_path, trust_remote_code=remote)
    check_model(config, model_config)
    on_gpu = torch.cuda.is_available()
    nnodes = int(os.environ.get("NNODES", os.environ.get("PET_NNODES", "1")))
    config, decision = offload.for_node(config, gpus.memory_bytes(), nnodes,
                                        int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    settled = settle(config, world_size, on_gpu, nvcc_available())  # the launcher printed its notes
    config, ds = settled.config, settled.deepspeed
    kernel, kernel_why = attention_kernel(config, on_gpu)
    state = init_distributed(ds is not None, config.ddp_timeout)
    preflight_seconds = float(os.environ.get(PREFLIGHT_SECONDS_ENV, "0"))
    if state.num_processes > 1:  # before anything slow: a broken gang fails in seconds, with its reason
        preflight_seconds += check_gang(config.output_dir, config.preflight_timeout, state.device)
    metrics.preflight.set(preflight_seconds)
    fabric_facts, fabric_warnings = fabric.read(nnodes, on_gpu)
    if state.local_process_index == 0:
        nccl = f"NCCL {fabric_facts['nccl_version']}, " if on_gpu else ""
        print(f"hyft: fabric: {nccl}RDMA devices: {', '.join(fabric_facts['rdma_devices']) or 'none'}; "
              f"NCCL settings: {fabric_facts['nccl_env'] or 'none'}", flush=True)
        for warning in fabric_warnings:
            print(f"hyft: WARNING: {warning}", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path, trust_remote_code=remote)
    rss_before_data = _peak_rss()
    train_ds, eval_ds, report, cache = build_datasets(config, tokenizer, state)
    cache["peak_rss_growth_by_rank"] = _gathered(state, _peak_rss() - rss_before_data)
    args = training_arguments(config, ds, on_gpu)

    set_seed(config.seed)  # before the model: LoRA's A matrices are initialised randomly
    dtype = torch.bfloat16 if config.bf16 else torch.float16 if config.fp16 else torch.float32
    before_load = _anon_rss()
    if state.local_process_index == 0:
        print(f"hyft: attention: {kernel} ({kernel_why})", flush=True)
        print(f"hyft: {MODEL_LOADING} {config.model_name_or_path}", flush=True)
    model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path, dtype=dtype,
                                                 attn_implementation=kernel, trust_remote_code=remote)
    model.config.use_cache = False  # training; also lets packed rows get their block-diagonal mask
    # the model's own memory in this process: under ZeRO-3 its shard only
    measured = {"host_model_bytes_at_load": _anon_rss() - before_load if before_load is not None else None}
    collator = PaddingCollator(tokenizer.pad_token_id, _batch_log(state), keeps_trained_logits(model),
                               documents=kernel == attention.VARLEN)
    measured["logits"] = "trained positions" if collator.keep_trained_logits else "every position"
    measured["data_cache"] = cache
    measured.update(omp_threads=torch.get_num_threads(), fabric=fabric_facts,
                    attention={"implementation": kernel, "why": kernel_why},
                    offload={"optimizer": config.offload_optimizer, "param": config.offload_param,
                             "decided_on_node": decision.decided, "reason": decision.message})
    model = apply_method(model, config)

    stop, timeline = StopOnSignal(launch_file(STOP_FILE)), Timeline()
    callbacks = [stop, timeline, CompleteMarker(config.output_dir, resumable=not config.save_only_model),
                 MetricsCallback(metrics, config.per_device_train_batch_size * config.gradient_accumulation_steps
                                 * state.num_processes)]
    if args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_steps))
    trainer = Trainer(model=model, args=args, train_dataset=train_ds,
                      eval_dataset=eval_ds if evaluates(config) else None,
                      data_collator=collator,
                      processing_class=tokenizer, compute_loss_func=token_mean_loss,
                      callbacks=callbacks)
    resume = starting_point(config)
    measured["host_rss_before_training"] = _peak_rss()
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
                "timeline": timeline.points})
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
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "tokens_per_second": (trainer.state.num_input_tokens_seen / result.metrics["train_runtime"]
                              if result.metrics.get("train_runtime") else None),
        "resumed_from": str(resume) if resume else None,
        "world_size": state.num_processes,
        "attempt": int(os.environ.get(ATTEMPT_ENV, "0")),
        "pod": os.environ.get(POD_NAME_ENV),
        "finetuning_type": config.finetuning_type,
        "data": {"samples": report.samples, "valid": report.valid, "invalid": dict(report.errors),
                 "invalid_examples": report.examples[:20], "chat_template_check": report.template_check},
        **measured,
        "log_history": history,
    }
    (Path(config.output_dir) / "report.json").write_text(json.dumps(run, indent=2))
    if config.plot_loss:
        write_loss_curve(history, Path(config.output_dir) / "loss.png")


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
