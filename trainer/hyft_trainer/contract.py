"""The trainer/operator contract, each fact defined once: the pod's environment, exit
codes, the termination message, and the metric names the operator, the dashboard and
the alert rules read. Torch-free: the operator image imports it.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _version() -> str:
    try:
        return version("hyft")
    except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
        return tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["version"]


# hyft's version, declared once in pyproject.toml: the default image tags say it (the chart's and the
# README's are checked against it by tests/unit/test_version.py)
VERSION = _version()

# --- exit codes and termination messages
EXIT_INVALID = 2  # invalid config or data: permanent, the operator does not restart the gang
# the preflight (before the model loads): its own code per check
EXIT_MASTER_UNREACHABLE = 3  # MASTER_ADDR does not resolve or its port refuses, within preflight_timeout: retryable
EXIT_SHM_TOO_SMALL = 4  # /dev/shm below what the processes need: permanent (spec.shmSize)
EXIT_OUTPUT_UNUSABLE = 5  # output_dir not writable, not shared between nodes, or too full: permanent
EXIT_GANG_INCOMPLETE = 6  # not every node joined the rendezvous within preflight_timeout: retryable
EXIT_COLLECTIVE_TIMEOUT = 7  # a one-number all-reduce over every rank did not finish within preflight_timeout
EXIT_GPU_UNAVAILABLE = 8  # the node expects GPUs that torch cannot use (driver, toolkit, bf16): retryable, another
#                           node may be healthy
EXIT_COLLECTIVE_FAILED = 9  # the collective backend (NCCL, gloo) failed the preflight all-reduce: retryable


@dataclass(frozen=True)
class ExitMeaning:
    text: str  # what the operator's failure messages say after the code
    preflight_reason: str = ""  # the PreflightPassed condition's reason when a preflight check failed


EXIT_MEANINGS = {
    EXIT_INVALID: ExitMeaning("invalid config or data"),
    EXIT_MASTER_UNREACHABLE: ExitMeaning("preflight: the master is unreachable", "MasterUnreachable"),
    EXIT_SHM_TOO_SMALL: ExitMeaning("preflight: /dev/shm too small", "ShmTooSmall"),
    EXIT_OUTPUT_UNUSABLE: ExitMeaning("preflight: the output volume is not writable, not shared or too full",
                                      "OutputUnusable"),
    EXIT_GANG_INCOMPLETE: ExitMeaning("preflight: not every node joined", "GangIncomplete"),
    EXIT_COLLECTIVE_TIMEOUT: ExitMeaning("preflight: the test all-reduce timed out", "CollectiveTimeout"),
    EXIT_GPU_UNAVAILABLE: ExitMeaning("preflight: the node's GPUs are not usable", "GpuUnavailable"),
    EXIT_COLLECTIVE_FAILED: ExitMeaning("preflight: the collective backend failed", "CollectiveFailed"),
}
PREFLIGHT_SECONDS_ENV = "HYFT_PREFLIGHT_SECONDS"  # the node checks' time; the workers add the gang check's
# exit 0 with this termination message: SIGTERM stopped training after a checkpoint (restart, do not finish)
STOPPED_EARLY = "hyft: stopped early by SIGTERM"

# --- the environment of every trainer pod
RENDEZVOUS_ENV = ("NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "NPROC_PER_NODE")  # and PET_* twins
CONFIG_ENV = "HYFT_CONFIG"  # the trainer config `hyft train` reads when given no path
GPUS_PER_NODE_ENV = "HYFT_GPUS_PER_NODE"  # the GPUs this node must have (spec.gpusPerNode; 0: CPU, GPUs hidden)
# what hides every GPU from a CPU pod: CUDA (torch) and the NVIDIA container toolkit (the trainer image says "all")
HIDE_GPUS_ENV = {"CUDA_VISIBLE_DEVICES": "", "NVIDIA_VISIBLE_DEVICES": "void"}
ATTEMPT_ENV = "HYFT_ATTEMPT"  # the gang's attempt (0, 1, ... one per restart), recorded in report.json
POD_NAME_ENV = "HYFT_POD_NAME"  # recorded in report.json next to the attempt
PLANNED_NODES_ENV = "HYFT_PLANNED_NODES"  # spec.nodes: a gang shrunk below it (runPolicy.resize) keeps its global batch
TERMINATION_LOG_ENV = "HYFT_TERMINATION_LOG"  # where the termination message goes (default /dev/termination-log)
# what a user's env may not set: the contract above, and what torchrun derives per process
RESERVED_ENV = (*RENDEZVOUS_ENV, *(f"PET_{name}" for name in RENDEZVOUS_ENV), CONFIG_ENV, ATTEMPT_ENV, POD_NAME_ENV,
                GPUS_PER_NODE_ENV,
                "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK")

# --- each pod's log, kept with the output (survives gang restarts, TTL and pod deletion)
LOG_MAX_BYTES = 64 * 1024 * 1024  # rotated at this size, LOG_BACKUPS older files kept
LOG_BACKUPS = 2


def log_file(attempt: int | str, pod: str) -> str:
    """Where a pod's log goes, relative to output_dir."""
    return f"logs/attempt-{attempt}/{pod}.log"


# --- metrics, labelled hyft_job and node_rank
METRIC_LABELS = ("hyft_job", "node_rank")  # not "job": Prometheus' own target label would rename it
STEP = "hyft_train_global_step"
TOTAL_STEPS = "hyft_train_total_steps"
LOSS = "hyft_train_loss"
EVAL_LOSS = "hyft_train_eval_loss"
LEARNING_RATE = "hyft_train_learning_rate"
GRAD_NORM = "hyft_train_grad_norm"
EPOCH = "hyft_train_epoch"
TOKENS_PER_SECOND = "hyft_train_tokens_per_second"
SAMPLES_PER_SECOND = "hyft_train_samples_per_second"
ETA = "hyft_train_eta_seconds"
LAST_STEP_TIME = "hyft_train_last_step_timestamp_seconds"
PROCESS_START = "hyft_train_process_start_timestamp_seconds"  # exported from start-up, before the model loads
HEARTBEAT = "hyft_train_heartbeat_timestamp_seconds"  # the trainer's clock at each scrape: stalls in its own time
CHECKPOINT_STEP = "hyft_train_last_checkpoint_step"
PREFLIGHT_SECONDS = "hyft_train_preflight_seconds"  # set once every rank passed the preflight: the gang works
PEAK_HOST_RSS = "hyft_train_peak_host_rss_bytes"
# per GPU (label local_rank as well): the peaks torch's caching allocator saw, tensors and what it holds
PEAK_GPU_MEMORY = "hyft_train_peak_gpu_memory_bytes"
PEAK_GPU_RESERVED = "hyft_train_peak_gpu_reserved_bytes"
MFU = "hyft_train_mfu"  # model FLOPs per second over the GPUs' dense bf16/fp16 peak (flops.py)
STEP_DURATION = "hyft_train_step_duration_seconds"  # a histogram
GPU_LABEL = "local_rank"
GPU_METRICS = (PEAK_GPU_MEMORY, PEAK_GPU_RESERVED, MFU)  # none on a CPU
OVERFLOW_SKIPPED_STEPS = "hyft_train_overflow_skipped_steps"  # fp16 loss scaling: steps an overflow skipped
ROUTER_AUX_LOSS = "hyft_train_router_aux_loss"  # a mixture of experts' load-balancing loss
MOE_METRICS = (ROUTER_AUX_LOSS,)  # none for a dense model
TRAINER_METRICS = (STEP, TOTAL_STEPS, LOSS, EVAL_LOSS, LEARNING_RATE, GRAD_NORM, EPOCH, TOKENS_PER_SECOND,
                   SAMPLES_PER_SECOND, ETA, LAST_STEP_TIME, PROCESS_START, HEARTBEAT, CHECKPOINT_STEP,
                   PREFLIGHT_SECONDS, PEAK_HOST_RSS, STEP_DURATION, OVERFLOW_SKIPPED_STEPS, *GPU_METRICS,
                   *MOE_METRICS)
