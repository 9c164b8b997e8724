"""Trainer callbacks: stop on SIGTERM with a checkpoint, and mark complete checkpoints."""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from .checkpoints import mark_complete
from .resize import write_facts


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class StopOnSignal(TrainerCallback):
    """SIGTERM (suspend, preemption) reaches the launcher, which creates the stop file; every rank
    then agrees (all-reduce) to save a checkpoint and stop after the same step."""

    def __init__(self, stop_file: Path | None):
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

    def __init__(self, output_dir: str, resumable: bool = True, zero_stage: int | None = None):
        self.output_dir = Path(output_dir)
        self.resumable = resumable  # False for save_only_model checkpoints
        self.zero_stage = zero_stage  # DeepSpeed's stage (None: no DeepSpeed)

    def on_save(self, args, state, control, **kwargs):
        if _distributed():
            dist.barrier()
        if state.is_world_process_zero:
            checkpoint = self.output_dir / f"checkpoint-{state.global_step}"
            # how the global batch and the shards were laid out: a resume on another world size keeps the
            # batch, one under another stage converts the shards (resize.py)
            write_facts(checkpoint, args.world_size, args.per_device_train_batch_size, args.gradient_accumulation_steps,
                        self.zero_stage)
            mark_complete(checkpoint, self.resumable)


class Timeline(TrainerCallback):
    """When each logged step ended (seconds since training began) and the non-padding tokens all
    ranks had seen by then: report.json's "timeline", for steady-state step times and throughput
    without the start-up (as long as log_history: one point per logging step)."""

    def __init__(self):
        self.points: list[dict[str, float]] = []
        self._began: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._began = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._began is not None and "loss" in (logs or {}):
            self.points.append({"step": state.global_step, "seconds": round(time.perf_counter() - self._began, 4),
                                "tokens": state.num_input_tokens_seen})
