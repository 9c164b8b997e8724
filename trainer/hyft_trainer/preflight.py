"""The preflight, each check with its own message and exit code (contract.EXIT_*), instead of an
error deep inside torch or DeepSpeed half an hour later:

* run(): on every node, before torchrun (/dev/shm, the output volume, the master's address);
* check_gang(): in every training process once the process group exists, before the model loads
  (a one-number all-reduce within a timeout, and the output volume shared between the nodes).

The network calls are parameters, for the tests."""
from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import TrainerConfig
from .contract import (
    EXIT_COLLECTIVE_FAILED,
    EXIT_COLLECTIVE_TIMEOUT,
    EXIT_MASTER_UNREACHABLE,
    EXIT_OUTPUT_UNUSABLE,
    EXIT_SHM_TOO_SMALL,
)

MIB = 1024 ** 2
GIB = 1024 ** 3
# A floor for /dev/shm, not a sizing guide: NCCL's shared-memory transport and the data loader's
# workers each need room per process.
SHM_BASE_BYTES = 128 * MIB
SHM_PER_PROCESS_BYTES = 64 * MIB
CONNECT_RETRY_SECONDS = 2.0


class PreflightError(Exception):
    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code


def shm_need(nproc_per_node: int, loader_workers: int) -> int:
    return SHM_BASE_BYTES + SHM_PER_PROCESS_BYTES * nproc_per_node * (1 + loader_workers)


def check_shm(nproc_per_node: int, loader_workers: int, path: str = "/dev/shm") -> None:
    try:
        stat = os.statvfs(path)
    except OSError:
        return  # no /dev/shm to measure (not Linux): nothing to say
    size, need = stat.f_blocks * stat.f_frsize, shm_need(nproc_per_node, loader_workers)
    if size < need:
        raise PreflightError(EXIT_SHM_TOO_SMALL, f"{path} is {size / MIB:.0f} MiB; {nproc_per_node} process(es) with "
                             f"{loader_workers} data loader worker(s) each need at least {need / MIB:.0f} MiB: "
                             "raise spec.shmSize")


def checkpoint_bytes(config: TrainerConfig) -> float | None:
    """A checkpoint's size from the model's config.json: weights, and optimizer states unless
    save_only_model. None when the model's shape cannot be read."""
    from .estimate import load_shape

    try:
        shape = load_shape(config.model_name_or_path)
    except (OSError, KeyError, ValueError):
        return None
    if config.finetuning_type == "lora":
        trainable = shape.lora_params(config.lora_rank)
    elif config.finetuning_type == "freeze":
        trainable = shape.layer_params * min(abs(config.freeze_trainable_layers), shape.layers)
    else:
        trainable = shape.params
    weights = 2 * (trainable if config.finetuning_type == "lora" else shape.params)
    return weights + (0 if config.save_only_model else 12 * trainable)  # fp32 master copy and Adam's two moments


def check_output(config: TrainerConfig, host: str) -> None:
    out = Path(config.output_dir)
    probe = out / f".hyft-preflight-{host}-{os.getpid()}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"hyft")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as err:
        raise PreflightError(EXIT_OUTPUT_UNUSABLE, f"output_dir {out} is not writable: {err}") from None
    need = checkpoint_bytes(config)
    free = shutil.disk_usage(out).free
    if need is not None and free < need:
        raise PreflightError(EXIT_OUTPUT_UNUSABLE, f"output_dir {out} has {free / GIB:.1f} GiB free; one checkpoint "
                             f"needs about {need / GIB:.1f} GiB")


def check_master(addr: str, port: int, deadline_seconds: float,
                 connect: Callable[[tuple[str, int], float], object] = socket.create_connection,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
    """A worker node waits (bounded) until the master's name resolves and its rendezvous port accepts
    a connection: the master pod may start later than this one."""
    deadline = clock() + deadline_seconds
    while True:
        try:
            conn = connect((addr, port), min(5.0, max(0.1, deadline - clock())))
            getattr(conn, "close", lambda: None)()
            return
        except socket.gaierror as err:
            problem = f"does not resolve ({err.strerror or err})"
        except OSError as err:
            problem = f"does not accept connections ({err.strerror or err})"
        if clock() >= deadline:
            raise PreflightError(EXIT_MASTER_UNREACHABLE, f"MASTER_ADDR {addr}:{port} {problem} after "
                                 f"{deadline_seconds:.0f}s (preflight_timeout): is the master pod running, and does "
                                 "the headless Service publish it?")
        sleep(min(CONNECT_RETRY_SECONDS, max(0.0, deadline - clock())))


@dataclass(frozen=True)
class Passed:
    seconds: float


def run(config: TrainerConfig, node_rank: int, master_addr: str, master_port: int, nproc_per_node: int) -> Passed:
    started = time.monotonic()
    check_shm(nproc_per_node, config.dataloader_num_workers)
    check_output(config, socket.gethostname())
    if node_rank > 0:  # the master's own port opens with its torchrun
        check_master(master_addr, master_port, config.preflight_timeout)
    return Passed(time.monotonic() - started)


MARKER_DIR = ".hyft-preflight"


def check_gang(output_dir: str, timeout_seconds: float, device) -> float:
    """Every rank at once: rank 0 writes a marker with a fresh random name on the output volume and
    all-reduces that name to every rank (the tiny all-reduce, bounded by timeout_seconds); each rank
    looks for the marker, and a second all-reduce tells all of them who could not see it. Returns
    the seconds it took."""
    import torch
    import torch.distributed as dist

    started = time.monotonic()
    rank, world = dist.get_rank(), dist.get_world_size()
    folder = Path(output_dir) / MARKER_DIR
    nonce = 0
    if rank == 0:
        nonce = secrets.randbits(62) + 1  # fresh per attempt: an old attempt's marker proves nothing
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / str(nonce), "w") as f:
            f.write(f"written by rank 0 on {socket.gethostname()}\n")
            f.flush()
            os.fsync(f.fileno())
    try:
        shared = torch.tensor([nonce], dtype=torch.int64, device=device)
        _all_reduce(shared, timeout_seconds, "the marker's name")
        unseen = torch.zeros(world, dtype=torch.int64, device=device)
        unseen[rank] = int(not (folder / str(int(shared.item()))).is_file())
        _all_reduce(unseen, timeout_seconds, "who sees the marker")
    finally:
        if rank == 0:
            (folder / str(nonce)).unlink(missing_ok=True)
    blind = [r for r, flag in enumerate(unseen.tolist()) if flag]
    if blind:
        raise PreflightError(EXIT_OUTPUT_UNUSABLE, f"output_dir {output_dir} is not shared between the nodes: "
                             f"rank(s) {blind} do not see the marker rank 0 wrote there; a multi-node job needs "
                             "one volume every node mounts (NFS, or a ReadWriteMany PVC)")
    return time.monotonic() - started


# gloo: "Timed out waiting 3000ms for recv"; NCCL: "Work ... ran for 3000 milliseconds before timing out"
TIMED_OUT = re.compile(r"tim(ed|ing) ?out|timeout", re.IGNORECASE)


def collective_verdict(finished: bool, error: str | None) -> int | None:
    """None: the all-reduce passed; else its exit code: still running or timed out (a rank that never came,
    a fabric that drops packets) apart from the backend's own failure (a peer gone, an NCCL error)."""
    if finished and error is None:
        return None
    if not finished or TIMED_OUT.search(error or ""):
        return EXIT_COLLECTIVE_TIMEOUT
    return EXIT_COLLECTIVE_FAILED


def gang_minimum(value: int, device) -> int:
    """The smallest of every rank's value (after check_gang: the gang's collectives work)."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def _all_reduce(tensor, timeout_seconds: float, what: str) -> None:
    """The all-reduce in a thread, bounded as a whole: NCCL builds its communicator inside the first
    collective's call (not in the work's wait), and a fabric fault can hang it there."""
    import datetime

    import torch.distributed as dist

    errors: list[str] = []

    def call() -> None:
        try:
            dist.all_reduce(tensor, async_op=True).wait(timeout=datetime.timedelta(seconds=timeout_seconds))
        except Exception as err:  # noqa: BLE001 - every backend error is reported, classified below
            errors.append(f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}")

    thread = threading.Thread(target=call, name="hyft-preflight-all-reduce", daemon=True)
    thread.start()
    thread.join(timeout_seconds + 5)  # the wait's own timeout, then a margin for it to report
    code = collective_verdict(not thread.is_alive(), errors[0] if errors else None)
    if code is None:
        return
    world, said = dist.get_world_size(), errors[0] if errors else "no answer"
    if code == EXIT_COLLECTIVE_TIMEOUT:
        raise PreflightError(code, f"an all-reduce of {what} across all {world} ranks did not finish within "
                             f"{timeout_seconds:.0f}s (preflight_timeout): a rank is stuck or the nodes cannot reach "
                             f"each other on the collective backend's ports ({said})")
    raise PreflightError(code, f"an all-reduce of {what} across all {world} ranks failed in the collective backend "
                         f"({dist.get_backend()}): {said}; look at the other nodes' logs for the rank that failed "
                         "first, and with NCCL at NCCL_DEBUG=INFO and the fabric (NCCL_SOCKET_IFNAME, NCCL_IB_HCA)")
