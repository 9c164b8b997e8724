"""`hyft run FILE --local`: the same HunyuanFineTune, run on this machine.

The resource is validated with the same API models, the pods are rendered by the
same builders the operator uses, and each pod's trainer runs as a local process
with the pod's env (MASTER_ADDR pointed at 127.0.0.1 and a free port). Volumes
map to local folders: `--volume NAME=PATH`, or a hostPath volume's own path.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from hyft_trainer import gpus
from hyft_trainer.config import map_paths
from hyft_trainer.contract import CONFIG_ENV
from hyft_trainer.launcher import free_port

from . import builders
from .api import HunyuanFineTune
from .progress import parse_progress


class LocalRunError(ValueError):
    pass



def volume_folders(job: HunyuanFineTune, overrides: dict[str, str]) -> dict[str, Path]:
    folders = {}
    for volume in job.spec.volumes:
        name = volume.name
        if name in overrides:
            folders[name] = Path(overrides[name]).resolve()
        elif volume.hostPath and volume.hostPath.get("path"):
            folders[name] = Path(volume.hostPath["path"]).resolve()
        else:
            raise LocalRunError(f"volume {name!r} has no local folder: pass --volume {name}=PATH")
    return folders


def localize(path: str, folders: dict[str, Path]) -> str:
    """/hyft/volumes/<name>/rest -> <local folder of name>/rest"""
    prefix = builders.VOLUME_ROOT + "/"
    if not path.startswith(prefix):
        return path
    name, _, rest = path[len(prefix):].partition("/")
    return str(folders[name] / rest) if rest else str(folders[name])


def local_trainer_config(job: HunyuanFineTune, folders: dict[str, Path], metrics_port: int | None) -> dict:
    config = map_paths(builders.trainer_config(job), lambda path: localize(path, folders)).model_dump(mode="json")
    if config.get("metrics_port") is not None:
        config["metrics_port"] = metrics_port
    return config


@dataclass
class LocalPod:
    name: str
    env: dict[str, str]
    config_path: Path
    metrics_port: int | None
    process: subprocess.Popen | None = None


def local_devices(job: HunyuanFineTune, env: dict[str, str], count: int) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES for each local node: its own GPUs, never one shared by two nodes (NCCL stops
    with "Duplicate GPU detected"). None for a CPU job, whose pods hide every GPU themselves."""
    if not job.spec.gpusPerNode:
        return None
    try:
        return gpus.split_devices(job.spec.nodes, job.spec.gpusPerNode, gpus.visible_devices(env, count))
    except ValueError as err:
        raise LocalRunError(f"spec.gpusPerNode: {err}") from None


def plan_pods(job: HunyuanFineTune, folders: dict[str, Path], workdir: Path,
              devices: list[str] | None = None) -> list[LocalPod]:
    master_port = free_port()
    pods = []
    for rank, pod in enumerate(builders.gang(job, attempt=0)):
        name = pod["metadata"]["name"]
        env = {}
        for var in pod["spec"]["containers"][0]["env"]:
            if "value" in var:
                env[var["name"]] = var["value"]
            elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[var["name"]] = name
            elif var["name"] in os.environ:  # a Secret reference: take it from this shell
                env[var["name"]] = os.environ[var["name"]]
        for key in ("MASTER_ADDR", "PET_MASTER_ADDR"):
            env[key] = "127.0.0.1"
        for key in ("MASTER_PORT", "PET_MASTER_PORT"):
            env[key] = str(master_port)
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[rank]
        metrics_port = free_port() if job.spec.metrics.enabled else None
        folder = workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        config_path = folder / builders.CONFIG_KEY
        config_path.write_text(yaml.safe_dump(local_trainer_config(job, folders, metrics_port), sort_keys=False))
        env[CONFIG_ENV] = str(config_path)
        env["HF_DATASETS_CACHE"] = str(folder / "datasets-cache")  # like a pod: a cache of its own
        pods.append(LocalPod(name, env, config_path, metrics_port))
    return pods


def _stream(pod: LocalPod, out) -> None:
    for line in pod.process.stdout:
        out.write(f"[{pod.name}] {line}")
        out.flush()


def _progress_line(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
            progress = parse_progress(resp.read().decode())
    except (OSError, ValueError):
        return None
    if progress is None or not progress.totalSteps:
        return None
    parts = [f"step {progress.step}/{progress.totalSteps} ({progress.percent:.0f}%)"]
    if progress.loss:  # 0 until the first logging step
        parts.append(f"loss {progress.loss:.4f}")
    if progress.tokensPerSecond:
        parts.append(f"{progress.tokensPerSecond:,.0f} tokens/s")
    if progress.etaSeconds is not None:
        parts.append(f"ETA {int(progress.etaSeconds) // 60}:{int(progress.etaSeconds) % 60:02d}")
    return "[progress] " + "  ".join(parts)


def run(job: HunyuanFineTune, folders: dict[str, Path], workdir: Path, out=sys.stdout,
        progress_interval: float = 2.0) -> int:
    devices = local_devices(job, dict(os.environ), gpus.probe().count) if job.spec.gpusPerNode else None
    pods = plan_pods(job, folders, workdir, devices)
    for pod in pods:
        pod.process = subprocess.Popen(
            [sys.executable, "-m", "hyft_trainer.cli", "train", str(pod.config_path)],
            env={**os.environ, **pod.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, bufsize=1)
    streams = [threading.Thread(target=_stream, args=(p, out), daemon=True) for p in pods]
    for t in streams:
        t.start()

    interrupted = []

    def on_signal(signum, _frame):
        # First Ctrl-C/SIGTERM: every trainer saves a checkpoint and stops; a second one kills them.
        sig = signal.SIGTERM if not interrupted else signal.SIGKILL
        interrupted.append(signum)
        out.write(f"[hyft] {signal.Signals(signum).name}: "
                  f"{'saving checkpoints, then stopping' if sig == signal.SIGTERM else 'killing'}\n")
        for pod in pods:
            if pod.process.poll() is None:
                os.kill(pod.process.pid, sig)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        last_line = None
        while any(p.process.poll() is None for p in pods):
            if pods[0].metrics_port:
                line = _progress_line(pods[0].metrics_port)
                if line and line != last_line:
                    out.write(line + "\n")
                    last_line = line
            time.sleep(progress_interval)
        for t in streams:
            t.join(5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = {p.name: p.process.returncode for p in pods}
    failed = {n: c for n, c in codes.items() if c != 0}
    if failed:
        out.write(f"[hyft] failed: {', '.join(f'{n} exited {c}' for n, c in failed.items())}\n")
        return next(iter(failed.values()))
    output = Path(localize(builders.trainer_config(job).output_dir, folders))
    if interrupted:
        out.write(f"[hyft] stopped; checkpoints in {output} (run again to resume)\n")
        return 0
    summarize(output, out)
    return 0


def summarize(output: Path, out) -> None:
    out.write(f"[hyft] done. output: {output}\n")
    report_path = output / "report.json"
    if report_path.exists():
        report = json.loads(report_path.read_text())
        fields = {k: report.get(k) for k in ("steps", "tokens", "final_loss", "best_loss", "tokens_per_second",
                                             "seconds")}
        out.write(f"[hyft] report: {report_path}\n[hyft]   "
                  + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
                  + "\n")
    if (output / "loss.png").exists():
        out.write(f"[hyft] loss curve: {output / 'loss.png'}\n")
    for name in ("export", "merged"):
        if (output / name).exists():
            out.write(f"[hyft] model ({name}): {output / name}\n")
