"""Kubernetes' own formats for the strings a HunyuanFineTune carries into Kubernetes objects
(apimachinery's validation), and the pass-through objects' schema: the CRD's patterns, which
`hyft render` and the operator check with the same expressions (tests/unit/test_formats.py)."""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, Field

from hyft_trainer.rules import CEL, Rule

# Kubernetes' resource.Quantity grammar, not negative, with exponents of at most two digits (the Kubernetes
# client's parse_quantity, which the operator uses, overflows beyond): tests/unit/test_formats.py.
QUANTITY_PATTERN = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?[0-9]{1,2}))?$"
# Kubernetes' own formats for the strings that land in Kubernetes objects (apimachinery's validation).
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
QUALIFIED_NAME = "^(" + DNS_SUBDOMAIN[1:-1] + "/)?" + NAME_PART + "$"  # [prefix/]name, as label keys
LABEL_VALUE = f"^({NAME_PART})?$"
ENV_NAME = r"^[ -<>-~]+$"  # printable ASCII without '=' (Kubernetes' relaxed env var names)
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
# The Docker reference grammar: [registry[:port]/]path[:tag][@digest]; kubelet refuses anything else
# (InvalidImageName) and the pod would wait forever.
IMAGE_REFERENCE = (r"^([a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
                   r"(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                   r"(@sha256:[a-f0-9]{64})?$")
# The longest derived name is the last worker's hostname, <name>-worker-510, a DNS label (63).
MAX_NAME_LENGTH = 63 - len("-worker-510")

# core/v1 VolumeSource: a volume names exactly one of these.
VOLUME_SOURCES = (
    "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "configMap", "csi", "downwardAPI",
    "emptyDir", "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs",
    "hostPath", "image", "iscsi", "nfs", "persistentVolumeClaim", "photonPersistentDisk", "portworxVolume",
    "projected", "quobyte", "rbd", "scaleIO", "secret", "storageos", "vsphereVolume")
READ_ONLY_SOURCES = ("configMap", "secret", "downwardAPI", "projected", "image")
NODE_LOCAL_SOURCES = ("emptyDir", "hostPath", "ephemeral", "gitRepo", *READ_ONLY_SOURCES)

IMMUTABLE = {"rule": "self == oldSelf", "message": "is immutable: create a new HunyuanFineTune instead"}
# Kubernetes objects passed through to the pods unchanged (validated by the API server there).
PASSTHROUGH = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def cel(*rules: dict[str, str]) -> dict[str, Any]:
    return {CEL: list(rules)}


def one_of(volume: str, sources: tuple[str, ...]) -> str:
    return "(" + " || ".join(f"has({volume}.{s})" for s in sources) + ")"


DNS_1035_LABEL = "^[a-z]([-a-z0-9]*[a-z0-9])?$"  # a Service name


def k8s_object(model: BaseModel) -> dict[str, Any]:
    """A pass-through Kubernetes object as the user wrote it (what goes into the pod)."""
    return model.model_dump(mode="json", exclude_none=True)


QUALIFIED_KEYS = Rule(f"self.all(k, size(k) <= 317 && k.matches(r'{QUALIFIED_NAME}'))",
                      "keys must be label keys ([prefix/]name)",
                      lambda labels: all(len(k) <= 317 and re.match(QUALIFIED_NAME, k) for k in labels))
Labels = Annotated[dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]], QUALIFIED_KEYS]
