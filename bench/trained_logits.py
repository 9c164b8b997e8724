"""The LM head on trained positions only (the collator's logits_to_keep) against full logits:
hyft's own training step (forward, token_mean_loss, backward) on a random-weight HunYuanDenseV1
with a published size's width, heads, FFN and vocabulary (`hyft estimate`'s table) but only
--layers of its layers, packed Hunyuan chats at --cutoff, batch 1, LoRA r=8 on all linear
layers, float32, one process. Each mode runs in its own process (a clean peak RSS), modes
alternate, --repeats each; medians.

    python bench/trained_logits.py [--size 0.5B] [--layers 2] [--cutoff 512] [--steps 5] [--repeats 3]

The head's share of the step shrinks with depth, so the step-time gain at the model's full depth
is projected from the two measured times: the head's cost H = (full - kept) / (1 - trained share)
and the layers' cost (full - H) scaled to all layers. Last line:
trained_logits_step_speedup=<measured> projected_full_depth_speedup=<x> step_peak_rss_ratio=<kept/full>
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def measure(args) -> dict:
    """One mode in this process: s/step after the first step, and the RSS the steps added."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import HunYuanDenseV1Config, HunYuanDenseV1ForCausalLM

    from hyft_trainer.batches import PaddingCollator, token_mean_loss
    from hyft_trainer.chat_format import FAMILIES, Message
    from hyft_trainer.choices import SIZES
    from hyft_trainer.encode import IGNORE, encode
    from hyft_trainer.packing import first_fit_decreasing, pack
    from hyft_trainer.sample_data import make_samples
    from hyft_trainer.tiny import build_tokenizer

    torch.manual_seed(0)
    size = SIZES[args.size]
    config = HunYuanDenseV1Config(
        vocab_size=size["vocab"], hidden_size=size["hidden"], intermediate_size=size["ffn"],
        num_hidden_layers=args.layers, num_attention_heads=size["heads"], num_key_value_heads=size["kv_heads"],
        head_dim=size["head_dim"], tie_word_embeddings=size["tied"], use_cache=False)
    model = HunYuanDenseV1ForCausalLM._from_config(config, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()

    family = "7b" if args.size == "7B" else "small"
    tokenizer = build_tokenizer(family)
    samples = [encode(tokenizer, FAMILIES[family], [Message(m["role"], m["content"]) for m in s["messages"]])
               for s in make_samples(400, seed=1)]
    samples = [s for s in samples if len(s[0]) <= args.cutoff]
    packs = [pack(samples, b) for b in first_fit_decreasing([len(s[0]) for s in samples], args.cutoff)]
    collate = PaddingCollator(tokenizer.pad_token_id, keep_trained_logits=args.mode == "kept")
    times, trained, tokens = [], 0, 0
    baseline = _rss()
    for step in range(args.steps):
        batch = collate([packs[step]])
        labels = batch.pop("labels")
        started = time.perf_counter()
        loss = token_mean_loss(model(**batch), labels)
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
        trained += int(labels[:, 1:].ne(IGNORE).sum())
        tokens += labels.numel()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"s_per_step": statistics.median(times[1:]), "step_peak_rss": peak - baseline,
            "trained_share": trained / tokens, "layer_fraction": args.layers / size["layers"]}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="0.5B", help="a published size whose width and vocabulary to use")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--cutoff", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5, help="the first is left out as warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", choices=("full", "kept"), help=argparse.SUPPRESS)  # one measuring process
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args)))
        return

    runs: dict[str, list[dict]] = {"full": [], "kept": []}
    for repeat in range(args.repeats):
        for mode in ("full", "kept") if repeat % 2 == 0 else ("kept", "full"):
            command = [sys.executable, __file__, "--mode", mode, "--size", args.size, "--layers", str(args.layers),
                       "--cutoff", str(args.cutoff), "--steps", str(args.steps)]
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  {mode}: {runs[mode][-1]['s_per_step']:.3f} s/step", flush=True)
    full, kept = ({key: statistics.median(r[key] for r in runs[m]) for key in runs[m][0]} for m in ("full", "kept"))
    share, fraction = full["trained_share"], full["layer_fraction"]
    head = (full["s_per_step"] - kept["s_per_step"]) / (1 - share)
    layers = (full["s_per_step"] - head) / fraction
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; HunYuanDenseV1 "
          f"with {args.size}'s width and vocabulary, {args.layers} layers, LoRA r=8, packed rows of {args.cutoff} "
          f"tokens, {share:.0%} of them trained; medians of {args.repeats}")
    for mode, m in (("full logits", full), ("trained only", kept)):
        print(f"{mode:13s} {m['s_per_step']:7.3f} s/step  step peak RSS {m['step_peak_rss'] / 2**20:7.0f} MiB")
    print(f"trained_logits_step_speedup={full['s_per_step'] / kept['s_per_step']:.3f} "
          f"projected_full_depth_speedup={(layers + head) / (layers + head * share):.3f} "
          f"step_peak_rss_ratio={kept['step_peak_rss'] / full['step_peak_rss']:.3f}")


if __name__ == "__main__":
    main()
