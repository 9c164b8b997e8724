"""Training metrics for Prometheus (the names the operator and the dashboard read), labelled
hyft_job and node_rank.

The master node's first process exports job-wide values; the first process of
every other node exports the same metrics for its node (label node_rank).
"""
from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from transformers import TrainerCallback

from . import contract as c
from .contract import METRIC_LABELS
from .moe import ROUTER_LOG_KEY


class Series:
    """One labelled series, exported from its first value on: a 0 before that would read
    as a real loss, or as a last step in 1970 (the stall alert would fire during model load)."""

    def __init__(self, metric: Gauge | Histogram, labels: dict[str, str]):
        self._metric, self._labels = metric, labels

    def set(self, value: float) -> None:
        self._metric.labels(**self._labels).set(value)

    def observe(self, value: float) -> None:
        self._metric.labels(**self._labels).observe(value)


class GpuMemory:
    """Every local rank's peak GPU memory, for its node's exporter: each rank writes its own file into
    the launcher's folder (no collective: a slow rank holds up nobody), the exporter reads them all at
    each scrape. Without the folder (a bare worker), only the exporting process's own."""

    PREFIX = "gpu-memory-"

    def __init__(self, labels: dict[str, str], folder: Path | None, local_rank: int):
        self.labels, self.folder, self.local_rank = labels, folder, local_rank
        self.own: dict[str, int] | None = None

    def record(self, allocated: int, reserved: int) -> None:
        """Called every step; the file is rewritten only when a peak moved (rarely, after the first steps)."""
        peaks = {"allocated": allocated, "reserved": reserved}
        if peaks == self.own:
            return
        self.own = peaks
        if self.folder is not None:
            path = self.folder / f"{self.PREFIX}{self.local_rank}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.own))
            os.replace(tmp, path)

    def by_rank(self) -> dict[str, dict[str, int]]:
        found = {str(self.local_rank): self.own} if self.own else {}
        for path in self.folder.glob(f"{self.PREFIX}*.json") if self.folder is not None else ():
            try:
                found[path.stem.removeprefix(self.PREFIX)] = json.loads(path.read_text())
            except (OSError, ValueError):  # being replaced: the next scrape reads it
                continue
        return found

    def collect(self):
        names = [*self.labels, c.GPU_LABEL]
        allocated = GaugeMetricFamily(c.PEAK_GPU_MEMORY, "Peak GPU memory allocated to tensors, per GPU", labels=names)
        reserved = GaugeMetricFamily(c.PEAK_GPU_RESERVED, "Peak GPU memory held by the caching allocator, per GPU",
                                     labels=names)
        for rank, peaks in sorted(self.by_rank().items()):
            allocated.add_metric([*self.labels.values(), rank], peaks["allocated"])
            reserved.add_metric([*self.labels.values(), rank], peaks["reserved"])
        yield allocated
        yield reserved


class TrainingMetrics:
    def __init__(self, job: str, node_rank: int, registry: CollectorRegistry | None = None,
                 launch_dir: Path | None = None, local_rank: int = 0):
        self.registry = registry or CollectorRegistry()
        self.labels = dict(zip(METRIC_LABELS, (job, str(node_rank)), strict=True))
        names = list(self.labels)

        def gauge(name: str, doc: str) -> Series:
            return Series(Gauge(name, doc, names, registry=self.registry), self.labels)

        self.loss = gauge(c.LOSS, "Training loss of the last logging step")
        self.learning_rate = gauge(c.LEARNING_RATE, "Current learning rate")
        self.grad_norm = gauge(c.GRAD_NORM, "Gradient norm of the last logging step")
        self.global_step = gauge(c.STEP, "Optimizer steps done")
        self.total_steps = gauge(c.TOTAL_STEPS, "Planned optimizer steps")
        self.epoch = gauge(c.EPOCH, "Current epoch (fractional)")
        self.tokens_per_second = gauge(c.TOKENS_PER_SECOND, "Non-padding input tokens per second, all ranks")
        self.samples_per_second = gauge(c.SAMPLES_PER_SECOND, "Sequences per second, all ranks")
        self.eta = gauge(c.ETA, "Estimated seconds to the last step")
        self.last_step = gauge(c.LAST_STEP_TIME, "Unix time of the last finished step (stall alerts)")
        self.eval_loss = gauge(c.EVAL_LOSS, "Loss on the held-out set")
        self.router_aux_loss = gauge(c.ROUTER_AUX_LOSS, "A mixture of experts' router load-balancing loss, "
                                                        "mean over the last logging interval and every rank")
        self.overflow_skipped_steps = gauge(c.OVERFLOW_SKIPPED_STEPS, "Optimizer steps this attempt skipped because "
                                            "fp16 loss scaling found an overflow (then it lowers the scale)")
        self.checkpoint_step = gauge(c.CHECKPOINT_STEP, "Step of the newest complete checkpoint")
        self.peak_rss = gauge(c.PEAK_HOST_RSS, "Peak resident memory of this process")
        self.gpu_memory = GpuMemory(self.labels, launch_dir, local_rank)
        self.registry.register(self.gpu_memory)
        self.mfu = gauge(c.MFU, "Model FLOPs utilisation: model FLOPs per second over the GPUs' dense peak")
        self.process_start = gauge(c.PROCESS_START, "Unix time the trainer process started (before loading)")
        self.process_start.set(time.time())
        self.preflight = gauge(c.PREFLIGHT_SECONDS, "Seconds the preflight took; set once every rank passed it")
        Gauge(c.HEARTBEAT, "The trainer's clock at this scrape (stall and start-up timeouts in its own time)",
              names, registry=self.registry).labels(**self.labels).set_function(time.time)
        self.step_seconds = Series(Histogram(c.STEP_DURATION, "Wall time of one optimizer step",
                                             names, registry=self.registry,
                                             buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300)),
                                   self.labels)

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)


class MetricsCallback(TrainerCallback):
    """Feeds TrainingMetrics from the Trainer's events (runs on every rank; only exporters serve)."""

    def __init__(self, metrics: TrainingMetrics, global_batch: int, peak_flops_per_token: float | None = None):
        """peak_flops_per_token: the model FLOPs of one token over the whole gang's peak FLOP/s (flops.py), so
        that MFU is tokens per second times it; None where no peak is known (a CPU, an unknown GPU)."""
        self.metrics = metrics
        self.global_batch = global_batch
        self.peak_flops_per_token = peak_flops_per_token
        self._last = None
        self._started = None
        self._first_step = 0
        self._tokens = 0
        self.overflow_skipped_steps = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.metrics.total_steps.set(state.max_steps)
        self.metrics.global_step.set(state.global_step)
        self._started = self._last = time.monotonic()
        self._first_step = state.global_step
        self._tokens = state.num_input_tokens_seen
        self.metrics.overflow_skipped_steps.set(self.overflow_skipped_steps)

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        now = time.monotonic()
        m = self.metrics
        # accelerate's optimizer wrapper says whether the loss scaler (torch's, or DeepSpeed's) skipped this step;
        # without loss scaling it is always False
        if getattr(optimizer, "step_was_skipped", False):
            self.overflow_skipped_steps += 1
            m.overflow_skipped_steps.set(self.overflow_skipped_steps)
        if self._last is not None:
            m.step_seconds.observe(now - self._last)
        self._last = now
        m.global_step.set(state.global_step)
        m.epoch.set(state.epoch or 0)
        m.last_step.set(time.time())
        elapsed = now - self._started
        done = state.global_step - self._first_step
        if elapsed > 0 and done > 0:
            m.samples_per_second.set(done * self.global_batch / elapsed)
            tokens_per_second = (state.num_input_tokens_seen - self._tokens) / elapsed
            m.tokens_per_second.set(tokens_per_second)
            if self.peak_flops_per_token:
                m.mfu.set(tokens_per_second * self.peak_flops_per_token)
            m.eta.set(max(0, state.max_steps - state.global_step) * elapsed / done)
        m.peak_rss.set(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        try:
            import torch

            if torch.cuda.is_available():
                m.gpu_memory.record(torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved())
        except ImportError:
            pass

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        for key, gauge in (("loss", self.metrics.loss), ("learning_rate", self.metrics.learning_rate),
                           ("grad_norm", self.metrics.grad_norm), ("eval_loss", self.metrics.eval_loss),
                           (ROUTER_LOG_KEY, self.metrics.router_aux_loss)):
            if isinstance(logs.get(key), (int, float)):
                gauge.set(logs[key])

    def on_save(self, args, state, control, **kwargs):
        self.metrics.checkpoint_step.set(state.global_step)
