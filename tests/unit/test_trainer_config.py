"""The trainer's pure parts: config validation, the generated DeepSpeed JSON, the
rendezvous env, and checkpoint selection."""
from __future__ import annotations

import pytest

from hyft_trainer.checkpoints import mark_complete, newest_complete
from hyft_trainer.config import ConfigError, parse_config
from hyft_trainer.deepspeed_config import deepspeed_config
from hyft_trainer.launcher import rendezvous_from_env, torchrun_command

BASE = {"model_name_or_path": "/m", "data_files": [{"path": "/d.jsonl"}]}


def test_llamafactory_yaml_keys_are_accepted():
    cfg = parse_config({**BASE, "stage": "sft", "do_train": True, "dataset": "a, b", "dataset_dir": "/data",
                        "template": "small", "finetuning_type": "lora", "lora_target": "q_proj,v_proj",
                        "cutoff_len": 1024, "learning_rate": 1e-4, "num_train_epochs": 2.0})
    assert cfg.dataset == ["a", "b"] and cfg.lora_target == "q_proj,v_proj"
    assert parse_config({**BASE, "template": "hunyuan"}).template == "auto"  # detected from the tokenizer


@pytest.mark.parametrize("data, message", [
    ({**BASE, "learning_rat": 1e-4}, "learning_rat: unknown key (did you mean 'learning_rate'?)"),
    ({**BASE, "use_unsloth": True}, "use_unsloth: a LLaMA-Factory key hyft does not support"),
    ({**BASE, "bf16": True, "fp16": True}, "bf16 and fp16 are mutually exclusive"),
    ({"model_name_or_path": "/m"}, "no data"),
    ({**BASE, "zero_stage": 2, "offload_param": True}, "offload_param needs zero_stage 3"),
    ({**BASE, "stage": "dpo"}, "stage: a LLaMA-Factory key hyft does not support"),
    ({**BASE, "warmup_ratio": 1.0}, "warmup_ratio"),  # transformers would read 1.0 as one warm-up step
    ([1, 2], "expected a mapping"),
])
def test_bad_configs_name_the_problem(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        parse_config(data)


def test_generated_zero3_offload_config_is_auto_and_gathers_weights():
    ds = deepspeed_config(parse_config(BASE), world_size=2)
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_param"]["device"] == zero["offload_optimizer"]["device"] == "cpu"
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] == "auto"


def test_overrides_merge_and_a_raw_json_replaces():
    cfg = parse_config({**BASE, "deepspeed_overrides": {"zero_optimization": {"stage3_max_live_parameters": 5}}})
    assert deepspeed_config(cfg, 1)["zero_optimization"]["stage3_max_live_parameters"] == 5
    assert deepspeed_config(cfg, 1)["zero_optimization"]["stage"] == 3
    raw = parse_config({**BASE, "deepspeed": {"zero_optimization": {"stage": 2}, "train_batch_size": "auto"}})
    assert deepspeed_config(raw, 4) == {"zero_optimization": {"stage": 2}, "train_batch_size": "auto"}


def test_batch_size_mismatch_is_refused_and_plain_ddp_needs_no_deepspeed():
    cfg = parse_config({**BASE, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4,
                        "deepspeed": {"train_batch_size": 16}})
    assert deepspeed_config(cfg, 2)["train_batch_size"] == 16
    with pytest.raises(ConfigError, match=r"train_batch_size 16 != .* world size 4 \(= 32\)"):
        deepspeed_config(cfg, 4)
    ddp = parse_config({**BASE, "zero_stage": 0, "offload_optimizer": False, "offload_param": False})
    assert deepspeed_config(ddp, 1) is None and deepspeed_config(ddp, 2) is None


def test_rendezvous_env_and_its_torchrun_twins():
    plain = rendezvous_from_env({"NNODES": "4", "NODE_RANK": "3", "MASTER_ADDR": "job-master-0.job.ns.svc",
                                 "MASTER_PORT": "29500", "NPROC_PER_NODE": "8"}, gpus=8)
    twins = rendezvous_from_env({"PET_NNODES": "4", "PET_NODE_RANK": "3", "PET_MASTER_ADDR": "job-master-0.job.ns.svc",
                                 "PET_MASTER_PORT": "29500", "PET_NPROC_PER_NODE": "8"}, gpus=0)
    assert plain == twins
    cmd = torchrun_command(plain, "/etc/hyft/train.yaml")
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert cmd[cmd.index("--node_rank") + 1] == "3" and cmd[cmd.index("--nproc_per_node") + 1] == "8"
    alone = rendezvous_from_env({}, gpus=0)
    assert (alone.nnodes, alone.node_rank, alone.nproc_per_node, alone.master_addr) == (1, 0, 1, "127.0.0.1")
    with pytest.raises(ConfigError, match="bad rendezvous"):
        rendezvous_from_env({"NNODES": "two"}, gpus=0)


def test_only_complete_checkpoints_are_resumed(tmp_path):
    for step in (5, 10, 15):
        (tmp_path / f"checkpoint-{step}").mkdir()
    mark_complete(tmp_path / "checkpoint-5")
    mark_complete(tmp_path / "checkpoint-10")
    assert newest_complete(tmp_path).name == "checkpoint-10"  # 15 was cut short
    assert newest_complete(tmp_path / "missing") is None
