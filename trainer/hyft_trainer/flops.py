"""Model FLOPs utilisation: the model FLOPs a trained token costs, the GPU's dense peak for the
precision, and their ratio to the measured tokens per second. Pure: the trainer's metrics (hyft_train_mfu)
and `make gpu-check` use it."""
from __future__ import annotations

from .estimate import Shape

# Dense bf16/fp16 peak FLOP/s per GPU, by the name torch reports (NVIDIA's datasheets, without sparsity).
PEAK_HALF = {"H200": 989e12, "H100 80GB HBM3": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H20": 148e12,
             "A100": 312e12, "L40S": 362e12, "B200": 2250e12, "GB200": 2500e12}


def peak_flops(name: str) -> float | None:
    """The dense bf16/fp16 peak of a GPU by its name; None for one not in the table."""
    return next((peak for key, peak in PEAK_HALF.items() if key in name), None)


def flops_per_token(shape: Shape, seq: int) -> float:
    """Model FLOPs per trained token (PaLM's accounting): 6 per parameter for forward and backward, plus the
    attention scores, 12 x layers x hidden x sequence. Recomputation is not counted (it is overhead), and
    LoRA is counted as full training, as MFU is by convention. A MoE counts the parameters a token is routed
    through, not every expert."""
    return 6 * shape.active_params + 12 * shape.layers * shape.hidden * seq


def mfu(tokens_per_second: float, shape: Shape, seq: int, gpus_used: int, peak: float | None) -> float | None:
    if not peak or not tokens_per_second:
        return None
    return tokens_per_second * flops_per_token(shape, seq) / (gpus_used * peak)
