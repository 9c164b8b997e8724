"""Host-memory admission (pure): what a job needs in host RAM per node, from `hyft estimate`'s
model, against the pod's memory limit. ZeRO-3 with CPU offload keeps the model states in host
memory: a pod sized below that is OOM-killed at the first step, or takes its node down.

The model's size comes from spec.model.parameters, else from the model path's name
(Hunyuan-7B-Instruct -> 7B); the operator cannot read the model volume (sizing.py). An offload
left to auto counts as decided (sizing.offload_decision), or as the most offload, the most host
memory, where each node decides. `hyft estimate -f
job.yaml --model-dir DIR` reads the folder's config.json instead.
"""
from __future__ import annotations

from dataclasses import dataclass

from kubernetes.utils import parse_quantity

from hyft_trainer.estimate import GIB, Estimate, Shape
from hyft_trainer.offload import options as offload_options
from hyft_trainer.offload import options_for

from . import builders, sizing
from .api import HunyuanFineTune


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


def method_of(job: HunyuanFineTune) -> str:
    return "lora" if job.spec.method.type == "lora" else "full"  # freeze: counted as full (an upper bound)


def options(shape: Shape, job: HunyuanFineTune, nodes: int | None = None, method: str | None = None) -> list[Estimate]:
    """hyft estimate's options for the job's own settings."""
    spec = job.spec
    return options_for(builders.spec_config(job, with_arguments=False), shape, nodes or spec.nodes,
                       max(spec.gpusPerNode, 1), spec.gpusPerNode > 0, method)


def _need(shape: Shape, job: HunyuanFineTune, nodes: int, stage: int, offload_optimizer: bool, offload_params: bool,
          method: str) -> Estimate:
    offload = "params+optimizer" if offload_params else "optimizer" if offload_optimizer else "none"
    return next(e for e in options(shape, job, nodes, method)
                if (e.engine, e.stage, e.offload) == (job.spec.training.engine, stage, offload))


def check_memory(job: HunyuanFineTune, shape: tuple[Shape, str] | None = None) -> MemoryCheck | None:
    """None when the model's size is unknown (nothing to compare)."""
    shape = shape or sizing.model_shape(job)
    if shape is None:
        return None
    model, size = shape
    spec = job.spec
    method = method_of(job)
    resolved, _, _ = sizing.offload_decision(job, builders.spec_config(job, with_arguments=False))
    stage, optimizer, param = resolved.zero_stage, resolved.offload_optimizer, resolved.offload_param
    need = _need(model, job, spec.nodes, stage, optimizer, param, method)
    limit = float(parse_quantity(spec.memory)) if spec.memory else None
    fitting: list[str] = []
    if limit is not None and need.host_bytes_per_node > limit:
        for other, opt, par, label in ((3, True, False, "deepspeed.offloadParams: false"),
                                       (3, False, False, "no offload (deepspeed.offloadOptimizer: false, "
                                                         "offloadParams: false; more GPU memory)")):
            if (other, opt, par) != (stage, optimizer, param) \
                    and (opt, par) in offload_options(spec.training.engine, other) \
                    and _need(model, job, spec.nodes, other, opt, par, method).host_bytes_per_node <= limit:
                fitting.append(label)
        if stage == 3 and optimizer:  # offloaded states shrink with every node
            nodes = next((n for n in range(spec.nodes + 1, 513) if _need(
                model, job, n, 3, optimizer, param, method).host_bytes_per_node <= limit), None)
            if nodes:
                fitting.append(f"nodes: {nodes}")
        if method == "full" and _need(model, job, spec.nodes, stage, optimizer, param,
                                      "lora").host_bytes_per_node <= limit:
            fitting.append("method.type: lora")
    return MemoryCheck(need.host_bytes_per_node, limit, size, need, tuple(fitting))

