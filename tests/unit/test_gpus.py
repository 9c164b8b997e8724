"""GPU, thread and launch-environment decisions (pure): what a node that expects GPUs does without
them, how local nodes share a machine's GPUs, and how many OpenMP threads each process gets."""
from __future__ import annotations

from pathlib import Path

import pytest

from hyft_trainer import fabric, gpus
from hyft_trainer.gpus import GpuFacts

PROC_535 = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.161.08  Tue Mar  5 22:42:15 UTC 2024"
PROC_580 = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build"
H100 = ("NVIDIA H100 80GB HBM3",) * 8
V100 = ("Tesla V100-SXM2-32GB",) * 8


@pytest.mark.parametrize("expected, precision, facts, words", [
    (0, "fp32", GpuFacts(), None),  # a CPU node needs nothing
    (0, "fp32", GpuFacts(count=8, bf16=True, names=H100), None),
    (8, "bf16", GpuFacts(count=8, bf16=True, torch_cuda="13.0", driver=PROC_580, names=H100), None),
    (8, "fp16", GpuFacts(count=8, bf16=False, torch_cuda="13.0", driver=PROC_580, names=V100), None),
    (4, "bf16", GpuFacts(count=8, bf16=True, torch_cuda="13.0", driver=PROC_580, names=H100), None),
    # an R535 fleet under torch's cu130 wheel: CUDA cannot start
    (8, "bf16", GpuFacts(torch_cuda="13.0", driver=PROC_535, warning="CUDA driver is too old"),
     ["expects 8 GPU(s) (spec.gpusPerNode) but torch can use 0", "driver 535.161.08 is older than CUDA 13.0 needs "
      "(>= 580.65.06)", "torch said: CUDA driver is too old", "CUDA_VISIBLE_DEVICES unset"]),
    # no driver in the container: device plugin or container runtime missing
    (1, "bf16", GpuFacts(torch_cuda="13.0", visible=""),
     ["no NVIDIA driver is visible in the container", "runtimeClassName", "CUDA_VISIBLE_DEVICES ''"]),
    (1, "fp32", GpuFacts(torch_cuda=None), ["torch is a CPU-only build", "must be a CUDA build"]),
    # fewer GPUs than the pod asked for
    (8, "bf16", GpuFacts(count=4, bf16=True, torch_cuda="13.0", driver=PROC_580, names=H100[:4]),
     ["expects 8 GPU(s)", "can use 4", "driver and torch's CUDA match"]),
    # bf16 on GPUs without it: never a silent float32 run
    (8, "bf16", GpuFacts(count=8, torch_cuda="13.0", driver="580.95.05", names=V100),
     ["bf16 was asked (spec.training.precision) but these GPUs do not support it", "Tesla V100", "use fp16"]),
])
def test_a_node_that_expects_gpus_runs_only_with_them(expected, precision, facts, words):
    problem = gpus.check(expected, precision, facts)
    if words is None:
        assert problem is None
    else:
        assert problem is not None and all(w in problem for w in words), problem


@pytest.mark.parametrize("text, version", [(PROC_535, "535.161.08"), (PROC_580, "580.95.05"),
                                           ("580.95.05", "580.95.05"), ("no version here", None)])
def test_driver_version_is_read_from_the_kernel_module_line_or_nvidia_smi(text, version):
    assert gpus.driver_version(text) == version


@pytest.mark.parametrize("nodes, per_node, visible, expected", [
    (2, 4, [str(i) for i in range(8)], ["0,1,2,3", "4,5,6,7"]),
    (2, 1, ["0", "1"], ["0", "1"]),
    (2, 2, ["2", "3", "5", "7"], ["2,3", "5,7"]),  # what the user's CUDA_VISIBLE_DEVICES left
    (1, 8, [str(i) for i in range(8)], ["0,1,2,3,4,5,6,7"]),
])
def test_local_nodes_get_gpus_of_their_own(nodes, per_node, visible, expected):
    assert gpus.split_devices(nodes, per_node, visible) == expected


def test_too_few_gpus_for_the_local_nodes_is_refused_with_what_to_change():
    with pytest.raises(ValueError, match=r"2 node\(s\) x 1 GPU\(s\) need 2 GPUs but this machine has 1 \(0\)"):
        gpus.split_devices(2, 1, ["0"])
    with pytest.raises(ValueError, match="has 0 \\(none\\).*gpusPerNode: 0"):
        gpus.split_devices(1, 1, [])


@pytest.mark.parametrize("env, count, visible", [
    ({}, 4, ["0", "1", "2", "3"]),
    ({"CUDA_VISIBLE_DEVICES": "4,5"}, 2, ["4", "5"]),
    ({"CUDA_VISIBLE_DEVICES": ""}, 0, []),
    ({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}, 2, ["GPU-aa", "GPU-bb"]),
])
def test_visible_devices_follow_cuda_visible_devices(env, count, visible):
    assert gpus.visible_devices(env, count) == visible


def files(mapping):
    return lambda path: mapping.get(path)


@pytest.mark.parametrize("tree, cgroup, limit", [
    # cgroup v2, a container's own namespace: its limit at the mount's root
    ({"/sys/fs/cgroup/cpu.max": "max 100000\n"}, "0::/\n", None),
    ({"/sys/fs/cgroup/cpu.max": "1600000 100000\n"}, "0::/\n", 16.0),
    # v2 seen from the host: the pod's folder above the container's is the smaller
    ({"/sys/fs/cgroup/kubepods/pod1/cpu.max": "800000 100000", "/sys/fs/cgroup/kubepods/pod1/c1/cpu.max": "max 100000"},
     "0::/kubepods/pod1/c1\n", 8.0),
    # cgroup v1: -1 is unlimited; a quota of 1.5 CPUs
    ({"/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000"},
     "4:cpu,cpuacct:/\n", None),
    ({"/sys/fs/cgroup/cpu/job/cpu.cfs_quota_us": "150000", "/sys/fs/cgroup/cpu/job/cpu.cfs_period_us": "100000"},
     "1:cpu:/job\n3:memory:/job\n", 1.5),
    # v1 in a container: /proc/self/cgroup names the host's path, the mount is the container's own cgroup
    ({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "400000", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"},
     "1:cpu:/kubepods/pod2/c2\n", 4.0),
    ({}, "", None),
])
def test_the_pod_cpu_limit_is_read_from_its_cgroup(tree, cgroup, limit):
    assert gpus.cpu_limit(files(tree), cgroup) == limit


@pytest.mark.parametrize("tree, cgroup, limit", [
    ({"/sys/fs/cgroup/memory.max": "max\n"}, "0::/\n", None),  # v2, no limit
    ({"/sys/fs/cgroup/memory.max": "17179869184\n"}, "0::/\n", 16 * 2**30),  # a container's own
    # v2 from the host: the pod's limit above the container's unlimited one
    ({"/sys/fs/cgroup/kubepods/pod1/memory.max": "8589934592", "/sys/fs/cgroup/kubepods/pod1/c1/memory.max": "max"},
     "0::/kubepods/pod1/c1\n", 8 * 2**30),
    # v1: its page-rounded "no limit" is a number too (the machine's memory then undercuts it)
    ({"/sys/fs/cgroup/memory/job/memory.limit_in_bytes": "9223372036854771712"}, "1:cpu:/job\n3:memory:/job\n",
     9223372036854771712),
    ({"/sys/fs/cgroup/memory/memory.limit_in_bytes": "4294967296"}, "4:memory:/kubepods/pod2/c2\n", 4 * 2**30),
    ({"/sys/fs/cgroup/cpu/memory.limit_in_bytes": "1024"}, "1:cpu:/\n", None),  # not the memory hierarchy
    ({}, "", None),
])
def test_the_pod_memory_limit_is_read_from_its_cgroup(tree, cgroup, limit):
    assert gpus.memory_limit(files(tree), cgroup) == limit


def test_the_machines_memory_is_read_from_meminfo():
    assert gpus.mem_total("MemTotal:       24683772 kB\nMemFree:  17860996 kB\n") == 24683772 * 1024
    assert gpus.mem_total("") is None
    assert gpus.host_memory_bytes() <= gpus.mem_total(Path("/proc/meminfo").read_text())


@pytest.mark.parametrize("limit, cpus, nproc, threads", [
    (None, 96, 8, 12),  # 8 GPUs on a 96-core node: 12 each (torchrun alone would give 1)
    (64.0, 96, 8, 8),  # the pod's limit, not the node's cores
    (1.5, 2, 1, 1),
    (0.5, 2, 1, 1),
    (None, 2, 4, 1),
    (200.0, 16, 2, 8),  # a limit above the CPUs this process may run on
])
def test_openmp_threads_share_the_pods_cpus_between_its_processes(limit, cpus, nproc, threads):
    assert gpus.omp_threads(limit, cpus, nproc) == threads


def test_worker_env_keeps_what_the_user_set_and_adds_nccl_settings_on_gpus_only():
    cpu = gpus.worker_env({}, nproc=1, cpus=4, limit=None, on_gpu=False, trace_prefix="/out/trace-")
    assert cpu == {"OMP_NUM_THREADS": "4"}
    gpu = gpus.worker_env({"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}, nproc=8, cpus=96, limit=64.0, on_gpu=True,
                          trace_prefix="/out/trace-")
    assert gpu == {"OMP_NUM_THREADS": "8", "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",
                   "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "TORCH_FR_DUMP_TEMP_FILE": "/out/trace-"}
    assert gpus.worker_env({"OMP_NUM_THREADS": "3"}, 8, 96, None, False) == {}


def test_torchs_warnings_become_one_line():
    warning = UserWarning("CUDA initialization: The NVIDIA driver on your system is too old\n (found version 12020).")
    assert gpus.said([warning, "second"]) == ("CUDA initialization: The NVIDIA driver on your system is too old "
                                              "(found version 12020). second")


def test_the_probe_reads_this_machine_in_a_child_process():
    import os

    facts = gpus.probe({**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert "probe failed" not in facts.warning, facts.warning
    assert facts.count == 0 and facts.visible == "" and not facts.bf16 and not facts.names
    broken = gpus.probe({"PYTHONHOME": "/nonexistent"})  # a Python that cannot start
    assert broken.count == 0 and broken.warning.startswith("the GPU probe failed")


def test_fabric_warns_a_multi_node_gpu_job_without_rdma_and_a_small_memlock():
    env = {"NCCL_SOCKET_IFNAME": "eth0", "PATH": "/bin", "TORCH_NCCL_DUMP_ON_TIMEOUT": "1"}
    facts, warnings = fabric.describe(env, 64 * 1024, [], "2.27.5", nnodes=2, on_gpu=True)
    assert facts["nccl_env"] == {"NCCL_SOCKET_IFNAME": "eth0", "TORCH_NCCL_DUMP_ON_TIMEOUT": "1"}
    assert len(warnings) == 1 and "uses TCP sockets" in warnings[0] and "spec.network.resources" in warnings[0]
    _, warnings = fabric.describe(env, 64 * 1024, ["mlx5_0"], "2.27.5", nnodes=2, on_gpu=True)
    assert len(warnings) == 1 and "locked-memory limit is 64 KiB" in warnings[0]
    import resource

    assert fabric.describe(env, resource.RLIM_INFINITY, ["mlx5_0"], "2.27.5", 2, True)[1] == []
    assert fabric.describe(env, 64 * 1024, [], None, nnodes=2, on_gpu=False)[1] == []  # CPU tests: gloo on TCP
    assert fabric.describe(env, 64 * 1024, [], "2.27.5", nnodes=1, on_gpu=True)[1] == []


def test_a_local_run_gives_each_node_its_own_gpus_or_says_why_not():
    from hyft_operator import api
    from hyft_operator.local import LocalRunError, local_devices
    from tests.helpers import ROOT, load_example

    body = load_example(ROOT / "examples" / "hunyuan-2node-full-zero3.yaml", namespace="default")
    job = api.HunyuanFineTune.model_validate(body)  # 2 nodes x 8 GPUs
    assert local_devices(job, {}, 16) == ["0,1,2,3,4,5,6,7", "8,9,10,11,12,13,14,15"]
    with pytest.raises(LocalRunError, match=r"spec.gpusPerNode: 2 node\(s\) x 8 GPU\(s\) need 16 GPUs but this "
                                            r"machine has 8"):
        local_devices(job, {}, 8)
    body["spec"].update(gpusPerNode=0, training={"precision": "fp32"})
    assert local_devices(api.HunyuanFineTune.model_validate(body), {}, 8) is None  # its pods hide the GPUs
