"""Training, side by side with LLaMA-Factory 0.9.5: the same tiny random-weight 7b-family
HunYuanDenseV1 (~10M parameters), the same synthetic Hunyuan chats, cutoff 512, batch 2 per
process, 2 processes (torchrun, gloo, CPU), ZeRO-3 with optimizer and parameter offload from
the same DeepSpeed JSON, LoRA r=8 on all linear layers, no gradient checkpointing, sdpa
attention, fp32, the same seed and steps. Packing off, then on (LLaMA-Factory's neat_packing,
which like hyft's keeps packed sequences from attending to each other). Runs alternate
between the two sides, --repeats times each (default 3); medians are reported.

    python bench/train_vs_llamafactory.py [--steps 40] [--warmup 10] [--repeats 3]

Measured the same way on both sides (a callback on global rank 0): at each step, the seconds
since training began and the non-padding tokens all ranks had seen. Steady state is from step
--warmup to the last: s/step and real tokens/s over that window. Start-up, data preparation
and export are not timed. Peak RSS: rank 0's process at the end of training. The same work on both
sides: the chats are one-turn, which both templates render to the same tokens (on earlier turns
LLaMA-Factory's `hunyuan` template keeps the think markup the official template drops; with them the
two sides trained on different text, ~11 % more tokens per step on LLaMA-Factory's, and tokens/s
compared unequal work); the tokens/step column shows it. LLaMA-Factory runs in its own venv
(bench/setup_llamafactory.sh). Last line:
tokens_per_s_vs_llamafactory=<unpacked> packed_tokens_per_s_vs_llamafactory=<packed>
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("HYFT_CACHE") or Path.home() / ".cache" / "hyft")
LF_PYTHON = CACHE / "llamafactory-venv" / "bin" / "python"
DEEPSPEED = {  # one file for both sides
    "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
    "gradient_clipping": "auto",
    "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True},
                          "offload_param": {"device": "cpu", "pin_memory": True},
                          "stage3_gather_16bit_weights_on_model_save": True},
}


def common(args) -> dict:
    return {"cutoff_len": 512, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
            "max_steps": args.steps, "learning_rate": 1e-4, "lr_scheduler_type": "constant", "logging_steps": 1,
            "save_steps": 100000, "seed": 7, "lora_rank": 8}


def run_hyft(work: Path, model: Path, data: Path, ds: Path, packing: bool, args, tag: str) -> dict:
    config = {**common(args), "model_name_or_path": str(model),
              "data_files": [{"path": str(data / "hunyuan_chat.jsonl")}], "finetuning_type": "lora",
              "lora_target": "all", "deepspeed": str(ds), "packing": packing,
              "gradient_checkpointing": False, "output_dir": str(work / f"hyft-{tag}"), "metrics_port": None,
              "plot_loss": False}
    return train_hyft(work, config, tag)


def train_hyft(work: Path, config: dict, tag: str) -> dict:
    """`hyft train` of config on 2 processes; its report.json."""
    path = work / f"hyft-{tag}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "NPROC_PER_NODE": "2", "OMP_NUM_THREADS": "1",
           "HF_DATASETS_CACHE": str(work / f"cache-{tag}"), "TORCH_EXTENSIONS_DIR": str(CACHE / "torch-extensions")}
    proc = subprocess.run([sys.executable, "-m", "hyft_trainer.cli", "train", str(path)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"hyft ({tag}) failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return json.loads((Path(config["output_dir"]) / "report.json").read_text())


def run_llamafactory(work: Path, model: Path, data: Path, ds: Path, packing: bool, args, tag: str) -> dict:
    config = {**common(args), "model_name_or_path": str(model), "stage": "sft", "do_train": True,
              "finetuning_type": "lora", "lora_target": "all", "lora_alpha": 16, "lora_dropout": 0.0,
              "dataset": "hunyuan_chat", "dataset_dir": str(data), "template": "hunyuan", "deepspeed": str(ds),
              "packing": packing, "neat_packing": packing, "disable_gradient_checkpointing": True,
              "flash_attn": "sdpa", "overwrite_cache": True, "output_dir": str(work / f"lf-{tag}"),
              "plot_loss": False}
    return train_llamafactory(work, config, tag)


def train_llamafactory(work: Path, config: dict, tag: str) -> dict:
    """LLaMA-Factory's training of config on 2 processes, in its own venv; the timeline its callback wrote."""
    path, timeline = work / f"lf-{tag}.yaml", work / f"lf-{tag}.timeline.json"
    config = {**config, "report_to": "none", "include_num_input_tokens_seen": "non_padding", "ddp_backend": "gloo"}
    path.write_text(yaml.safe_dump(config))
    # DeepSpeed's JIT-built ops apart from hyft's: one shared folder would rebuild them (minutes) on
    # every switch between the two venvs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(work / f"cache-lf-{tag}"),
           "TORCH_EXTENSIONS_DIR": str(CACHE / "llamafactory-torch-extensions")}
    env.pop("PYTHONPATH", None)  # hyft's packages must not shadow the venv's
    proc = subprocess.run([str(LF_PYTHON), "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(free_port()), str(HERE / "_llamafactory_train.py"), str(path),
                           str(timeline)], env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not timeline.exists():
        raise SystemExit(f"LLaMA-Factory ({tag}) failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return json.loads(timeline.read_text())


def free_port() -> int:
    from hyft_trainer.launcher import free_port as pick

    return pick()


def steady(report: dict, warmup: int) -> dict:
    """s/step and real tokens/s from step `warmup` to the last logged step."""
    points = report["timeline"]
    start = next(p for p in points if p["step"] >= warmup)
    end = points[-1]
    seconds = end["seconds"] - start["seconds"]
    return {"s_per_step": seconds / (end["step"] - start["step"]),
            "tokens_per_s": (end["tokens"] - start["tokens"]) / seconds,
            "tokens_per_step": (end["tokens"] - start["tokens"]) / (end["step"] - start["step"]),
            "peak_rss": report["peak_host_rss_bytes"]}


def single_turn(path: Path) -> None:
    """Keep the one-turn chats: there both templates render the same tokens (on earlier turns LLaMA-Factory's
    `hunyuan` template keeps the think markup that the official template, and hyft, drop), so both sides do
    the same work and tokens/s compares like for like."""
    lines = [line for line in path.read_text().splitlines()
             if sum(m["role"] == "user" for m in json.loads(line)["messages"]) == 1]
    path.write_text("\n".join(lines) + "\n")


def median(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def arguments(description: str, steps: int, samples: int) -> argparse.Namespace:
    """The benchmarks' command line; LLaMA-Factory's venv installed if missing."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the steady state")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=samples)
    args = parser.parse_args()
    if not LF_PYTHON.exists():
        setup = subprocess.run(["bash", str(HERE / "setup_llamafactory.sh")], capture_output=True, text=True)
        if setup.returncode != 0:
            raise SystemExit(f"cannot install LLaMA-Factory:\n{setup.stderr[-2000:]}")
    return args


def model_and_data(work: Path, samples: int) -> tuple[Path, int]:
    """The tiny 7b-family model (its folder, its parameter count) and one-turn chats in work/data."""
    from hyft_trainer.sample_data import write
    from hyft_trainer.tiny import build

    model = build(work / "tiny-7b", "7b", hidden_size=512, layers=4)
    write(work / "data", samples, seed=1)
    single_turn(work / "data" / "hunyuan_chat.jsonl")
    return model, json.loads((model / "hyft_tiny.json").read_text())["parameters"]


def main() -> None:
    args = arguments(__doc__, steps=40, samples=4000)
    results: dict[tuple[str, bool], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, params = model_and_data(work, args.samples)
        ds = work / "ds_z3_offload.json"
        ds.write_text(json.dumps(DEEPSPEED))
        for repeat in range(args.repeats):
            for packing in (False, True):
                sides = [("hyft", run_hyft), ("llamafactory", run_llamafactory)]
                for side, run in sides if repeat % 2 == 0 else sides[::-1]:  # alternate who goes first
                    tag = f"{'packed' if packing else 'unpacked'}-{repeat}"
                    report = run(work, model, work / "data", ds, packing, args, tag)
                    results.setdefault((side, packing), []).append(steady(report, args.warmup))
                    print(f"  {side:12s} {tag:12s} {results[(side, packing)][-1]['tokens_per_s']:9.0f} tokens/s",
                          flush=True)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
          f"tiny 7b-family HunYuanDenseV1 {params / 1e6:.1f}M parameters, LoRA r=8 all linear, ZeRO-3 offload "
          f"optimizer+params, cutoff 512, batch 2 x 2 processes, {args.steps} steps (steady state from step "
          f"{args.warmup}), medians of {args.repeats}")
    print(f"{'side':12s} {'packing':8s} {'s/step':>8s} {'tokens/s':>9s} {'tokens/step':>11s} {'peak RSS':>10s}")
    medians = {key: median(runs) for key, runs in results.items()}
    for (side, packing), m in sorted(medians.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{side:12s} {'on' if packing else 'off':8s} {m['s_per_step']:8.3f} {m['tokens_per_s']:9.0f} "
              f"{m['tokens_per_step']:11.0f} {m['peak_rss'] / 2**20:7.0f} MiB")
    ratio = {p: medians[("hyft", p)]["tokens_per_s"] / medians[("llamafactory", p)]["tokens_per_s"]
             for p in (False, True)}
    print(f"tokens_per_s_vs_llamafactory={ratio[False]:.3f} packed_tokens_per_s_vs_llamafactory={ratio[True]:.3f}")


if __name__ == "__main__":
    main()
