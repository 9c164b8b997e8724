"""A HunyuanFineTune from a LLaMA-Factory training YAML (`hyft recipe`): each key goes where the
resource keeps it. Keys the spec has a field for become that field (knobs.py's spec paths, and the
few that need a conversion: precision, the LoRA targets, the data and output places, max_steps);
a DeepSpeed JSON becomes the stage, the offloads and overrides (LLaMA-Factory's fsdp keys: training.engine
fsdp, the offloads, fsdp_config in the arguments); every other key goes to
spec.training.arguments, judged there as `hyft train` judges it. Files on the machine become volume
paths the user completes (volumes named models, data and work, their claims FILL-IN).
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from hyft_trainer.fsdp import FSDP
from hyft_trainer.knobs import BY_KEY
from hyft_trainer.llamafactory_keys import translate

from .api import GROUP, KIND, VERSION

FILL_IN = "FILL-IN"
MODELS, DATA, WORK = "models", "data", "work"
# set by hyft on the cluster, whatever the recipe says
HYFT_SETS = ("metrics_port", "job_name", "data_cache_dir")
# the DeepSpeed JSON's parts that the spec or the training arguments set
DEEPSPEED_FROM_SPEC = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                       "gradient_clipping")


class RecipeError(ValueError):
    pass


def _set(spec: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        spec = spec.setdefault(part, {})
    spec[leaf] = value


def _name_of(path: str) -> str:
    return PurePosixPath(path).name or path


def _without_auto(value: Any) -> Any:
    """The DeepSpeed JSON less its "auto" values (hyft fills those from the training arguments)."""
    if isinstance(value, dict):
        kept = {k: _without_auto(v) for k, v in value.items() if v != "auto"}
        return {k: v for k, v in kept.items() if v != {}}
    return value


def _deepspeed(spec: dict[str, Any], ds: dict[str, Any], notes: list[str]) -> None:
    zero = dict(ds.get("zero_optimization") or {})
    stage = zero.pop("stage", 0)
    if stage == 1:
        notes.append("deepspeed: ZeRO-1 is not offered; stage 2 shards the gradients too, at no extra cost")
        stage = 2
    _set(spec, "deepspeed.stage", stage)
    for key, field in (("offload_optimizer", "offloadOptimizer"), ("offload_param", "offloadParams")):
        device = (zero.pop(key, None) or {}).get("device", "none")
        if stage == 3 or key == "offload_optimizer" and stage:
            _set(spec, f"deepspeed.{field}", device in ("cpu", "nvme"))
    rest = {k: v for k, v in ds.items() if k not in (*DEEPSPEED_FROM_SPEC, "zero_optimization")}
    overrides = _without_auto({**rest, **({"zero_optimization": zero} if zero else {})})
    for precision in ("fp16", "bf16"):  # whether they are on is spec.training.precision
        if isinstance(overrides.get(precision), dict):
            overrides[precision].pop("enabled", None)
            if not overrides[precision]:
                overrides.pop(precision)
    if overrides:
        _set(spec, "deepspeed.overrides", overrides)


def from_llamafactory(recipe: dict[str, Any], name: str, nodes: int = 1, gpus_per_node: int = 8,
                      base: Path = Path(".")) -> tuple[dict[str, Any], list[str]]:
    """(the HunyuanFineTune, what to complete or know). base: where relative paths in the recipe start."""
    if not isinstance(recipe, dict):
        raise RecipeError(f"expected a mapping of keys, got {type(recipe).__name__}")
    data, problems = translate(recipe)
    if problems:
        raise RecipeError("; ".join(problems))
    notes: list[str] = []
    spec: dict[str, Any] = {"nodes": nodes, "gpusPerNode": gpus_per_node}
    model = data.pop("model_name_or_path", None)
    if not model:
        raise RecipeError("model_name_or_path: the recipe names no model")
    spec["model"] = {"volume": MODELS, "path": _name_of(str(model))}
    notes.append(f"spec.model: put {model} on the volume {MODELS} under {_name_of(str(model))}"
                 + (" (a hub id: download it first; the trainer pods reach no hub)" if not str(model).startswith(
                     ("/", ".")) and str(model).count("/") == 1 else ""))
    dataset_dir = data.pop("dataset_dir", None) or ("data" if data.get("dataset") else None)  # LLaMA-Factory's
    if dataset_dir:
        spec.setdefault("data", {})["datasetInfo"] = {"volume": DATA, "path": _name_of(str(dataset_dir))}
        notes.append(f"spec.data.datasetInfo: put {dataset_dir} (with its dataset_info.json) on the volume {DATA}")
    files = data.pop("data_files", [])
    if files:
        spec.setdefault("data", {})["files"] = [{"volume": DATA, "path": _name_of(f["path"]),
                                                 "format": f.get("format", "auto")} for f in files]
    output = data.pop("output_dir", None)
    spec["output"] = {"volume": WORK, "path": f"runs/{name}"}
    if output:
        notes.append(f"spec.output: {output} becomes runs/{name} on the volume {WORK}")
    if (lora_target := data.pop("lora_target", None)) is not None:
        _set(spec, "method.lora.targetModules", [t.strip() for t in str(lora_target).split(",") if t.strip()])
    bf16, fp16 = data.pop("bf16", False), data.pop("fp16", False)
    _set(spec, "training.precision", "bf16" if bf16 else "fp16" if fp16 else "fp32")
    if (max_steps := data.pop("max_steps", -1)) and max_steps > 0:
        _set(spec, "training.maxSteps", max_steps)
    deepspeed = data.pop("deepspeed", None)
    if data.get("engine") != FSDP:  # FSDP2 (LLaMA-Factory's fsdp keys) shards as ZeRO-3's stage does
        _deepspeed(spec, {} if deepspeed is None else deepspeed if isinstance(deepspeed, dict)  # none: plain DDP
                   else _read_json(base / str(deepspeed)), notes)
    elif deepspeed is not None:
        raise RecipeError("deepspeed and fsdp: the recipe asks for both engines; keep one")
    for key in HYFT_SETS:
        if data.pop(key, None) is not None:
            notes.append(f"{key}: set by hyft on the cluster")
    arguments: dict[str, Any] = {}
    for key, value in data.items():
        knob = BY_KEY.get(key)
        if knob and knob.spec:
            _set(spec, knob.spec, value)
        else:
            arguments[key] = value
    if arguments:
        _set(spec, "training.arguments", arguments)
    spec["volumes"] = [{"name": MODELS, "persistentVolumeClaim": {"claimName": FILL_IN, "readOnly": True}},
                       {"name": DATA, "persistentVolumeClaim": {"claimName": FILL_IN, "readOnly": True}},
                       {"name": WORK, "persistentVolumeClaim": {"claimName": FILL_IN}}]
    notes.append(f"spec.volumes: the claims ({FILL_IN}); {WORK} needs ReadWriteMany when nodes > 1")
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec}, notes


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RecipeError(f"deepspeed: cannot read {path}: {err}") from None
