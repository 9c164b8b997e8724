"""The trainer's commands: `hyft train` (what each pod runs), `hyft data`, `hyft estimate` and
`hyft tiny-model`. They need the trainer's packages only; `hyft` (hyft_operator.cli) adds them to its
own, and the trainer alone runs them as `python -m hyft_trainer.cli`."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import get_args

from .choices import ChatFamily, DataFormat
from .contract import CONFIG_ENV
from .knobs import default


def cmd_data_check(args: argparse.Namespace) -> None:
    from .data_check import check, load_tokenizer
    from .encode import MaskOptions
    from .loading import DataError

    opts = MaskOptions(train_on_prompt=args.train_on_prompt, mask_history=args.mask_history)
    try:
        tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
        report = check(args.paths, tokenizer, args.template, args.cutoff_len, args.require_markup, args.format, opts,
                       template_check_samples=args.template_check, default_system=args.default_system)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(report.render(args.max_errors, skip_invalid=args.skip_invalid))
    sys.exit(1 if report.failed and not (args.skip_invalid and report.valid) else 0)


def cmd_data_convert(args: argparse.Namespace) -> None:
    from .convert import convert_file
    from .loading import DataError

    try:
        written, errors = convert_file(Path(args.input), Path(args.output), args.skip_invalid)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    for line in errors[:args.max_errors]:
        print(line, file=sys.stderr)
    if errors and not args.skip_invalid:
        sys.exit(f"{len(errors)} invalid samples: nothing written (use --skip-invalid to convert the rest)")
    print(f"wrote {written} ShareGPT samples to {args.output}" + (f", skipped {len(errors)}" if errors else ""))


def cmd_train(args: argparse.Namespace) -> None:
    from .launcher import main as train_main

    sys.exit(train_main([args.config] if args.config else []))


def cmd_estimate(args: argparse.Namespace) -> None:
    from .estimate import estimate, load_shape, render

    model = args.model
    try:
        shape = load_shape(model or "1.8B")
    except (OSError, KeyError, ValueError) as err:
        sys.exit(f"--model {model}: not a size name (0.5B, 1.8B, 4B, 7B) or a readable config.json: {err}")
    results = estimate(shape, args.nodes, args.gpus_per_node, args.method, args.lora_rank, args.batch, args.seq,
                       not args.no_checkpointing, merge=args.merge,
                       weight_bits=args.quantization_bit or shape.weight_bits)
    print(render(shape, results, args.gpu_memory))


def cmd_tiny_model(args: argparse.Namespace) -> None:
    from .tiny import build

    out = build(args.out, args.family, hidden_size=args.hidden_size, layers=args.layers, seed=args.seed)
    print(f"wrote a tiny random-weight Hunyuan ({args.family} family) model and tokenizer to {out}")


def add_commands(sub: argparse._SubParsersAction) -> dict[str, argparse.ArgumentParser]:
    """Add the trainer's commands to a `hyft` parser; returns them by name."""
    p = sub.add_parser(
        "train", help="the trainer entry point (what each pod runs)",
        description="Train with the config in CONFIG (the trainer schema: LLaMA-Factory keys). Reads NNODES, "
                    "NODE_RANK, MASTER_ADDR, MASTER_PORT and NPROC_PER_NODE (or PET_*) and starts this node's "
                    "workers with torch.distributed.run; without them, trains on this machine. SIGTERM saves a "
                    "checkpoint and exits 0; a restart resumes from the newest complete checkpoint. Exit 2: "
                    "invalid config or data.")
    p.add_argument("config", nargs="?", default=os.environ.get(CONFIG_ENV),
                   help=f"trainer config YAML (the operator's ConfigMap holds one; default ${CONFIG_ENV})")
    p.set_defaults(func=cmd_train)

    data = sub.add_parser("data", help="check or convert training data",
                          description="Check ShareGPT/alpaca training data, or convert other formats to ShareGPT.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    p = data_sub.add_parser(
        "check", help="validate data and report on it; exits 1 on invalid samples",
        description="Validate every sample (roles, order, content, Hunyuan <think>/<answer> markup and, with "
                    "--tokenizer, the length after the chat template) and print a report: samples, turns, "
                    "fast/slow ratio, token-length percentiles, packing efficiency, errors by reason with the "
                    "file, line and sample of each. Exit codes: 0 all valid (with --skip-invalid: at least one "
                    "valid); 1 invalid samples; 2 a file, folder or tokenizer that cannot be read.")
    p.add_argument("paths", nargs="+", help="JSON/JSONL files, folders of them, or LLaMA-Factory data folders "
                                            "(with dataset_info.json)")
    p.add_argument("--tokenizer", help="model or tokenizer folder: also check token lengths")
    p.add_argument("--template", choices=get_args(ChatFamily), default="auto",
                   help="chat family (default: detected from the tokenizer)")
    p.add_argument("--cutoff-len", type=int, default=default("cutoff_len"),
                   help=f"maximum tokens per sample (default {default('cutoff_len')})")
    p.add_argument("--format", choices=get_args(DataFormat), default="auto",
                   help="data format of plain files (default: detected per sample)")
    p.add_argument("--require-markup", action="store_true",
                   help="every assistant turn must use <think>/<answer> markup")
    p.add_argument("--train-on-prompt", action="store_true", help="as in training: also train prompt tokens")
    p.add_argument("--mask-history", action="store_true", help="as in training: train the last turn only")
    p.add_argument("--max-errors", type=int, default=20, help="error lines to print (default 20)")
    p.add_argument("--template-check", type=int, default=default("template_check_samples"), metavar="N",
                   help="with --tokenizer: render N conversations with the tokenizer's own chat_template and "
                        f"compare token ids with hyft's (default {default('template_check_samples')}; 0: off)")
    p.add_argument("--default-system", metavar="TEXT", help="as in training (default_system): the system message "
                                                               "of a conversation that has none")
    p.add_argument("--skip-invalid", action="store_true",
                   help="report what training with skip_invalid_samples would use; exit 0 if any sample is valid")
    p.set_defaults(func=cmd_data_check)

    p = data_sub.add_parser(
        "convert", help="convert the `turns` format to ShareGPT with Hunyuan thinking markup",
        description="Convert samples with `turns` (human/assistant, requires_reasoning, thinking) to ShareGPT "
                    "messages: reasoning turns become <think>…</think><answer>…</answer>, the others fast "
                    "thinking (/no_think and an empty think block). Writes JSONL atomically.")
    p.add_argument("input", help="JSON or JSONL file")
    p.add_argument("output", help="JSONL file to write")
    p.add_argument("--skip-invalid", action="store_true", help="convert the valid samples and report the others")
    p.add_argument("--max-errors", type=int, default=20)
    p.set_defaults(func=cmd_data_convert)

    estimate_parser = p = sub.add_parser(
        "estimate", help="host RAM and GPU memory a fine-tuning needs, per ZeRO option",
        description="Estimate host RAM per node and GPU memory per device for each ZeRO stage and offload "
                    "option (DeepSpeed's own model-state formulas plus activations and logits), and which "
                    "fit a given GPU.")
    p.add_argument("--model", help="size name (0.5B, 1.8B, 4B, 7B) or a model folder/config.json (default 1.8B; "
                                    "with -f: the spec's model.parameters or its path's name)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--method", choices=["full", "lora"], default="full")
    p.add_argument("--lora-rank", type=int, default=default("lora_rank"))
    p.add_argument("--batch", type=int, default=default("per_device_train_batch_size"),
                   help=f"micro-batch per GPU (default {default('per_device_train_batch_size')})")
    p.add_argument("--seq", type=int, default=default("cutoff_len"),
                   help=f"sequence length, i.e. cutoff_len (default {default('cutoff_len')})")
    p.add_argument("--no-checkpointing", action="store_true", help="without gradient checkpointing")
    p.add_argument("--merge", action="store_true", help="LoRA with merge_lora: count the merged export")
    p.add_argument("--quantization-bit", type=int, choices=[4, 8], help="QLoRA (--method lora): the base model's "
                   "decoder layers held at this many bits")
    p.add_argument("--gpu-memory", type=float, help="GPU memory in GiB: mark which options fit")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("tiny-model", help="write a tiny random-weight Hunyuan model for tests and demos",
                       description="Write a tiny random-weight Hunyuan model (a13b: the MoE) and a locally built "
                                   "tokenizer with the family's special tokens and chat template (no download needed).")
    p.add_argument("out", help="output folder")
    p.add_argument("--family", choices=[f for f in get_args(ChatFamily) if f != "auto"], default="small",
                   help="chat family: small (0.5B/1.8B/4B tokens) or 7b (default: small)")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny_model)
    return {"estimate": estimate_parser}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hyft", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
