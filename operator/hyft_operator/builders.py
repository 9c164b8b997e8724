"""Pure builders: a HunyuanFineTune -> the objects the operator creates.

The headless Service, the ConfigMap holding the trainer config (the trainer's own
schema, read back by `hyft train`), and the master/worker Pods of the pod
contract (README, "How a job runs"; hyft_trainer/contract.py). No API calls: `hyft render` and `hyft run --local` use
the same functions as the operator.

Over 300 lines: the pod contract is one document (env, volumes, probes, scheduling of one pod),
split it and a reader follows one pod across files.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from hyft_trainer import data_cache, keys
from hyft_trainer.config import ConfigError, TrainerConfig, dump_config
from hyft_trainer.contract import (
    ATTEMPT_ENV,
    CONFIG_ENV,
    GPUS_PER_NODE_ENV,
    HIDE_GPUS_ENV,
    PLANNED_NODES_ENV,
    POD_NAME_ENV,
    RENDEZVOUS_ENV,
)
from hyft_trainer.deepspeed_config import settle
from hyft_trainer.knobs import BY_KEY, PATH, DataFile
from hyft_trainer.llamafactory_keys import off, translate
from hyft_trainer.problems import describe

from . import sizing
from .api import GROUP, KIND, VERSION, HunyuanFineTune, VolumePath
from .formats import k8s_object
from .kueue import NO_PLACEMENT, Placement
from .markers import Trainer
from .settings import OperatorSettings

LABEL_JOB = "hyft.io/job-name"
LABEL_ROLE = "hyft.io/role"
LABEL_RANK = "hyft.io/node-rank"
LABEL_ATTEMPT = "hyft.io/attempt"
VOLUME_ROOT = "/hyft/volumes"
CONFIG_DIR = "/etc/hyft"
CONFIG_KEY = "train.yaml"
CONTAINER = "trainer"
RUN_AS = 1000  # the trainer image's non-root user


@dataclass(frozen=True)
class OperatorDefaults:
    """Operator-level settings that fill what a spec leaves open (never written into the spec)."""

    image: str = OperatorSettings.model_fields["trainer_image"].default
    image_pull_policy: str = OperatorSettings.model_fields["trainer_image_pull_policy"].default


def pod_name(job_name: str, rank: int) -> str:
    return f"{job_name}-master-0" if rank == 0 else f"{job_name}-worker-{rank - 1}"


def role(rank: int) -> str:
    return "master" if rank == 0 else "worker"


def config_map_name(job_name: str) -> str:
    return f"{job_name}-config"


def master_address(job_name: str, namespace: str) -> str:
    return f"{pod_name(job_name, 0)}.{job_name}.{namespace}.svc"


def volume_path(ref: VolumePath) -> str:
    return posixpath.normpath(posixpath.join(VOLUME_ROOT, ref.volume, ref.path))


def labels(job_name: str, rank: int | None = None, attempt: int | None = None) -> dict[str, str]:
    out = {LABEL_JOB: job_name, "app.kubernetes.io/name": "hyft-trainer",
           "app.kubernetes.io/instance": job_name, "app.kubernetes.io/managed-by": "hyft-operator"}
    if rank is not None:
        out[LABEL_ROLE] = role(rank)
        out[LABEL_RANK] = str(rank)
    if attempt is not None:
        out[LABEL_ATTEMPT] = str(attempt)
    return out


def owner_reference(job: HunyuanFineTune) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": job.metadata["name"],
            "uid": job.metadata["uid"], "controller": True, "blockOwnerDeletion": True}


def _metadata(job: HunyuanFineTune, name: str, extra_labels: dict[str, str] | None = None,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": job.metadata["namespace"],
                            "labels": {**labels(job.metadata["name"]), **(extra_labels or {})}}
    if annotations:
        meta["annotations"] = annotations
    if job.metadata.get("uid"):
        meta["ownerReferences"] = [owner_reference(job)]
    return meta


def service(job: HunyuanFineTune) -> dict[str, Any]:
    """Headless, publishing not-ready addresses: MASTER_ADDR resolves before the master is Ready."""
    name = job.metadata["name"]
    ports = [{"name": "rendezvous", "port": job.spec.masterPort, "targetPort": job.spec.masterPort}]
    if job.spec.metrics.enabled:
        ports.append({"name": "metrics", "port": job.spec.metrics.port, "targetPort": job.spec.metrics.port})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(job, name),
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {LABEL_JOB: name}, "ports": ports},
    }


class InvalidSpec(ValueError):
    """A spec the API server accepts but the trainer would refuse (what CEL cannot see, such as
    DeepSpeed overrides): `hyft render` refuses it, the operator fails the job with reason InvalidSpec."""


def trainer_config(job: HunyuanFineTune) -> TrainerConfig:
    """The trainer config of a job, checked as the trainer will check it at start-up."""
    spec = job.spec
    try:
        config = spec_config(job)
        resolved, decision, _ = sizing.offload_decision(job, config)
        config = resolved if decision.decided else config  # else auto: each node decides
        settle(resolved, world_size=spec.nodes * max(spec.gpusPerNode, 1), on_gpu=spec.gpusPerNode > 0)
    except ValidationError as err:
        raise InvalidSpec("spec: the trainer refuses its config: " + "; ".join(describe(err, whole="config"))) from None
    except ConfigError as err:  # only the DeepSpeed overrides can contradict the rest of a valid spec
        raise InvalidSpec(f"spec.deepspeed.overrides: {err}") from None
    return config


DDP_TIMEOUT = TrainerConfig.model_fields["ddp_timeout"].default


def _marked(model: BaseModel) -> dict[str, Any]:
    """The spec fields marked Trainer(key), anywhere in the spec, under their trainer keys; one left
    unset (null) is left to the trainer's default."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        key = next((m.key for m in field.metadata if isinstance(m, Trainer)), None)
        if key:
            if value is not None:
                out[key] = value
        elif isinstance(value, BaseModel):
            out.update(_marked(value))
    return out


# Trainer keys the spec sets by a conversion, and the spec field to write instead
CONVERTED = {
    "model_name_or_path": "spec.model", "lora_target": "spec.method.lora.targetModules",
    "data_files": "spec.data.files", "dataset_dir": "spec.data.datasetInfo", "max_steps": "spec.training.maxSteps",
    "bf16": "spec.training.precision", "fp16": "spec.training.precision", "output_dir": "spec.output",
    "data_cache_dir": "spec.output (hyft places it there)", "metrics_port": "spec.metrics",
    "job_name": "metadata.name", "deepspeed": "spec.deepspeed.overrides",
}


def training_arguments(spec) -> dict[str, Any]:
    """spec.training.arguments as trainer keys, judged as `hyft train` judges a config's keys; a key that
    a spec field sets, or a path (files reach the pods through spec.volumes), is refused naming the field.
    Keys without effect are dropped."""
    data, problems = translate(spec.training.arguments)
    kept, judged, _ = keys.judge(data)
    problems += judged
    for key, value in kept.items():
        knob = BY_KEY.get(key)
        if field := (f"spec.{knob.spec}" if knob and knob.spec else CONVERTED.get(key)):
            problems.append(f"{key}: set {field} instead")
        elif knob and PATH in knob.checks and not off(value):
            problems.append(f"{key}: a path in the pod: put the file on a volume and use the spec's fields")
        else:
            declared = TrainerConfig.model_fields[key]
            try:
                TypeAdapter(Annotated[declared.annotation, declared]).validate_python(value)
            except ValidationError as err:
                problems += describe(err, at=key)
    if problems:
        raise InvalidSpec("; ".join(f"spec.training.arguments.{p}" for p in problems))
    return kept


def spec_config(job: HunyuanFineTune, with_arguments: bool = True) -> TrainerConfig:
    """The spec as a trainer config, unchecked and offload undecided: the marked fields as they are, the
    ones that need a conversion, and spec.training.arguments (which sizing leaves out: the memory
    estimate reads spec fields only, and a running job whose edit made them invalid is still sized)."""
    spec = job.spec
    data, training = spec.data, spec.training
    stall = spec.runPolicy.stallTimeoutSeconds
    converted = dict(
        model_name_or_path=volume_path(spec.model),
        lora_target=",".join(spec.method.lora.targetModules),
        data_files=[DataFile(path=volume_path(f), format=f.format) for f in data.files],
        dataset_dir=volume_path(data.datasetInfo) if data.datasetInfo else None,
        max_steps=training.maxSteps or -1,
        bf16=training.precision == "bf16",
        fp16=training.precision == "fp16",
        output_dir=volume_path(spec.output),
        # on the output volume's root: every job that writes there shares prepared data
        data_cache_dir=volume_path(VolumePath(volume=spec.output.volume, path=data_cache.FOLDER)),
        metrics_port=spec.metrics.port if spec.metrics.enabled else None,
        job_name=job.metadata["name"],
        **({"ddp_timeout": min(DDP_TIMEOUT, max(1, stall * 4 // 5))} if stall else {}),
    )
    config = TrainerConfig(**{**_marked(spec), **converted, **(training_arguments(spec) if with_arguments else {})})
    if with_arguments:  # said by the trainer at start-up, as `hyft train` says them
        config._without_effect = keys.without_effect(translate(spec.training.arguments)[0])
    return config


def check(job: HunyuanFineTune) -> None:
    """What `hyft render` and the operator check beyond the API models: the trainer config as the
    trainer checks it, and the pass-through Kubernetes objects as the Kubernetes client's own
    models read them (types, unknown fields). Raises InvalidSpec naming the spec field."""
    from kubernetes import client  # slow to import, and only the operator side needs it
    from kubernetes.utils import parse_quantity

    spec = job.spec
    unreadable = []
    for where, text in quantities(spec):
        try:
            parse_quantity(text)
        except ValueError as err:
            unreadable.append(f"{where}: {text!r} is not a quantity the operator can read ({err})")
    if unreadable:  # before the trainer config, whose sizing reads them
        raise InvalidSpec("; ".join(unreadable))
    trainer_config(job)
    objects = [("spec.scheduling.affinity", client.V1Affinity, spec.scheduling.affinity)] * bool(
        spec.scheduling.affinity)
    objects += [(f"spec.scheduling.tolerations[{i}]", client.V1Toleration, t)
                for i, t in enumerate(spec.scheduling.tolerations)]
    objects += [(f"spec.env[{i}]", client.V1EnvVar, k8s_object(e)) for i, e in enumerate(spec.env)]
    objects += [(f"spec.volumes[{i}]", client.V1Volume, k8s_object(v)) for i, v in enumerate(spec.volumes)]
    problems = []
    for where, model, value in objects:
        try:
            model.model_validate(value)
        except ValidationError as err:
            problems += describe(err, at=where)
    if problems:
        raise InvalidSpec("; ".join(problems))


def quantities(spec) -> list[tuple[str, str]]:
    """(spec path, text) of every Kubernetes quantity in the spec."""
    out = [(f"spec.{name}", text) for name in ("cpu", "memory", "shmSize", "gpuMemory")
           if (text := getattr(spec, name))]
    return out + [(f"spec.network.resources[{key!r}]", text) for key, text in spec.network.resources.items()]


def config_map(job: HunyuanFineTune) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job, config_map_name(job.metadata["name"])),
        "data": {CONFIG_KEY: dump_config(trainer_config(job))},
    }


def rendezvous_env(nnodes: int, node_rank: int, master_addr: str, master_port: int,
                   nproc_per_node: int) -> list[dict[str, str]]:
    """The pod contract's env, with torchrun's PET_* twins. Never RANK/WORLD_SIZE: torchrun
    derives those per process."""
    values = dict(zip(RENDEZVOUS_ENV, (nnodes, node_rank, master_addr, master_port, nproc_per_node), strict=True))
    env = [{"name": k, "value": str(v)} for k, v in values.items()]
    return env + [{"name": f"PET_{k}", "value": str(v)} for k, v in values.items()]


def _resources(job: HunyuanFineTune) -> dict[str, Any]:
    spec = job.spec
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if spec.gpusPerNode:
        requests[spec.gpuResourceName] = limits[spec.gpuResourceName] = str(spec.gpusPerNode)
    if spec.cpu:
        requests["cpu"] = spec.cpu
    if spec.memory:
        requests["memory"] = limits["memory"] = spec.memory
    for name, quantity in spec.network.resources.items():  # extended resources: request == limit
        requests[name] = limits[name] = quantity
    out = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _tolerations(job: HunyuanFineTune) -> list[dict[str, Any]]:
    tolerations = list(job.spec.scheduling.tolerations)
    gpu = job.spec.gpuResourceName
    # GPU pools are commonly tainted with the GPU resource name; tolerate it unless the user chose.
    if job.spec.gpusPerNode and not any(t.get("key") == gpu for t in tolerations):
        tolerations.append({"key": gpu, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"


def _affinity(job: HunyuanFineTune) -> dict[str, Any] | None:
    """The user's affinity, plus one pod of the job per node (scheduling.onePodPerNode; default: GPU jobs
    whose affinity has no podAntiAffinity of its own)."""
    spec, affinity = job.spec, dict(job.spec.scheduling.affinity or {})
    spread = spec.scheduling.onePodPerNode
    if spread is None:
        spread = spec.gpusPerNode > 0 and "podAntiAffinity" not in affinity
    if spread and spec.nodes > 1:
        anti = dict(affinity.get("podAntiAffinity") or {})
        required = "requiredDuringSchedulingIgnoredDuringExecution"
        anti[required] = [*anti.get(required, []), {"labelSelector": {"matchLabels": {LABEL_JOB: job.metadata["name"]}},
                                                    "topologyKey": HOSTNAME_TOPOLOGY}]
        affinity["podAntiAffinity"] = anti
    return affinity or None


def pod(job: HunyuanFineTune, rank: int, attempt: int, defaults: OperatorDefaults = OperatorDefaults(),
        nodes: int | None = None, placement: Placement = NO_PLACEMENT) -> dict[str, Any]:
    """nodes: the attempt's gang size, where runPolicy.resize shrank it (default spec.nodes). placement: what
    Kueue's admission adds to the rank's pod set (kueue.placement)."""
    spec = job.spec
    nodes = nodes or spec.nodes
    name = job.metadata["name"]
    namespace = job.metadata["namespace"]
    # hyft's own labels win
    pod_labels = {**spec.podMetadata.labels, **placement.labels, **labels(name, rank, attempt)}
    annotations = {**spec.podMetadata.annotations, **placement.annotations}

    env = rendezvous_env(nodes, rank, master_address(name, namespace), spec.masterPort, spec.gpusPerNode or 1)
    env += [
        {"name": CONFIG_ENV, "value": f"{CONFIG_DIR}/{CONFIG_KEY}"},
        {"name": PLANNED_NODES_ENV, "value": str(spec.nodes)},  # the trainer keeps the global batch it plans
        {"name": ATTEMPT_ENV, "value": str(attempt)},
        {"name": POD_NAME_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": GPUS_PER_NODE_ENV, "value": str(spec.gpusPerNode)},
    ]
    env += [{"name": s.name, "valueFrom": {"secretKeyRef": {"name": s.secretName, "key": s.key}}}
            for s in spec.secretEnv]
    env += [k8s_object(e) for e in spec.env]
    if not spec.gpusPerNode:  # last, so that it wins: a CPU pod on a GPU node must not grab the node's GPUs
        env += [{"name": k, "value": v} for k, v in HIDE_GPUS_ENV.items()]

    ports = [{"name": "metrics", "containerPort": spec.metrics.port}] if spec.metrics.enabled else []
    if rank == 0:
        ports.insert(0, {"name": "rendezvous", "containerPort": spec.masterPort})
    if spec.network.hostNetwork:  # the node's ports: declared, so the scheduler keeps their users apart
        ports = [{**p, "hostPort": p["containerPort"]} for p in ports]

    mounts = [{"name": v.name, "mountPath": f"{VOLUME_ROOT}/{v.name}"} for v in spec.volumes]
    mounts += [{"name": "hyft-config", "mountPath": CONFIG_DIR, "readOnly": True},
               {"name": "dshm", "mountPath": "/dev/shm"}]
    volumes = [k8s_object(v) for v in spec.volumes] + [
        {"name": "hyft-config", "configMap": {"name": config_map_name(name)}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shmSize}},
    ]

    container = {
        "name": CONTAINER,
        "image": spec.image or defaults.image,
        "imagePullPolicy": spec.imagePullPolicy or defaults.image_pull_policy,
        "command": ["hyft", "train", f"{CONFIG_DIR}/{CONFIG_KEY}"],
        "env": env,
        "ports": ports,
        "resources": _resources(job),
        "volumeMounts": mounts,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostname": pod_name(name, rank),
        "subdomain": name,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": spec.runPolicy.checkpointGracePeriodSeconds,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    scheduling = spec.scheduling
    if node_selector := {**scheduling.nodeSelector, **placement.node_selector}:
        pod_spec["nodeSelector"] = node_selector
    tolerations = _tolerations(job)
    if tolerations := tolerations + [t for t in placement.tolerations if t not in tolerations]:
        pod_spec["tolerations"] = tolerations
    if affinity := _affinity(job):
        pod_spec["affinity"] = affinity
    if scheduling.runtimeClassName:
        pod_spec["runtimeClassName"] = scheduling.runtimeClassName
    if spec.network.hostNetwork:
        pod_spec["hostNetwork"] = True
        pod_spec["dnsPolicy"] = "ClusterFirstWithHostNet"  # MASTER_ADDR is a cluster name
    if scheduling.priorityClassName:
        pod_spec["priorityClassName"] = scheduling.priorityClassName
    if scheduling.schedulerName:
        pod_spec["schedulerName"] = scheduling.schedulerName
    if spec.imagePullSecrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in spec.imagePullSecrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(job, pod_name(name, rank), pod_labels, annotations or None),
        "spec": pod_spec,
    }


def gang(job: HunyuanFineTune, attempt: int, defaults: OperatorDefaults = OperatorDefaults()) -> list[dict]:
    return [pod(job, rank, attempt, defaults) for rank in range(job.spec.nodes)]


def render_all(job: HunyuanFineTune, attempt: int = 0, defaults: OperatorDefaults = OperatorDefaults()
               ) -> list[dict[str, Any]]:
    """Everything the operator creates for a job, in creation order."""
    return [service(job), config_map(job), *gang(job, attempt, defaults)]
