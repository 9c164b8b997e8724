"""engine fsdp: LLaMA-Factory's, transformers' and accelerate's FSDP keys read as hyft's settings, the
checks that keep FSDP2 what it is, its offload decision and the arguments transformers gets."""
from __future__ import annotations

import re

import pytest

from hyft_trainer import fsdp, keys, offload
from hyft_trainer.choices import SIZES
from hyft_trainer.config import ConfigError, parse_config
from hyft_trainer.deepspeed_config import settle
from hyft_trainer.estimate import GIB, Shape
from hyft_trainer.worker import training_arguments
from tests.unit.test_knobs import accelerate_state  # noqa: F401  (a fixture)

BASE = {"model_name_or_path": "/m", "data_files": [{"path": "/d.jsonl"}]}


@pytest.mark.parametrize("brought, settings, fsdp_config", [
    # LLaMA-Factory's / transformers' fsdp key
    ({"fsdp": "full_shard auto_wrap"}, {}, {"reshard_after_forward": True}),
    ({"fsdp": ["shard_grad_op", "auto_wrap", "offload"]}, {"offload_param": True, "offload_optimizer": True},
     {"reshard_after_forward": False}),
    # transformers' fsdp_config, FSDP2
    ({"fsdp": True, "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["HunYuanDenseV1DecoderLayer"],
                                    "activation_checkpointing": True, "cpu_ram_efficient_loading": True}},
     {"gradient_checkpointing": True},
     {"version": 2, "transformer_layer_cls_to_wrap": ["HunYuanDenseV1DecoderLayer"],
      "cpu_ram_efficient_loading": True}),
    # an accelerate config's FSDP1 block, pasted: its keys translated or said to have no effect
    ({"fsdp": "full_shard", "fsdp_config": {"fsdp_version": 1, "fsdp_sharding_strategy": "FULL_SHARD",
                                            "fsdp_offload_params": False, "fsdp_backward_prefetch": "BACKWARD_PRE",
                                            "fsdp_state_dict_type": "FULL_STATE_DICT", "fsdp_use_orig_params": True}},
     {"offload_param": False, "offload_optimizer": False},
     {"reshard_after_forward": True, "version": 1, "backward_prefetch": "BACKWARD_PRE",
      "state_dict_type": "FULL_STATE_DICT", "use_orig_params": True}),
    ({"engine": "fsdp", "fsdp_config": {"sharding_strategy": 2}}, {}, {"reshard_after_forward": False}),
], ids=["fsdp-string", "fsdp-list-offload", "fsdp-config-v2", "accelerate-v1-block", "engine-and-strategy"])
def test_fsdp_keys_are_read_as_hyfts_settings(brought, settings, fsdp_config):
    config = parse_config({**BASE, **brought})
    assert config.engine == "fsdp"
    assert {key: getattr(config, key) for key in settings} == settings
    assert config.fsdp_config == fsdp_config


def test_fsdp1_keys_are_said_once_and_a_rendered_config_says_them_again():
    from hyft_trainer.config import dump_config

    brought = {**BASE, "fsdp": "full_shard", "fsdp_config": {"fsdp_version": 1, "fsdp_forward_prefetch": True}}
    config = parse_config(brought)
    assert any("read as FSDP2" in n for n in config.notes)
    assert any("forward_prefetch: has no effect here: FSDP1's setting" in n for n in config.notes)
    import yaml

    again = parse_config(yaml.safe_load(dump_config(config)))
    assert again.fsdp_config == config.fsdp_config and len(again.notes) == len(config.notes)


@pytest.mark.parametrize("brought, message", [
    ({"fsdp": "hybrid_shard"}, "fsdp: hybrid_shard is FSDP1's"),
    ({"fsdp": "full_shard bogus"}, "fsdp: unknown option 'bogus'"),
    ({"fsdp": "full_shard", "engine": "deepspeed"}, "fsdp: asks for FSDP, but engine is 'deepspeed'"),
    ({"fsdp": "full_shard", "fsdp_config": {"fsdp_sharding_strategy": "HYBRID_SHARD"}},
     "fsdp_config.fsdp_sharding_strategy: 'HYBRID_SHARD': FSDP2 shards fully"),
    ({"fsdp": "full_shard", "fsdp_config": {"reshard_after_forward": False}},
     "fsdp_config.reshard_after_forward: means reshard_after_forward: False, but reshard_after_forward is True"),
    ({"fsdp": "offload", "offload_param": False}, "fsdp: offload: means offload_param: True, but offload_param is "
                                                  "False"),
    ({"fsdp": "full_shard", "fsdp_config": {"xla": True}}, "fsdp_config.xla: hyft trains on GPUs or CPUs"),
    ({"fsdp": "full_shard", "fsdp_config": {"limit_all_gather": True}}, "fsdp_config.limit_all_gather: unknown key"),
    ({"fsdp": "full_shard", "fsdp_config": "fsdp.json"}, "fsdp_config: write the settings as a mapping"),
    ({"fsdp_config": {"reshard_after_forward": False}}, "fsdp_config is for engine fsdp"),
    ({"engine": "fsdp", "zero_stage": 2}, "zero_stage 2 is DeepSpeed's, but engine is fsdp"),
    ({"engine": "fsdp", "deepspeed": {"zero_optimization": {"stage": 3}}}, "deepspeed: a DeepSpeed JSON, but "
                                                                           "engine is fsdp"),
    ({"engine": "fsdp", "offload_optimizer": True, "offload_param": False}, "offload_param and offload_optimizer "
                                                                            "differ"),
    ({"engine": "fsdp", "quantization_bit": 4}, "quantization_bit (QLoRA) with engine fsdp is not built"),
])
def test_what_fsdp2_cannot_do_is_refused_naming_the_key(brought, message):
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, **brought})
    assert message in str(err.value)


def test_deepspeed_overrides_under_fsdp2_are_refused_when_settled():
    config = parse_config({**BASE, "engine": "fsdp", "deepspeed_overrides": {"gradient_clipping": 1.0}})
    with pytest.raises(ConfigError, match="deepspeed_overrides: DeepSpeed's settings, but engine is fsdp"):
        settle(config.model_copy(update={"offload_param": False, "offload_optimizer": False}), 2, on_gpu=False)


def test_fsdp_keys_have_their_fate_in_the_key_table():
    assert keys.fate("fsdp")[0] == keys.Fate.READ_AS
    assert keys.fate("fsdp_config")[0] == keys.Fate.IMPLEMENTED
    assert keys.fate("engine")[0] == keys.Fate.IMPLEMENTED


SEVEN_B = Shape(**SIZES["7B"])


@pytest.mark.parametrize("gpu_gib, chosen", [(80, (False, False)), (12, (True, True))])
def test_fsdp2_offloads_all_or_nothing_and_only_when_it_does_not_fit(gpu_gib, chosen):
    config = parse_config({**BASE, "engine": "fsdp", "finetuning_type": "full", "bf16": True})
    resolved, decision = offload.resolve(config, SEVEN_B, gpu_gib * GIB, nodes=2, per_node=8, on_gpu=True)
    assert (resolved.offload_optimizer, resolved.offload_param) == chosen and decision.decided
    assert not re.search(r"(: |, )optimizer ", decision.message)  # ZeRO's optimizer-only option is not FSDP2's


def test_fsdp2_on_cpu_keeps_everything_where_it_is():
    config = parse_config({**BASE, "engine": "fsdp"})
    resolved, decision = offload.resolve(config, None, None, nodes=2, per_node=1, on_gpu=False)
    assert (resolved.offload_optimizer, resolved.offload_param) == (False, False)
    # set on: FSDP2's offload needs a GPU (pinned memory); off on a CPU, with a note
    asked = parse_config({**BASE, "engine": "fsdp", "offload_param": True, "offload_optimizer": True})
    settled = settle(asked, 2, on_gpu=False)
    assert not settled.config.offload_param and settled.deepspeed is None
    assert any("FSDP2's CPU offload" in n for n in settled.notes)


@pytest.mark.parametrize("method, fsdp_checkpointing, trainer_checkpointing", [
    ("full", True, False), ("lora", False, True)])
def test_fsdp2_reaches_the_training_arguments(method, fsdp_checkpointing, trainer_checkpointing,
                                              accelerate_state):  # noqa: F811
    config = parse_config({**BASE, "engine": "fsdp", "finetuning_type": method, "offload_param": False,
                           "offload_optimizer": False, "gradient_checkpointing": True,
                           "fsdp_config": {"reshard_after_forward": False, "fsdp_version": 1}})
    args = training_arguments(config, None, on_gpu=False)
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["reshard_after_forward"] is False
    assert plugin["state_dict_type"] == "SHARDED_STATE_DICT"  # resumes on another world size
    assert plugin.get("activation_checkpointing", False) is fsdp_checkpointing
    assert args.activation_checkpointing is trainer_checkpointing  # LoRA: peft's adapter state needs it
    assert args.deepspeed is None


@pytest.mark.parametrize("key", [*fsdp.PASSED, *fsdp.READ_AS, *fsdp.NO_EFFECT, *fsdp.REFUSED])
def test_every_fsdp_config_key_in_the_reference_is_read(key):
    """The reference's fsdp_config table (docgen) is the one translate() reads: no listed key is unknown."""
    problems: list[str] = []
    fsdp.translate({"fsdp": "auto_wrap", "fsdp_config": {f"fsdp_{key}": True}}, problems, [])
    assert not any("unknown key" in p for p in problems), problems
