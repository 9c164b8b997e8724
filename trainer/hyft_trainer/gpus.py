"""What a node has and what its processes get: GPUs, CPU threads and the launch environment.

The decisions are pure functions of facts (table-tested on any machine); the facts are read by
probe() in a short-lived child process, so the long-lived launcher never imports torch.

* check(): a node that expects GPUs and cannot use them stops before training (contract
  EXIT_GPU_UNAVAILABLE, with the driver, CUDA and torch's own words), never a silent CPU run;
  bf16 asked on GPUs without it stops too, never a silent float32 run.
* split_devices(): `hyft run --local` gives each local node its own GPUs.
* worker_env(): OpenMP threads per process from the pod's CPU limit (torchrun would set 1), and
  torch's NCCL settings for failing loudly, unless the user set them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

# NVIDIA's minimum Linux driver per CUDA major version (minor-version compatibility): torch's wheel
# is built for one CUDA version and needs at least this driver.
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
DRIVER_FILE = "/proc/driver/nvidia/version"


@dataclass(frozen=True)
class GpuFacts:
    count: int = 0  # torch.cuda.device_count()
    bf16: bool = False  # torch.cuda.is_bf16_supported() on device 0
    torch_cuda: str | None = None  # torch.version.cuda: the CUDA the wheel was built for (None: a CPU build)
    driver: str | None = None  # the kernel module's version line, or nvidia-smi's driver version
    visible: str | None = None  # CUDA_VISIBLE_DEVICES as the process saw it (None: unset)
    warning: str = ""  # torch's own words when CUDA could not start
    names: tuple[str, ...] = ()
    memory: tuple[int, ...] = ()  # bytes per GPU, as CUDA reports it

    def describe(self) -> str:
        driver = self.driver or f"none found ({DRIVER_FILE} is absent and nvidia-smi did not answer)"
        parts = [f"torch built for CUDA {self.torch_cuda}" if self.torch_cuda else "torch is a CPU-only build",
                 f"NVIDIA driver: {driver}",
                 "CUDA_VISIBLE_DEVICES " + ("unset" if self.visible is None else repr(self.visible))]
        if self.names:
            parts.append("GPUs: " + ", ".join(self.names))
        if self.warning:
            parts.append(f"torch said: {self.warning}")
        return "; ".join(parts)


def driver_version(text: str) -> str | None:
    """'NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.161.08  Tue Mar ...' -> '535.161.08'."""
    for word in text.split():
        head = word.split(".")
        if len(head) >= 2 and all(p.isdigit() for p in head):
            return word
    return None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def driver_hint(torch_cuda: str | None, driver: str | None) -> str:
    """Why CUDA may not start: the driver older than the wheel's CUDA needs, or no driver at all."""
    if not torch_cuda:
        return "this torch has no CUDA: the image's torch must be a CUDA build"
    if not driver:
        return ("no NVIDIA driver is visible in the container: is the NVIDIA device plugin (or GPU operator) "
                "installed and does the pod run with the NVIDIA container runtime (runtimeClassName)?")
    need = MIN_DRIVER.get(_version_tuple(torch_cuda)[0])
    version = driver_version(driver)
    if need and version and _version_tuple(version) < _version_tuple(need):
        return (f"driver {version} is older than CUDA {torch_cuda} needs (>= {need}): upgrade the nodes' driver, "
                "or use a trainer image whose torch is built for an older CUDA")
    return "the driver and torch's CUDA match: check the device plugin's allocation and the container toolkit"


def check(expected: int, precision: str, facts: GpuFacts) -> str | None:
    """None when this node can run what the job asks; else what is wrong, in words to act on."""
    if expected <= 0:
        return None
    if facts.count < expected:
        return (f"this node expects {expected} GPU(s) (spec.gpusPerNode) but torch can use {facts.count}: "
                f"{driver_hint(facts.torch_cuda, facts.driver)} ({facts.describe()})")
    if precision == "bf16" and not facts.bf16:
        return (f"bf16 was asked (spec.training.precision) but these GPUs do not support it "
                f"({', '.join(facts.names) or 'unknown'}): use fp16 or fp32 ({facts.describe()})")
    return None


def collect() -> GpuFacts:
    """The facts, read with torch (in the probe's child process)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        bf16 = bool(count) and torch.cuda.is_bf16_supported()
        names = tuple(torch.cuda.get_device_name(i) for i in range(count))
    return GpuFacts(count=count, bf16=bf16, torch_cuda=torch.version.cuda, driver=read_driver(),
                    visible=os.environ.get("CUDA_VISIBLE_DEVICES"), warning=said(w.message for w in caught),
                    names=names, memory=memory_bytes())


def memory_bytes() -> tuple[int, ...]:
    """Each visible GPU's memory (the offload decision takes the smallest)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return tuple(torch.cuda.get_device_properties(i).total_memory for i in range(count))


def said(messages) -> str:
    """torch's warnings as one line (its CUDA warning spans several)."""
    return " ".join(" ".join(str(m).split()) for m in messages)[:600]


def read_driver() -> str | None:
    try:
        return " ".join(Path(DRIVER_FILE).read_text().splitlines()[0].split())
    except (OSError, IndexError):
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.split("\n")[0].strip() or None if out.returncode == 0 else None


def probe(env: Mapping[str, str] | None = None) -> GpuFacts:
    """collect() in a child process with env: the caller stays free of torch (half a GiB)."""
    out = subprocess.run([sys.executable, "-c", "from dataclasses import asdict; import json; "
                          "from hyft_trainer.gpus import collect; print(json.dumps(asdict(collect())))"],
                         capture_output=True, text=True, env=dict(env) if env is not None else None)
    if out.returncode != 0:
        return GpuFacts(warning=f"the GPU probe failed: {out.stderr.strip()[-600:]}",
                        visible=(env or os.environ).get("CUDA_VISIBLE_DEVICES"))
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return GpuFacts(**{**data, "names": tuple(data["names"]), "memory": tuple(data["memory"])})


def visible_devices(env: Mapping[str, str], count: int) -> list[str]:
    """The devices a process may hand out: CUDA_VISIBLE_DEVICES' entries when set, else 0..count-1."""
    if (listed := env.get("CUDA_VISIBLE_DEVICES")) is not None:
        return [d.strip() for d in listed.split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


def split_devices(nodes: int, per_node: int, visible: list[str]) -> list[str]:
    """CUDA_VISIBLE_DEVICES for each of `nodes` local nodes, `per_node` devices each, none shared."""
    if nodes * per_node > len(visible):
        raise ValueError(f"{nodes} node(s) x {per_node} GPU(s) need {nodes * per_node} GPUs but this machine has "
                         f"{len(visible)} ({','.join(visible) or 'none'}): lower spec.nodes or spec.gpusPerNode, "
                         "or set gpusPerNode: 0 (and precision: fp32) to run on the CPU")
    return [",".join(visible[i * per_node:(i + 1) * per_node]) for i in range(nodes)]


# --- CPU threads and host memory: the pod's limits, read from its cgroup
def cgroup_folders(self_cgroup: str, controller: str) -> list[str]:
    """The folders of this process's cgroup holding controller's files, each followed by those above it
    (cgroup v2's one hierarchy, or v1's for controller); self_cgroup is /proc/self/cgroup."""
    folders = []
    for line in self_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # cgroup v2
            folders += _ancestors("/sys/fs/cgroup", path)
        elif controller in controllers.split(","):  # cgroup v1
            folders += _ancestors(f"/sys/fs/cgroup/{controllers}", path)
    return folders


def cpu_limit(read: Callable[[str], str | None], self_cgroup: str) -> float | None:
    """The CPU quota of this process's cgroup (the pod's CPU limit), the smallest along its path to the
    root; None when unlimited. read(path) returns a file's text or None."""
    limits = []
    for folder in cgroup_folders(self_cgroup, "cpu"):
        quota, _, period = (read(f"{folder}/cpu.max") or "").partition(" ")  # v2
        if quota.isdigit() and period.strip().isdigit():
            limits.append(int(quota) / int(period))
        quota, period = read(f"{folder}/cpu.cfs_quota_us"), read(f"{folder}/cpu.cfs_period_us")  # v1
        if quota and period and quota.strip().isdigit() and int(period) > 0:  # -1: unlimited
            limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def memory_limit(read: Callable[[str], str | None], self_cgroup: str) -> int | None:
    """The memory limit of this process's cgroup (the pod's), the smallest along its path; None when
    unlimited ("max" in v2; v1 writes a page-rounded 2**63 for none, which the machine's memory undercuts)."""
    limits = [int(text) for folder in cgroup_folders(self_cgroup, "memory")
              for name in ("memory.max", "memory.limit_in_bytes")
              if (text := (read(f"{folder}/{name}") or "").strip()).isdigit()]
    return min(limits) if limits else None


def mem_total(meminfo: str) -> int | None:
    """MemTotal of /proc/meminfo, in bytes."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _ancestors(mount: str, path: str) -> list[str]:
    """mount/path and each folder above it up to mount (a container sees its own cgroup as the mount's
    root; a host process sees the whole path)."""
    parts = [p for p in path.split("/") if p]
    return [os.path.join(mount, *parts[:n]) if n else mount for n in range(len(parts), -1, -1)]


def omp_threads(limit: float | None, cpus: int, nproc: int) -> int:
    """OpenMP threads per process (CPU-Adam's optimizer step, torch's CPU ops): the CPUs the pod may use,
    shared by its processes."""
    return max(1, int(min(limit, cpus) if limit else cpus) // max(1, nproc))


def read_text(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def node_cpu_limit() -> float | None:
    return cpu_limit(read_text, read_text("/proc/self/cgroup") or "")


def host_memory_bytes() -> int | None:
    """The host memory this node's job may use: the machine's, or the pod's limit where that is less."""
    known = [m for m in (mem_total(read_text("/proc/meminfo") or ""),
                         memory_limit(read_text, read_text("/proc/self/cgroup") or "")) if m]
    return min(known) if known else None


# --- the workers' environment
# torch's NCCL settings when the user's env has none: a failed collective ends the process at once
# (3: without the clean-up that can itself hang) and a timed-out one dumps its flight recorder.
# (The flight recorder's buffer, TORCH_NCCL_TRACE_BUFFER_SIZE, is on by default: 2000 events.)
NCCL_DEFAULTS = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "3", "TORCH_NCCL_DUMP_ON_TIMEOUT": "1"}
CUDA_ALLOC_DEFAULT = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}  # less fragmentation under ZeRO-3


def worker_env(env: Mapping[str, str], nproc: int, cpus: int, limit: float | None, on_gpu: bool,
               trace_prefix: str | None = None) -> dict[str, str]:
    """What the launcher adds to its workers' environment; a variable the user set is kept."""
    wanted = {"OMP_NUM_THREADS": str(omp_threads(limit, cpus, nproc))}
    if on_gpu:
        wanted.update(NCCL_DEFAULTS)
        wanted.update(CUDA_ALLOC_DEFAULT)
        if trace_prefix:  # the flight recorder's dumps kept with the pod's log on the output volume
            wanted["TORCH_FR_DUMP_TEMP_FILE"] = trace_prefix
    return {k: v for k, v in wanted.items() if not env.get(k)}

