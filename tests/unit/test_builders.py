"""Builders: golden YAML for every example, and the pod contract spelled out."""
from __future__ import annotations

import os

import pytest
import yaml

from hyft_operator import api, builders
from hyft_trainer.config import parse_config
from tests.helpers import EXAMPLES, ROOT, load_example

GOLDEN = ROOT / "tests" / "unit" / "golden"


class _ReadableDumper(yaml.SafeDumper):
    """Multi-line strings (the trainer config) as literal blocks, so golden diffs are readable."""


_ReadableDumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def job_from(path, namespace="research"):
    return api.HunyuanFineTune.model_validate(load_example(path, namespace=namespace))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_rendered_objects_match_golden(path):
    rendered = yaml.dump_all(builders.render_all(job_from(path)), Dumper=_ReadableDumper, sort_keys=True)
    golden = GOLDEN / path.name
    if os.environ.get("HYFT_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"no golden file: run HYFT_UPDATE_GOLDEN=1 pytest {__file__}"
    assert rendered == golden.read_text(), f"{path.name}: rendering changed; review, then HYFT_UPDATE_GOLDEN=1"


def env_of(pod):
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def test_two_node_gang_follows_the_pod_contract():
    job = job_from(ROOT / "examples" / "hunyuan-2node-full-zero3.yaml")
    pods = builders.gang(job, attempt=3)
    assert [p["metadata"]["name"] for p in pods] == ["hunyuan-7b-full-master-0", "hunyuan-7b-full-worker-0"]
    for rank, pod in enumerate(pods):
        env = env_of(pod)
        for prefix in ("", "PET_"):
            assert env[f"{prefix}NNODES"] == "2"
            assert env[f"{prefix}NODE_RANK"] == str(rank)
            assert env[f"{prefix}MASTER_ADDR"] == "hunyuan-7b-full-master-0.hunyuan-7b-full.research.svc"
            assert env[f"{prefix}MASTER_PORT"] == "29500"
            assert env[f"{prefix}NPROC_PER_NODE"] == "8"
        assert "RANK" not in env and "WORLD_SIZE" not in env
        spec = pod["spec"]
        assert spec["hostname"] == pod["metadata"]["name"] and spec["subdomain"] == "hunyuan-7b-full"
        assert spec["restartPolicy"] == "Never"
        labels = pod["metadata"]["labels"]
        assert labels["hyft.io/role"] == ("master" if rank == 0 else "worker")
        assert labels["hyft.io/node-rank"] == str(rank) and labels["hyft.io/attempt"] == "3"
        assert pod["metadata"]["ownerReferences"][0]["controller"] is True
        container = spec["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert container["resources"]["limits"]["memory"] == "128Gi"
        shm = next(v for v in spec["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
        assert spec["priorityClassName"] == "training-high"
        assert spec["terminationGracePeriodSeconds"] == 600
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # the user's own GPU toleration is not duplicated
    assert len(pods[0]["spec"]["tolerations"]) == 1


def test_headless_service_resolves_master_before_ready():
    svc = builders.service(job_from(ROOT / "examples" / "minimal.yaml"))
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"hyft.io/job-name": "minimal"}


def test_config_map_holds_exactly_what_the_trainer_reads():
    job = job_from(ROOT / "examples" / "hunyuan-1.8b-lora.yaml")
    text = builders.config_map(job)["data"]["train.yaml"]
    config = parse_config(yaml.safe_load(text))
    assert config == builders.trainer_config(job)
    assert config.model_name_or_path == "/hyft/volumes/models/Hunyuan-1.8B-Instruct"
    assert config.dataset == ["support_chats", "reasoning_cot"]
    assert config.dataset_dir == "/hyft/volumes/data/llamafactory-data"
    assert (config.finetuning_type, config.lora_rank, config.lora_alpha) == ("lora", 16, 32)
    assert config.bf16 and not config.fp16
    assert config.output_dir == "/hyft/volumes/data/runs/hunyuan-1-8b-lora"
    # the stage and offload left to auto: decided here (an H100 by the nodeSelector, spec.memory): plain DDP
    assert (config.zero_stage, config.offload_optimizer, config.offload_param, config.gradient_checkpointing) == \
        (0, False, False, False)


def test_training_arguments_reach_the_trainer_as_its_own_keys():
    """spec.training.arguments: passed keys and LLaMA-Factory's spellings reach the ConfigMap as the trainer
    reads them (the round trip keeps them set, so they go on to TrainingArguments); keys without effect
    reach it as written, so that the trainer says at start-up that they have none."""
    from hyft_trainer.config import passed_arguments

    body = load_example(ROOT / "examples" / "hunyuan-1.8b-lora.yaml", namespace="research")
    body["spec"]["training"]["arguments"] = {"optim": "adamw_torch", "adam_beta2": 0.95, "warmup_steps": 10,
                                             "use_reentrant_gc": False, "temperature": 0.7, "lora_target": "x"}
    body["spec"]["training"]["warmupRatio"] = 0.0  # warmup_steps is the same setting
    with pytest.raises(builders.InvalidSpec, match=r"spec.training.arguments.lora_target: set "
                                                   r"spec.method.lora.targetModules instead"):
        builders.check(api.HunyuanFineTune.model_validate(body))
    del body["spec"]["training"]["arguments"]["lora_target"]
    job = api.HunyuanFineTune.model_validate(body)
    config = parse_config(yaml.safe_load(builders.config_map(job)["data"]["train.yaml"]))
    assert passed_arguments(config) == {"optim": "adamw_torch", "adam_beta2": 0.95, "warmup_steps": 10,
                                        "activation_checkpointing_kwargs": {"use_reentrant": False}}
    assert "temperature: 0.7" in builders.config_map(job)["data"]["train.yaml"]
    assert [n for n in config.notes if n.startswith("temperature: has no effect here")]
    assert "temperature" not in config.model_dump()


def test_cpu_job_requests_no_gpu_and_runs_one_process():
    doc = load_example(ROOT / "examples" / "minimal.yaml")
    doc["spec"].update(gpusPerNode=0, training={"precision": "fp32"})
    pod = builders.pod(api.HunyuanFineTune.model_validate(doc), 0, 0)
    assert "nvidia.com/gpu" not in str(pod["spec"]["containers"][0]["resources"])
    assert env_of(pod)["NPROC_PER_NODE"] == "1"
    assert "tolerations" not in pod["spec"]


def test_secret_env_uses_secret_refs_and_user_env_follows_the_contract():
    job = job_from(ROOT / "examples" / "hunyuan-1.8b-lora.yaml")
    env = builders.pod(job, 0, 0)["spec"]["containers"][0]["env"]
    token = next(e for e in env if e["name"] == "HF_TOKEN")
    assert token == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
