"""Every key a LLaMA-Factory recipe may carry has one fate (keys.py): transformers' training arguments
pass through to TrainingArguments, the ones hyft owns are refused unless at their default, LLaMA-
Factory's unimplemented keys unless at LLaMA-Factory's default, and only a key in none of the pinned
sets is unknown (with a hint for a typo or a spelling from elsewhere)."""
from __future__ import annotations

import pytest

from hyft_trainer import keys, upstream_gen, worker
from hyft_trainer.config import ConfigError, TrainerConfig, dump_config, load_config, parse_config
from hyft_trainer.upstream_keys import LLAMAFACTORY_ARGUMENTS, TRAINING_ARGUMENTS, TRANSFORMERS_VERSION
from tests.unit.test_knobs import (
    accelerate_state,  # noqa: F401  (a fixture)
    training_arguments,
)

BASE = {"model_name_or_path": "/m", "data_files": [{"path": "/d.jsonl"}], "offload_optimizer": True,
        "offload_param": True}

# A value other than transformers' default for each passed key (TrainingArguments checks each one).
CHANGED = {
    "lr_scheduler_kwargs": {"min_lr_rate": 0.1}, "warmup_steps": 5, "optim": "adamw_torch", "optim_args": "x=1",
    "optim_target_modules": ["q_proj"], "torch_compile_backend": "eager", "torch_compile_mode": "default",
    "log_level": "info", "log_level_replica": "info", "run_name": "r",
    "project": "p", "trackio_space_id": "s", "trackio_bucket_id": "b", "trackio_static_space_id": "t",
    "include_for_metrics": ["loss"], "save_strategy": "epoch", "metric_for_best_model": "loss",
    "dataloader_prefetch_factor": 2, "dataloader_multiprocessing_context": "spawn", "label_names": ["labels"],
    "train_sampling_strategy": "sequential", "length_column_name": "n", "debug": ["underflow_overflow"],
    "activation_checkpointing_kwargs": {"use_reentrant": False}, "eval_accumulation_steps": 2,
    "torch_empty_cache_steps": 3, "ddp_bucket_cap_mb": 16, "data_seed": 7, "neftune_noise_alpha": 5.0,
    "eval_delay": 1.0, "adam_beta1": 0.8, "adam_beta2": 0.95, "adam_epsilon": 1e-6,
}
COMPANION = {"dataloader_prefetch_factor": {"dataloader_num_workers": 1},
             "dataloader_persistent_workers": {"dataloader_num_workers": 1},
             "load_best_model_at_end": {"val_size": 0.1, "eval_strategy": "steps", "eval_steps": 500}}
NEEDS_A_GPU = {"tf32": "transformers refuses tf32 without an Ampere GPU", "bf16_full_eval": "bf16 on CPU",
               "fp16_full_eval": "fp16 needs a GPU"}


def changed(key):
    if key in CHANGED:
        return CHANGED[key]
    default = TRAINING_ARGUMENTS[key][1]
    assert isinstance(default, (bool, type(None))), f"{key}: give it a changed value in CHANGED"
    return not default if isinstance(default, bool) else True


def test_the_pinned_transformers_keys_are_the_installed_ones():
    """A transformers bump that adds, drops or retypes a field fails here until `make regen`."""
    assert (TRANSFORMERS_VERSION, TRAINING_ARGUMENTS) == upstream_gen.transformers_fields()


def test_every_key_of_transformers_and_llamafactory_has_a_fate():
    every = keys.every_key()
    pinned = {*TRAINING_ARGUMENTS, *LLAMAFACTORY_ARGUMENTS}
    assert pinned <= set(every) and all(every[k] is not None for k in pinned)
    releases = {r for _, _, found_in in LLAMAFACTORY_ARGUMENTS.values() for r in found_in}
    assert releases == {"0.9.5", "0.9.6.dev"}
    assert set(keys.PASSED) <= set(TrainerConfig.model_fields)


@pytest.mark.parametrize("key", [k for k in keys.PASSED if k not in NEEDS_A_GPU])
def test_a_passed_key_reaches_the_training_arguments(key, accelerate_state, tmp_path):  # noqa: F811
    """Set to a value other than transformers' default, it is what TrainingArguments holds, also after
    the round trip through the ConfigMap's YAML."""
    value = changed(key)
    config = parse_config({**BASE, **COMPANION.get(key, {}), key: value})
    (tmp_path / "c.yaml").write_text(dump_config(config))
    reread = load_config(tmp_path / "c.yaml")
    assert key in reread.model_fields_set
    got = getattr(training_arguments(reread, None, on_gpu=False), key)
    assert got == value or (isinstance(value, dict) and got.items() >= value.items()), (key, got)


def test_a_passed_key_left_out_leaves_transformers_default_and_the_configmap_short(accelerate_state):  # noqa: F811
    config = parse_config(BASE)
    assert not any(f"\n{key}:" in "\n" + dump_config(config) for key in keys.PASSED)
    args = training_arguments(config, None, on_gpu=False)
    assert (args.optim, args.adam_beta2) == (TRAINING_ARGUMENTS["optim"][1], 0.999)


def test_the_passed_key_wins_over_hyfts_default_for_it(accelerate_state):  # noqa: F811
    args = training_arguments(parse_config({**BASE, "seed": 3, "data_seed": 11, "warmup_steps": 4}), None,
                                     on_gpu=False)
    assert (args.seed, args.data_seed, args.warmup_steps) == (3, 11, 4)


@pytest.mark.parametrize("num_experts, set_by_user, unused", [
    (None, None, False),  # a dense model: every trainable parameter gets a gradient each step
    (1, None, False),  # a dense Hunyuan's config may say num_experts: 1
    ([8, 8], None, True),  # a mixture of experts: an expert may get no token in a step
    (16, None, True),
    (None, True, True),  # the config's own setting wins
    (16, False, False),
])
def test_plain_ddp_looks_for_unused_parameters_only_in_a_mixture_of_experts(
        num_experts, set_by_user, unused, accelerate_state):  # noqa: F811
    from types import SimpleNamespace

    from hyft_trainer.moe import routes_experts

    data = {**BASE, **({} if set_by_user is None else {"ddp_find_unused_parameters": set_by_user})}
    experts = routes_experts(SimpleNamespace(**({} if num_experts is None else {"num_experts": num_experts})))
    args = training_arguments(parse_config(data), None, on_gpu=False, experts=experts)
    assert args.ddp_find_unused_parameters is unused


@pytest.mark.parametrize("data, message", [
    ({"fsdp": "hybrid_shard"}, "fsdp: hybrid_shard is FSDP1's (transformers is removing it): hyft runs FSDP2"),
    ({"ddp_backend": "mpi"}, "ddp_backend: set by hyft"),
    ({"push_to_hub": True}, "push_to_hub: set by hyft"),
    ({"logging_strategy": "epoch"}, "logging_strategy: set by hyft: the job's status"),
    ({"enable_liger_kernel": True}, "enable_liger_kernel: hyft does not implement it (yet)"),
    ({"use_liger_kernel": True}, "use_liger_kernel: set by hyft: Liger's kernels are not in hyft's trainer image"),
    ({"warmup_steps": 10, "warmup_ratio": 0.1}, "warmup_ratio and warmup_steps are one setting"),
    ({"optim": 5}, "optim"),  # typed as transformers types it
    ({"early_stopping_patience": 3}, "early_stopping_patience: unknown key (hyft reads 'early_stopping_steps')"),
    ({"system_prompt": "x"}, "system_prompt: unknown key (hyft reads 'default_system')"),
    ({"adam_epsilo": 0.9}, "adam_epsilo: unknown key (did you mean 'adam_epsilon'?)"),
    ({"activation_checkpointing": False, "gradient_checkpointing": True}, "activation_checkpointing: another name"),
])
def test_refused_keys_say_which_and_why(data, message):
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, **data})
    assert message in str(err.value)


@pytest.mark.parametrize("data", [
    {"fsdp": ""}, {"fsdp": None}, {"ddp_backend": "nccl"}, {"push_to_hub": False}, {"logging_strategy": "steps"},
    {"default_system": None}, {"use_swanlab": False}, {"flash_attn": "auto"}, {"infer_backend": "huggingface"},
    {"quantization_bit": None},
])
def test_owned_and_unimplemented_keys_at_their_default_are_accepted(data):
    parse_config({**BASE, **data})


def test_keys_without_effect_are_said_once_and_spellings_are_read_as_hyfts():
    config = parse_config({**BASE, "temperature": 0.9, "predict_with_generate": True, "vllm_maxlen": 10,
                           "pref_beta": 0.2, "activation_checkpointing": False, "use_reentrant_gc": False,
                           "logging_dir": "logs"})
    said = [note.split(":")[0] for note in config.notes]
    assert said == ["temperature", "predict_with_generate", "vllm_maxlen", "pref_beta", "logging_dir"]
    assert config.gradient_checkpointing is False and config.activation_checkpointing_kwargs == {"use_reentrant": False}


def test_label_smoothing_reaches_hyfts_loss():
    """transformers' label smoother is bypassed by hyft's own loss: the loss applies the factor itself."""
    import torch

    from hyft_trainer.batches import token_mean_loss
    from hyft_trainer.encode import IGNORE

    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 11), torch.tensor([[IGNORE, 3, 4, IGNORE, 1], [IGNORE, IGNORE, 7, 2, 9]])
    targets = labels[:, 1:].reshape(-1)
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), targets, ignore_index=IGNORE,
                                                 label_smoothing=0.2)
    assert torch.allclose(token_mean_loss({"logits": logits}, labels, label_smoothing=0.2), expected)
    assert not torch.allclose(token_mean_loss({"logits": logits}, labels), expected)


def test_a_min_lr_floor_reaches_the_scheduler_as_a_rate(accelerate_state):  # noqa: F811
    """transformers reads min_lr through the optimizer's defaults, which DeepSpeed's ZeRO optimizers lack."""
    config = parse_config({**BASE, "learning_rate": 1e-5, "lr_scheduler_type": "cosine_with_min_lr",
                           "lr_scheduler_kwargs": {"min_lr": 1e-6}})
    args = training_arguments(config, None, on_gpu=False)
    assert args.lr_scheduler_kwargs == {"min_lr_rate": pytest.approx(0.1)}
    assert worker.scheduler_floor('{"min_lr_rate": 0.2}', 1e-5) == {"min_lr_rate": 0.2}
