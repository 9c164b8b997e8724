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
import random
import sys
from pathlib import Path

import yaml

from hyft_trainer.cli import add_commands


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


def cmd_recipe(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from hyft_trainer.problems import describe

    from .api import HunyuanFineTune
    from .builders import InvalidSpec, check
    from .recipe import RecipeError, from_llamafactory

    path = Path(args.file)
    try:
        recipe = yaml.safe_load(path.read_text())
        body, notes = from_llamafactory(recipe, args.name, args.nodes, args.gpus_per_node, path.parent)
    except (OSError, yaml.YAMLError, RecipeError) as err:
        sys.exit(f"{path}: {err}")
    print(f"# Written by `hyft recipe {path.name}`; complete before applying:")
    print("".join(f"#   {note}\n" for note in notes) + yaml.safe_dump(body, sort_keys=False), end="")
    body["metadata"]["namespace"] = "default"
    try:
        check(HunyuanFineTune.model_validate(body))
    except ValidationError as err:
        sys.exit("the resource is not valid yet:\n" + "\n".join(f"  {line}" for line in describe(err)))
    except InvalidSpec as err:
        sys.exit(f"the resource is not valid yet:\n  {err}")


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


def cmd_estimate_file(args: argparse.Namespace) -> None:
    """hyft estimate -f: the resource's settings and the operator's own memory check and offload decision."""
    from hyft_trainer.cli import cmd_estimate
    from hyft_trainer.estimate import load_shape, render

    from . import builders
    from .admission import check_memory, options
    from .sizing import model_shape, offload_decision

    if not args.file:
        cmd_estimate(args)
        return
    model = args.model_dir or args.model
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
    print(f"{job.metadata.get('name')} ({check.estimate.label}, {spec.nodes} nodes): {check.message}")
    print(offload_decision(job, builders.spec_config(job))[2])


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

    p = sub.add_parser("recipe", help="write a HunyuanFineTune from a LLaMA-Factory training YAML",
                       description="Print a HunyuanFineTune that trains what the LLaMA-Factory YAML FILE trains: "
                                   "each key where the resource keeps it (spec fields, the DeepSpeed JSON as stage, "
                                   "offloads and overrides, the rest in spec.training.arguments). Local paths "
                                   "become volume paths to complete. Exit 1 when the result is not valid yet "
                                   "(it is printed all the same, with the reasons).")
    p.add_argument("file", help="a LLaMA-Factory training YAML")
    p.add_argument("--name", required=True, help="the resource's name")
    p.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    p.set_defaults(func=cmd_recipe)

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

    estimate = add_commands(sub)["estimate"]
    estimate.add_argument("-f", "--file", help="a HunyuanFineTune: its settings, and its memory check against "
                                               "spec.memory (what the operator's MemoryRisk condition says)")
    estimate.add_argument("--model-dir", help="with -f: read the model's size from this folder's config.json")
    estimate.set_defaults(func=cmd_estimate_file)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
