"""Training-step benchmark on the tiny model: plain data parallel (no DeepSpeed),
ZeRO-3, and ZeRO-3 with optimizer + parameter offload, in one run, same data,
same seed, two processes each (`hyft train`, NPROC_PER_NODE=2, gloo).

    python bench/train_step.py [--steps 60] [--batch 2]

Prints tokens/s, s/step and peak host RSS per mode, their ratios, and the
estimator's (`hyft estimate`) host-memory prediction for the offload run next to
the measured growth of the process's RSS over its pre-training baseline. Last
line: zero3_offload_vs_ddp=<x> estimator_error=<y>
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

import yaml

ROOT = Path(__file__).resolve().parent.parent
MODES = {
    "ddp": {"zero_stage": 0, "offload_optimizer": False, "offload_param": False},
    "zero3": {"zero_stage": 3, "offload_optimizer": False, "offload_param": False},
    "zero3_offload": {"zero_stage": 3, "offload_optimizer": True, "offload_param": True},
}


def run_mode(name: str, settings: dict, model: Path, work: Path, steps: int, batch: int) -> dict:
    out = work / name
    data = ROOT / "examples" / "data" / "hunyuan_chat.jsonl"
    config = {"model_name_or_path": str(model), "data_files": [{"path": str(data)}],
              "cutoff_len": 256, "finetuning_type": "full", "max_steps": steps, "per_device_train_batch_size": batch,
              "learning_rate": 1e-4, "logging_steps": 5, "save_steps": 100000, "output_dir": str(out),
              "metrics_port": None, "seed": 7, **settings}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf-cache"), "NPROC_PER_NODE": "2",
           "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hyft_trainer.cli", "train", str(path)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    runtime = report["train_runtime"]
    return {"tokens_per_second": report["tokens_per_second"], "seconds_per_step": runtime / report["steps"],
            "peak_rss": report["peak_host_rss_bytes"], "rss_before_training": report["host_rss_before_training"],
            "wall": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()

    from hyft_trainer.estimate import estimate, load_shape
    from hyft_trainer.tiny import build

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build(work / "tiny", "small", hidden_size=256, layers=4)
        results = {name: run_mode(name, s, model, work, args.steps, args.batch) for name, s in MODES.items()}
        shape = load_shape(str(model))

    predicted = {e.label: e for e in estimate(shape, nodes=1, gpus_per_node=2, seq=256, batch=args.batch)}
    offload_prediction = predicted["ZeRO-3, offload params+optimizer"].host_bytes_per_node
    print(f"tiny HunYuanDenseV1: {shape.params / 1e6:.1f}M parameters, full fine-tuning, batch {args.batch}, "
          f"{args.steps} steps, 2 processes, CPU")
    print(f"{'mode':16s} {'tokens/s':>10s} {'s/step':>8s} {'peak RSS':>10s} {'vs ddp':>7s}")
    base = results["ddp"]["tokens_per_second"]
    for name, r in results.items():
        print(f"{name:16s} {r['tokens_per_second']:10.0f} {r['seconds_per_step']:8.3f} "
              f"{r['peak_rss'] / 2**20:8.0f} MiB {r['tokens_per_second'] / base:7.3f}")
    # rank 0's process; the node runs two such processes
    growth = 2 * (results["zero3_offload"]["peak_rss"] - results["zero3_offload"]["rss_before_training"])
    error = (growth - offload_prediction) / offload_prediction
    print(f"estimator (ZeRO-3 full offload, host RAM per node): predicted {offload_prediction / 2**20:.1f} MiB; "
          f"measured RSS "
          f"growth during training {growth / 2**20:.1f} MiB (includes DeepSpeed's pinned buffers and allocator "
          "slack, which dominate at this size)")
    print(f"zero3_vs_ddp={results['zero3']['tokens_per_second'] / base:.3f}")
    print(f"zero3_offload_vs_ddp={results['zero3_offload']['tokens_per_second'] / base:.3f} "
          f"estimator_error={error:.3f}")


if __name__ == "__main__":
    main()
