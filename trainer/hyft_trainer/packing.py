"""Packing: several samples in one sequence of at most cutoff_len tokens, with NO
attention across samples. Position ids restart at 0 for every sample;
transformers derives a block-diagonal causal mask from them (sdpa/eager on CPU)
or variable-length attention (flash-attention on GPU). The first label of every
sample is -100 so no loss term reads the previous sample.
"""
from __future__ import annotations

import bisect

from .encode import IGNORE


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Groups of sample indices whose lengths sum to <= capacity (best fit, longest first)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    free: list[tuple[int, int]] = []  # (remaining capacity, bin id), sorted
    bins: list[list[int]] = []
    for i in order:
        if lengths[i] > capacity:
            raise ValueError(f"sample {i} has {lengths[i]} tokens > capacity {capacity}")
        pos = bisect.bisect_left(free, (lengths[i], -1))
        if pos == len(free):
            bins.append([i])
            bisect.insort(free, (capacity - lengths[i], len(bins) - 1))
        else:
            room, b = free.pop(pos)
            bins[b].append(i)
            bisect.insort(free, (room - lengths[i], b))
    return bins


def pack(samples: list[tuple[list[int], list[int]]], group: list[int]) -> dict[str, list[int]]:
    input_ids, labels, position_ids = [], [], []
    for i in group:
        ids, labs = samples[i]
        input_ids += ids
        labels += [IGNORE, *labs[1:]]
        position_ids += list(range(len(ids)))
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def padded_efficiency(lengths: list[int], batch_size: int) -> float:
    """Real-token share when consecutive batches are padded to their longest sample."""
    total = sum(max(lengths[i:i + batch_size]) * len(lengths[i:i + batch_size])
                for i in range(0, len(lengths), batch_size))
    return sum(lengths) / total if total else 0.0


def packed_efficiency(lengths: list[int], capacity: int) -> float:
    """Real-token share with first-fit-decreasing packs, each padded to the longest pack."""
    bins = first_fit_decreasing(lengths, capacity)
    longest = max((sum(lengths[i] for i in b) for b in bins), default=0)
    return sum(lengths) / (longest * len(bins)) if bins else 0.0
