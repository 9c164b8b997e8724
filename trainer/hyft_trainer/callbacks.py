"""Trainer callbacks: stop on SIGTERM with a checkpoint, and mark complete checkpoints."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from .checkpoints import mark_complete


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class StopOnSignal(TrainerCallback):
    """SIGTERM (suspend, preemption) reaches the launcher, which creates the stop file; every rank
    then agrees (all-reduce) to save a checkpoint and stop after the same step."""

    def __init__(self, stop_file: str | None):
        self.stop_file = stop_file
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        flag = torch.tensor([1.0 if self.stop_file and os.path.exists(self.stop_file) else 0.0])
        if _distributed():
            if dist.get_backend() == "nccl":
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step


class CompleteMarker(TrainerCallback):
    """After a save, once every rank's shards are on disk, global rank 0 marks the checkpoint complete."""

    def __init__(self, output_dir: str, resumable: bool = True):
        self.output_dir = Path(output_dir)
        self.resumable = resumable  # False for save_only_model checkpoints

    def on_save(self, args, state, control, **kwargs):
        if _distributed():
            dist.barrier()
        if state.is_world_process_zero:
            mark_complete(self.output_dir / f"checkpoint-{state.global_step}", self.resumable)
