"""`hyft estimate` against a measured run: a random-weight HunYuanDenseV1 of ~230M
parameters, full fine-tuning, ZeRO-3 with optimizer and parameter offload, one
process, a few steps and the export, on this machine's CPU.

    python bench/estimate_vs_measured.py [--steps 3] [--hidden 2048] [--layers 6]

Measured: the peak of the summed RSS of the whole process tree (`hyft train`, torch's
agent, the worker), sampled every 50 ms. Predicted: `hyft estimate`'s host RAM per
node for the same model and settings (float32 on CPU). Last line:
estimator_error=<(predicted - measured) / measured>  (negative: the estimate is under)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 1024 ** 3


def tree_rss(root: int) -> int:
    """Summed RSS of root and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = next((int(line.split()[1]) * 1024 for line in status.splitlines()
                                if line.startswith("VmRSS:")), 0)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def measure(config: Path, log: Path) -> tuple[int, int, float]:
    env = {**os.environ, "NNODES": "1", "NODE_RANK": "0", "NPROC_PER_NODE": "1", "MASTER_ADDR": "127.0.0.1"}
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hyft_trainer.cli", "train", str(config)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.05)
    return proc.returncode, peak, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--cutoff-len", type=int, default=256)
    args = parser.parse_args()

    import yaml

    from hyft_trainer.estimate import estimate, load_shape
    from hyft_trainer.sample_data import make_samples
    from hyft_trainer.tiny import build

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build(work / "model", "small", hidden_size=args.hidden, layers=args.layers)
        data = work / "data.jsonl"
        data.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in make_samples(16, seed=2)))
        config = work / "train.yaml"
        config.write_text(yaml.safe_dump({
            "model_name_or_path": str(model), "data_files": [{"path": str(data)}], "cutoff_len": args.cutoff_len,
            "finetuning_type": "full", "zero_stage": 3, "offload_optimizer": True, "offload_param": True,
            "max_steps": args.steps, "per_device_train_batch_size": 1, "logging_steps": 1, "save_steps": 1000,
            "output_dir": str(work / "out"), "metrics_port": None}))
        code, peak, seconds = measure(config, work / "train.log")
        if code != 0:
            print((work / "train.log").read_text()[-3000:])
            sys.exit(f"training failed with exit code {code}")
        report = json.loads((work / "out" / "report.json").read_text())
        shape = load_shape(str(model))
        predicted = {e.label: e for e in estimate(shape, nodes=1, gpus_per_node=1, method="full", batch=1,
                                                 seq=args.cutoff_len, half_precision=False)}
        option = predicted["ZeRO-3, offload params+optimizer"]

    error = (option.host_bytes_per_node - peak) / peak
    print(f"model: {shape.params / 1e6:.0f}M parameters, full fine-tuning, ZeRO-3 + optimizer and parameter offload, "
          f"1 process, {args.steps} steps + export, float32 on {os.cpu_count()} CPUs ({seconds:.0f} s)")
    print(f"measured peak RSS of the process tree: {peak / GIB:.2f} GiB (worker alone: "
          f"{report['peak_host_rss_bytes'] / GIB:.2f} GiB)")
    print(f"hyft estimate, host RAM per node:      {option.host_bytes_per_node / GIB:.2f} GiB "
          f"({option.breakdown})")
    print(f"estimator_error={error:+.3f}")


if __name__ == "__main__":
    main()
