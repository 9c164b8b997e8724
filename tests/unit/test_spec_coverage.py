"""Every leaf of the spec reaches the pods or the trainer config, or is read by the operator's
lifecycle (listed here with the reason). A new spec field that nobody maps fails this test."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest

from hyft_operator import api, builders, crdgen
from hyft_trainer import knobs
from tests.knob_values import changed

# Leaves that change neither the pods nor the trainer config: the operator acts on them.
OPERATOR_ONLY = {
    "runPolicy.backoffLimit": "how many gang restarts the lifecycle allows",
    "runPolicy.activeDeadlineSeconds": "when the lifecycle fails the job",
    "runPolicy.ttlSecondsAfterFinished": "when the lifecycle deletes finished pods",
    "runPolicy.suspend": "the lifecycle deletes the pods and waits",
    "runPolicy.permanentExitCodes": "which exit codes the lifecycle treats as permanent",
    "runPolicy.startupTimeoutSeconds": "when the lifecycle restarts a gang that never steps",
    "runPolicy.memoryCheck": "whether the lifecycle warns about (or refuses) a pod memory below the need",
    "model.parameters": "the model size the memory check uses",
    "runPolicy.resize.minNodes": "the fewest nodes the lifecycle shrinks an unplaceable gang to",
    "runPolicy.resize.unschedulableSeconds": "how long the lifecycle waits before shrinking an unplaceable gang",
    "runPolicy.resize.growBackAfterSeconds": "how long a shrunk gang runs before the lifecycle restarts it whole",
    "scheduling.queueName": "the Kueue LocalQueue of the job's Workload (kueue.py); the pods carry none of it",
    "scheduling.workloadPriorityClassName": "the Kueue Workload's priority (kueue.py); the pods carry none of it",
}
# What the operator's code reads (attribute loads, so a docstring or comment does not count).
OPERATOR_READS = {node.attr for path in Path(builders.__file__).parent.rglob("*.py")
                  if path.name not in ("api.py", "crdgen.py", "docgen.py")
                  for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)}

# A job with every optional field set, each to a value from which a single change stays valid.
FULL = {
    "model": {"volume": "models", "path": "Hunyuan-7B", "family": "7b", "parameters": "7B"},
    "data": {"files": [{"volume": "shared", "path": "data/a.jsonl", "format": "sharegpt"}],
             "datasetInfo": {"volume": "shared", "path": "data"}, "names": ["chat"], "cutoffLen": 1024,
             "packing": False, "trainOnPrompt": False, "maskHistory": False, "skipInvalidSamples": False,
             "valSize": 0.1},
    "output": {"volume": "shared", "path": "runs/full"},
    "method": {"type": "lora", "lora": {"rank": 8, "alpha": 16, "dropout": 0.1, "targetModules": ["q_proj"],
                                        "quantizationBit": None},  # changed to 4: 8 bits need stage 2
               "freeze": {"trainableLayers": 2}},
    "training": {"learningRate": 1e-4, "lrSchedulerType": "cosine", "warmupRatio": 0.1, "weightDecay": 0.1,
                 "epochs": 2.0, "maxSteps": 100, "perDeviceBatchSize": 2, "gradientAccumulationSteps": 2,
                 "precision": "bf16", "gradientCheckpointing": True, "maxGradNorm": 1.0, "seed": 1,
                 "loggingSteps": 5, "saveSteps": 50, "saveTotalLimit": 2, "evalSteps": 10,
                 "earlyStoppingPatience": 3, "arguments": {"optim": "adamw_torch"}, "engine": "deepspeed"},
    "deepspeed": {"stage": 3, "offloadOptimizer": True, "offloadParams": False,
                  "overrides": {"zero_optimization": {"overlap_comm": True}}},
    "nodes": 2, "gpusPerNode": 8, "gpuResourceName": "nvidia.com/gpu", "gpuMemory": "80Gi", "cpu": "32",
    "memory": "512Gi",
    "shmSize": "16Gi", "image": "registry.example/hyft-trainer:1", "imagePullPolicy": "IfNotPresent",
    "imagePullSecrets": ["pull"], "env": [{"name": "NCCL_DEBUG", "value": "INFO"}],
    "secretEnv": [{"name": "HF_TOKEN", "secretName": "hf", "key": "token"}],
    "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
                {"name": "shared", "nfs": {"server": "nfs.example", "path": "/export"}}],
    "scheduling": {"nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "a", "operator": "Exists"}],
                   "affinity": {"nodeAffinity": {}}, "priorityClassName": "high", "schedulerName": "volcano",
                   "queueName": "team", "workloadPriorityClassName": "team-high", "runtimeClassName": "nvidia",
                   "onePodPerNode": True},
    "network": {"hostNetwork": False, "resources": {"rdma/ib": "1"}},
    "podMetadata": {"labels": {"team": "a"}, "annotations": {"k8s.v1.cni.cncf.io/networks": "ib-a"}},
    "runPolicy": {"backoffLimit": 3, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60,
                  "suspend": False, "checkpointGracePeriodSeconds": 300, "permanentExitCodes": [2],
                  "stallTimeoutSeconds": 600, "startupTimeoutSeconds": 1800, "memoryCheck": "Warn",
                  "resize": {"minNodes": 1, "unschedulableSeconds": 300}},
    "metrics": {"enabled": True, "port": 9090},
    "masterPort": 29500,
}
# Changes a generic rule cannot make valid on its own.
CHANGED = {
    "model.path": "Hunyuan-1.8B", "data.files.path": "data/b.jsonl", "data.datasetInfo.path": "other",
    "data.names": ["chat", "more"], "output.path": "runs/other", "model.volume": "shared",
    "data.files.volume": "models", "data.datasetInfo.volume": "models", "output.volume": "models",
    "cpu": "16", "memory": "256Gi", "shmSize": "32Gi", "gpuMemory": "8Gi", "image": "registry.example/hyft-trainer:2",
    "gpuResourceName": "amd.com/gpu", "imagePullSecrets": ["other"], "method.lora.targetModules": ["v_proj"],
    "env": [{"name": "NCCL_DEBUG", "value": "WARN"}], "secretEnv.name": "HF_TOKEN_2",
    "secretEnv.secretName": "hf2", "secretEnv.key": "token2", "volumes": None,  # volumes: a deeper walk below
    "scheduling.nodeSelector": {"pool": "cpu"}, "scheduling.tolerations": [],
    "scheduling.affinity": {"podAffinity": {}}, "scheduling.priorityClassName": "low",
    "scheduling.schedulerName": "default-scheduler", "scheduling.queueName": "other",
    "scheduling.workloadPriorityClassName": "team-low",
    "scheduling.runtimeClassName": "kata", "network.resources": {"vpc.amazonaws.com/efa": "32"},
    "podMetadata.labels": {"team": "b"}, "podMetadata.annotations": {"k8s.v1.cni.cncf.io/networks": "ib-b"},
    "deepspeed.overrides": {"zero_optimization": {"overlap_comm": False}},
    "training.arguments": {"optim": "adamw_torch", "adam_beta2": 0.95},
    "runPolicy.permanentExitCodes": [3], "method.freeze.trainableLayers": -2,
    "deepspeed.stage": 2, "masterPort": 29501, "metrics.port": 9091, "nodes": 3, "gpusPerNode": 4,
    "runPolicy.stallTimeoutSeconds": 1200,  # the trainer's collective timeout follows it
    "training.maxSteps": 200, "training.epochs": 3.0, "training.evalSteps": 20,
}


# Leaves whose change needs another to stay valid: both sides of the comparison get these first.
COMPANIONS = {"metrics.enabled": {"runPolicy.stallTimeoutSeconds": None, "runPolicy.startupTimeoutSeconds": None},
              # one GPU's memory decides only an offload left unset (auto)
              "gpuMemory": {"deepspeed.offloadOptimizer": None, "deepspeed.offloadParams": None},
              "method.type": {"method.lora.merge": False},  # merging is LoRA's
              # FSDP2: no DeepSpeed overrides, one offload switch
              "training.engine": {"deepspeed.overrides": {}, "deepspeed.offloadOptimizer": None,
                                  "deepspeed.offloadParams": None},
              "runPolicy.resize.growBackAfterSeconds": {"scheduling.queueName": None,  # not under Kueue
                                                        "scheduling.workloadPriorityClassName": None}}
# Leaves FULL cannot set beside another it sets (a rule refuses the pair): each one's value when tested.
EXCLUSIVE = {"runPolicy.resize.growBackAfterSeconds": 3600}


def leaves(schema: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """Every settable leaf: scalars, lists of scalars, maps and pass-through objects; lists of
    objects are walked into (their first item)."""
    out = []
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        if sub.get("type") == "object" and "properties" in sub and not sub.get("x-kubernetes-preserve-unknown-fields"):
            out += leaves(sub, f"{path}.")
        elif sub.get("type") == "array" and "properties" in sub.get("items", {}) and path not in ("env", "volumes"):
            out += leaves(sub["items"], f"{path}.")
        else:
            out.append((path, sub))
    return out


def changed_value(path: str, schema: dict, value):
    if path in CHANGED:
        return CHANGED[path]
    if "enum" in schema:
        return next(v for v in schema["enum"] if v != value)
    if schema.get("type") == "boolean":
        return not value
    if schema.get("type") == "integer":
        return value + 1 if value + 1 <= schema.get("maximum", value + 1) else value - 1
    if schema.get("type") == "number":
        return value / 2
    raise AssertionError(f"{path}: no rule to change a {schema.get('type')} value: add it to CHANGED")


def set_leaf(spec: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = spec
    for part in parents:
        node = node[part][0] if isinstance(node[part], list) else node[part]
    node[last] = value


def get_leaf(spec: dict, path: str):
    node = spec
    for part in path.split("."):
        node = node[part][0] if isinstance(node[part], list) else node[part]
    return node


def render(spec: dict, check: bool = True) -> list[dict]:
    job = api.HunyuanFineTune.model_validate(
        {"metadata": {"name": "full", "namespace": "ns", "uid": "u"}, "spec": spec})
    if check:
        builders.check(job)
    return builders.render_all(job)


def _missing(spec, path):
    try:
        get_leaf(spec, path)
    except (KeyError, IndexError):
        return True
    return False


def _with_declared_settings(spec: dict) -> dict:
    """FULL plus a value for each spec field made from hyft_trainer/knobs.py that FULL leaves out."""
    for knob in knobs.KNOBS:
        if knob.spec and _missing(spec, knob.spec):
            set_leaf(spec, knob.spec, changed(knob))
    return spec


SPEC_SCHEMA = crdgen.openapi_schema(api.HunyuanFineTuneSpec)
LEAVES = [(path, schema) for path, schema in leaves(SPEC_SCHEMA) if path != "volumes"]


FULL = _with_declared_settings(FULL)


def test_the_full_spec_sets_every_leaf_without_a_default():
    unset = [path for path, schema in LEAVES
             if _missing(FULL, path) and "default" not in schema and path not in EXCLUSIVE]
    assert not unset, f"give these a value in FULL: {unset}"


@pytest.mark.parametrize("path, schema", LEAVES, ids=[p for p, _ in LEAVES])
def test_every_spec_leaf_reaches_the_pods_or_the_trainer(path, schema):
    base = copy.deepcopy(FULL)
    for companion, value in COMPANIONS.get(path, {}).items():
        set_leaf(base, companion, value)
    if _missing(base, path):  # a new field with a default: changed from its default
        set_leaf(base, path, copy.deepcopy(EXCLUSIVE[path] if path in EXCLUSIVE else schema["default"]))
    before = render(base)
    spec = copy.deepcopy(base)
    set_leaf(spec, path, changed_value(path, schema, get_leaf(base, path)))
    after = render(spec)
    if path in OPERATOR_ONLY:
        assert after == before, f"{path} is listed as operator-only but changes the rendered objects"
        assert path.split(".")[-1] in OPERATOR_READS, f"{path}: operator-only, yet the operator never reads it"
    else:
        assert after != before, f"{path} reaches neither the pods nor the trainer config"


def test_every_volume_source_reaches_the_pods():
    for source in api.VOLUME_SOURCES:
        spec = copy.deepcopy(FULL)
        spec["volumes"].append({"name": "extra", source: {"x": 1}})
        pod = render(spec, check=False)[2]  # {"x": 1} is no real source: only its passage is tested
        assert {"name": "extra", source: {"x": 1}} in pod["spec"]["volumes"], source
