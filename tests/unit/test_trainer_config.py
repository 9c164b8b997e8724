"""The trainer's pure parts: config validation, the generated DeepSpeed JSON, the
rendezvous env, and checkpoint selection."""
from __future__ import annotations

import pytest

from hyft_trainer.checkpoints import mark_complete, newest_complete, readable_by_all
from hyft_trainer.config import ConfigError, parse_config
from hyft_trainer.deepspeed_config import settle
from hyft_trainer.launcher import rendezvous_from_env, torchrun_command
from hyft_trainer.llamafactory_keys import NO_EFFECT
from tests.llamafactory_corpus import CORPUS, render

BASE = {"model_name_or_path": "/m", "data_files": [{"path": "/d.jsonl"}], "zero_stage": 3, "offload_optimizer": True,
        "offload_param": True}


def deepspeed_config(config, world_size, on_gpu=True):
    return settle(config, world_size, on_gpu).deepspeed


def test_llamafactory_yaml_keys_are_accepted():
    cfg = parse_config({**BASE, "stage": "sft", "do_train": True, "dataset": "a, b", "dataset_dir": "/data",
                        "template": "small", "finetuning_type": "lora", "lora_target": "q_proj,v_proj",
                        "cutoff_len": 1024, "learning_rate": 1e-4, "num_train_epochs": 2.0})
    assert cfg.dataset == ["a", "b"] and cfg.lora_target == "q_proj,v_proj"
    assert parse_config({**BASE, "template": "hunyuan"}).template == "auto"  # detected from the tokenizer


@pytest.mark.parametrize("name", CORPUS)
def test_every_key_of_the_llamafactory_corpus_is_applied_or_reported_once(name):
    text, _ = CORPUS[name]
    data = render(text, model="/m", dataset_dir="/data", deepspeed="/ds.json", output="/out")
    config = parse_config(data)
    reported = [note.split(":")[0] for note in config.notes]
    assert len(reported) == len(set(reported))  # once each
    translated = {"stage", "do_train", "template", "dataset"}  # read as LLaMA-Factory means them
    for key in data:
        assert key in reported or key in config.model_fields_set or key in translated, key
        if key in reported:
            assert key in NO_EFFECT
    assert "overwrite_output_dir" in reported  # it would mean "start over": hyft says why it resumes instead
    assert config.trust_remote_code and config.max_samples == data["max_samples"] and config.ddp_timeout == 180000000
    assert config.report_to == [] and config.resume_from_checkpoint is None


@pytest.mark.parametrize("data, message", [
    ({**BASE, "learning_rat": 1e-4}, "learning_rat: unknown key (did you mean 'learning_rate'?)"),
    ({**BASE, "preprocesing_num_workers": 4}, "did you mean 'preprocessing_num_workers'?"),
    ({**BASE, "use_unsloth": True}, "use_unsloth: unsloth is not supported"),
    ({**BASE, "bf16": True, "fp16": True}, "bf16 and fp16 are mutually exclusive"),
    ({"model_name_or_path": "/m"}, "no data"),
    ({**BASE, "zero_stage": 2, "offload_param": True}, "offload_param needs zero_stage 3"),
    ({**BASE, "stage": "dpo"}, "stage: hyft trains supervised fine-tuning only (stage: sft), not 'dpo'"),
    ({**BASE, "do_train": False}, "do_train: hyft always trains"),
    ({**BASE, "report_to": "wandb"}, "report_to: wandb is not in the hyft image; use tensorboard or none"),
    ({**BASE, "eval_dataset": "x"}, "eval_dataset: separate evaluation datasets are not supported: use val_size"),
    ({**BASE, "save_only_model": True, "early_stopping_steps": 2}, "save_only_model and early_stopping_steps"),
    ({**BASE, "warmup_ratio": 1.0}, "warmup_ratio"),  # transformers would read 1.0 as one warm-up step
    ({**BASE, "finetuning_type": "full", "merge_lora": True}, "merge_lora is for finetuning_type lora: a full run"),
    ({**BASE, "lr_scheduler_type": "cosine_with_min_lr"}, "cosine_with_min_lr needs its floor"),
    ({**BASE, "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": "{x"}, "lr_scheduler_kwargs: not JSON"),
    ([1, 2], "expected a mapping"),
])
def test_bad_configs_name_the_problem(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        parse_config(data)


@pytest.mark.parametrize("key, hint", [
    ("max_tokens", None), ("output_path", None), ("max_token_budget", None),  # share a word with a key only
    ("learning_rat", "learning_rate"), ("num_train_epoch", "num_train_epochs"), ("lora_rnak", "lora_rank"),
])
def test_the_did_you_mean_hint_fires_on_a_typo_only(key, hint):
    """max_tokens is not a typo of max_steps, nor output_path of output_dir."""
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, key: 5})
    assert (f"(did you mean {hint!r}?)" in str(err.value)) if hint else "did you mean" not in str(err.value)


def test_off_values_of_refused_features_and_the_llamafactory_spellings_are_accepted():
    config = parse_config({**BASE, "use_unsloth": False, "quantization_bit": None, "neat_packing": True,
                           "report_to": ["none", "tensorboard"], "average_tokens_across_devices": True})
    assert config.packing and config.report_to == ["tensorboard"] and not config.notes
    assert parse_config({**BASE, "report_to": "all"}).report_to == ["tensorboard"]


def test_a_deepspeed_value_set_in_one_place_is_taken_and_a_conflict_names_both_places():
    brought = {"bf16": {"enabled": True}, "gradient_clipping": 0.5, "zero_optimization": {"stage": 3}}
    settled = settle(parse_config({**BASE, "deepspeed": brought}), world_size=2, on_gpu=True)
    assert settled.config.bf16 and settled.config.max_grad_norm == 0.5
    assert "max_grad_norm: 0.5, from deepspeed gradient_clipping" in settled.notes
    with pytest.raises(ConfigError, match=r'deepspeed bf16.enabled is true but bf16 is false: make them agree'):
        settle(parse_config({**BASE, "deepspeed": brought, "bf16": False}), 2, on_gpu=True)
    with pytest.raises(ConfigError, match=r"deepspeed train_micro_batch_size_per_gpu is 4 but "
                                          r"per_device_train_batch_size is 2"):
        settle(parse_config({**BASE, "per_device_train_batch_size": 2,
                             "deepspeed": {"train_micro_batch_size_per_gpu": 4}}), 1, on_gpu=True)


def test_half_precision_without_a_gpu_is_turned_off_in_both_places_with_one_note():
    settled = settle(parse_config({**BASE, "bf16": True, "deepspeed": {"bf16": {"enabled": True}}}), 1, on_gpu=False)
    assert not settled.config.bf16 and settled.deepspeed["bf16"]["enabled"] is False
    assert settled.notes == ("bf16: off, no GPU here: training in float32 (config and DeepSpeed JSON)",)
    on_gpu = settle(parse_config({**BASE, "bf16": True}), 1, on_gpu=True)
    assert on_gpu.config.bf16 and on_gpu.deepspeed["bf16"]["enabled"] == "auto" and not on_gpu.notes


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
    cmd = torchrun_command(plain, "/etc/hyft/train.yaml", join_timeout=900)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert cmd[cmd.index("--rdzv_conf") + 1] == "timeout=900"  # the master waits this long for every node
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
    mark_complete(tmp_path / "checkpoint-15", resumable=False)  # save_only_model: no optimizer state
    assert newest_complete(tmp_path).name == "checkpoint-10"


def test_what_training_writes_is_made_readable_by_every_uid(tmp_path):
    """safetensors writes through a private temporary file: its files land 0600 whatever the umask."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "checkpoint-3"
    (folder / "global_step3").mkdir(parents=True)
    folder.chmod(0o700)
    save_file({"w": torch.zeros(2)}, folder / "adapter_model.safetensors")
    assert (folder / "adapter_model.safetensors").stat().st_mode & 0o077 == 0
    (folder / "link").symlink_to("/etc/hostname")  # not followed: the target is not ours to change
    mark_complete(folder)
    for path in (folder, folder / "global_step3", folder / "adapter_model.safetensors", folder / "COMPLETE"):
        want = 0o755 if path.is_dir() else 0o644
        assert path.stat().st_mode & want == want, path
    assert readable_by_all(tmp_path / "gone") == []


@pytest.mark.parametrize("brought, on_gpu, nvcc, torch_adam", [
    ({"optimizer": {"type": "AdamW", "params": {"lr": "auto"}}, "zero_optimization": {"stage": 2}}, True, False, True),
    ({"optimizer": {"type": "Adam", "params": {}}, "zero_optimization": {"stage": 3}}, True, False, True),
    ({"optimizer": {"type": "AdamW", "params": {}}, "zero_optimization": {"stage": 2}}, True, True, False),  # nvcc
    ({"optimizer": {"type": "AdamW", "params": {}}, "zero_optimization": {"stage": 2}}, False, False, False),  # CPU
    ({"optimizer": {"type": "AdamW", "params": {}},  # CPU-Adam, no FusedAdam
      "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}, True, False, False),
    ({"optimizer": {"type": "Lion", "params": {}}, "zero_optimization": {"stage": 2}}, True, False, False),
    ({"zero_optimization": {"stage": 2}}, True, False, False),  # the Trainer's own optimizer
])
def test_a_brought_fused_adam_without_nvcc_is_torchs_fused_adamw_with_a_note(brought, on_gpu, nvcc, torch_adam):
    settled = settle(parse_config({**BASE, "deepspeed": brought}), 1, on_gpu=on_gpu, nvcc=nvcc)
    params = (settled.deepspeed.get("optimizer") or {}).get("params", {})
    assert bool(params.get("torch_adam")) == torch_adam and bool(params.get("fused")) == torch_adam
    assert any("torch's fused AdamW instead of DeepSpeed's FusedAdam" in n for n in settled.notes) == torch_adam


def test_overlap_comm_is_deepspeeds_default_on_gpu_and_off_on_cpu():
    assert "overlap_comm" not in settle(parse_config(BASE), 1, on_gpu=True).deepspeed["zero_optimization"]
    assert settle(parse_config(BASE), 1, on_gpu=False).deepspeed["zero_optimization"]["overlap_comm"] is False
