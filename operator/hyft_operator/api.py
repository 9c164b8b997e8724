"""HunyuanFineTune (hyft.io/v1alpha1): the resource and its spec, the single source of truth
from which the CRD schema (crds/), validation and the reference docs are generated; the
status is status.py's, the Kubernetes formats formats.py's, the building blocks markers.py's.
No kopf or kubernetes imports here, and nothing from the trainer but its shared declarations
(knobs, choices, contract, rules).

Each validation rule is written twice, side by side (see Rule): CEL under
``x-kubernetes-validations`` for the API server, and its Python twin.

Over 300 lines: the spec is one resource, read top to bottom as the user writes it; its building
blocks (formats.py, markers.py) and the status (status.py) are apart.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from hyft_trainer.choices import SIZES, DataFormat
from hyft_trainer.contract import EXIT_INVALID, EXIT_OUTPUT_UNUSABLE, EXIT_SHM_TOO_SMALL, RESERVED_ENV
from hyft_trainer.fsdp import FSDP
from hyft_trainer.knobs import MAX_SECONDS, MAX_STEPS, NO_CONTROL_CHARACTERS
from hyft_trainer.rules import Rule

from .formats import (
    DNS_1035_LABEL,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_NAME,
    IMAGE_REFERENCE,
    IMMUTABLE,
    LABEL_VALUE,
    MAX_NAME_LENGTH,
    NODE_LOCAL_SOURCES,
    PASSTHROUGH,
    QUALIFIED_KEYS,
    QUALIFIED_NAME,
    QUANTITY_PATTERN,
    READ_ONLY_SOURCES,
    SECRET_KEY,
    VOLUME_SOURCES,
    Labels,
    cel,
    one_of,
)
from .markers import ApiModel, with_knobs
from .status import RESIZABLE_PHASES, HunyuanFineTuneStatus

GROUP = "hyft.io"
VERSION = "v1alpha1"
KIND = "HunyuanFineTune"
PLURAL = "hunyuanfinetunes"
SINGULAR = "hunyuanfinetune"
SHORT_NAMES = ["hft"]
CATEGORIES = ["hyft", "ai", "training"]

RelativePath = Annotated[str, Rule("!self.startsWith('/') && !self.contains('..')",
                                   "must be a relative path without '..'",
                                   lambda p: not p.startswith("/") and ".." not in p)]


# ---------------------------------------------------------------------------- spec
class VolumePath(ApiModel):
    volume: str = Field(description="Name of an entry in spec.volumes.", min_length=1, max_length=63)
    path: RelativePath = Field("", max_length=1024, pattern=NO_CONTROL_CHARACTERS,
                               description="Path inside that volume (relative; empty means the volume's root).")


class _ModelSpec(VolumePath):
    parameters: Literal[tuple(SIZES)] | None = Field(  # type: ignore[valid-type]
        None, description="Model size, for the host-memory check (runPolicy.memoryCheck); default: read from "
                          "the path's name (Hunyuan-7B-Instruct: 7B).")


ModelSpec = with_knobs(_ModelSpec, "model")


class DatasetFile(VolumePath):
    format: DataFormat = Field("auto", description="Data format of the JSON/JSONL file(s); auto detects it per file.")


class _DataSpec(ApiModel):
    files: list[DatasetFile] = Field(
        default_factory=list, max_length=32,
        description="JSON/JSONL files (or folders of them) read directly, mixed together.")
    datasetInfo: VolumePath | None = Field(
        None,
        description="A LLaMA-Factory data folder: the folder holding dataset_info.json.")
    RULES = (
        Rule("size(self.files) > 0 || (has(self.datasetInfo) && size(self.names) > 0)",
             "set files, or datasetInfo with names",
             lambda d: bool(d.files) or (d.datasetInfo is not None and bool(d.names))),
        Rule("size(self.names) == 0 || has(self.datasetInfo)",
             "names need datasetInfo (the folder with dataset_info.json)",
             lambda d: not d.names or d.datasetInfo is not None, field="names"),
    )


DataSpec = with_knobs(_DataSpec, "data")


class _LoraSpec(ApiModel):
    targetModules: list[Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.*-]+$")]] = Field(
        ["all"], min_length=1, max_length=64,
        description="Module names to adapt, or [all] for every linear layer.")


LoraSpec = with_knobs(_LoraSpec, "method.lora")


class _FreezeSpec(ApiModel):
    pass


FreezeSpec = with_knobs(_FreezeSpec, "method.freeze")


class _MethodSpec(ApiModel):
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings (type: lora).")
    freeze: FreezeSpec = Field(default_factory=FreezeSpec, description="Freeze settings (type: freeze).")
    RULES = (
        Rule("!(has(self.lora) && has(self.lora.merge) && self.lora.merge && has(self.type) && self.type != 'lora')",
             "lora.merge is for type lora: a full or freeze run exports the whole model already",
             lambda s: not (s.lora.merge and s.type != "lora"), field="lora.merge"),
        Rule("!(has(self.lora) && has(self.lora.quantizationBit) && has(self.type) && self.type != 'lora')",
             "lora.quantizationBit (QLoRA) trains LoRA on the quantized base: it is for type lora",
             lambda s: not (s.lora.quantizationBit and s.type != "lora"), field="lora.quantizationBit"),
    )


MethodSpec = with_knobs(_MethodSpec, "method")


class _TrainingSpec(ApiModel):
    maxSteps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Total optimizer steps (overrides epochs).")
    precision: Literal["bf16", "fp16", "fp32"] = Field(
        "bf16", description="Training precision (fp32 is used on CPU-only pods).")
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="More training keys, as a LLaMA-Factory YAML writes them (optim, "
        "adam_beta2, warmup_steps, save_strategy, ...): judged as `hyft train` judges a config's keys (the "
        "reference's \"Every other key\"); a key this spec has a field for is refused naming the field.")
    RULES = (
        Rule("!has(self.earlyStoppingPatience) || has(self.evalSteps)", "earlyStoppingPatience needs evalSteps",
             lambda t: t.earlyStoppingPatience is None or t.evalSteps is not None, field="earlyStoppingPatience"),
    )


TrainingSpec = with_knobs(_TrainingSpec, "training")


class _DeepSpeedSpec(ApiModel):
    RULES = (
        # has(): the CRD's own default ({}) is validated before its fields are defaulted.
        Rule("!(has(self.offloadParams) && self.offloadParams && has(self.stage) && self.stage != 3)",
             "parameter offload needs ZeRO stage 3: set offloadParams: false or leave it unset",
             lambda d: not (d.offloadParams and d.stage not in (None, 3)), field="offloadParams"),
        Rule("!(has(self.offloadOptimizer) && self.offloadOptimizer && has(self.stage) && self.stage == 0)",
             "optimizer offload needs DeepSpeed (stage 2 or 3): set offloadOptimizer: false or leave it unset",
             lambda d: not (d.offloadOptimizer and d.stage == 0), field="offloadOptimizer"),
    )


DeepSpeedSpec = with_knobs(_DeepSpeedSpec, "deepspeed")


EnvName = Annotated[str, Field(min_length=1, max_length=256, pattern=ENV_NAME),
                    Rule(f"!(self in {list(RESERVED_ENV)})",
                         "is set by hyft on every trainer pod (the rendezvous and the pod contract): remove it",
                         lambda name: name not in RESERVED_ENV)]


class SecretEnv(ApiModel):
    name: EnvName = Field(description="Environment variable name.")
    secretName: str = Field(description="Secret to read the value from.", min_length=1, max_length=253,
                            pattern=DNS_SUBDOMAIN)
    key: str = Field(description="Key in that Secret.", min_length=1, max_length=253, pattern=SECRET_KEY)


class EnvVar(BaseModel):
    """core/v1 EnvVar: its name checked here, the rest by the API server on the pod."""

    model_config = ConfigDict(extra="allow")
    name: EnvName = Field(description="Variable name.")
    value: str | None = Field(None, description="Literal value.")
    valueFrom: dict[str, Any] | None = Field(None, description="core/v1 EnvVarSource.",
                                             json_schema_extra=PASSTHROUGH)


CREDENTIAL_NAME = "(?i)(token|secret|password|api_?key)"
InlineEnv = Annotated[EnvVar, Rule(f"!has(self.value) || !self.name.matches('{CREDENTIAL_NAME}')",
                                   "looks like a credential: use secretEnv (a Secret reference), not an inline value",
                                   lambda e: e.value is None or not re.search(CREDENTIAL_NAME, e.name))]


class _VolumeName(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(description="Volume name.", min_length=1, max_length=63, pattern=DNS_LABEL)


# core/v1 Volume: its name and its one source checked here, the source itself by the API server on the
# pod. Every source is declared so that CEL can see which one a volume uses.
Volume = create_model("Volume", __base__=_VolumeName, **{
    source: (dict[str, Any] | None, Field(None, description=f"core/v1 {source} volume source.",
                                          json_schema_extra=PASSTHROUGH)) for source in VOLUME_SOURCES})
OneSourceVolume = Annotated[Volume, Rule(
    " + ".join(f"(has(self.{s}) ? 1 : 0)" for s in VOLUME_SOURCES) + " == 1",
    f"must have exactly one volume source ({', '.join(VOLUME_SOURCES)})",
    lambda v: sum(getattr(v, s) is not None for s in VOLUME_SOURCES) == 1)]


class SchedulingSpec(ApiModel):
    nodeSelector: Labels = Field(default_factory=dict, max_length=64, description="Node labels the pods must match.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, max_length=64,
                                              description="Pod tolerations (core/v1 Toleration).",
                                              json_schema_extra={"items": PASSTHROUGH})
    affinity: dict[str, Any] | None = Field(None, description="Pod affinity (core/v1 Affinity).",
                                            json_schema_extra=PASSTHROUGH)
    priorityClassName: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN,
                                          description="Pod priority class (also the Kueue Workload's priority, "
                                                      "unless workloadPriorityClassName is set).")
    workloadPriorityClassName: str | None = Field(
        None, max_length=253, pattern=DNS_SUBDOMAIN,
        description="Kueue WorkloadPriorityClass: the Workload's priority in its queue and for preemption by "
                    "Kueue, apart from the pods' priorityClassName (the scheduler's). Needs queueName.")
    schedulerName: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN,
                                      description="Scheduler for the pods (e.g. volcano for gang scheduling).")
    queueName: str | None = Field(None, min_length=1, max_length=63, pattern=LABEL_VALUE,
                                  description="Kueue LocalQueue: the gang is one Kueue Workload, its pods "
                                  "created once Kueue admits it (phase Queued until then).")
    runtimeClassName: str | None = Field(None, max_length=253, pattern=DNS_SUBDOMAIN,
                                         description="Pod RuntimeClass (e.g. nvidia, where the NVIDIA container "
                                                     "runtime is not the node's default).")
    onePodPerNode: bool | None = Field(
        None, description="Keep the job's pods on different nodes (a required pod anti-affinity on "
                          "kubernetes.io/hostname): two pods on one node would look like two hosts to NCCL and share "
                          "its NICs. Default: on when gpusPerNode > 0, unless affinity has a podAntiAffinity.")


class PodMetadata(ApiModel):
    labels: Annotated[Labels, Rule("self.all(k, !k.startsWith('hyft.io/'))", "hyft.io/ labels are hyft's own",
                                   lambda labels: not any(k.startswith("hyft.io/") for k in labels))] = Field(
        default_factory=dict, max_length=64, description="Extra labels on the trainer pods.")
    annotations: Annotated[dict[str, Annotated[str, Field(max_length=65536)]], QUALIFIED_KEYS] = Field(
        default_factory=dict, max_length=64,
        description="Extra annotations on the trainer pods, e.g. k8s.v1.cni.cncf.io/networks (Multus) for the "
                    "RDMA networks of a multi-node job.")


class NetworkSpec(ApiModel):
    hostNetwork: bool = Field(
        False, description="Run the trainer pods in the node's network namespace (its RDMA and TCP interfaces "
                           "without an overlay). dnsPolicy becomes ClusterFirstWithHostNet, and masterPort and "
                           "metrics.port become host ports (the scheduler keeps two pods that use them apart).")
    resources: Annotated[dict[str, Annotated[str, Field(pattern=QUANTITY_PATTERN)]], QUALIFIED_KEYS, Rule(
        "!self.exists(k, k in ['cpu', 'memory', 'ephemeral-storage'])", "cpu and memory have fields of their own",
        lambda r: not {"cpu", "memory", "ephemeral-storage"} & set(r))] = Field(
        default_factory=dict, max_length=16,
        description="Extra resources per pod, requested and limited, for the fabric: e.g. rdma/ib: '1', "
                    "rdma/rdma_shared_device_a: '1' or vpc.amazonaws.com/efa: '32'. NCCL settings the cluster needs "
                    "(NCCL_SOCKET_IFNAME, NCCL_IB_HCA, ...) go in env.")


class ResizePolicy(ApiModel):
    minNodes: int = Field(ge=1, le=512, description="Fewest nodes the gang may shrink to.")
    unschedulableSeconds: int = Field(
        300, ge=10, le=MAX_SECONDS,
        description="How long a pod of the gang may stay unschedulable (capacity lost) before the gang restarts "
                    "on the nodes the scheduler did place.")
    growBackAfterSeconds: int | None = Field(
        None, ge=10, le=MAX_SECONDS,
        description="Once a shrunk gang has run this long, restart it on all spec.nodes (its pods stop with a "
                    "checkpoint on SIGTERM, the next attempt resumes from it): each try costs a checkpoint and a "
                    "restart, and if the nodes are still missing the gang shrinks again after unschedulableSeconds. "
                    "Unset: a shrunk gang grows back only at its next restart. Not with scheduling.queueName: "
                    "Kueue would queue the grown gang with its smaller one stopped.")


class _RunPolicy(ApiModel):
    backoffLimit: int = Field(3, ge=0, le=100,
                              description="Gang restarts allowed after retryable failures before the job fails.")
    activeDeadlineSeconds: int | None = Field(None, ge=1, le=MAX_SECONDS,
                                              description="Fail the job after this long since it first started.")
    ttlSecondsAfterFinished: int | None = Field(
        None, ge=0, le=MAX_SECONDS,
        description="Delete the pods this long after the job finished. The resource itself is kept "
                    "(a GitOps tool would recreate it).")
    suspend: bool = Field(False, description="Delete the pods (after a checkpoint on SIGTERM) and wait; "
                                             "set back to false to resume from the last checkpoint.")
    stallTimeoutSeconds: int | None = Field(
        None, ge=10, le=MAX_SECONDS,
        description="Restart the gang (counted against backoffLimit) when the master trainer makes no step for this "
                    "long, in its own clock; its collective timeout (ddp_timeout, default 1800 s) is kept under 4/5 "
                    "of it, so a hung all-reduce fails there first, with torch's error. Needs metrics.")
    startupTimeoutSeconds: int | None = Field(
        None, ge=10, le=MAX_SECONDS,
        description="Restart the gang (counted against backoffLimit) when the master trainer makes no first step "
                    "this long after it started (loading the model or data, waiting for the other nodes), or "
                    "its metrics never answer that long after the gang started. Needs metrics.")
    memoryCheck: Literal["Warn", "Enforce", "Off"] = Field(
        "Warn", description="Compare the host RAM the job needs per node (hyft estimate's model: ZeRO stage, "
                            "offload, method, nodes) with spec.memory: Warn sets the MemoryRisk condition, "
                            "Enforce also fails the job before any pod starts.")
    checkpointGracePeriodSeconds: int = Field(
        300, ge=0, le=86400,
        description="Pod terminationGracePeriodSeconds: time the trainer gets after SIGTERM (suspend, "
                    "preemption) to save a checkpoint.")
    resize: ResizePolicy | None = Field(
        None, description="Restart a gang that cannot be scheduled on fewer nodes, down to minNodes: the largest "
                          "size the scheduler placed that keeps the global batch (gradient accumulation grows), "
                          "resuming from the last checkpoint; the next restart (a failure, a disruption, "
                          "suspend/resume) tries spec.nodes again, or growBackAfterSeconds does. Off when unset.")
    permanentExitCodes: list[Annotated[int, Field(ge=1, le=255)]] = Field(
        [EXIT_INVALID, EXIT_SHM_TOO_SMALL, EXIT_OUTPUT_UNUSABLE, 126, 127], max_length=64,
        description="Trainer exit codes that fail the job at once instead of restarting the gang "
                    "(2: invalid config or data; 4: /dev/shm too small; 5: output volume not writable, not shared "
                    "between the nodes or too full; 126/127: command not runnable). 3, 6 and 7 (the gang did not "
                    "assemble) restart the gang.")


RunPolicy = with_knobs(_RunPolicy, "runPolicy")


class MetricsSpec(ApiModel):
    enabled: bool = Field(True, description="Export Prometheus metrics from the trainer.")
    port: int = Field(9090, ge=1024, le=65535, description="Trainer metrics port.")


def _volume_named(spec: HunyuanFineTuneSpec, name: str) -> Any:
    return next((v for v in spec.volumes if v.name == name), None)


def _output_source_in(spec: HunyuanFineTuneSpec, sources: tuple[str, ...]) -> bool:
    volume = _volume_named(spec, spec.output.volume)
    return volume is not None and any(getattr(volume, s) is not None for s in sources)


def _output_cel(sources: tuple[str, ...]) -> str:
    return f"self.volumes.exists(v, v.name == self.output.volume && {one_of('v', sources)})"


_FSDP = f"(has(self.training) && has(self.training.engine) && self.training.engine == '{FSDP}')"
_SUSPENDED = "(has({0}.runPolicy) && has({0}.runPolicy.suspend) && {0}.runPolicy.suspend)"
# On the whole resource: an update of the spec sees the stored status (oldSelf.status), the phase it is in.
RESIZE_BETWEEN_ATTEMPTS = {
    "rule": "(self.spec.nodes == oldSelf.spec.nodes && self.spec.gpusPerNode == oldSelf.spec.gpusPerNode) || "
            f"{_SUSPENDED.format('self.spec')} || {_SUSPENDED.format('oldSelf.spec')} || "
            "(has(oldSelf.status) && has(oldSelf.status.phase) && "
            f"oldSelf.status.phase in {list(RESIZABLE_PHASES)})",
    "message": "nodes and gpusPerNode change only while the job is suspended (runPolicy.suspend: true), queued "
               "or restarting between attempts (phase " + " or ".join(RESIZABLE_PHASES) + "): the next attempt "
               "then resumes from the newest checkpoint on the new size",
    "fieldPath": ".spec.nodes",
}


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
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec, description="DeepSpeed ZeRO settings; with "
                                     "training.engine fsdp, offloadOptimizer and offloadParams are FSDP2's CPU "
                                     "offload (one switch: set them alike) and stage stays 3.",
                                     json_schema_extra=cel(IMMUTABLE))
    nodes: int = Field(1, ge=1, le=512, description="Number of pods (one master, nodes-1 workers). Changes while "
                       "the job is suspended: the next attempt resumes from the newest checkpoint on the new size.")
    gpusPerNode: int = Field(8, ge=0, le=16,
                             description="GPUs per pod; 0 runs on CPU (for tests and demos). Changes while the job "
                                         "is suspended, as nodes.")
    gpuResourceName: str = Field("nvidia.com/gpu", max_length=317, pattern=QUALIFIED_NAME,
                                 description="Extended resource that counts GPUs.")
    gpuMemory: str | None = Field(
        None, pattern=QUANTITY_PATTERN,
        description="Memory of one GPU (e.g. '80Gi'): the deepspeed offload left unset (auto) is decided here, "
                    "and said in status.offload. Unset: from scheduling.nodeSelector's nvidia.com/gpu.product "
                    "where hyft knows the product, else each node decides from the GPUs it has.")
    cpu: str | None = Field(None, pattern=QUANTITY_PATTERN, description="CPU request per pod (e.g. '32').")
    memory: str | None = Field(None, pattern=QUANTITY_PATTERN,
                               description="Memory request and limit per pod (e.g. '512Gi'); CPU offload "
                                           "needs host memory (see `hyft estimate`).")
    shmSize: str = Field("16Gi", pattern=QUANTITY_PATTERN,
                         description="Size of the memory-backed /dev/shm (data loaders, NCCL).")
    image: str | None = Field(None, max_length=1024, pattern=IMAGE_REFERENCE,
                              description="Trainer image (default: the operator's configured image).")
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy.")
    imagePullSecrets: list[Annotated[str, Field(max_length=253, pattern=DNS_SUBDOMAIN)]] = Field(
        default_factory=list, max_length=16, description="Secrets for pulling the image.")
    env: list[InlineEnv] = Field(
        default_factory=list, max_length=128,
        description="Extra environment variables (core/v1 EnvVar). Tokens and passwords belong in "
                    "secretEnv, never inline; the rendezvous variables are hyft's.")
    secretEnv: list[SecretEnv] = Field(default_factory=list, max_length=64,
                                       description="Environment variables read from Secrets (e.g. HF_TOKEN).")
    volumes: list[OneSourceVolume] = Field(
        min_length=1, max_length=32,
        description="Volumes (core/v1 Volume: persistentVolumeClaim, nfs, csi, hostPath...). Each is mounted "
                    "at /hyft/volumes/<name>; model, data and output name one of them.")
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec,
                                       description="Where the pods may run.")
    network: NetworkSpec = Field(default_factory=NetworkSpec,
                                 description="The pods' network: the node's own, and fabric resources (RDMA, EFA).")
    podMetadata: PodMetadata = Field(default_factory=PodMetadata,
                                     description="Extra labels and annotations on the trainer pods.")
    runPolicy: RunPolicy = Field(default_factory=RunPolicy,
                                 description="Restarts, deadlines, cleanup and suspension.")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="Trainer metrics.")
    masterPort: int = Field(29500, ge=1024, le=65535,
                            description="Port of the torch.distributed rendezvous on the master pod.")

    RULES = (
        Rule("self.volumes.exists(v, v.name == self.model.volume)", "model.volume must name an entry of volumes",
             lambda s: _volume_named(s, s.model.volume) is not None, field="model.volume"),
        Rule("self.volumes.exists(v, v.name == self.output.volume)", "output.volume must name an entry of volumes",
             lambda s: _volume_named(s, s.output.volume) is not None, field="output.volume"),
        Rule("self.data.files.all(f, self.volumes.exists(v, v.name == f.volume))",
             "every data.files[].volume must name an entry of volumes",
             lambda s: all(_volume_named(s, f.volume) for f in s.data.files), field="data.files"),
        Rule("!has(self.data.datasetInfo) || self.volumes.exists(v, v.name == self.data.datasetInfo.volume)",
             "data.datasetInfo.volume must name an entry of volumes",
             lambda s: s.data.datasetInfo is None or _volume_named(s, s.data.datasetInfo.volume) is not None,
             field="data.datasetInfo"),
        Rule("self.volumes.all(v, self.volumes.exists_one(w, w.name == v.name))", "volume names must be unique",
             lambda s: len({v.name for v in s.volumes}) == len(s.volumes), field="volumes"),
        Rule(f"!{_output_cel(READ_ONLY_SOURCES)}",
             f"the output volume must be writable, not {', '.join(READ_ONLY_SOURCES)}",
             lambda s: not _output_source_in(s, READ_ONLY_SOURCES), field="output"),
        Rule(f"self.nodes == 1 || !{_output_cel(NODE_LOCAL_SOURCES)}",
             "with more than one node the output volume must be shared by all nodes "
             "(a ReadWriteMany PVC, NFS or CSI), not emptyDir or hostPath",
             lambda s: s.nodes == 1 or not _output_source_in(s, NODE_LOCAL_SOURCES), field="output"),
        Rule("self.gpusPerNode > 0 || self.training.precision == 'fp32'", "CPU pods (gpusPerNode: 0) train in fp32",
             lambda s: s.gpusPerNode > 0 or s.training.precision == "fp32", field="training.precision"),
        Rule("!has(self.training.evalSteps) || self.data.valSize > 0",
             "evalSteps needs a validation split: set data.valSize > 0",
             lambda s: s.training.evalSteps is None or s.data.valSize > 0, field="training.evalSteps"),
        Rule("!self.metrics.enabled || self.metrics.port != self.masterPort",
             "metrics.port must differ from masterPort (both listen on the master pod)",
             lambda s: not s.metrics.enabled or s.metrics.port != s.masterPort, field="metrics.port"),
        Rule("self.metrics.enabled || (!has(self.runPolicy.stallTimeoutSeconds) && "
             "!has(self.runPolicy.startupTimeoutSeconds))",
             "stall and start-up timeouts read the trainer's metrics: set metrics.enabled",
             lambda s: s.metrics.enabled or (s.runPolicy.stallTimeoutSeconds is None
                                             and s.runPolicy.startupTimeoutSeconds is None),
             field="runPolicy"),
        # has(): network's own default ({}) is validated before its fields are defaulted
        Rule("!has(self.network) || !has(self.network.resources) || !(self.gpuResourceName in self.network.resources)",
             "the GPU resource is set by gpusPerNode, not network.resources",
             lambda s: s.gpuResourceName not in s.network.resources, field="network.resources"),
        Rule("!(has(self.method) && has(self.method.lora) && has(self.method.lora.quantizationBit) && "
             "self.method.lora.quantizationBit == 8 && has(self.deepspeed) && has(self.deepspeed.stage) && "
             "self.deepspeed.stage == 3)",
             "quantizationBit 8: ZeRO-3 shards 4-bit bitsandbytes weights only: use quantizationBit 4, or "
             "deepspeed.stage 2, 0 or unset",
             lambda s: not (s.method.lora.quantizationBit == 8 and s.deepspeed.stage == 3),
             field="method.lora.quantizationBit"),
        Rule(f"!({_FSDP} && has(self.deepspeed) && has(self.deepspeed.stage) && self.deepspeed.stage != 3)",
             "training.engine fsdp shards like ZeRO-3: leave deepspeed.stage unset or 3",
             lambda s: not (s.training.engine == FSDP and s.deepspeed.stage not in (None, 3)),
             field="deepspeed.stage"),
        Rule(f"!({_FSDP} && has(self.deepspeed) && has(self.deepspeed.offloadParams) && "
             "has(self.deepspeed.offloadOptimizer) && self.deepspeed.offloadParams != self.deepspeed.offloadOptimizer)",
             "training.engine fsdp: FSDP2's CPU offload moves parameters, gradients and optimizer states together: "
             "set deepspeed.offloadParams and offloadOptimizer alike (or leave them unset)",
             lambda s: not (s.training.engine == FSDP and None not in (s.deepspeed.offloadParams,
                                                                        s.deepspeed.offloadOptimizer)
                            and s.deepspeed.offloadParams != s.deepspeed.offloadOptimizer),
             field="deepspeed.offloadParams"),
        Rule(f"!({_FSDP} && has(self.method) && has(self.method.lora) && has(self.method.lora.quantizationBit))",
             "method.lora.quantizationBit (QLoRA) with training.engine fsdp is not built: use engine deepspeed",
             lambda s: not (s.training.engine == FSDP and s.method.lora.quantizationBit),
             field="method.lora.quantizationBit"),
        Rule("!has(self.runPolicy) || !has(self.runPolicy.resize) || self.runPolicy.resize.minNodes <= self.nodes",
             "runPolicy.resize.minNodes must not exceed nodes (the gang shrinks from nodes to it)",
             lambda s: s.runPolicy.resize is None or s.runPolicy.resize.minNodes <= s.nodes,
             field="runPolicy.resize.minNodes"),
        Rule("!has(self.scheduling) || !has(self.scheduling.workloadPriorityClassName) || "
             "has(self.scheduling.queueName)",
             "scheduling.workloadPriorityClassName is Kueue's: it needs scheduling.queueName",
             lambda s: s.scheduling.workloadPriorityClassName is None or s.scheduling.queueName is not None,
             field="scheduling.workloadPriorityClassName"),
        Rule("!has(self.runPolicy) || !has(self.runPolicy.resize) || "
             "!has(self.runPolicy.resize.growBackAfterSeconds) || !has(self.scheduling) || "
             "!has(self.scheduling.queueName)",
             "runPolicy.resize.growBackAfterSeconds does not go with scheduling.queueName: Kueue would queue the "
             "grown gang with its smaller one already stopped",
             lambda s: s.runPolicy.resize is None or s.runPolicy.resize.growBackAfterSeconds is None
             or not s.scheduling.queueName,
             field="runPolicy.resize.growBackAfterSeconds"),
        Rule("!self.env.exists(e, self.secretEnv.exists(s, s.name == e.name))",
             "a variable is set both in env and in secretEnv: keep one",
             lambda s: not {e.name for e in s.env} & {e.name for e in s.secretEnv}, field="env"),
    )


NAME_RULE = Rule(f"size(self.metadata.name) <= {MAX_NAME_LENGTH} && self.metadata.name.matches('{DNS_1035_LABEL}')",
                 f"metadata.name: must be at most {MAX_NAME_LENGTH} characters of a-z, 0-9 and '-', starting with a "
                 "letter (it names the Service and the pods' hostnames, up to <name>-worker-510)",
                 lambda name: len(name) <= MAX_NAME_LENGTH and re.match(DNS_1035_LABEL, name) is not None)


class HunyuanFineTune(BaseModel):
    """Fine-tune a Tencent Hunyuan model on one or more GPU nodes with DeepSpeed."""

    model_config = ConfigDict(extra="ignore")
    apiVersion: str = f"{GROUP}/{VERSION}"
    kind: str = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: HunyuanFineTuneSpec
    status: HunyuanFineTuneStatus = Field(default_factory=HunyuanFineTuneStatus)

    @model_validator(mode="after")
    def _name_fits_derived_names(self) -> HunyuanFineTune:
        name = self.metadata.get("name")
        if isinstance(name, str) and not NAME_RULE.holds(name):
            raise ValueError(NAME_RULE.message)
        return self
