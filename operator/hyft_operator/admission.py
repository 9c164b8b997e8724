"""Host-memory admission (pure): what a job needs in host RAM per node, from `hyft estimate`'s
model, against the pod's memory limit. ZeRO-3 with CPU offload keeps the model states in host
memory: a pod sized below that is OOM-killed at the first step, or takes its node down.

The model's size comes from spec.model.parameters, else from the model path's name
(Hunyuan-7B-Instruct -> 7B); the operator cannot read the model volume. `hyft estimate -f
job.yaml --model-dir DIR` reads the folder's config.json instead.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from kubernetes.utils import parse_quantity

from hyft_trainer.choices import SIZES
from hyft_trainer.estimate import GIB, Estimate, Shape, estimate

from .api import HunyuanFineTune

SIZE_IN_NAME = re.compile(r"(?<![0-9.])([0-9]+(?:\.[0-9]+)?)[Bb](?![A-Za-z])")


@dataclass(frozen=True)
class MemoryCheck:
    need_bytes: float  # host RAM on the busiest node (global rank 0's)
    limit_bytes: float | None  # the pod's memory limit (spec.memory), None if unset
    size: str  # where the model's size came from
    estimate: Estimate
    fitting: tuple[str, ...]  # settings that would fit under the limit

    @property
    def at_risk(self) -> bool:
        return self.limit_bytes is not None and self.need_bytes > self.limit_bytes

    @property
    def message(self) -> str:
        need = f"about {self.need_bytes / GIB:.1f} GiB of host RAM per node ({self.estimate.breakdown}; {self.size})"
        if self.limit_bytes is None:
            return f"needs {need}; spec.memory sets no limit"
        if not self.at_risk:
            return f"needs {need}, within spec.memory ({self.limit_bytes / GIB:.1f} GiB)"
        fits = "; would fit: " + ", or ".join(self.fitting) if self.fitting else "; no setting of this job fits"
        return f"needs {need}, more than spec.memory ({self.limit_bytes / GIB:.1f} GiB){fits}"


def model_shape(job: HunyuanFineTune) -> tuple[Shape, str] | None:
    """The model's shape from the spec: its parameters, or a size in its path's name."""
    if job.spec.model.parameters:
        size = job.spec.model.parameters.upper()
        return Shape(**SIZES[size]), f"model.parameters {size}"
    for size in SIZE_IN_NAME.findall(job.spec.model.path)[::-1]:
        name = f"{float(size):g}B"
        if name in SIZES:
            return Shape(**SIZES[name]), f"{name}, from the model path"
    return None


def method_of(job: HunyuanFineTune) -> str:
    return "lora" if job.spec.method.type == "lora" else "full"  # freeze: counted as full (an upper bound)


def options(shape: Shape, job: HunyuanFineTune, nodes: int | None = None, method: str | None = None) -> list[Estimate]:
    """hyft estimate's options for the job's own settings (the one mapping from the spec)."""
    spec = job.spec
    return estimate(shape, nodes or spec.nodes, max(spec.gpusPerNode, 1), method or method_of(job),
                    spec.method.lora.rank, spec.training.perDeviceBatchSize, spec.data.cutoffLen,
                    spec.training.gradientCheckpointing, half_precision=spec.training.precision != "fp32")


def _need(shape: Shape, job: HunyuanFineTune, nodes: int, stage: int, offload_optimizer: bool, offload_params: bool,
          method: str) -> Estimate:
    offload = "params+optimizer" if offload_params else "optimizer" if offload_optimizer else "none"
    return next(e for e in options(shape, job, nodes, method) if e.stage == stage and e.offload == offload)


def check_memory(job: HunyuanFineTune, shape: tuple[Shape, str] | None = None) -> MemoryCheck | None:
    """None when the model's size is unknown (nothing to compare)."""
    shape = shape or model_shape(job)
    if shape is None:
        return None
    model, size = shape
    spec, ds = job.spec, job.spec.deepspeed
    method = method_of(job)
    need = _need(model, job, spec.nodes, ds.stage, ds.offloadOptimizer, ds.offloadParams, method)
    limit = float(parse_quantity(spec.memory)) if spec.memory else None
    fitting: list[str] = []
    if limit is not None and need.host_bytes_per_node > limit:
        for stage, opt, par, label in ((3, True, False, "deepspeed.offloadParams: false"),
                                       (3, False, False, "no offload (deepspeed.offloadOptimizer: false, "
                                                         "offloadParams: false; more GPU memory)")):
            if (stage, opt, par) != (ds.stage, ds.offloadOptimizer, ds.offloadParams) and \
                    _need(model, job, spec.nodes, stage, opt, par, method).host_bytes_per_node <= limit:
                fitting.append(label)
        if ds.stage == 3 and ds.offloadOptimizer:  # offloaded states shrink with every node
            nodes = next((n for n in range(spec.nodes + 1, 513) if _need(
                model, job, n, 3, ds.offloadOptimizer, ds.offloadParams, method).host_bytes_per_node <= limit), None)
            if nodes:
                fitting.append(f"nodes: {nodes}")
        if method == "full" and _need(model, job, spec.nodes, ds.stage, ds.offloadOptimizer, ds.offloadParams,
                                      "lora").host_bytes_per_node <= limit:
            fitting.append("method.type: lora")
    return MemoryCheck(need.host_bytes_per_node, limit, size, need, tuple(fitting))

