"""`hyft train CONFIG`: the trainer container's entry point.

Reads the pod contract's env (NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT,
NPROC_PER_NODE, or their torchrun twins PET_*) and starts this node's worker
processes with torch's own elastic launcher (torch.distributed.run). Without
them it runs on this machine alone.

Exit codes (the operator reads them, contract.EXIT_MEANINGS): 0 done (or
stopped with a checkpoint on SIGTERM); 2 invalid config or data, permanent;
3-9 a preflight check (8: the GPUs the pod expects are not usable); anything
else from the workers (torchrun reports a failed worker as 1), retryable.
SIGTERM/SIGINT: every rank saves a checkpoint at the next step and exits 0; a
second signal stops the workers at once.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from logging.handlers import RotatingFileHandler
from pathlib import Path

from . import gpus, offload, preflight
from .config import ConfigError, load_config
from .contract import (
    ATTEMPT_ENV,
    CONFIG_ENV,
    EXIT_GANG_INCOMPLETE,
    EXIT_GPU_UNAVAILABLE,
    EXIT_INVALID,
    GPUS_PER_NODE_ENV,
    HIDE_GPUS_ENV,
    LOG_BACKUPS,
    LOG_MAX_BYTES,
    POD_NAME_ENV,
    PREFLIGHT_SECONDS_ENV,
    RENDEZVOUS_ENV,
    STOPPED_EARLY,
    TERMINATION_LOG_ENV,
    log_file,
)
from .worker import EXIT_FILE, LAUNCH_DIR_ENV, STARTED_FILE, STOP_FILE


@dataclass(frozen=True)
class Rendezvous:
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    nproc_per_node: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rendezvous_from_env(env: dict[str, str], gpus: int) -> Rendezvous:
    """The pod contract's values (plain names win over PET_* twins); single node when absent."""
    def get(key: str) -> str | None:
        return env.get(key) or env.get(f"PET_{key}")

    values = {k: get(k) for k in RENDEZVOUS_ENV}
    try:
        return Rendezvous(
            nnodes=int(values["NNODES"] or 1),
            node_rank=int(values["NODE_RANK"] or 0),
            master_addr=values["MASTER_ADDR"] or "127.0.0.1",
            master_port=int(values["MASTER_PORT"] or 0) or free_port(),
            nproc_per_node=int(values["NPROC_PER_NODE"] or max(gpus, 1)),
        )
    except ValueError as err:
        raise ConfigError(f"bad rendezvous environment {values}: {err}") from None


def torchrun_command(rdzv: Rendezvous, config_path: str, join_timeout: int) -> list[str]:
    """join_timeout: how long the master's rendezvous waits for every node (the worker pods may be
    scheduled, or pull their image, later than the master's)."""
    return [sys.executable, "-m", "torch.distributed.run",
            "--nnodes", str(rdzv.nnodes), "--node_rank", str(rdzv.node_rank),
            "--master_addr", rdzv.master_addr, "--master_port", str(rdzv.master_port),
            "--nproc_per_node", str(rdzv.nproc_per_node), "--max_restarts", "0",
            "--rdzv_conf", f"timeout={join_timeout}",
            "-m", "hyft_trainer.worker", config_path]


def expected_gpus(env: dict[str, str]) -> int | None:
    """The GPUs the pod contract says this node has (None: `hyft train` run by hand, any device goes)."""
    value = env.get(GPUS_PER_NODE_ENV)
    try:
        return int(value) if value else None
    except ValueError:
        raise ConfigError(f"{GPUS_PER_NODE_ENV}={value!r} is not a number of GPUs") from None


class NodeLog:
    """This node's log on the output volume (logs/attempt-N/<pod>.log, rotated): everything the
    launcher and its workers print, also what the console hides, kept after the pod is gone."""

    def __init__(self, output_dir: str):
        pod = os.environ.get(POD_NAME_ENV) or socket.gethostname()
        self.path = Path(output_dir) / log_file(os.environ.get(ATTEMPT_ENV, "0"), pod)
        self._logger = logging.getLogger(f"hyft.node-log.{id(self)}")
        self._logger.propagate = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handler = RotatingFileHandler(self.path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS,
                                          encoding="utf-8")
        except OSError as err:  # the run goes on; the console still has it all
            print(f"hyft: cannot keep a log in {self.path}: {err}", file=sys.stderr, flush=True)
            return
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)
        self._logger.setLevel(logging.INFO)

    def write(self, line: bytes | str) -> None:
        text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
        self._logger.info(text.rstrip("\n"))

    def say(self, text: str, stream=None) -> None:
        """A launcher message: to the console and the log."""
        print(text, file=stream or sys.stdout, flush=True)
        self.write(text)

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)


def check_inputs(config) -> None:
    """Fail fast (exit 2) on the config's inputs: what can be checked before any process starts."""
    if not Path(config.model_name_or_path).is_dir():
        raise ConfigError(f"model_name_or_path: {config.model_name_or_path} is not a folder")
    if isinstance(config.resume_from_checkpoint, str) and not Path(config.resume_from_checkpoint).is_dir():
        raise ConfigError(f"resume_from_checkpoint: {config.resume_from_checkpoint} is not a folder")
    from .loading import DataError, sources_for_config

    try:
        sources_for_config(config)
    except DataError as err:
        raise ConfigError(f"data: {err}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: hyft train CONFIG.yaml (or set {CONFIG_ENV})", file=sys.stderr)
        return EXIT_INVALID
    log = None
    try:
        config = load_config(argv[0])
        log = NodeLog(config.output_dir)
        return launch(argv[0], config, log)
    except ConfigError as err:
        if log:
            log.say(f"hyft: {err}", sys.stderr)
        else:
            print(f"hyft: {err}", file=sys.stderr, flush=True)
        return EXIT_INVALID
    finally:
        if log:
            log.close()


def launch(config_path: str, config, log: NodeLog) -> int:
    """This node's workers under torchrun, their output to the console and the node's log."""
    check_inputs(config)
    from .deepspeed_config import nvcc_available, settle

    expected = expected_gpus(dict(os.environ))
    env = {**os.environ, **(HIDE_GPUS_ENV if expected == 0 else {})}  # a CPU node: CPU it is
    facts = gpus.probe(env)
    precision = "bf16" if config.bf16 else "fp16" if config.fp16 else "fp32"
    if problem := gpus.check(expected or 0, precision, facts):
        return failed(log, f"preflight: {problem}", EXIT_GPU_UNAVAILABLE)
    rdzv = rendezvous_from_env(env, facts.count)
    notes = config.notes
    config, decision = offload.for_node(config, facts.memory, rdzv.nnodes, rdzv.nproc_per_node)
    settled = settle(config, rdzv.nnodes * rdzv.nproc_per_node, facts.count > 0, nvcc_available())
    for note in (*notes, *([decision.message] if decision.message else []), *settled.notes):  # once per node
        log.say(f"hyft: {note}")
    try:
        passed = preflight.run(settled.config, rdzv.node_rank, rdzv.master_addr, rdzv.master_port,
                               rdzv.nproc_per_node)
    except preflight.PreflightError as err:
        return failed(log, f"preflight: {err}", err.exit_code)
    log.say(f"hyft: preflight passed in {passed.seconds:.1f}s (/dev/shm, output volume"
            + (", master reachable)" if rdzv.node_rank else ")"))

    workdir = Path(tempfile.mkdtemp(prefix="hyft-launch-"))
    stop_file, exit_file = workdir / STOP_FILE, workdir / EXIT_FILE
    cpus, limit = len(os.sched_getaffinity(0)), gpus.node_cpu_limit()
    added = gpus.worker_env(env, rdzv.nproc_per_node, cpus, limit, facts.count > 0,
                            trace_prefix=str(log.path.with_name(f"{log.path.stem}-nccl-trace-rank-")))
    # unbuffered: the workers' lines reach the console and the log as they are printed, not at exit
    env = {**env, **added, LAUNCH_DIR_ENV: str(workdir), "PYTHONUNBUFFERED": "1",
           PREFLIGHT_SECONDS_ENV: f"{passed.seconds:.3f}"}
    devices = f"{facts.count} GPU(s) ({', '.join(facts.names)})" if facts.count else "CPU"
    log.say(f"hyft: node {rdzv.node_rank}/{rdzv.nnodes}, {rdzv.nproc_per_node} process(es) on {devices}, "
            f"master {rdzv.master_addr}:{rdzv.master_port}; log: {log.path}")
    log.say(f"hyft: {env['OMP_NUM_THREADS']} OpenMP thread(s) per process ("
            + ("OMP_NUM_THREADS set by you)" if "OMP_NUM_THREADS" not in added else
               f"{'CPU limit ' + format(limit, 'g') if limit else 'no CPU limit'}, {cpus} CPUs, "
               f"{rdzv.nproc_per_node} process(es))"))
    # A session of its own: a terminal's Ctrl-C must not reach torchrun, which would kill the workers
    # after 30 s instead of letting them checkpoint.
    timeout = int(settled.config.preflight_timeout)
    proc = subprocess.Popen(torchrun_command(rdzv, config_path, timeout), env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors = Relay(proc.stderr, sys.stderr.buffer, log, exit_file)
    relays = [Relay(proc.stdout, sys.stdout.buffer, log), errors]
    for thread in relays:
        thread.start()

    def on_signal(signum, _frame):
        if stop_file.exists():
            os.killpg(proc.pid, signal.SIGTERM)  # second signal: stop now
            return
        log.say(f"hyft: {signal.Signals(signum).name}: saving a checkpoint at the next step, then stopping")
        stop_file.write_text("stop\n")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    rc = proc.wait()
    for thread in relays:
        thread.join(timeout=10)
    if exit_file.exists():
        code, _, message = exit_file.read_text().partition("\n")
        return failed(log, message, int(code))  # said again, last: where `kubectl logs` readers look
    if rc != 0 and not (workdir / STARTED_FILE).exists():
        # torchrun failed before any worker ran: its rendezvous never saw every node
        message = (f"preflight: not every one of the {rdzv.nnodes} nodes joined the rendezvous at "
                   f"{rdzv.master_addr}:{rdzv.master_port} within {timeout}s (preflight_timeout): are all the "
                   f"job's pods scheduled and running? torchrun said: {errors.last_line or f'exit code {rc}'}")
        return failed(log, message, EXIT_GANG_INCOMPLETE)
    if rc == 0 and stop_file.exists():
        # Exit 0 with a checkpoint; the message tells the operator this was an interruption, not the end.
        termination_message(f"{STOPPED_EARLY}: a checkpoint was saved; a restart resumes from it")
    elif rc == 0 and rdzv.node_rank == 0 and settled.config.merge_lora:
        merge_export(settled.config, log)
    return rc


def merge_export(config, log: NodeLog) -> None:
    """The LoRA merged into the base (merge_lora), once every rank has exited."""
    from .checkpoints import readable_by_all
    from .merge import merge_lora, record

    log.say(f"hyft: merging the LoRA into {config.model_name_or_path} (merge_lora)")
    merged = merge_lora(config)
    readable_by_all(merged)
    record(Path(config.output_dir) / "report.json", merged)
    log.say(f"hyft: merged model: {merged}")


class Relay(threading.Thread):
    """Passes the workers' and torchrun's output through as it comes, and into the node's log. On
    the console, torchrun's own traceback for a worker that stopped for a known reason (it wrote
    exit_file first) is left out: that error is reported once, in plain words, and a traceback would
    suggest a crash. The log keeps it."""

    def __init__(self, source, sink, log: NodeLog, exit_file: Path | None = None):
        super().__init__(daemon=True)
        self.source, self.sink, self.log, self.exit_file = source, sink, log, exit_file
        self.last_line = ""  # the last words, for a failure message

    def run(self) -> None:
        swallowing = False
        for line in iter(self.source.readline, b""):
            self.log.write(line)
            if text := line.decode("utf-8", errors="replace").strip():
                self.last_line = text[-300:]
            if (self.exit_file and line.startswith(b"Traceback (most recent call last):")
                    and self.exit_file.exists()):
                swallowing = True
            if not swallowing:
                self.sink.write(line)
                self.sink.flush()
        self.source.close()


def failed(log: NodeLog, message: str, code: int) -> int:
    """A known failure: on stderr, in the node's log and in the pod's termination message."""
    log.say(f"hyft: {message}", sys.stderr)
    termination_message(message)
    return code


def termination_message(text: str) -> None:
    """Kubernetes puts /dev/termination-log into the pod status, where the operator reads it."""
    path = os.environ.get(TERMINATION_LOG_ENV) or (
        "/dev/termination-log" if "KUBERNETES_SERVICE_HOST" in os.environ else None)
    if not path:
        return
    try:
        with open(path, "w") as f:
            f.write(text[-4000:])
    except OSError:
        pass
