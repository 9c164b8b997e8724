"""The one table of invalid HunyuanFineTune resources. Every tier holds its part of hyft to it:

- unit: `hyft render` / `hyft run --local` (the pydantic models and the trainer-config check)
  refuse each "api" and "operator" case naming the field;
- k8s: the API server refuses each "api" case with 422 naming the same field, and the running
  operator fails each "operator" and "pod" case once with reason InvalidSpec, before any pod runs.

Verdicts:
  api      - the CRD's schema and CEL refuse it (and the Python twins do);
  operator - CEL cannot see it (DeepSpeed overrides; the pass-through Kubernetes objects, which
             the Kubernetes client's models read): `hyft render` refuses it, and so does the operator
             (InvalidSpec) before it creates anything;
  pod      - a value inside a pass-through object that only the API server's pod validation knows:
             `hyft render` accepts it; the operator reports the API server's refusal of the pod as
             InvalidSpec.

Each case mutates the body of tests.jobs.cpu_job (2 CPU nodes, an NFS volume named "shared").
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hyft_operator.api import MAX_NAME_LENGTH


@dataclass(frozen=True)
class Invalid:
    id: str
    mutate: Callable[[dict[str, Any]], Any]
    field: str  # named in the refusal, as the API server names it
    verdict: str = "api"


def _spec(**changes):
    return lambda body: body["spec"].update(changes)


def _fsdp(**changes):
    """training.engine fsdp, with changes to the spec."""
    return lambda body: (body["spec"].setdefault("training", {}).update(engine="fsdp"), body["spec"].update(changes))


def _sub(key, **changes):
    return lambda body: body["spec"].setdefault(key, {}).update(changes)


def _training(**changes):
    return lambda body: body["spec"]["training"].update(changes)


def _name(name):
    return lambda body: body["metadata"].update(name=name)


def _env(*env):
    return _spec(env=list(env))


def _overrides(overrides, **deepspeed):
    return _sub("deepspeed", overrides=overrides, **deepspeed)


NFS = {"server": "nfs.example", "path": "/export"}

CASES = [
    # --- numbers and enumerations
    Invalid("nodes 0", _spec(nodes=0), "spec.nodes"),
    Invalid("unknown method", _spec(method={"type": "qlora"}), "spec.method.type"),
    Invalid("negative learning rate", _training(learningRate=-1), "spec.training.learningRate"),
    Invalid("warmupRatio 1", _training(warmupRatio=1.0), "spec.training.warmupRatio"),
    Invalid("ZeRO stage 1", _sub("deepspeed", stage=1, offloadParams=False), "spec.deepspeed.stage"),
    Invalid("freeze 0 layers", _spec(method={"type": "freeze", "freeze": {"trainableLayers": 0}}),
            "spec.method.freeze.trainableLayers"),
    Invalid("valSize 1.5: neither a fraction nor a count", _sub("data", valSize=1.5), "spec.data.valSize"),
    Invalid("seed beyond numpy's range", _training(seed=2**40), "spec.training.seed"),
    Invalid("exit code 0 as permanent", _sub("runPolicy", permanentExitCodes=[0]),
            "spec.runPolicy.permanentExitCodes[0]"),
    Invalid("LoRA merge on a full run", _spec(method={"type": "full", "lora": {"merge": True}}),
            "spec.method.lora.merge"),
    Invalid("QLoRA on a full run", _spec(method={"type": "full", "lora": {"quantizationBit": 4}}),
            "spec.method.lora.quantizationBit"),
    Invalid("8-bit QLoRA under ZeRO-3", _spec(method={"lora": {"quantizationBit": 8}}, deepspeed={"stage": 3}),
            "spec.method.lora.quantizationBit"),
    Invalid("FSDP2 with ZeRO-2", _fsdp(deepspeed={"stage": 2}), "spec.deepspeed.stage"),
    Invalid("FSDP2 offloading the optimizer alone", _fsdp(deepspeed={"offloadOptimizer": True,
                                                                          "offloadParams": False}),
            "spec.deepspeed.offloadParams"),
    Invalid("QLoRA under FSDP2", _fsdp(method={"lora": {"quantizationBit": 4}}),
            "spec.method.lora.quantizationBit"),
    Invalid("empty LoRA target", _spec(method={"lora": {"targetModules": [""]}}),
            "spec.method.lora.targetModules[0]"),
    Invalid("unknown model size", lambda b: b["spec"]["model"].update(parameters="13B"), "spec.model.parameters"),
    Invalid("bad memory quantity", _spec(memory="lots"), "spec.memory"),
    # --- unbounded durations
    Invalid("deadline of 30,000 years", _sub("runPolicy", activeDeadlineSeconds=10**12),
            "spec.runPolicy.activeDeadlineSeconds"),
    Invalid("TTL of 30,000 years", _sub("runPolicy", ttlSecondsAfterFinished=10**12),
            "spec.runPolicy.ttlSecondsAfterFinished"),
    Invalid("stall timeout without metrics", _spec(metrics={"enabled": False}, runPolicy={"stallTimeoutSeconds": 600}),
            "spec.runPolicy"),
    Invalid("resize below more nodes than the job has", _sub("runPolicy", resize={"minNodes": 3}),
            "spec.runPolicy.resize.minNodes"),
    Invalid("Kueue's priority without a queue", _spec(scheduling={"workloadPriorityClassName": "high"}),
            "spec.scheduling.workloadPriorityClassName"),
    Invalid("growing back under Kueue", _spec(scheduling={"queueName": "gpus"},
                                             runPolicy={"resize": {"minNodes": 1, "growBackAfterSeconds": 600}}),
            "spec.runPolicy.resize.growBackAfterSeconds"),
    Invalid("stall timeout of 5 s", _sub("runPolicy", stallTimeoutSeconds=5), "spec.runPolicy.stallTimeoutSeconds"),
    Invalid("maxSteps of 10^12", _training(maxSteps=10**12), "spec.training.maxSteps"),
    # --- paths
    Invalid("absolute model path", lambda b: b["spec"]["model"].update(path="/etc"), "spec.model.path"),
    Invalid("output path escaping its volume", lambda b: b["spec"]["output"].update(path="../x"), "spec.output.path"),
    Invalid("NUL byte in a path", lambda b: b["spec"]["model"].update(path="models/a\u0000b"), "spec.model.path"),
    Invalid("newline in a data path", lambda b: b["spec"]["data"]["files"][0].update(path="data/a\nb.jsonl"),
            "spec.data.files[0].path"),
    # --- data, training and DeepSpeed rules
    Invalid("no data", _spec(data={"files": []}), "spec.data"),
    Invalid("names without datasetInfo", lambda b: b["spec"]["data"].update(names=["a"]), "spec.data.names"),
    Invalid("earlyStopping without evalSteps", _training(earlyStoppingPatience=2),
            "spec.training.earlyStoppingPatience"),
    Invalid("evalSteps without a validation split", _training(evalSteps=5), "spec.training.evalSteps"),
    Invalid("offloadParams with ZeRO-2", _sub("deepspeed", stage=2, offloadParams=True),
            "spec.deepspeed.offloadParams"),
    Invalid("offloadOptimizer without DeepSpeed", _sub("deepspeed", stage=0, offloadOptimizer=True),
            "spec.deepspeed.offloadOptimizer"),
    Invalid("gpuMemory not a quantity", lambda b: b["spec"].update(gpuMemory="80 GB"), "spec.gpuMemory"),
    Invalid("bf16 on CPU pods", _training(precision="bf16"), "spec.training.precision"),
    # --- volumes
    Invalid("model volume not declared", lambda b: b["spec"]["model"].update(volume="nope"), "spec.model.volume"),
    Invalid("output volume not declared", lambda b: b["spec"]["output"].update(volume="nope"), "spec.output.volume"),
    Invalid("data volume not declared", lambda b: b["spec"]["data"]["files"][0].update(volume="nope"),
            "spec.data.files"),
    Invalid("datasetInfo volume not declared", _spec(data={"datasetInfo": {"volume": "nope"}, "names": ["a"]}),
            "spec.data.datasetInfo"),
    Invalid("duplicate volume names", lambda b: b["spec"].update(volumes=b["spec"]["volumes"] * 2), "spec.volumes"),
    Invalid("emptyDir output for 2 nodes", _spec(volumes=[{"name": "shared", "emptyDir": {}}]), "spec.output"),
    Invalid("output volume without a source (the API server would default it to emptyDir)",
            _spec(volumes=[{"name": "shared"}]), "spec.volumes[0]"),
    Invalid("volume with two sources", _spec(volumes=[{"name": "shared", "nfs": NFS, "emptyDir": {}}]),
            "spec.volumes[0]"),
    Invalid("read-only output volume", _spec(nodes=1, volumes=[{"name": "shared", "configMap": {"name": "c"}}]),
            "spec.output"),
    Invalid("volume name not a DNS label", _spec(volumes=[{"name": "Shared_Vol", "nfs": NFS}]),
            "spec.volumes[0].name"),
    # --- environment
    Invalid("inline token", _env({"name": "HF_TOKEN", "value": "hf_abc"}), "spec.env[0]"),
    Invalid("env overriding MASTER_ADDR", _env({"name": "MASTER_ADDR", "value": "10.0.0.1"}), "spec.env[0].name"),
    Invalid("env overriding NODE_RANK", _env({"name": "NODE_RANK", "value": "0"}), "spec.env[0].name"),
    Invalid("env overriding torchrun's PET_NNODES", _env({"name": "PET_NNODES", "value": "1"}), "spec.env[0].name"),
    Invalid("env overriding WORLD_SIZE", _env({"name": "WORLD_SIZE", "value": "1"}), "spec.env[0].name"),
    Invalid("secretEnv overriding MASTER_PORT",
            _spec(secretEnv=[{"name": "MASTER_PORT", "secretName": "s", "key": "k"}]), "spec.secretEnv[0].name"),
    Invalid("env name with '='", _env({"name": "A=B", "value": "1"}), "spec.env[0].name"),
    Invalid("the same variable in env and secretEnv",
            _spec(env=[{"name": "HF_HOME", "value": "/x"}],
                  secretEnv=[{"name": "HF_HOME", "secretName": "s", "key": "k"}]), "spec.env"),
    Invalid("Secret name not a DNS subdomain", _spec(secretEnv=[{"name": "HF", "secretName": "My Secret",
                                                                 "key": "k"}]), "spec.secretEnv[0].secretName"),
    Invalid("Secret key with a slash", _spec(secretEnv=[{"name": "HF", "secretName": "s", "key": "a/b"}]),
            "spec.secretEnv[0].key"),
    # --- names that land in Kubernetes objects
    Invalid("name too long for the last worker's hostname", _name("a" * (MAX_NAME_LENGTH + 1)), "metadata.name"),
    Invalid("name starting with a digit (invalid Service name)", _name("1job"), "metadata.name"),
    Invalid("name with a dot (invalid hostname)", _name("my.job"), "metadata.name"),
    Invalid("masterPort equal to metrics.port", _spec(masterPort=9090, metrics={"port": 9090}), "spec.metrics.port"),
    Invalid("scheduler name with a space", _sub("scheduling", schedulerName="volcano scheduler"),
            "spec.scheduling.schedulerName"),
    Invalid("priority class with an underscore", _sub("scheduling", priorityClassName="high_prio"),
            "spec.scheduling.priorityClassName"),
    Invalid("Kueue queue with a space", _sub("scheduling", queueName="team queue"), "spec.scheduling.queueName"),
    Invalid("node selector value with a space", _sub("scheduling", nodeSelector={"pool": "a b"}),
            "spec.scheduling.nodeSelector"),
    Invalid("node selector key with a space", _sub("scheduling", nodeSelector={"gpu pool": "a"}),
            "spec.scheduling.nodeSelector"),
    Invalid("pod label of hyft's own", _sub("podMetadata", labels={"hyft.io/role": "master"}),
            "spec.podMetadata.labels"),
    Invalid("pod annotation key with a space", _sub("podMetadata", annotations={"cni networks": "a"}),
            "spec.podMetadata.annotations"),
    Invalid("memory as a fabric resource", _sub("network", resources={"memory": "1Gi"}), "spec.network.resources"),
    Invalid("the GPU as a fabric resource", _sub("network", resources={"nvidia.com/gpu": "8"}),
            "spec.network.resources"),
    Invalid("fabric resource that is no quantity", _sub("network", resources={"rdma/ib": "one"}),
            "spec.network.resources.rdma/ib"),
    Invalid("runtime class with a space", _sub("scheduling", runtimeClassName="nvidia runtime"),
            "spec.scheduling.runtimeClassName"),
    Invalid("image reference with a space", _spec(image="hyft trainer:latest"), "spec.image"),
    Invalid("image reference in upper case", _spec(image="Hyft/Trainer"), "spec.image"),
    Invalid("pull secret with an underscore", _spec(imagePullSecrets=["my_secret"]), "spec.imagePullSecrets[0]"),
    Invalid("GPU resource name with a space", _spec(gpuResourceName="nvidia gpu"), "spec.gpuResourceName"),
    # --- only the operator (as the trainer would) can see these: training arguments, DeepSpeed overrides
    Invalid("unknown training argument", _training(arguments={"adam_betas": [0.9, 0.95]}),
            "spec.training.arguments.adam_betas", "operator"),
    Invalid("training argument the spec has a field for", _training(arguments={"learning_rate": 1e-4}),
            "spec.training.arguments.learning_rate", "operator"),
    Invalid("training argument hyft owns", _training(arguments={"ddp_backend": "mpi"}),
            "spec.training.arguments.ddp_backend", "operator"),
    Invalid("training argument of the wrong type", _training(arguments={"adam_beta2": "high"}),
            "spec.training.arguments.adam_beta2", "operator"),
    Invalid("override contradicting the ZeRO stage", _overrides({"zero_optimization": {"stage": 2}}),
            "spec.deepspeed.overrides", "operator"),
    Invalid("override turning parameter offload off",
            _overrides({"zero_optimization": {"offload_param": {"device": "none"}}}, offloadParams=True),
            "spec.deepspeed.overrides", "operator"),
    Invalid("override turning optimizer offload on",
            _overrides({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}, offloadOptimizer=False),
            "spec.deepspeed.overrides", "operator"),
    Invalid("override contradicting the batch size", _overrides({"train_micro_batch_size_per_gpu": 4}),
            "spec.deepspeed.overrides", "operator"),
    Invalid("DeepSpeed overrides under FSDP2", _fsdp(deepspeed={"overrides": {"gradient_clipping": 1.0}}),
            "spec.deepspeed.overrides", "operator"),
    Invalid("override with an impossible global batch", _overrides({"train_batch_size": 7}),
            "spec.deepspeed.overrides", "operator"),
    # --- pass-through Kubernetes objects, read by the Kubernetes client's own models
    Invalid("affinity of the wrong type", _sub("scheduling", affinity={"nodeAffinity": "gpu"}),
            "spec.scheduling.affinity.nodeAffinity", "operator"),
    Invalid("affinity with an unknown field", _sub("scheduling", affinity={"nodeAfinity": {}}),
            "spec.scheduling.affinity.nodeAfinity", "operator"),
    Invalid("env source of the wrong type", _env({"name": "X", "valueFrom": {"secretKeyRef": "s"}}),
            "spec.env[0].valueFrom.secretKeyRef", "operator"),
    Invalid("hostPath of the wrong type", _spec(nodes=1, volumes=[{"name": "shared", "hostPath": {"path": 5}}]),
            "spec.volumes[0].hostPath.path", "operator"),
    # --- values only the API server's pod validation knows (enumerations inside pass-through objects)
    Invalid("toleration with an unknown operator", _sub("scheduling", tolerations=[{"key": "a", "operator": "Maybe"}]),
            "spec.tolerations[0].operator", "pod"),
    Invalid("node affinity with an unknown operator", _sub("scheduling", affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["b"]}]}]}}}),
        "spec.affinity.nodeAffinity", "pod"),
]
