"""Every training setting, declared once: its trainer key (LLaMA-Factory's or transformers' name
where one exists), type, default, bounds, description, who consumes it and, where the
HunyuanFineTune spec exposes it 1:1, its spec path.

From this table come the trainer config (config.TrainerConfig), the spec's 1:1 fields
(hyft_operator.api), the `TrainingArguments` keywords (worker.training_arguments), the
prepared data's settings (prepared_data.data_cache_key), the CRD and the reference docs (`make regen`).
Adding a 1:1 setting is one entry here; tests/unit/test_knobs.py proves each entry reaches its
consumer. Torch-free: the operator image imports it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticUndefined

from .choices import ChatFamily, DataFormat, FinetuningType, LrSchedulerType
from .rules import Rule

MAX_STEPS = 1_000_000_000
MAX_SECONDS = 10 * 365 * 24 * 3600  # durations beyond ten years are typos, and overflow date arithmetic
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"

# Who receives a setting (tests/unit/test_knobs.py proves each one does):
ARGS = "TrainingArguments"  # passed through as the keyword `arg` (default: the key)
DEEPSPEED = "DeepSpeed"  # the generated DeepSpeed JSON
METHOD = "method"  # the LoRA config, or which layers train (model_setup.method_settings)
DATA = "data"  # how the data is prepared: part of the prepared data's cache key
HYFT = "hyft"  # read by hyft's own code (the launcher, worker, callbacks, metrics)

# Whose key it is: a LLaMA-Factory YAML means the same by it, with the same default unless `why`
# says otherwise.
TRANSFORMERS, LLAMAFACTORY, OWN = "transformers", "LLaMA-Factory", "hyft"


class FileSystemPath:
    """Marks a setting that holds a path (config.map_paths rewrites them: `hyft run --local`)."""


PATH = FileSystemPath()


class DataFile(BaseModel):
    """A data file or folder read directly (without dataset_info.json)."""

    model_config = ConfigDict(extra="forbid")
    path: Annotated[str, PATH] = Field(description="JSON or JSONL file, or a folder of them")
    format: DataFormat = Field("auto", description="sharegpt, alpaca, or auto (detected per file)")


DatasetName = Annotated[str, Field(min_length=1, max_length=256, pattern=NO_CONTROL_CHARACTERS)]


@dataclass(frozen=True)
class Knob:
    key: str
    type: Any
    default: Any
    doc: str
    to: str
    origin: str = OWN
    spec: str | None = None  # where the spec exposes it 1:1 ("training.learningRate")
    arg: str | None = None  # the consumer's own name, where it differs from key
    bounds: dict[str, Any] = field(default_factory=dict)  # pydantic Field constraints (ge, le, max_length, ...)
    checks: tuple[Any, ...] = ()  # more Annotated metadata: Rule(...), PATH
    why: str = ""  # why the default differs from its origin's
    spec_type: Any = None  # the spec's own type: narrower (its reason in why), or optional (unset: the default)
    spec_default: Any = PydanticUndefined  # the spec's default, where it is not the default (unset: "auto")

    def annotation(self, spec: bool = False) -> Any:
        kind = self.spec_type if spec and self.spec_type is not None else self.type
        return Annotated[(kind, *self.checks)] if self.checks else kind

    def field(self, extra: dict[str, Any] | None = None, spec: bool = False) -> Any:
        mutable = isinstance(self.default, (list, dict))
        default = PydanticUndefined if self.default is REQUIRED else self.default
        if spec and self.spec_default is not PydanticUndefined:
            default = self.spec_default
        return Field(default=PydanticUndefined if mutable else default,
                     default_factory=(lambda: type(self.default)(self.default)) if mutable else None,
                     description=self.doc, **self.bounds, **(extra or {}))


REQUIRED: Any = object()
NOT_ZERO = Rule("self != 0", "must not be 0", lambda n: n != 0)
# LLaMA-Factory: a fraction below 1, or a whole number of samples
FRACTION_OR_COUNT = Rule("self < 1.0 || self == double(int(self))", "must be a fraction below 1 or a whole count",
                         lambda v: v < 1 or v == int(v))

KNOBS: tuple[Knob, ...] = (
    # the model
    Knob("model_name_or_path", str, REQUIRED, "Model folder (Hugging Face layout).", HYFT, LLAMAFACTORY,
         checks=(PATH,)),
    Knob("trust_remote_code", bool, False, "Run the model folder's own Python code (auto_map).", HYFT, LLAMAFACTORY),
    Knob("template", ChatFamily, "auto", "Chat family: small (Hunyuan-0.5B/1.8B/4B), 7b (Hunyuan-7B), or auto "
         "(detected from the tokenizer's special tokens).", DATA, LLAMAFACTORY, spec="model.family"),
    # the method
    Knob("finetuning_type", FinetuningType, "lora", "Fine-tuning method.", METHOD, LLAMAFACTORY, spec="method.type"),
    Knob("lora_rank", int, 8, "LoRA rank r.", METHOD, LLAMAFACTORY, spec="method.lora.rank",
         bounds=dict(ge=1, le=1024)),
    Knob("lora_alpha", int | None, None, "LoRA alpha (default: 2 x rank).", METHOD, LLAMAFACTORY,
         spec="method.lora.alpha", bounds=dict(ge=1, le=4096)),
    Knob("lora_dropout", float, 0.0, "LoRA dropout.", METHOD, LLAMAFACTORY, spec="method.lora.dropout",
         bounds=dict(ge=0, lt=1)),
    Knob("use_rslora", bool, False, "Rank-stabilised LoRA: scale the adapter by alpha/sqrt(rank), not alpha/rank.",
         METHOD, LLAMAFACTORY),
    Knob("loraplus_lr_ratio", float | None, None, "LoRA+: the learning rate of the B matrices, as a multiple of "
         "learning_rate (peft's create_loraplus_optimizer; 16 in the LoRA+ paper).", HYFT, LLAMAFACTORY,
         bounds=dict(gt=0, le=1e4)),
    Knob("loraplus_lr_embedding", float, 1e-6, "LoRA+: the learning rate of LoRA on embedding layers.", HYFT,
         LLAMAFACTORY, bounds=dict(gt=0, le=1)),
    Knob("lora_target", str, "all", "'all' or comma-separated module names to adapt. all: every linear layer; "
         "on a mixture of experts (Hunyuan-A13B) the attention projections, as Tencent's own script; `experts` "
         "adapts the experts' own weights.", METHOD, LLAMAFACTORY),
    Knob("merge_lora", bool, False, "After training, also write the base model with the LoRA merged into it to "
         "output_dir/merged: 16-bit safetensors shards with the tokenizer, chat template, generation config and "
         "the model's own code, ready for a serving pod (merged on global rank 0's node, in host memory: hyft "
         "estimate counts it).", HYFT, spec="method.lora.merge"),
    Knob("quantization_bit", Literal[4, 8] | None, None, "QLoRA: load the base model's linear layers quantized "
         "to this many bits by bitsandbytes and train LoRA on top (the embeddings and output layer stay 16-bit; "
         "8 bits need zero_stage 0 or 2). merge_lora then merges onto the 16-bit base.", HYFT, LLAMAFACTORY,
         spec="method.lora.quantizationBit"),
    Knob("quantization_method", Literal["bnb"], "bnb", "How quantization_bit quantizes the base model: bnb "
         "(bitsandbytes, at load; a GPTQ/AWQ model folder brings its own quantization_config).", HYFT, LLAMAFACTORY),
    Knob("quantization_type", Literal["nf4", "fp4"], "nf4", "QLoRA 4-bit: the data type of the quantized weights.",
         HYFT, LLAMAFACTORY, spec="method.lora.quantizationType"),
    Knob("double_quantization", bool, True, "QLoRA 4-bit: quantize the quantization constants too (about 0.4 "
         "bits per parameter less).", HYFT, LLAMAFACTORY, spec="method.lora.doubleQuantization"),
    Knob("additional_target", str | None, None, "Comma-separated modules besides the LoRA layers that train in "
         "full and are saved with the adapter (peft's modules_to_save), e.g. embed_tokens,lm_head.", METHOD,
         LLAMAFACTORY),
    Knob("freeze_trainable_modules", str, "all", "Freeze: 'all' or comma-separated modules of the trainable "
         "layers that train (e.g. mlp,self_attn).", METHOD, LLAMAFACTORY),
    Knob("freeze_extra_modules", str | None, None, "Freeze: comma-separated modules outside the decoder layers "
         "that train too (e.g. embed_tokens,norm).", METHOD, LLAMAFACTORY),
    Knob("freeze_trainable_layers", int, 2, "Train the last N decoder layers (negative: the first N).", METHOD,
         LLAMAFACTORY, spec="method.freeze.trainableLayers", bounds=dict(ge=-1024, le=1024), checks=(NOT_ZERO,)),
    Knob("upcast_layernorm", bool, False, "Keep the normalisation layers' weights in float32 under half-precision "
         "training (plain DDP, zero_stage 0; DeepSpeed keeps every parameter in the training precision: no effect "
         "there, said at start-up).", HYFT, LLAMAFACTORY),
    Knob("moe_leaf_module", bool, True, "Under ZeRO-3, make each mixture-of-experts block a leaf module: all of its "
         "experts are gathered on entering it (DeepSpeed's set_z3_leaf_modules; Tencent's "
         "--make_moe_param_leaf_module), not part by part in an order the routing changes.", HYFT,
         spec="method.moeLeafModule"),
    Knob("moe_aux_loss_coef", float | None, None, "A mixture of experts: add the routers' load-balancing loss "
         "(Switch Transformer's) times this to the loss. Unset: logged (router_aux_loss), not trained on, as "
         "LLaMA-Factory does for Hunyuan-A13B.", HYFT, LLAMAFACTORY, bounds=dict(ge=0, le=10)),
    # the data
    Knob("dataset", list[DatasetName], [], "Dataset names from dataset_dir's dataset_info.json.", HYFT,
         LLAMAFACTORY, spec="data.names", bounds=dict(max_length=32)),
    Knob("dataset_dir", str | None, "data", "The folder holding dataset_info.json (relative: to the working "
         "folder).", HYFT, LLAMAFACTORY, checks=(PATH,)),
    Knob("data_files", list[DataFile], [], "Files read without dataset_info.json.", HYFT),
    Knob("cutoff_len", int, 2048, "Maximum tokens per sample (or per pack with packing).", DATA, LLAMAFACTORY,
         spec="data.cutoffLen", bounds=dict(ge=16, le=1048576)),
    Knob("packing", bool, False, "Pack several samples into one sequence (no attention across samples).", DATA,
         LLAMAFACTORY, spec="data.packing"),
    Knob("mix_strategy", Literal["concat", "interleave_under", "interleave_over", "interleave_once"], "concat",
         "How several datasets mix: concat (all of each), or interleaved by interleave_probs (datasets' "
         "interleave_datasets): under stops when the first dataset runs out, over when the last does (repeating "
         "the others), once uses every sample once.", DATA, LLAMAFACTORY),
    Knob("interleave_probs", str | list[float] | None, None, "With an interleave mix_strategy: the share of "
         "each dataset, in the order of dataset then data_files (\"0.7,0.3\"; unset: equal turns).", DATA,
         LLAMAFACTORY),
    Knob("train_on_prompt", bool, False, "Also train on prompt tokens.", DATA, LLAMAFACTORY,
         spec="data.trainOnPrompt"),
    Knob("mask_history", bool, False, "Train only the last assistant turn of each conversation.", DATA,
         LLAMAFACTORY, spec="data.maskHistory"),
    Knob("default_system", str | None, None, "The system message of a conversation that has none (LLaMA-Factory's "
         "default_system; its hunyuan templates have none).", DATA, LLAMAFACTORY,
         bounds=dict(max_length=100_000)),
    Knob("train_assistant_header", bool, False, "Also train on the assistant turn's header tokens.", DATA),
    Knob("skip_invalid_samples", bool, False, "Skip (and count) invalid samples instead of failing the job.", HYFT,
         spec="data.skipInvalidSamples"),
    Knob("template_check_samples", int, 32, "Conversations rendered by the model's own chat_template at start-up "
         "and compared token for token (0: off).", DATA, bounds=dict(ge=0, le=100_000)),
    Knob("max_samples", int | None, None, "Use at most the first N samples of each dataset.", DATA, LLAMAFACTORY,
         bounds=dict(ge=1)),
    Knob("preprocessing_num_workers", int | None, None, "Processes for validation and tokenization (default: up "
         "to 8, by data size).", HYFT, LLAMAFACTORY, bounds=dict(ge=1, le=1024)),
    Knob("val_size", float, 0.0, "Samples held out for evaluation: a fraction below 1, or a whole count.", DATA,
         LLAMAFACTORY, spec="data.valSize", bounds=dict(ge=0, le=MAX_STEPS), checks=(FRACTION_OR_COUNT,)),
    Knob("data_cache_dir", str | None, None, "Where global rank 0 keeps the prepared (tokenized, packed) data for "
         "every rank and later runs, one folder per content and settings (default: output_dir/.hyft-data-cache).",
         HYFT, checks=(PATH,)),
    # training
    Knob("learning_rate", float, 1e-4, "Peak learning rate.", ARGS, TRANSFORMERS, spec="training.learningRate",
         bounds=dict(gt=0, le=1), why="LLaMA-Factory's LoRA examples use 1e-4 (transformers' own default is 5e-5)"),
    Knob("num_train_epochs", float, 3.0, "Training epochs (ignored when max steps are set).", ARGS, TRANSFORMERS,
         spec="training.epochs", bounds=dict(gt=0, le=1000)),
    Knob("max_steps", int, -1, "Total optimizer steps, overriding the epochs (-1: off).", ARGS, TRANSFORMERS,
         bounds=dict(ge=-1, le=MAX_STEPS)),
    Knob("per_device_train_batch_size", int, 1, "Micro-batch size per GPU.", ARGS, TRANSFORMERS,
         spec="training.perDeviceBatchSize", bounds=dict(ge=1, le=4096),
         why="transformers' 8 sequences of cutoff_len tokens do not fit a 7B model's GPU; LLaMA-Factory's "
             "examples set 1"),
    Knob("per_device_eval_batch_size", int | None, None, "Evaluation micro-batch (default: the training one).",
         HYFT, TRANSFORMERS, bounds=dict(ge=1, le=4096)),
    Knob("gradient_accumulation_steps", int, 1, "Micro-batches accumulated per optimizer step.", ARGS, TRANSFORMERS,
         spec="training.gradientAccumulationSteps", bounds=dict(ge=1, le=4096)),
    Knob("lr_scheduler_type", LrSchedulerType, "cosine", "Learning-rate schedule.", ARGS, TRANSFORMERS,
         spec="training.lrSchedulerType",
         why="LLaMA-Factory's examples use cosine (transformers' own default is linear)"),
    Knob("warmup_ratio", float, 0.0, "Warm-up share of all steps, below 1.", ARGS, TRANSFORMERS,
         spec="training.warmupRatio", arg="warmup_steps", bounds=dict(ge=0, lt=1)),  # transformers reads >= 1 as steps
    Knob("weight_decay", float, 0.0, "AdamW weight decay.", ARGS, TRANSFORMERS, spec="training.weightDecay",
         bounds=dict(ge=0, le=10)),
    Knob("max_grad_norm", float, 1.0, "Gradient clipping norm (0: off).", ARGS, TRANSFORMERS,
         spec="training.maxGradNorm", bounds=dict(ge=0, le=1e6)),
    Knob("bf16", bool, False, "Train in bfloat16.", ARGS, TRANSFORMERS),
    Knob("fp16", bool, False, "Train in float16.", ARGS, TRANSFORMERS),
    Knob("gradient_checkpointing", bool | Literal["auto"], "auto", "Recompute activations to save GPU memory. "
         "auto (on the spec: unset): off where the GPU estimate fits without it at the least offload, else on "
         "(decided with the offload; the job's status and start-up log say so); with no GPU, off where the "
         "estimate fits the node's memory with a margin (the pod's limit where it has one), else on. "
         "LLaMA-Factory turns it on unless disable_gradient_checkpointing. The loss is the same either way.", ARGS,
         LLAMAFACTORY,
         spec="training.gradientCheckpointing", spec_type=bool | None, spec_default=None,
         arg="activation_checkpointing"),  # transformers 5's name; gradient_checkpointing is its deprecated alias
    Knob("label_smoothing_factor", float, 0.0, "Label smoothing of the cross-entropy over target tokens.", HYFT,
         TRANSFORMERS, bounds=dict(ge=0, lt=1)),  # hyft's loss (batches.token_mean_loss) applies it
    Knob("attn_implementation", Literal["auto", "varlen", "sdpa", "eager", "flash_attention_2", "flex_attention"],
         "auto", "The attention kernel (transformers' attn_implementation; LLaMA-Factory's flash_attn is read as it). "
         "auto: varlen (torch's variable-length flash kernel over each batch's samples: no mask, no padding "
         "computed) on a bf16/fp16 GPU of compute capability 8.0 or newer, else sdpa.", HYFT, TRANSFORMERS,
         spec="training.attnImplementation"),
    Knob("seed", int, 42, "Random seed (data order, initialisation, the validation split).", ARGS, TRANSFORMERS,
         spec="training.seed", bounds=dict(ge=0, le=2**32 - 1)),
    Knob("dataloader_num_workers", int, 0, "Data loader processes per rank.", ARGS, TRANSFORMERS,
         bounds=dict(ge=0, le=256)),
    Knob("ddp_timeout", int, 1800, "Seconds a collective may wait for the other ranks.", ARGS, TRANSFORMERS,
         bounds=dict(ge=1, le=MAX_SECONDS)),
    Knob("preflight_timeout", int, 600, "How long the gang may take to assemble before the preflight gives up: a "
         "worker node waits this long for the master's address (exit 3), the master for every node to join (exit "
         "6), each rank for the preflight all-reduce (exit 7). All three restart the gang.", HYFT,
         spec="runPolicy.preflightTimeoutSeconds", bounds=dict(ge=10, le=86400)),
    Knob("logging_steps", int, 10, "Log (and export metrics) every N steps.", ARGS, TRANSFORMERS,
         spec="training.loggingSteps", bounds=dict(ge=1, le=MAX_STEPS),
         why="the job's status, stall detection and the dashboard read the logged steps (transformers: 500)"),
    Knob("save_steps", int, 500, "Checkpoint every N steps.", ARGS, TRANSFORMERS, spec="training.saveSteps",
         bounds=dict(ge=1, le=MAX_STEPS)),
    Knob("save_total_limit", int | None, None, "Keep at most N checkpoints (oldest removed).", ARGS, TRANSFORMERS,
         spec="training.saveTotalLimit", bounds=dict(ge=1, le=100_000)),
    Knob("save_only_model", bool, False, "Checkpoints without optimizer state: smaller, but a restart cannot "
         "resume from them and starts over.", ARGS, TRANSFORMERS),
    Knob("resume_from_checkpoint", str | bool | None, None, "A checkpoint to start from when output_dir has none "
         "of its own (hyft resumes its own).", HYFT, TRANSFORMERS, checks=(PATH,)),
    Knob("eval_strategy", Literal["no", "steps"] | None, None, "steps: evaluate the val_size split every "
         "eval_steps (default logging_steps).", HYFT, TRANSFORMERS),
    Knob("eval_steps", int | None, None, "Evaluate every N steps (needs a validation split).", HYFT, TRANSFORMERS,
         spec="training.evalSteps", bounds=dict(ge=1, le=MAX_STEPS)),
    Knob("early_stopping_steps", int | None, None, "Stop after N evaluations without eval-loss improvement (needs "
         "eval steps).", HYFT, LLAMAFACTORY, spec="training.earlyStoppingPatience", bounds=dict(ge=1, le=100_000)),
    Knob("output_dir", str, "output", "Checkpoints, the export, reports and logs.", ARGS, TRANSFORMERS,
         checks=(PATH,)),
    # DeepSpeed: a raw JSON (path or dict, like LLaMA-Factory's) or hyft's generated config
    Knob("deepspeed", str | dict[str, Any] | None, None, "A DeepSpeed JSON (path or mapping) used instead of the "
         "generated one.", DEEPSPEED, TRANSFORMERS, checks=(PATH,)),
    Knob("engine", Literal["deepspeed", "fsdp"], "deepspeed", "What shards the training state across the GPUs: "
         "deepspeed (ZeRO, zero_stage) or fsdp (torch's FSDP2: parameters, gradients and optimizer states sharded "
         "like ZeRO-3, with the decoder layer as the unit; its CPU offload moves all three, so offload_param and "
         "offload_optimizer are one switch there). LLaMA-Factory's fsdp key selects fsdp.", HYFT,
         spec="training.engine"),
    Knob("fsdp_config", dict[str, Any], {}, "engine fsdp: transformers' fsdp_config keys hyft passes on "
         "(reshard_after_forward, transformer_layer_cls_to_wrap, auto_wrap_policy, min_num_params, "
         "cpu_ram_efficient_loading); its offload, activation checkpointing and version keys are read as hyft's "
         "settings, FSDP1's spellings as FSDP2's.", HYFT, TRANSFORMERS),
    Knob("zero_stage", Literal[0, 2, 3, "auto"], "auto", "ZeRO stage (0: plain DDP without DeepSpeed). auto (on "
         "the spec: unset): decided with the offload, the cheapest whose GPU estimate fits and whose host figure the "
         "node's memory holds: 0 where the whole model and its optimizer states fit every GPU and DDP trains alike "
         "(LoRA or float32 training, a dense model), else 2 where whole 16-bit parameters fit every GPU (no "
         "gathering them twice a step), else 3; 3 where only it can train (engine fsdp, offload_param), never 3 "
         "where it cannot (8-bit QLoRA, a GPTQ/AWQ base); a resume keeps its checkpoint's stage.", DEEPSPEED,
         spec="deepspeed.stage", spec_type=Literal[0, 2, 3] | None, spec_default=None),
    Knob("offload_optimizer", bool | Literal["auto"], "auto", "Keep optimizer states in host memory (DeepSpeed's "
         "CPU Adam). auto (on the spec: unset): only when the GPU estimate does not fit without it (the job's status "
         "and start-up log say why); on CPU, always under DeepSpeed (its CPU Adam).", DEEPSPEED,
         spec="deepspeed.offloadOptimizer", spec_type=bool | None, spec_default=None),
    Knob("offload_param", bool | Literal["auto"], "auto", "Keep parameters in host memory (ZeRO-3 only). auto (on "
         "the spec: unset): only when the GPU estimate does not fit with optimizer offload alone; on CPU, never "
         "(they are in host memory already).", DEEPSPEED,
         spec="deepspeed.offloadParams", spec_type=bool | None, spec_default=None),
    Knob("deepspeed_overrides", dict[str, Any], {}, "DeepSpeed JSON merged over the generated config; values "
         "that contradict the settings above or training are refused.", DEEPSPEED, spec="deepspeed.overrides"),
    # observability
    Knob("metrics_port", int | None, 9090, "Prometheus metrics port (null: off).", HYFT,
         bounds=dict(ge=1, le=65535)),
    Knob("job_name", str | None, None, "The hyft_job label of the metrics.", HYFT),
    Knob("report_to", list[Literal["tensorboard"]], [], "Also log to TensorBoard (output_dir/runs).", ARGS,
         TRANSFORMERS),
    Knob("plot_loss", bool, True, "Write output_dir/loss.png.", HYFT, LLAMAFACTORY),
)
BY_KEY = {k.key: k for k in KNOBS}


def default(key: str) -> Any:
    return BY_KEY[key].default


def under(group: str) -> list[tuple[str, Knob]]:
    """(spec field name, knob) for the knobs the spec exposes 1:1 directly under group ("training")."""
    return [(k.spec.rsplit(".", 1)[1], k) for k in KNOBS if k.spec and k.spec.rsplit(".", 1)[0] == group]
