"""A user's benchmark: Tencent's published LLaMA-Factory recipe for Hunyuan (hunyuan_full.yaml with
ds_zero3_offload_hy.json: full fine-tuning, ZeRO-3 offloading the optimizer, gradient checkpointing on by
LLaMA-Factory's default) run by LLaMA-Factory 0.9.5, against the same job run by `hyft train` with hyft's
defaults: the same YAML without its DeepSpeed line, so hyft chooses the plan (ZeRO stage, offload and
gradient checkpointing auto, from the GPU's and the node's memory; said in its log).

The recipe is used unchanged but for what a run on this machine needs: the model and dataset paths, the
output folder, max_steps, logging every step, no saving, no plot; on a CPU also bf16 off (in the YAML and
the JSON: neither side can train bf16 there). Model: a tiny random-weight 7b-family HunYuanDenseV1; data:
one-turn synthetic Hunyuan chats (both templates render them to the same tokens); 2 processes; medians of
--repeats runs, alternating who goes first. Measured alike on both sides (bench/train_vs_llamafactory.py's
timeline): steady-state real tokens/s from step --warmup, rank 0's peak RSS, and the loss at the end (the
mean of the last five steps). Last line:
default_plan_vs_recipe=<hyft tokens/s over the recipe's> loss_difference=<|hyft - recipe| at the end>

    python bench/default_vs_recipe.py [--steps 30] [--warmup 10] [--repeats 3]

On a CPU host, where the node's memory holds the job so, hyft trains this float32 job under plain DDP
(torch's AdamW, no DeepSpeed partitioning) without recomputation; the recipe keeps ZeRO-3, DeepSpeed's CPU
Adam and recomputation. On a GPU host `make gpu-check` measures the same comparison (default_vs_recipe).
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import yaml
from train_vs_llamafactory import arguments, median, model_and_data, steady, train_hyft, train_llamafactory

from tests.llamafactory_corpus import DS_Z3_OFFLOAD_HUNYUAN, tencent  # Tencent's files, placeholders marked


def recipe(work: Path, model: Path, data: Path, steps: int, on_gpu: bool, tag: str) -> dict:
    """Tencent's YAML and its DeepSpeed JSON, with this run's paths, steps and logging."""
    ds_path = work / f"ds-{tag}.json"
    config = yaml.safe_load(tencent("hunyuan_full.yaml", dataset="hunyuan_chat").format(
        model=model, deepspeed=ds_path, output=work / f"out-{tag}"))
    ds = DS_Z3_OFFLOAD_HUNYUAN
    config.update(dataset_dir=str(data), max_steps=steps, logging_steps=1, save_steps=100_000, plot_loss=False)
    if not on_gpu:
        config["bf16"] = False
        ds = {**ds, "bf16": {"enabled": False}}
    ds_path.write_text(json.dumps(ds))
    return config


def run_recipe(work: Path, model: Path, data: Path, args, on_gpu: bool, tag: str) -> dict:
    config = recipe(work, model, data, args.steps, on_gpu, f"lf-{tag}")
    report = train_llamafactory(work, config, tag)
    state = json.loads((work / f"out-lf-{tag}" / "trainer_state.json").read_text())
    return {**report, "losses": [h["loss"] for h in state["log_history"] if "loss" in h]}


def run_default(work: Path, model: Path, data: Path, args, on_gpu: bool, tag: str) -> dict:
    config = recipe(work, model, data, args.steps, on_gpu, f"hyft-{tag}")
    del config["deepspeed"]  # hyft's own plan
    config.update(metrics_port=None)
    report = train_hyft(work, config, tag)
    return {**report, "losses": [h["loss"] for h in report["log_history"] if "loss" in h]}


def main() -> None:
    args = arguments(__doc__, steps=30, samples=2000)
    import torch

    on_gpu = torch.cuda.is_available()
    runs: dict[str, list[dict]] = {"recipe": [], "default": []}
    plans: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, params = model_and_data(work, args.samples)
        sides = [("recipe", run_recipe), ("default", run_default)]
        for repeat in range(args.repeats):
            for side, run in sides if repeat % 2 == 0 else sides[::-1]:  # alternate who goes first
                report = run(work, model, work / "data", args, on_gpu, str(repeat))
                figures = steady(report, args.warmup)
                figures["final_loss"] = sum(report["losses"][-5:]) / len(report["losses"][-5:])
                runs[side].append(figures)
                plans[side] = report.get("offload", "ZeRO-3, offload optimizer, gradient checkpointing on")
                print(f"  {side:8s} run {repeat}: {figures['tokens_per_s']:9.0f} tokens/s, loss "
                      f"{figures['final_loss']:.4f}", flush=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {'GPU' if on_gpu else 'no GPU'}, load "
          f"{os.getloadavg()[0]:.2f}; tiny 7b-family HunYuanDenseV1 {params / 1e6:.1f}M parameters, full "
          f"fine-tuning, 2 processes, {args.steps} steps (steady state from step {args.warmup}), medians of "
          f"{args.repeats}")
    print(f"the recipe's plan: {plans['recipe']}; hyft's default plan: {json.dumps(plans['default'])}")
    medians = {side: median(r) for side, r in runs.items()}
    print(f"{'side':8s} {'s/step':>8s} {'tokens/s':>9s} {'tokens/step':>11s} {'peak RSS':>10s} {'loss':>8s}")
    for side, m in medians.items():
        print(f"{side:8s} {m['s_per_step']:8.3f} {m['tokens_per_s']:9.0f} {m['tokens_per_step']:11.0f} "
              f"{m['peak_rss'] / 2**20:7.0f} MiB {m['final_loss']:8.4f}")
    ratio = medians["default"]["tokens_per_s"] / medians["recipe"]["tokens_per_s"]
    print(f"default_plan_vs_recipe={ratio:.3f} "
          f"loss_difference={abs(medians['default']['final_loss'] - medians['recipe']['final_loss']):.4f}")


if __name__ == "__main__":
    main()
