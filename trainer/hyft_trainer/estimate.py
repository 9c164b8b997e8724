"""`hyft estimate`: host RAM per node and GPU memory per device for a Hunyuan model,
from DeepSpeed's own model-state estimators (deepspeed.runtime.zero.stage3 /
stage_1_and_2 `estimate_zero*_model_states_mem_needs`, zero_init, 1.5x buffer)
plus activations (SwiGLU), the logits at their backward peak, and on a GPU the CUDA
context and NCCL's buffers; on the host also what every trainer process and node
holds besides the model, and the export's peak. Pure arithmetic on the model config.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from .choices import SIZES
from .fsdp import DEEPSPEED, FSDP

GIB = 1024 ** 3
BUFFER = 1.5  # DeepSpeed's additional_buffer_factor
# Host memory beside the model states, rounded up from bench/estimate_vs_measured.py (torch 2.11,
# DeepSpeed 0.19, transformers 5.24, on CPU: a worker held 0.68 GiB besides its states and export,
# torch's elastic agent and the hyft launcher 0.56 GiB together). A CUDA process also maps the CUDA,
# cuBLAS, cuDNN and NCCL libraries and their host-side state: 2 to 3 GiB.
PROCESS_BASE_BYTES = 1.0 * GIB
CUDA_PROCESS_BASE_BYTES = 3.0 * GIB
NODE_BASE_BYTES = 0.6 * GIB
# GPU memory beside tensors: the CUDA context with cuBLAS/cuDNN workspaces, and NCCL's channel buffers
# (NCCL_BUFFSIZE 4 MiB per channel and peer, up to 32 channels on NVLink) when there are peers.
CUDA_CONTEXT_BYTES = 1.0 * GIB
NCCL_BUFFER_BYTES = 1.0 * GIB
# The logits' backward peak, bytes per position and vocabulary entry: the 16-bit logits (2), their
# float32 copy for the loss (4), the log-softmax (4) and its gradient (4).
LOGITS_BYTES = 14



@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied: bool
    experts: int = 0  # MoE: routed experts per layer (0: a dense model, one MLP)
    topk: int = 0  # MoE: experts each token is routed to
    shared_experts: int = 0  # MoE: experts every token goes through
    weight_bits: int = 16  # a GPTQ/AWQ folder's own quantization (its config's quantization_config.bits)

    def _layer(self, mlps: int) -> int:
        h, hd = self.hidden, self.head_dim
        attention = h * self.heads * hd * 2 + h * self.kv_heads * hd * 2  # q, o; k, v
        router = h * self.experts
        return attention + mlps * 3 * h * self.ffn + router + 2 * h + 2 * hd  # SwiGLU MLPs, norms, q/k norms

    @property
    def layer_params(self) -> int:
        return self._layer(self.experts + self.shared_experts if self.experts else 1)

    @property
    def active_layer_params(self) -> int:
        """What one token computes with: the routed experts it is sent to, not all of them."""
        return self._layer(self.topk + self.shared_experts if self.experts else 1)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.embedding_params * (1 if self.tied else 2) + self.layers * self.layer_params + self.hidden

    @property
    def active_params(self) -> int:
        return self.embedding_params * (1 if self.tied else 2) + self.layers * self.active_layer_params + self.hidden

    @property
    def largest_layer(self) -> int:
        return max(self.embedding_params, self.layer_params)

    def lora_params(self, rank: int) -> int:
        """LoRA on every linear layer of every decoder layer (target 'all'); on a MoE, the attention
        projections (its 'all', as Tencent's own script)."""
        h, hd = self.hidden, self.head_dim
        shapes = [(h, self.heads * hd), (h, self.kv_heads * hd), (h, self.kv_heads * hd), (self.heads * hd, h)]
        if not self.experts:
            shapes += [(h, self.ffn), (h, self.ffn), (self.ffn, h)]
        return self.layers * sum(rank * (i + o) for i, o in shapes)


def load_shape(model: str) -> Shape:
    if model.upper() in SIZES:
        return Shape(**SIZES[model.upper()])
    path = Path(model)
    config_path = path / "config.json" if path.is_dir() else path
    cfg = json.loads(config_path.read_text())
    experts = _per_layer(cfg.get("num_experts") or 0)
    moe = experts > 1  # a dense Hunyuan's config may say num_experts: 1
    return Shape(hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
                 kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
                 head_dim=cfg.get("head_dim") or cfg.get("attention_head_dim")
                 or cfg["hidden_size"] // cfg["num_attention_heads"],
                 ffn=_per_layer(cfg.get("moe_intermediate_size") or cfg["intermediate_size"]) if moe
                 else cfg["intermediate_size"],
                 vocab=cfg["vocab_size"], tied=cfg.get("tie_word_embeddings", False),
                 experts=experts if moe else 0, topk=_per_layer(cfg.get("moe_topk") or 1) if moe else 0,
                 shared_experts=_per_layer(cfg.get("num_shared_expert", 1)) if moe else 0,
                 weight_bits=(cfg.get("quantization_config") or {}).get("bits") or 16)


def _per_layer(value: int | list[int]) -> int:
    """Tencent's configs give some MoE settings per layer (a list); the largest counts."""
    return max(value) if isinstance(value, list) else int(value)


@dataclass(frozen=True)
class Estimate:
    stage: int
    offload: str  # none | optimizer | params+optimizer
    host_states_bytes_per_node: float  # model states and frozen weights kept in host memory
    host_base_bytes_per_node: float  # processes and launcher, before any model
    export_bytes: float  # the export's peak, on the node of global rank 0
    processes_per_node: int
    gpu_bytes_per_device: float
    activation_bytes: float
    engine: str = DEEPSPEED
    on_gpu: bool = True  # False: a CPU run, whose "device" memory is host memory too

    @property
    def label(self) -> str:
        return f"{'FSDP2' if self.engine == FSDP else stage_name(self.stage)}, offload {self.offload}"

    @property
    def host_bytes_per_node(self) -> float:
        """What the busiest node (global rank 0's, which also exports) needs at its peak."""
        return (self.host_states_bytes_per_node + self.host_base_bytes_per_node + self.export_bytes
                + self._device_in_host * self.processes_per_node)

    @property
    def host_bytes_per_process(self) -> float:
        """The same for global rank 0's process alone: a pod running one process per GPU needs it per GPU."""
        base = self.host_base_bytes_per_node - NODE_BASE_BYTES
        return ((self.host_states_bytes_per_node + base) / self.processes_per_node + self._device_in_host
                + self.export_bytes)

    @property
    def _device_in_host(self) -> float:
        return 0 if self.on_gpu else self.gpu_bytes_per_device

    @property
    def gpu_bytes_per_node(self) -> float:
        return self.gpu_bytes_per_device * self.processes_per_node

    @property
    def breakdown(self) -> str:
        return (f"states {self.host_states_bytes_per_node / GIB:.2f} + processes "
                f"{self.host_base_bytes_per_node / GIB:.2f} + export {self.export_bytes / GIB:.2f} GiB")


def model_states(trainable: int, largest: int, gpus_per_node: int, nodes: int, stage: int, offload_optimizer: bool,
                 offload_params: bool) -> tuple[float, float]:
    """(host bytes per node, GPU bytes per device) for the trainable parameters: DeepSpeed's formulas."""
    total_gpus = gpus_per_node * nodes
    if stage == 3:
        largest_mem = 4 * largest
        if offload_optimizer and offload_params:
            return trainable * 18 / nodes * BUFFER, largest_mem
        if offload_optimizer:
            return trainable * 16 / nodes * BUFFER, largest_mem + 2 * trainable / total_gpus
        return largest * 4 * gpus_per_node * BUFFER, largest_mem + 18 * trainable / total_gpus
    if offload_optimizer:
        return trainable * max(4 * total_gpus, 16) * BUFFER, 2 * trainable
    return trainable * 4 * gpus_per_node * BUFFER, 4 * trainable + 16 * trainable / total_gpus


def layer_activations(shape: Shape, tokens: int, element: int = 2) -> float:
    """What one decoder layer keeps for its backward pass with a memory-efficient attention kernel
    (no T x T scores), counted as in Korthikanti et al. for a SwiGLU MLP without dropout: the two
    norms' inputs; the attention's input, q, k, v and output; the MLP's input, gate, up, SiLU(gate)
    and their product (GPT's GeLU MLP keeps 9h per token, Hunyuan's SwiGLU h + 4·ffn). A MoE keeps that
    for each expert a token goes through, plus per routed expert the token's gathered copy and weighted
    output (2h), and the router's float32 logits and probabilities."""
    h, q, kv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    norms, attention = 2 * h, h + 2 * q + 2 * kv
    if shape.experts:
        mlp = h + (shape.topk + shape.shared_experts) * 4 * shape.ffn + shape.topk * 2 * h + 4 * shape.experts
    else:
        mlp = h + 4 * shape.ffn
    return tokens * element * (norms + attention + mlp)


def frozen_bytes(shape: Shape, frozen: int, element: int, weight_bits: int = 16) -> float:
    """The frozen weights: element bytes each, or under QLoRA the decoder layers' at weight_bits with
    bitsandbytes' constants (4-bit: a float32 scale per 64 weights, fewer with double quantization),
    the embeddings and output layer left unquantized."""
    if weight_bits >= 8 * element:
        return frozen * element
    kept = min(frozen, shape.embedding_params * (1 if shape.tied else 2))
    return (frozen - kept) * (weight_bits / 8 + (4 / 64 if weight_bits == 4 else 0)) + kept * element


def stage_name(stage: int) -> str:
    return "plain DDP" if stage == 0 else f"ZeRO-{stage}"


def ddp_states(trainable: int, frozen_weights: float, method: str, half_precision: bool) -> float:
    """Without DeepSpeed torch's AdamW keeps its two moments in the parameters' dtype: 16-bit weights,
    gradients and moments for full fine-tuning in bf16/fp16; LoRA adapters are float32 (peft upcasts
    them) over the frozen weights (frozen_bytes)."""
    element = 2 if half_precision else 4
    per_trainable = 16 if method == "lora" or not half_precision else 4 * element
    return trainable * per_trainable + frozen_weights


def activations(shape: Shape, batch: int, seq: int, checkpointing: bool, element: int = 2) -> float:
    """Every layer's activations (with full recompute: each layer's input, plus one layer's worth while it
    recomputes), and the logits at their backward peak."""
    tokens = batch * seq
    per_layer = layer_activations(shape, tokens, element)
    body = shape.layers * tokens * shape.hidden * element + per_layer if checkpointing else shape.layers * per_layer
    return body + tokens * shape.vocab * LOGITS_BYTES


def estimate(shape: Shape, nodes: int, gpus_per_node: int, method: str = "full", lora_rank: int = 8,
             batch: int = 1, seq: int = 2048, checkpointing: bool = True, half_precision: bool = True,
             on_gpu: bool = True, merge: bool = False, weight_bits: int = 16) -> list[Estimate]:
    """Every ZeRO option; half_precision False for float32 training; on_gpu False for a CPU run
    (gpus_per_node then counts processes); merge: LoRA's merge_lora; weight_bits: QLoRA's quantization_bit."""
    trainable = shape.params if method == "full" else shape.lora_params(lora_rank)
    frozen = shape.params - trainable
    act = activations(shape, batch, seq, checkpointing, 2 if half_precision else 4)
    runtime = (CUDA_CONTEXT_BYTES + (NCCL_BUFFER_BYTES if nodes * gpus_per_node > 1 else 0)) if on_gpu else 0
    # The export gathers the trained weights on global rank 0 and serializes them there: 16-bit weights
    # (float32 on CPU) for full fine-tuning, the float32 adapter for LoRA.
    export = shape.params * (2 if half_precision else 4) if method == "full" else trainable * 4
    if merge and method == "lora":  # then the 16-bit base model, merged on the CPU (merge.py)
        export += shape.params * 2
    base = NODE_BASE_BYTES + gpus_per_node * (CUDA_PROCESS_BASE_BYTES if on_gpu else PROCESS_BASE_BYTES)
    out = []
    options = [(3, True, True), (3, True, False), (3, False, False), (2, True, False), (2, False, False),
               (0, False, False)]
    if weight_bits == 8:  # ZeRO-3 cannot shard bitsandbytes' 8-bit weights (config.QUANTIZED_UNDER_ZERO3)
        options = [o for o in options if o[0] != 3]
    for stage, opt, par in options:
        if stage == 0:  # plain DDP: every GPU holds the whole model, its gradients and its optimizer states
            frozen_weights = frozen_bytes(shape, frozen, 2 if half_precision else 4, weight_bits)
            # each rank loads the whole model in host memory before it moves to the GPU: ZeRO-2's figure
            loading = model_states(trainable, trainable, gpus_per_node, nodes, 2, False, False)[0] if on_gpu else 0
            out.append(Estimate(0, "none", loading, base, export, gpus_per_node,
                                ddp_states(trainable, frozen_weights, method, half_precision) + act + runtime, act,
                                on_gpu=on_gpu))
            continue
        host, gpu = model_states(trainable, shape.largest_layer if method == "full" else trainable,
                                 gpus_per_node, nodes, stage, opt, par)
        # Frozen bf16 weights (LoRA/freeze): sharded by ZeRO-3 (in host memory when params are offloaded).
        # A QLoRA base is quantized whole on every GPU before ZeRO-3 partitions it: that is its floor.
        if frozen:
            frozen_weights = frozen_bytes(shape, frozen, 2, weight_bits)
            if stage == 3 and par:
                host += frozen_weights / nodes
                gpu += 4 * shape.largest_layer
            elif stage == 3:
                gpu += frozen_weights / (nodes * gpus_per_node)
            else:
                gpu += frozen_weights
            if stage == 3 and weight_bits < 16:
                gpu = max(gpu, frozen_weights)
        offload = "params+optimizer" if par else "optimizer" if opt else "none"
        out.append(Estimate(stage, offload, host, base, export, gpus_per_node, gpu + act + runtime, act,
                            on_gpu=on_gpu))
    # FSDP2 (engine fsdp) holds 16 bytes per trained parameter sharded, fp32 weights and gradients and Adam's
    # moments, as ZeRO-3 does (16-bit weights and gradients, the fp32 master and moments), and gathers one
    # decoder layer at a time: ZeRO-3's figures, for its two offload options; it loads no quantized base.
    if weight_bits == 16:
        out += [replace(e, engine=FSDP) for e in out if e.stage == 3 and e.offload in ("none", "params+optimizer")]
    return out


def render(shape: Shape, estimates: list[Estimate], gpu_memory_gib: float | None) -> str:
    from .offload import GPU_MARGIN

    routed = (f" ({shape.active_params / 1e9:.2f}B per token: {shape.topk} of {shape.experts} experts and "
              f"{shape.shared_experts} shared)" if shape.experts else "")
    lines = [f"model: {shape.params / 1e9:.2f}B parameters{routed}, largest layer {shape.largest_layer / 1e6:.0f}M",
             f"{'option':34s} {'host RAM/node':>14s} {'/process':>10s} {'GPU/device':>11s} {'GPU/node':>10s} "
             f"{'(activations)':>14s}" + ("  fits" if gpu_memory_gib else "")]
    for e in estimates:
        fits = ""
        if gpu_memory_gib:
            fits = "  yes" if e.gpu_bytes_per_device <= gpu_memory_gib * GIB * GPU_MARGIN else "  no"
        lines.append(f"{e.label:34s} {e.host_bytes_per_node / GIB:11.1f} GiB {e.host_bytes_per_process / GIB:6.1f} GiB "
                     f"{e.gpu_bytes_per_device / GIB:7.1f} GiB {e.gpu_bytes_per_node / GIB:6.1f} GiB "
                     f"{e.activation_bytes / GIB:10.1f} GiB{fits}")
    lines.append("host RAM: model states + trainer processes and launcher + the export's peak (global rank 0's "
                 "node); /process: global rank 0's process alone; GPU: states, activations, logits, CUDA context "
                 "and NCCL buffers" + ("" if not estimates or estimates[0].on_gpu else
                                       "; with no GPU the host RAM holds what the GPU columns count too"))
    if gpu_memory_gib:
        lines.append(f"(fits: within {GPU_MARGIN:.0%} of {gpu_memory_gib:g} GiB, leaving room for fragmentation)")
    return "\n".join(lines)
