"""Every key a trainer config may meet, and its fate: the settings of knobs.py, LLaMA-Factory's
spellings of them, transformers' Seq2SeqTrainingArguments and LLaMA-Factory's argument classes
(upstream_keys.py, generated from the pinned versions). A key in none of these is unknown.

  implemented   a hyft setting (knobs.py), with its meaning
  read as       LLaMA-Factory's spelling of a hyft setting (llamafactory_keys.translate)
  passed        straight to transformers' TrainingArguments, as TRL's SFTConfig does: a new
                transformers field needs no hyft release
  set by hyft   transformers' field that hyft owns (launch, output, saving, the hub): refused unless
                at its default (or an allowed value), with the reason
  no effect     accepted; the reason said once at start-up
  refused       refused unless off, with what to do

Torch-free: the operator image imports it.
"""
from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from .knobs import BY_KEY
from .llamafactory_keys import NO_EFFECT, READ_AS, REFUSED, off
from .upstream_keys import LLAMAFACTORY_ARGUMENTS, TRAINING_ARGUMENTS


class Fate(StrEnum):
    IMPLEMENTED = "implemented"
    READ_AS = "read as"
    PASSED = "passed"
    OWNED = "set by hyft"
    NO_EFFECT = "no effect"
    REFUSED = "refused"


_HUB = "hyft writes the export to output_dir; push it from there (the trainer pods reach no model hub)"
_GPU_OR_CPU = "hyft trains on the GPUs the pod was given, on the CPU when it was given none (gpusPerNode: 0)"
_HYFT_TRAINER = "hyft's Trainer needs its own value"

# transformers' fields that hyft owns: (why, the values allowed besides transformers' default)
OWNED: dict[str, tuple[str, tuple[Any, ...]]] = {
    "do_eval": ("hyft evaluates when val_size and eval_strategy say so", (True,)),
    "do_predict": ("hyft trains only", ()),
    "local_rank": ("torch's launcher sets each process's rank", ()),
    "ddp_backend": ("hyft uses NCCL on GPUs and gloo on CPUs", ("nccl", "gloo")),
    "use_cpu": (_GPU_OR_CPU, ()),
    "accelerator_config": (_HYFT_TRAINER + " (the process state it configures)", ()),
    "remove_unused_columns": (_HYFT_TRAINER + " (its collator reads every column)", (False,)),
    "include_num_input_tokens_seen": (_HYFT_TRAINER + " (tokens/s counts the real tokens)", ("non_padding",)),
    "disable_tqdm": ("hyft logs progress lines and metrics instead of progress bars", (True,)),
    "logging_strategy": ("the job's status, stall detection and metrics read the steps logged every "
                         "logging_steps", ()),
    "enable_jit_checkpoint": ("hyft saves a checkpoint on SIGTERM itself (preemption, suspend)", ()),
    "parallelism_config": ("hyft trains data parallel, sharded by DeepSpeed ZeRO or FSDP2 (engine)", ()),
    # transformers fails without the package (a crash loop on the cluster), and the fused cross-entropy
    # would replace hyft's loss (trained positions only, label smoothing, the router loss)
    **dict.fromkeys(("use_liger_kernel", "liger_kernel_config"), (
        "Liger's kernels are not in hyft's trainer image, and their fused cross-entropy would replace hyft's "
        "loss (trained positions, label smoothing, the router loss): remove it", ())),
    "push_to_hub": (_HUB, ()),
    **dict.fromkeys(("hub_token", "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push",
                     "hub_revision"), (_HUB, ())),
}
# Seq2SeqTrainingArguments' own fields (LLaMA-Factory's TrainingArguments extends it)
GENERATION_ONLY = dict.fromkeys(("sortish_sampler", "predict_with_generate", "generation_max_length",
                                 "generation_num_beams", "generation_config"),
                                "hyft evaluates the loss only; nothing is generated during training")

# LLaMA-Factory's argument classes whose keys hyft does not read: what they are for
CLASS_NO_EFFECT = {
    "GeneratingArguments": "a generation setting (chat, eval and export commands), not training",
    "ExportArguments": "an export command setting: hyft exports to output_dir/export itself",
    "VllmArguments": "an inference engine setting, not training",
    "SGLangArguments": "an inference engine setting, not training",
    "KTransformersArguments": "an inference engine setting, not training",
    "RLHFArguments": "a setting of the preference stages (dpo, kto, ppo, rm), not of sft",
    "ProcessorArguments": "Hunyuan's text models take no images, audio or video",
    "RayArguments": "hyft places processes with its operator's pods and torch's launcher, not Ray",
    "ProfilerArguments": "hyft does not run the torch profiler",
}
NOT_BUILT = "hyft does not implement it (yet): remove it, or leave it at LLaMA-Factory's default"

# Spellings from elsewhere (other trainers, transformers' callbacks) and the key hyft reads instead
OUTSIDE_SPELLINGS = {
    "early_stopping_patience": "early_stopping_steps",
    "system_prompt": "default_system",
    "system": "default_system",
    "lr": "learning_rate",
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "micro_batch_size": "per_device_train_batch_size",
    "max_seq_length": "cutoff_len",
    "max_length": "cutoff_len",
    "sequence_len": "cutoff_len",
    "lora_r": "lora_rank",
    "lora_target_modules": "lora_target",
    "grad_accum": "gradient_accumulation_steps",
}


def fate(key: str) -> tuple[Fate, str] | None:
    """(fate, what it means or why) for a known key; None for an unknown one."""
    if key in BY_KEY:
        return Fate.IMPLEMENTED, BY_KEY[key].doc
    if key in READ_AS:
        return Fate.READ_AS, READ_AS[key]
    if key in NO_EFFECT or key in GENERATION_ONLY:
        return Fate.NO_EFFECT, NO_EFFECT.get(key) or GENERATION_ONLY[key]
    if key in REFUSED:
        return Fate.REFUSED, REFUSED[key]
    if key in OWNED:
        return Fate.OWNED, OWNED[key][0]
    if key in TRAINING_ARGUMENTS:
        return Fate.PASSED, "transformers' TrainingArguments." + key
    cls = LLAMAFACTORY_ARGUMENTS[key][1] if key in LLAMAFACTORY_ARGUMENTS else None
    if cls in CLASS_NO_EFFECT:
        return Fate.NO_EFFECT, CLASS_NO_EFFECT[cls]
    if cls is not None:
        return Fate.REFUSED, NOT_BUILT
    return None


def every_key() -> dict[str, tuple[Fate, str]]:
    names = [*BY_KEY, *READ_AS, *NO_EFFECT, *GENERATION_ONLY, *REFUSED, *OWNED, *TRAINING_ARGUMENTS,
             *LLAMAFACTORY_ARGUMENTS]
    return {key: fate(key) for key in dict.fromkeys(names)}


PASSED = tuple(k for k, (f, _) in every_key().items() if f == Fate.PASSED)


def _at_default(key: str, value: Any) -> bool:
    """Whether value leaves an owned or unimplemented key as its owner would have it."""
    if key in OWNED:
        default, allowed = TRAINING_ARGUMENTS[key][1], OWNED[key][1]
    else:
        default, allowed = LLAMAFACTORY_ARGUMENTS[key][0], ()
    if isinstance(default, str) and re.fullmatch(r"[A-Z]\w*\.[A-Z_0-9]+", default):  # an enum member
        return str(value).lower() == default.split(".")[1].lower()
    return value == default or value in allowed or (default in (None, False, 0, "") and off(value))


def judge(data: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """(what goes on, problems, notes) for keys that are neither hyft settings nor read as them:
    passed keys go on, owned ones at their default and keys without effect are dropped (the latter
    with a note), refused ones set to anything but off are problems, unknown keys too (with a hint)."""
    kept: dict[str, Any] = {}
    problems: list[str] = []
    notes: list[str] = []
    for key, value in data.items():
        verdict = fate(key)
        if verdict is None:
            problems.append(f"{key}: unknown key{_hint(key)}")
            continue
        kind, why = verdict
        if kind in (Fate.IMPLEMENTED, Fate.PASSED):
            kept[key] = value
        elif kind == Fate.NO_EFFECT:
            notes.append(f"{key}: has no effect here: {why}")
        elif kind == Fate.OWNED and not _at_default(key, value):
            problems.append(f"{key}: set by hyft: {why}")
        elif kind == Fate.REFUSED and not (off(value) if key in REFUSED else _at_default(key, value)):
            problems.append(f"{key}: {why}")
    return kept, problems, notes


def without_effect(data: dict[str, Any]) -> dict[str, Any]:
    """The keys that judge() drops with a note, as written: a config carries them on (the trainer says
    them at start-up however the config reached it)."""
    return {key: value for key, value in data.items() if (fate(key) or (None,))[0] == Fate.NO_EFFECT}


def _hint(key: str) -> str:
    import difflib

    if key in OUTSIDE_SPELLINGS:
        return f" (hyft reads {OUTSIDE_SPELLINGS[key]!r})"
    # a hint only for a real near-miss (a typo), not for a different key that shares a word
    close = difflib.get_close_matches(key, every_key(), n=1, cutoff=0.85)
    return f" (did you mean {close[0]!r}?)" if close else ""
