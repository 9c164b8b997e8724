"""hyft: fine-tune Tencent Hunyuan models on Kubernetes.

Write one HunyuanFineTune resource; the operator runs it as a gang of pods with
DeepSpeed ZeRO-3. Each subcommand has its own --help. A typical path:

  hyft data check data/ --tokenizer MODEL    is the data right, and how long is it?
  hyft estimate --model 1.8B --gpu-memory 80  which ZeRO/offload option fits?
  hyft run job.yaml --local --volume ...      try the job on this machine
  hyft render job.yaml                        what the operator will create
  kubectl apply -f job.yaml; kubectl get hft -w
"""
from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path
from typing import get_args

import yaml

from hyft_trainer.choices import ChatFamily, DataFormat
from hyft_trainer.contract import CONFIG_ENV
from hyft_trainer.knobs import default


def _load_resource(path: str, namespace: str):
    from pydantic import ValidationError

    from hyft_trainer.problems import describe

    from .api import HunyuanFineTune
    from .builders import InvalidSpec, check

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        sys.exit(f"{path}: cannot read: {err}")
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind != "HunyuanFineTune":
        sys.exit(f"{path}: not a HunyuanFineTune resource (kind: {kind!r})")
    doc.setdefault("metadata", {}).setdefault("namespace", namespace)
    try:
        job = HunyuanFineTune.model_validate(doc)
        check(job)
    except ValidationError as err:
        sys.exit(f"{path}: invalid HunyuanFineTune:\n" + "\n".join(f"  {line}" for line in describe(err)))
    except InvalidSpec as err:
        sys.exit(f"{path}: invalid HunyuanFineTune:\n  {err}")
    return job


def cmd_crd(args: argparse.Namespace) -> None:
    from .crdgen import render

    sys.stdout.write(render())


def cmd_render(args: argparse.Namespace) -> None:
    from .builders import OperatorDefaults, render_all

    job = _load_resource(args.file, args.namespace)
    defaults = OperatorDefaults(image=args.image) if args.image else OperatorDefaults()
    sys.stdout.write(yaml.safe_dump_all(render_all(job, args.attempt, defaults), sort_keys=False))


def cmd_run(args: argparse.Namespace) -> None:
    import tempfile

    from .local import LocalRunError, run, volume_folders

    if not args.local:
        sys.exit("hyft run needs --local (on a cluster: kubectl apply -f FILE, and watch kubectl get hft)")
    job = _load_resource(args.file, "default")
    job.metadata.setdefault("uid", "local")
    overrides = {}
    for item in args.volume or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            sys.exit(f"--volume {item!r}: expected NAME=PATH")
        overrides[name] = path
    try:
        folders = volume_folders(job, overrides)
    except LocalRunError as err:
        sys.exit(f"{args.file}: {err}")
    unknown = set(overrides) - set(folders)
    if unknown:
        sys.exit(f"--volume: {', '.join(sorted(unknown))} is not a volume of {args.file}")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="hyft-local-"))
    print(f"[hyft] running {job.metadata['name']}: {job.spec.nodes} node(s) as local processes; "
          f"rendered configs in {workdir}", flush=True)
    try:
        sys.exit(run(job, folders, workdir))
    except LocalRunError as err:
        sys.exit(f"{args.file}: {err}")


def cmd_operator(args: argparse.Namespace) -> None:
    from kopf.cli import main as kopf_main

    argv = ["run", "-m", "hyft_operator.handlers"]
    if args.namespace:
        for ns in args.namespace:
            argv += ["--namespace", ns]
    else:
        argv.append("--all-namespaces")
    if args.standalone:
        argv.append("--standalone")
    else:
        # Equal priorities pause every replica; a random one elects the highest as the active one.
        argv += ["--peering", args.peering, "--priority", str(args.priority or random.randint(1, 1_000_000))]
    if args.liveness:
        argv += ["--liveness", args.liveness]
    if args.verbose:
        argv.append("--verbose")
    sys.exit(kopf_main(argv, standalone_mode=False) or 0)


def cmd_data_check(args: argparse.Namespace) -> None:
    from hyft_trainer.data_check import check, load_tokenizer
    from hyft_trainer.encode import MaskOptions
    from hyft_trainer.loading import DataError

    opts = MaskOptions(train_on_prompt=args.train_on_prompt, mask_history=args.mask_history)
    try:
        tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
        report = check(args.paths, tokenizer, args.template, args.cutoff_len, args.require_markup, args.format, opts,
                       template_check_samples=args.template_check)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(report.render(args.max_errors, skip_invalid=args.skip_invalid))
    sys.exit(1 if report.failed and not (args.skip_invalid and report.valid) else 0)


def cmd_data_convert(args: argparse.Namespace) -> None:
    from hyft_trainer.convert import convert_file
    from hyft_trainer.loading import DataError

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
    from hyft_trainer.launcher import main as train_main

    sys.exit(train_main([args.config] if args.config else []))


def cmd_estimate(args: argparse.Namespace) -> None:
    from hyft_trainer.estimate import estimate, load_shape, render

    model = args.model_dir or args.model
    if args.file:
        from . import builders
        from .admission import check_memory, options
        from .sizing import model_shape, offload_decision

        job = _load_resource(args.file, "default")
        spec = job.spec
        try:
            known = (load_shape(model), f"config.json in {model}") if model else model_shape(job)
        except (OSError, KeyError, ValueError) as err:
            sys.exit(f"{model}: not a size name (0.5B, 1.8B, 4B, 7B) or a readable config.json: {err}")
        if known is None:
            sys.exit(f"{args.file}: the model's size is neither in spec.model.parameters nor in its path's name: "
                     "pass --model SIZE or --model-dir FOLDER")
        check = check_memory(job, known)
        shape = known[0]
        print(render(shape, options(shape, job), args.gpu_memory))
        print(f"{job.metadata.get('name')} (ZeRO-{spec.deepspeed.stage}, {spec.nodes} nodes): {check.message}")
        print(offload_decision(job, builders.spec_config(job))[2])
        return
    try:
        shape = load_shape(model or "1.8B")
    except (OSError, KeyError, ValueError) as err:
        sys.exit(f"--model {model}: not a size name (0.5B, 1.8B, 4B, 7B) or a readable config.json: {err}")
    results = estimate(shape, args.nodes, args.gpus_per_node, args.method, args.lora_rank, args.batch, args.seq,
                       not args.no_checkpointing)
    print(render(shape, results, args.gpu_memory))


def cmd_tiny_model(args: argparse.Namespace) -> None:
    from hyft_trainer.tiny import build

    out = build(args.out, args.family, hidden_size=args.hidden_size, layers=args.layers, seed=args.seed)
    print(f"wrote a tiny random-weight Hunyuan ({args.family} family) model and tokenizer to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("crd", help="print the HunyuanFineTune CRD (generated from the API models)",
                       description="Print the HunyuanFineTune CustomResourceDefinition YAML. "
                                   "Install it with: hyft crd | kubectl apply --server-side -f -")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("render", help="print what the operator would create for a HunyuanFineTune file",
                       description="Validate FILE with the same API models as the cluster and print the "
                                   "Service, ConfigMap and pods the operator would create, without a cluster.")
    p.add_argument("file", help="a HunyuanFineTune YAML file")
    p.add_argument("-n", "--namespace", default="default", help="namespace to render into (default: default)")
    p.add_argument("--attempt", type=int, default=0, help="gang attempt number for the pod labels (default: 0)")
    p.add_argument("--image", help="trainer image the operator is configured with")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "run", help="run a HunyuanFineTune on this machine (--local)",
        description="Run FILE on this machine: validated by the same API models, rendered by the same "
                    "builders as the operator, each pod's trainer a local process with the pod's env "
                    "(MASTER_ADDR 127.0.0.1). Logs are prefixed by pod name; a progress line comes from the "
                    "master's metrics. Ctrl-C saves a checkpoint and stops (run again to resume); a second "
                    "Ctrl-C kills. Exit code: the job's result.")
    p.add_argument("file", help="a HunyuanFineTune YAML file")
    p.add_argument("--local", action="store_true", help="run as local processes (required)")
    p.add_argument("--volume", action="append", metavar="NAME=PATH",
                   help="local folder for the volume NAME (repeatable); hostPath volumes default to their path")
    p.add_argument("--workdir", help="where the rendered per-pod configs go (default: a temp folder)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("operator", help="run the operator (in a cluster, or against your kubeconfig)",
                       description="Run the HunyuanFineTune operator (Kopf). Several replicas elect one active "
                                   "operator through Kopf peering; the others stand by.")
    p.add_argument("-n", "--namespace", action="append",
                   help="watch this namespace (repeatable, globs allowed); default: all namespaces")
    p.add_argument("--peering", default="hyft-operator", help="Kopf peering object name (default: hyft-operator)")
    p.add_argument("--priority", type=int, help="peering priority (default: random, highest is active)")
    p.add_argument("--standalone", action="store_true", help="no peering: the only operator")
    p.add_argument("--liveness", help="health endpoint, e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_operator)

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

    p = sub.add_parser(
        "estimate", help="host RAM and GPU memory a fine-tuning needs, per ZeRO option",
        description="Estimate host RAM per node and GPU memory per device for each ZeRO stage and offload "
                    "option (DeepSpeed's own model-state formulas plus activations and logits), and which "
                    "fit a given GPU.")
    p.add_argument("-f", "--file", help="a HunyuanFineTune: its settings, and its memory check against spec.memory "
                                        "(what the operator's MemoryRisk condition says)")
    p.add_argument("--model", help="size name (0.5B, 1.8B, 4B, 7B) or a model folder/config.json (default 1.8B; "
                                    "with -f: the spec's model.parameters or its path's name)")
    p.add_argument("--model-dir", help="with -f: read the model's size from this folder's config.json")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--method", choices=["full", "lora"], default="full")
    p.add_argument("--lora-rank", type=int, default=default("lora_rank"))
    p.add_argument("--batch", type=int, default=default("per_device_train_batch_size"),
                   help=f"micro-batch per GPU (default {default('per_device_train_batch_size')})")
    p.add_argument("--seq", type=int, default=default("cutoff_len"),
                   help=f"sequence length, i.e. cutoff_len (default {default('cutoff_len')})")
    p.add_argument("--no-checkpointing", action="store_true", help="without gradient checkpointing")
    p.add_argument("--gpu-memory", type=float, help="GPU memory in GiB: mark which options fit")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("tiny-model", help="write a tiny random-weight Hunyuan model for tests and demos",
                       description="Write a tiny random-weight HunYuanDenseV1 model and a locally built tokenizer "
                                   "with the family's special tokens and chat template (no download needed).")
    p.add_argument("out", help="output folder")
    p.add_argument("--family", choices=[f for f in get_args(ChatFamily) if f != "auto"], default="small",
                   help="chat family: small (0.5B/1.8B/4B tokens) or 7b (default: small)")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
