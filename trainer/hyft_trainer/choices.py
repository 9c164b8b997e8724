"""Enumerations and the published model sizes shared by the spec (hyft_operator.api), the trainer
config and the CLI: each defined once. Torch-free: the operator image imports it."""
from __future__ import annotations

from typing import Literal

ChatFamily = Literal["auto", "small", "7b", "a13b"]  # auto: from the tokenizer's special tokens and the model
DataFormat = Literal["auto", "sharegpt", "alpaca"]  # auto: detected per file
FinetuningType = Literal["lora", "full", "freeze"]
LrSchedulerType = Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                          "polynomial", "inverse_sqrt", "cosine_with_min_lr"]

# The published configs (../shared/hunyuan-chat-format.md).
SIZES = {
    "0.5B": dict(hidden=1024, layers=24, heads=16, kv_heads=8, head_dim=128, ffn=3584, vocab=120818, tied=True),
    "1.8B": dict(hidden=2048, layers=32, heads=16, kv_heads=4, head_dim=128, ffn=6144, vocab=120818, tied=True),
    "4B": dict(hidden=3072, layers=36, heads=32, kv_heads=8, head_dim=128, ffn=8192, vocab=120818, tied=True),
    "7B": dict(hidden=4096, layers=32, heads=32, kv_heads=8, head_dim=128, ffn=14336, vocab=128167, tied=False),
    # Hunyuan-A13B: a MoE of 64 experts (8 routed per token) and 1 shared expert, each a SwiGLU of width ffn
    "A13B": dict(hidden=4096, layers=32, heads=32, kv_heads=8, head_dim=128, ffn=3072, vocab=128167, tied=True,
                 experts=64, topk=8, shared_experts=1),
}
