"""Enumerations shared by the spec (hyft_operator.api), the trainer config and the CLI: each
defined once. Torch-free: the operator image imports it."""
from __future__ import annotations

from typing import Literal

ChatFamily = Literal["auto", "small", "7b"]  # auto: detected from the tokenizer's special tokens
DataFormat = Literal["auto", "sharegpt", "alpaca"]  # auto: detected per file
FinetuningType = Literal["lora", "full", "freeze"]
LrSchedulerType = Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                          "polynomial", "inverse_sqrt"]
