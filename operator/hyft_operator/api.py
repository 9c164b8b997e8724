"""HunyuanFineTune (hyft.io/v1alpha1): the single source of truth for the spec and
status. The CRD schema (crds/), validation and the reference docs are generated
from these models. No kopf or kubernetes imports here.

Field-level CEL rules live in ``json_schema_extra`` under
``x-kubernetes-validations``; the generator copies them into the CRD.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

GROUP = "hyft.io"
VERSION = "v1alpha1"
KIND = "HunyuanFineTune"
PLURAL = "hunyuanfinetunes"
SINGULAR = "hunyuanfinetune"
SHORT_NAMES = ["hft"]
CATEGORIES = ["hyft", "ai", "training"]

QUANTITY_PATTERN = r"^([+]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
IMMUTABLE = {"rule": "self == oldSelf", "message": "is immutable: create a new HunyuanFineTune instead"}
# Kubernetes objects passed through to the pods unchanged (validated by the API server there).
PASSTHROUGH = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def cel(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- spec
class VolumePath(ApiModel):
    volume: str = Field(description="Name of an entry in spec.volumes.", min_length=1, max_length=63)
    path: str = Field("", max_length=1024,
                      description="Path inside that volume (relative; empty means the volume's root).",
                      json_schema_extra=cel({"rule": "!self.startsWith('/') && !self.contains('..')",
                                             "message": "must be a relative path without '..'"}))


class ModelSpec(VolumePath):
    family: Literal["auto", "small", "7b"] = Field(
        "auto", description="Chat family: small (Hunyuan-0.5B/1.8B/4B), 7b (Hunyuan-7B), or auto "
                            "(detected from the tokenizer's special tokens).")


class DatasetFile(VolumePath):
    format: Literal["auto", "sharegpt", "alpaca"] = Field(
        "auto", description="Data format of the JSON/JSONL file(s); auto detects it per file.")


class DataSpec(ApiModel):
    files: list[DatasetFile] = Field(
        default_factory=list, max_length=32,
        description="JSON/JSONL files (or folders of them) read directly, mixed together.")
    datasetInfo: VolumePath | None = Field(
        None,
        description="A LLaMA-Factory data folder: the folder holding dataset_info.json.")
    names: list[str] = Field(default_factory=list, max_length=32,
                             description="Dataset names from datasetInfo's dataset_info.json.")
    cutoffLen: int = Field(2048, ge=16, le=1048576,
                           description="Maximum tokens per sample (or per pack with packing).")
    packing: bool = Field(False, description="Pack several samples into one sequence "
                                             "(no attention across samples).")
    trainOnPrompt: bool = Field(False, description="Also train on prompt tokens.")
    maskHistory: bool = Field(False,
                              description="Train only the last assistant turn of each conversation.")
    skipInvalidSamples: bool = Field(False,
                                     description="Skip (and count) invalid samples instead of failing the job.")
    valSize: float = Field(0.0, ge=0, lt=1,
                           description="Fraction of samples held out for evaluation.")
    model_config = ConfigDict(json_schema_extra=cel(
        {"rule": "size(self.files) > 0 || (has(self.datasetInfo) && size(self.names) > 0)",
         "message": "set files, or datasetInfo with names"},
        {"rule": "size(self.names) == 0 || has(self.datasetInfo)",
         "message": "names need datasetInfo (the folder with dataset_info.json)"},
    ))


class LoraSpec(ApiModel):
    rank: int = Field(8, ge=1, le=1024, description="LoRA rank r.")
    alpha: int | None = Field(None, ge=1, le=4096, description="LoRA alpha (default: 2 x rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    targetModules: list[str] = Field(["all"], min_length=1, max_length=64,
                                     description="Module names to adapt, or [all] for every linear layer.")


class FreezeSpec(ApiModel):
    trainableLayers: int = Field(2,
                                 description="Train the last N decoder layers (negative: the first N).",
                                 json_schema_extra=cel({"rule": "self != 0", "message": "must not be 0"}))


class MethodSpec(ApiModel):
    type: Literal["lora", "full", "freeze"] = Field("lora", description="Fine-tuning method.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings (type: lora).")
    freeze: FreezeSpec = Field(default_factory=FreezeSpec, description="Freeze settings (type: freeze).")


class TrainingSpec(ApiModel):
    learningRate: float = Field(1e-4, gt=0, le=1, description="Peak learning rate.")
    lrSchedulerType: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts",
                             "polynomial", "inverse_sqrt"] = Field(
        "cosine", description="Learning-rate schedule.")
    warmupRatio: float = Field(0.0, ge=0, lt=1,
                               description="Warm-up share of all steps, below 1 (transformers reads 1 as one step).")
    weightDecay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    epochs: float = Field(3.0, gt=0, le=1000, description="Training epochs (ignored when maxSteps is set).")
    maxSteps: int | None = Field(None, ge=1, description="Total optimizer steps (overrides epochs).")
    perDeviceBatchSize: int = Field(1, ge=1, le=4096,
                                    description="Micro-batch size per GPU.")
    gradientAccumulationSteps: int = Field(1, ge=1, le=4096,
                                           description="Micro-batches accumulated per optimizer step.")
    precision: Literal["bf16", "fp16", "fp32"] = Field(
        "bf16", description="Training precision (fp32 is used on CPU-only pods).")
    gradientCheckpointing: bool = Field(True,
                                        description="Recompute activations to save GPU memory.")
    maxGradNorm: float = Field(1.0, ge=0, description="Gradient clipping norm (0: off).")
    seed: int = Field(42, ge=0, description="Random seed (data order, initialisation).")
    loggingSteps: int = Field(10, ge=1, description="Log (and export metrics) every N steps.")
    saveSteps: int = Field(500, ge=1, description="Checkpoint every N steps.")
    saveTotalLimit: int | None = Field(None, ge=1,
                                       description="Keep at most N checkpoints (oldest removed).")
    evalSteps: int | None = Field(None, ge=1,
                                  description="Evaluate every N steps (needs data.valSize > 0).")
    earlyStoppingPatience: int | None = Field(
        None, ge=1,
        description="Stop after N evaluations without eval-loss improvement (needs evalSteps).")
    model_config = ConfigDict(json_schema_extra=cel(
        {"rule": "!has(self.earlyStoppingPatience) || has(self.evalSteps)",
         "message": "earlyStoppingPatience needs evalSteps", "fieldPath": ".earlyStoppingPatience"},
    ))


class DeepSpeedSpec(ApiModel):
    stage: Literal[2, 3] = Field(3, description="ZeRO stage.")
    offloadOptimizer: bool = Field(True,
                                   description="Keep optimizer states in host memory (CPU Adam).")
    offloadParams: bool = Field(True,
                                description="Keep parameters in host memory (ZeRO-3 only).")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="DeepSpeed JSON merged over the generated config.",
                                      json_schema_extra=PASSTHROUGH)
    model_config = ConfigDict(json_schema_extra=cel(
        # has(): the CRD's own default ({}) is validated before its fields are defaulted.
        {"rule": "!(has(self.offloadParams) && self.offloadParams && has(self.stage) && self.stage != 3)",
         "message": "parameter offload needs ZeRO stage 3: with stage 2 set offloadParams: false",
         "fieldPath": ".offloadParams"},
    ))


class SecretEnv(ApiModel):
    name: str = Field(description="Environment variable name.", min_length=1, max_length=256)
    secretName: str = Field(description="Secret to read the value from.", min_length=1)
    key: str = Field(description="Key in that Secret.", min_length=1)


class SchedulingSpec(ApiModel):
    nodeSelector: dict[str, str] = Field(default_factory=dict,
                                         description="Node labels the pods must match.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, max_length=64,
                                              description="Pod tolerations (core/v1 Toleration).",
                                              json_schema_extra={"items": PASSTHROUGH})
    affinity: dict[str, Any] | None = Field(None, description="Pod affinity (core/v1 Affinity).",
                                            json_schema_extra=PASSTHROUGH)
    priorityClassName: str | None = Field(None, description="Pod priority class.")
    schedulerName: str | None = Field(None,
                                      description="Scheduler for the pods (e.g. volcano for gang scheduling).")
    queueName: str | None = Field(None,
                                  description="Kueue LocalQueue: pods join one Kueue pod group.")


class RunPolicy(ApiModel):
    backoffLimit: int = Field(3, ge=0, le=100,
                              description="Gang restarts allowed after retryable failures before the job fails.")
    activeDeadlineSeconds: int | None = Field(None, ge=1,
                                              description="Fail the job after this long since it first started.")
    ttlSecondsAfterFinished: int | None = Field(
        None, ge=0,
        description="Delete the pods this long after the job finished. The resource itself is kept "
                    "(a GitOps tool would recreate it).")
    suspend: bool = Field(False, description="Delete the pods (after a checkpoint on SIGTERM) and wait; "
                                             "set back to false to resume from the last checkpoint.")
    checkpointGracePeriodSeconds: int = Field(
        300, ge=0, le=86400,
        description="Pod terminationGracePeriodSeconds: time the trainer gets after SIGTERM (suspend, "
                    "preemption) to save a checkpoint.")
    permanentExitCodes: list[int] = Field(
        [2, 126, 127], max_length=64,
        description="Trainer exit codes that fail the job at once instead of restarting the gang "
                    "(2: invalid config or data; 126/127: command not runnable).")


class MetricsSpec(ApiModel):
    enabled: bool = Field(True, description="Export Prometheus metrics from the trainer.")
    port: int = Field(9090, ge=1024, le=65535, description="Trainer metrics port.")


class HunyuanFineTuneSpec(ApiModel):
    model: ModelSpec = Field(description="The base model: a Hugging Face model folder inside a volume.",
                             json_schema_extra=cel(IMMUTABLE))
    data: DataSpec = Field(description="Training data (ShareGPT or alpaca, JSON or JSONL).",
                           json_schema_extra=cel(IMMUTABLE))
    output: VolumePath = Field(
        description="Where checkpoints, the export and reports go. With more than one node this volume "
                    "must be shared by all nodes (ReadWriteMany).",
        json_schema_extra=cel(IMMUTABLE))
    method: MethodSpec = Field(default_factory=MethodSpec, description="Full, LoRA or freeze fine-tuning.",
                               json_schema_extra=cel(IMMUTABLE))
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Training hyperparameters.",
                                   json_schema_extra=cel(IMMUTABLE))
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec, description="DeepSpeed ZeRO settings.",
                                     json_schema_extra=cel(IMMUTABLE))
    nodes: int = Field(1, ge=1, le=512, description="Number of pods (one master, nodes-1 workers).",
                       json_schema_extra=cel(IMMUTABLE))
    gpusPerNode: int = Field(8, ge=0, le=16,
                             description="GPUs per pod; 0 runs on CPU (for tests and demos).",
                             json_schema_extra=cel(IMMUTABLE))
    gpuResourceName: str = Field("nvidia.com/gpu",
                                 description="Extended resource that counts GPUs.")
    cpu: str | None = Field(None, pattern=QUANTITY_PATTERN, description="CPU request per pod (e.g. '32').")
    memory: str | None = Field(None, pattern=QUANTITY_PATTERN,
                               description="Memory request and limit per pod (e.g. '512Gi'); CPU offload "
                                           "needs host memory (see `hyft estimate`).")
    shmSize: str = Field("16Gi", pattern=QUANTITY_PATTERN,
                         description="Size of the memory-backed /dev/shm (data loaders, NCCL).")
    image: str | None = Field(None, description="Trainer image (default: the operator's configured image).")
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy.")
    imagePullSecrets: list[str] = Field(default_factory=list, max_length=16,
                                        description="Secrets for pulling the image.")
    env: list[dict[str, Any]] = Field(
        default_factory=list, max_length=128,
        description="Extra environment variables (core/v1 EnvVar). Tokens and passwords belong in "
                    "secretEnv, never inline.",
        json_schema_extra={"items": {
            **PASSTHROUGH, "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 256, "description": "Variable name."},
                "value": {"type": "string", "description": "Literal value."},
                "valueFrom": {**PASSTHROUGH, "description": "core/v1 EnvVarSource."}},
            **cel({"rule": "!has(self.value) || !self.name.matches('(?i)(token|secret|password|api_?key)')",
                   "message": "looks like a credential: use secretEnv (a Secret reference), not an inline value"}),
        }})
    secretEnv: list[SecretEnv] = Field(default_factory=list, max_length=64,
                                       description="Environment variables read from Secrets (e.g. HF_TOKEN).")
    volumes: list[dict[str, Any]] = Field(
        min_length=1, max_length=32,
        description="Volumes (core/v1 Volume: persistentVolumeClaim, nfs, csi, hostPath...). Each is mounted "
                    "at /hyft/volumes/<name>; model, data and output name one of them.",
        json_schema_extra={"items": {**PASSTHROUGH, "required": ["name"],
                                     "properties": {
                                         "name": {"type": "string", "maxLength": 63, "description": "Volume name."},
                                         **{source: {**PASSTHROUGH, "description": f"core/v1 {source} source."}
                                            for source in ("persistentVolumeClaim", "emptyDir", "hostPath",
                                                           "nfs", "csi")}}}})
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec,
                                       description="Where the pods may run.")
    runPolicy: RunPolicy = Field(default_factory=RunPolicy,
                                 description="Restarts, deadlines, cleanup and suspension.")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="Trainer metrics.")
    masterPort: int = Field(29500, ge=1024, le=65535,
                            description="Port of the torch.distributed rendezvous on the master pod.")

    model_config = ConfigDict(json_schema_extra=cel(
        {"rule": "self.volumes.exists(v, v.name == self.model.volume)",
         "message": "model.volume must name an entry of volumes", "fieldPath": ".model.volume"},
        {"rule": "self.volumes.exists(v, v.name == self.output.volume)",
         "message": "output.volume must name an entry of volumes", "fieldPath": ".output.volume"},
        {"rule": "self.data.files.all(f, self.volumes.exists(v, v.name == f.volume))",
         "message": "every data.files[].volume must name an entry of volumes", "fieldPath": ".data.files"},
        {"rule": "!has(self.data.datasetInfo) || self.volumes.exists(v, v.name == self.data.datasetInfo.volume)",
         "message": "data.datasetInfo.volume must name an entry of volumes", "fieldPath": ".data.datasetInfo"},
        {"rule": "self.volumes.all(v, self.volumes.exists_one(w, w.name == v.name))",
         "message": "volume names must be unique", "fieldPath": ".volumes"},
        {"rule": "self.nodes == 1 || !self.volumes.exists(v, v.name == self.output.volume && "
                 "(has(v.emptyDir) || has(v.hostPath)))",
         "message": "with more than one node the output volume must be shared by all nodes "
                    "(a ReadWriteMany PVC, NFS or CSI), not emptyDir or hostPath", "fieldPath": ".output"},
        {"rule": "self.gpusPerNode > 0 || self.training.precision == 'fp32'",
         "message": "CPU pods (gpusPerNode: 0) train in fp32", "fieldPath": ".training.precision"},
    ))

    @model_validator(mode="after")
    def _cross_field(self) -> HunyuanFineTuneSpec:
        # The same rules as the CEL above, for `hyft run --local` and `hyft render`.
        names = [v.get("name") for v in self.volumes]
        if len(set(names)) != len(names):
            raise ValueError("volumes: volume names must be unique")
        refs = [("model.volume", self.model.volume), ("output.volume", self.output.volume)]
        refs += [(f"data.files[{i}].volume", f.volume) for i, f in enumerate(self.data.files)]
        if self.data.datasetInfo:
            refs.append(("data.datasetInfo.volume", self.data.datasetInfo.volume))
        for field, name in refs:
            if name not in names:
                raise ValueError(f"{field}: {name!r} is not an entry of volumes ({', '.join(map(str, names))})")
        if not self.data.files and not (self.data.datasetInfo and self.data.names):
            raise ValueError("data: set files, or datasetInfo with names")
        output_volume = next(v for v in self.volumes if v.get("name") == self.output.volume)
        if self.nodes > 1 and ("emptyDir" in output_volume or "hostPath" in output_volume):
            raise ValueError("output: with more than one node the output volume must be shared by all nodes")
        if self.gpusPerNode == 0 and self.training.precision != "fp32":
            raise ValueError("training.precision: CPU pods (gpusPerNode: 0) train in fp32")
        return self


# --------------------------------------------------------------------------- status
Phase = Literal["Pending", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]
TERMINAL_PHASES = ("Succeeded", "Failed")


class Condition(ApiModel):
    type: str = Field(description="Condition type (Ready, Reconciling, Stalled, Created, Running, Restarting, "
                                  "Succeeded, Failed, Suspended, PodsScheduled).")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field("", description="CamelCase reason for the last transition.")
    message: str = Field("", description="Human-readable detail.")
    lastTransitionTime: str | None = Field(None,
                                           description="When status last changed (RFC 3339).")
    observedGeneration: int | None = Field(None,
                                           description="The .metadata.generation this condition was set for.")


class NodeCounts(ApiModel):
    total: int = Field(0, description="Pods in the gang.")
    created: int = Field(0, description="Pods of the current attempt that exist.")
    ready: int = Field(0, description="Pods running and ready.")
    succeeded: int = Field(0, description="Pods that exited 0.")
    failed: int = Field(0, description="Pods that failed.")


class FailureInfo(ApiModel):
    pod: str = Field(description="The pod that failed first.")
    exitCode: int | None = Field(None, description="Its trainer container's exit code.")
    reason: str = Field("", description="Kubernetes reason (Error, OOMKilled, Evicted, ...).")
    message: str = Field("", description="Termination message, if any.")
    retryable: bool = Field(description="Whether the gang was (or would be) restarted for it.")


class Progress(ApiModel):
    step: int = Field(0, description="Optimizer steps done.")
    totalSteps: int = Field(0, description="Planned optimizer steps.")
    percent: float = Field(0, description="step / totalSteps in percent.")
    loss: float | None = Field(None, description="Last logged training loss.")
    tokensPerSecond: float | None = Field(None, description="Training throughput.")
    etaSeconds: float | None = Field(None, description="Estimated seconds to finish.")
    lastCheckpointStep: int | None = Field(None,
                                           description="Step of the newest complete checkpoint.")


class HunyuanFineTuneStatus(ApiModel):
    observedGeneration: int | None = Field(None,
                                           description="The .metadata.generation last reconciled.")
    phase: Phase = Field("Pending", description="Pending, Running, Restarting, Succeeded, Failed or Suspended.")
    conditions: list[Condition] = Field(default_factory=list, description="Conditions, one per type.")
    attempt: int = Field(0, description="Current gang attempt (pods carry it as hyft.io/attempt).")
    restarts: int = Field(0, description="Gang restarts after failures.")
    nodes: NodeCounts = Field(default_factory=NodeCounts, description="Pod counts of the current attempt.")
    readyNodes: str = Field("0/0", description="ready/total, for kubectl get.")
    startTime: str | None = Field(None, description="When the first gang was created.")
    completionTime: str | None = Field(None, description="When the job finished.")
    podsDeletedAfterTtl: bool = Field(False,
                                      description="Pods removed by ttlSecondsAfterFinished.")
    lastFailure: FailureInfo | None = Field(None, description="The last pod failure.")
    progress: Progress | None = Field(None, description="Training progress read from the trainer's metrics.")
    progressSummary: str | None = Field(None, description="e.g. '120/1000 (12%)'.")
    message: str = Field("", description="Summary of the current state.")


class HunyuanFineTune(BaseModel):
    """Fine-tune a Tencent Hunyuan model on one or more GPU nodes with DeepSpeed."""

    model_config = ConfigDict(extra="ignore")
    apiVersion: str = f"{GROUP}/{VERSION}"
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: HunyuanFineTuneSpec
    status: HunyuanFineTuneStatus = Field(default_factory=HunyuanFineTuneStatus)
