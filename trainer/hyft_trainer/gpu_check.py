"""`make gpu-check`: one prepared run on one GPU machine, figures into a JSON file.

    python -m hyft_trainer.gpu_check --out gpu-check.json [--dry-run] [--steps 30]

1. the facts: GPUs, driver, torch's CUDA, NCCL, bf16;
2. the fail-fast: `hyft train` told to expect one GPU more than the machine has exits 8 (GpuUnavailable);
3. the default GPU path through `hyft train` (bf16, the ZeRO stage and offload hyft chooses, LoRA,
   gradient checkpointing, packing) for --steps steps on a random-weight model of Hunyuan-7B's width with 4
   of its layers: the loss curve, real tokens/s, MFU, the peak GPU memory per rank against `hyft estimate`
   of the plan it chose;
   then up to 10 steps of the same on the base quantized to 4 bits under ZeRO-3 (QLoRA: bitsandbytes' CUDA
   kernels), up to 10 sharded by FSDP2 instead (engine fsdp: fully_shard, bf16 mixed precision), and up to
   10 in fp16 under ZeRO-2 with DeepSpeed's dynamic loss scaling (the steps an overflow skipped);
   then up to 20 steps of it with hyft's default plan (offload and gradient checkpointing auto) and with
   the plan of Tencent's LLaMA-Factory recipe (optimizer offload, recomputation on): default_plan_vs_recipe,
   tokens/s over tokens/s, and the two losses;
4. which attention kernels ran on a packed batch (a profiled forward and backward);
5. `pytest -m unit` on the GPU host (the suite forces CPU; this proves it passes where CUDA is visible).

--dry-run runs the same steps on the CPU with a tiny model (CI: the script's own logic, no GPU), and
skips what needs one (MFU, kernels, the unit tier CI runs anyway).
A GPU machine may reach no package registry: carry hyft's trainer dependencies beyond the machine's own
torch as wheels (see the README's GPU check).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from . import gpus, offload
from .choices import SIZES
from .contract import EXIT_GPU_UNAVAILABLE, GPUS_PER_NODE_ENV, HIDE_GPUS_ENV
from .estimate import Shape, estimate, load_shape
from .flops import mfu, peak_flops
from .launcher import free_port
from .sample_data import make_samples

LAYERS = 4  # of Hunyuan-7B's 32: the width is real, the depth fits a 9-minute check




def run_train(config: dict, workdir: Path, expect_gpus: int, name: str) -> tuple[int, str, float]:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "NNODES": "1", "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "NPROC_PER_NODE": str(max(expect_gpus, 1)),
           GPUS_PER_NODE_ENV: str(expect_gpus), "HF_DATASETS_CACHE": str(workdir / "hf-cache")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hyft_trainer.cli", "train", str(path)], env=env,
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def attention_kernels(model_dir: Path, seq: int) -> list[str]:
    """CUDA kernels whose names say attention, from one profiled forward and backward of a packed batch
    (two samples in one row, as the collator builds it)."""
    import torch
    from transformers import AutoModelForCausalLM

    from . import attention

    attention.register()
    kernel, _ = attention.choose("auto", True, torch.cuda.get_device_capability(), True, False)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation=kernel).cuda()
    model.config.use_cache = False
    half = seq // 2
    ids = torch.randint(0, 1000, (1, seq), device="cuda")
    positions = torch.cat([torch.arange(half), torch.arange(seq - half)]).unsqueeze(0).cuda()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        model(input_ids=ids, position_ids=positions, labels=ids).loss.backward()
    names = {e.name for e in prof.key_averages()}
    return sorted(n for n in names if any(w in n.lower() for w in ("flash", "attention", "fmha", "sdpa", "softmax")))


def unit_tier(root: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "unit", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=root, capture_output=True, text=True)
    return {"exit_code": proc.returncode, "summary": (proc.stdout.strip().splitlines() or [""])[-1]}


def check(dry_run: bool, steps: int, workdir: Path) -> dict:
    from .tiny import build

    if dry_run:  # this process and every one it starts
        os.environ.update(HIDE_GPUS_ENV)
    facts = gpus.probe()
    result: dict = {"dry_run": dry_run, "facts": {**asdict(facts), "names": list(facts.names)}}
    on_gpu = facts.count > 0 and not dry_run
    if on_gpu:
        import torch

        result["facts"]["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        result["facts"]["torch"] = torch.__version__

    width = None if dry_run else {**SIZES["7B"]}
    model_dir = build(workdir / "model", "7b", layers=2 if dry_run else LAYERS, width=width)
    data = workdir / "data.jsonl"
    data.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in make_samples(2000, seed=3)))
    seq = 256 if dry_run else 2048
    config = {"model_name_or_path": str(model_dir), "data_files": [{"path": str(data)}], "cutoff_len": seq,
              "packing": True, "finetuning_type": "lora", "gradient_checkpointing": True, "bf16": on_gpu,
              "max_steps": steps, "per_device_train_batch_size": 1 if dry_run else 4, "logging_steps": 1,
              "learning_rate": 2e-4, "lr_scheduler_type": "constant", "save_steps": 10_000, "metrics_port": None,
              "template_check_samples": 0, "output_dir": str(workdir / "out")}

    # 2. fail fast: one GPU more than there is
    code, text, seconds = run_train({**config, "output_dir": str(workdir / "out-fail")}, workdir,
                                    facts.count + 1, "fail-fast")
    line = next((ln for ln in text.splitlines() if "this node expects" in ln), text.strip()[-400:])
    result["fail_fast"] = {"exit_code": code, "expected": EXIT_GPU_UNAVAILABLE, "seconds": round(seconds, 1),
                           "message": line[:600], "passed": code == EXIT_GPU_UNAVAILABLE}

    # 3. the default GPU path
    code, text, seconds = run_train(config, workdir, 0 if dry_run else 1, "train")
    result["train"] = {"exit_code": code, "seconds": round(seconds, 1)}
    trained = _report(workdir / "out") if code == 0 else None
    if trained is None:
        result["train"]["log_tail"] = text[-3000:]
        return result
    report, losses = trained
    shape = Shape(**{**SIZES["7B"], "layers": LAYERS}) if width else load_shape(str(model_dir))
    first, last = sum(losses[:3]) / max(1, len(losses[:3])), sum(losses[-3:]) / max(1, len(losses[-3:]))
    result["train"].update(steps=report["steps"], first_losses=losses[:3], last_losses=losses[-3:],
                           loss_fell=last < first, tokens_per_second=report.get("tokens_per_second"),
                           omp_threads=report.get("omp_threads"), fabric=report.get("fabric"),
                           data_cache=report.get("data_cache"))
    peak = peak_flops(facts.names[0]) if facts.names else None
    result["mfu"] = mfu(report.get("tokens_per_second") or 0, shape, seq, 1, peak) if on_gpu else None
    result["peak_flops"] = peak
    # 3b. memory against the estimate of the plan the run chose
    chosen = report.get("offload") or {}
    chosen_plan = (chosen.get("zero_stage"), offload.label(chosen.get("optimizer"), chosen.get("param")))
    planned = next(e for e in estimate(shape, 1, 1, "lora", 8, config["per_device_train_batch_size"], seq, True,
                                       half_precision=on_gpu) if (e.stage, e.offload) == chosen_plan)
    measured = max((r["reserved"] for r in report.get("peak_gpu_memory_by_rank") or []), default=None)
    result["memory"] = {"estimate_gpu_bytes": planned.gpu_bytes_per_device, "measured_reserved_bytes": measured,
                        "measured_vs_estimate": measured / planned.gpu_bytes_per_device if measured else None,
                        "peak_host_rss_bytes": report.get("peak_host_rss_bytes")}
    # 3c. variants of the same LoRA job, up to 10 steps each, under DeepSpeed or FSDP2 where the default plan
    # may be plain DDP: QLoRA (a 4-bit base, bitsandbytes' kernels for this GPU, under ZeRO-3); FSDP2 (engine
    # fsdp: torch's fully_shard, bf16 mixed precision); fp16 with DeepSpeed's dynamic loss scaling (what a GPU
    # without bf16, a T4 or V100, trains in: the steps an overflow skipped)
    expect = 0 if dry_run else 1
    result["qlora"] = _variant(config, workdir, expect, "qlora", {"quantization_bit": 4, "zero_stage": 3},
                               "quantization")
    result["fsdp2"] = _variant(config, workdir, expect, "fsdp2", {"engine": "fsdp", "offload_param": False,
                                                                  "offload_optimizer": False}, "engine")
    result["fp16"] = _variant(config, workdir, expect, "fp16", {"bf16": False, "fp16": True, "zero_stage": 2},
                              "overflow_skipped_steps")
    # 3d. hyft's default plan (offload and gradient checkpointing auto) against the plan of Tencent's LLaMA-Factory
    # recipe (ds_zero3_offload_hy.json: ZeRO-3 offloading the optimizer, recomputation on): the same job, tokens/s
    # and the loss
    plans = {}
    for plan, settings in (("recipe", {"zero_stage": 3, "offload_optimizer": True, "offload_param": False,
                                       "gradient_checkpointing": True}),
                           ("default", {"gradient_checkpointing": "auto"})):
        out = workdir / f"out-{plan}"
        code, text, seconds = run_train({**config, **settings, "max_steps": min(steps, 20), "output_dir": str(out)},
                                        workdir, 0 if dry_run else 1, plan)
        trained = _report(out) if code == 0 else None
        plans[plan] = _plan_figures(*trained) if trained else {"exit_code": code, "log_tail": text[-2000:]}
    if all("tokens_per_second" in p for p in plans.values()):
        plans["default_plan_vs_recipe"] = plans["default"]["tokens_per_second"] / plans["recipe"]["tokens_per_second"]
        plans["loss_difference"] = abs(plans["default"]["losses"][-1] - plans["recipe"]["losses"][-1])
    result["default_vs_recipe"] = plans
    # 4. attention kernels on a packed batch
    if on_gpu:
        try:
            result["attention_kernels"] = attention_kernels(model_dir, seq)
        except Exception as err:  # noqa: BLE001 - a figure missing, not the check failing
            result["attention_kernels"] = f"not measured: {type(err).__name__}: {err}"
    # 5. the unit tier where CUDA is visible
    root = Path(__file__).resolve().parents[2]
    result["unit_tier"] = unit_tier(root) if on_gpu and (root / "tests").is_dir() else "skipped (dry run: CI runs it)"
    return result


def _variant(config: dict, workdir: Path, expect_gpus: int, name: str, settings: dict, figure: str) -> dict:
    """The check's LoRA job with `settings`, up to 10 steps: exit code, seconds, losses, tokens/s, peak GPU
    memory and the report's own `figure`; the log's tail where it wrote no report."""
    out = workdir / f"out-{name}"
    code, text, seconds = run_train({**config, **settings, "max_steps": min(config["max_steps"], 10),
                                     "output_dir": str(out)}, workdir, expect_gpus, name)
    result = {"exit_code": code, "seconds": round(seconds, 1)}
    if code == 0 and (trained := _report(out)):
        report, losses = trained
        result.update({figure: report.get(figure)}, tokens_per_second=report.get("tokens_per_second"),
                      peak_gpu_memory_by_rank=report.get("peak_gpu_memory_by_rank"), losses=losses)
    else:
        result["log_tail"] = text[-3000:]
    return result


def _report(out: Path) -> tuple[dict, list[float]] | None:
    """A run's report.json and its logged losses; None if it wrote none."""
    path = out / "report.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    return report, [h["loss"] for h in report["log_history"] if "loss" in h]


def _plan_figures(report: dict, losses: list[float]) -> dict:
    """What a run chose and how fast it went: tokens/s over its last two thirds (start-up and the first
    steps left out), from its report's step timeline."""
    points = report.get("timeline") or []
    start, end = (points[len(points) // 3], points[-1]) if len(points) >= 3 else (None, None)
    steady = (end["tokens"] - start["tokens"]) / (end["seconds"] - start["seconds"]) \
        if start and end["seconds"] > start["seconds"] else report.get("tokens_per_second")
    return {"offload": report.get("offload"), "tokens_per_second": steady, "losses": losses,
            "peak_gpu_memory_by_rank": report.get("peak_gpu_memory_by_rank")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyft_trainer.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the JSON file of figures")
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, tiny model: the script's own logic")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 30; dry run 3)")
    args = parser.parse_args(argv)
    steps = args.steps or (3 if args.dry_run else 30)
    with tempfile.TemporaryDirectory(prefix="hyft-gpu-check-") as workdir:
        result = check(args.dry_run, steps, Path(workdir))
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    ok = result["fail_fast"]["passed"] and result.get("train", {}).get("exit_code") == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
