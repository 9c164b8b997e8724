"""LLaMA-Factory SFT configurations as users bring them: Tencent's own published YAMLs and
DeepSpeed JSONs for Hunyuan-7B and Hunyuan-A13B (tests/corpus/tencent, unchanged), and
LLaMA-Factory 0.9.5's examples/train_full and examples/train_lora SFT YAMLs, written from
their documented keys. Only paths are placeholders ({model}, {dataset_dir},
{deepspeed}, {output}; Tencent's YAMLs name no dataset_dir: LLaMA-Factory's default, `data`
in the working folder); `template` names a Hunyuan template, as it must for a Hunyuan
model (the examples were written for Llama 3 / Qwen)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

TENCENT = Path(__file__).parent / "corpus" / "tencent"


def tencent(name: str, dataset: str = "car_sft") -> str:
    """One of Tencent's published LLaMA-Factory YAMLs with what it leaves to the user filled in: the model
    path, the data set name where it has a placeholder, and the paths as placeholders."""
    text = (TENCENT / name).read_text()
    for key, value in (("model_name_or_path", "{model}"), ("deepspeed", "{deepspeed}"), ("output_dir", "{output}")):
        text = re.sub(rf"(?m)^{key}: .*$", f"{key}: {value}", text)
    return text.replace("dataset: [!!!add the data set name here!!!]", f"dataset: {dataset}")


HUNYUAN_FULL = tencent("hunyuan_full.yaml")  # Hunyuan-7B's guide
HUNYUAN_A13B_FULL = tencent("hunyuan_a13b_full_sft.yaml")
DS_Z3_OFFLOAD_HUNYUAN = json.loads((TENCENT / "ds_zero3_offload_hy.json").read_text())

# examples/train_lora/llama3_lora_sft.yaml
LORA_SFT = """
### model
model_name_or_path: {model}
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset_dir: {dataset_dir}
dataset: identity,alpaca_en_demo
template: hunyuan
cutoff_len: 2048
max_samples: 1000
overwrite_cache: true
preprocessing_num_workers: 16
dataloader_num_workers: 4

### output
output_dir: {output}
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none  # choices: [none, wandb, tensorboard, swanlab, mlflow]

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null

### eval
val_size: 0.1
per_device_eval_batch_size: 1
eval_strategy: steps
eval_steps: 500
"""

# examples/train_lora/llama3_lora_sft_ds3.yaml: the same with ZeRO-3
LORA_SFT_DS3 = LORA_SFT.replace("lora_target: all\n", "lora_target: all\ndeepspeed: {deepspeed}\n").replace(
    "### eval\nval_size: 0.1\nper_device_eval_batch_size: 1\neval_strategy: steps\neval_steps: 500\n", "")

# examples/train_lora/llama3_lora_sft_ray.yaml: Ray places the workers there
LORA_SFT_RAY = LORA_SFT_DS3.replace("### train\n", """### ray
ray_run_name: llama3_8b_sft_lora
ray_storage_path: ./saves
ray_num_workers: 4  # number of GPUs to use
resources_per_worker:
  GPU: 1
placement_strategy: PACK

### train
""")

# examples/train_full/llama3_full_sft.yaml: the ZeRO-3 LoRA example with full fine-tuning's settings
FULL_SFT = LORA_SFT_DS3.replace("finetuning_type: lora\nlora_rank: 8\nlora_target: all\n", "finetuning_type: full\n"
                                ).replace("gradient_accumulation_steps: 8", "gradient_accumulation_steps: 2"
                                          ).replace("learning_rate: 1.0e-4", "learning_rate: 1.0e-5")

# examples/train_full/qwen2_5vl_full_sft.yaml: a multimodal example; its media keys have no effect here
FULL_SFT_VL = FULL_SFT.replace("trust_remote_code: true\n", """image_max_pixels: 262144
video_max_pixels: 16384
trust_remote_code: true
""").replace("deepspeed: {deepspeed}\n", """freeze_vision_tower: true
freeze_multi_modal_projector: true
freeze_language_model: false
deepspeed: {deepspeed}
""")

# LLaMA-Factory's examples/deepspeed/ds_z3_offload_config.json
DS_Z3_OFFLOAD = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "zero_allow_untested_optimizer": True,
    "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
             "hysteresis": 2, "min_loss_scale": 1},
    "bf16": {"enabled": "auto"},
    "zero_optimization": {
        "stage": 3,
        "offload_optimizer": {"device": "cpu", "pin_memory": True},
        "offload_param": {"device": "cpu", "pin_memory": True},
        "overlap_comm": False,
        "contiguous_gradients": True,
        "sub_group_size": 1e9,
        "reduce_bucket_size": "auto",
        "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto",
        "stage3_max_live_parameters": 1e9,
        "stage3_max_reuse_distance": 1e9,
        "stage3_gather_16bit_weights_on_model_save": True,
    },
}

# The usual guide's recipe for a Hunyuan LoRA, as a user brings it: transformers' training arguments
# (optimizer, evaluation keeping the best checkpoint, data loader), fp16 with DeepSpeed's dynamic loss
# scaling. Sized for a tiny model on CPU; the guide's FSDP keys are refused until FSDP is built.
GUIDE_RECIPE = """
### model
model_name_or_path: {model}

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
deepspeed: {deepspeed}

### dataset
dataset_dir: {dataset_dir}
dataset: car_sft
template: hunyuan
cutoff_len: 256
val_size: 0.25

### output
output_dir: {output}
logging_dir: {output}/logs
logging_steps: 1
save_strategy: steps
save_steps: 2
report_to: tensorboard

### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 2
learning_rate: 5.0e-3
max_steps: 8
lr_scheduler_type: cosine
warmup_steps: 1
optim: adamw_torch
adam_beta1: 0.9
adam_beta2: 0.95
adam_epsilon: 1.0e-8
max_grad_norm: 1.0
fp16: true
gradient_checkpointing: true
dataloader_pin_memory: false
dataloader_num_workers: 4

### eval
eval_strategy: steps
eval_steps: 2
load_best_model_at_end: true
metric_for_best_model: eval_loss
greater_is_better: false
early_stopping_steps: 3
"""
# The guide's FSDP variant: the same recipe with LLaMA-Factory's fsdp keys in place of the DeepSpeed JSON
GUIDE_RECIPE_FSDP = GUIDE_RECIPE.replace("deepspeed: {deepspeed}\n", """fsdp: full_shard auto_wrap
fsdp_config:
  fsdp_version: 2
  transformer_layer_cls_to_wrap: HunYuanDenseV1DecoderLayer
""")
assert GUIDE_RECIPE_FSDP != GUIDE_RECIPE
DS_Z3_FP16 = {
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto", "zero_allow_untested_optimizer": True,
    "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
             "hysteresis": 2, "min_loss_scale": 1},
    "bf16": {"enabled": "auto"},
    "zero_optimization": {"stage": 3, "overlap_comm": False, "contiguous_gradients": True,
                          "stage3_gather_16bit_weights_on_model_save": True},
}

CORPUS = {
    "hunyuan_full": (HUNYUAN_FULL, DS_Z3_OFFLOAD_HUNYUAN),
    "hunyuan_a13b_full_sft": (HUNYUAN_A13B_FULL, DS_Z3_OFFLOAD_HUNYUAN),
    "llama3_lora_sft": (LORA_SFT, None),
    "llama3_lora_sft_ds3": (LORA_SFT_DS3, DS_Z3_OFFLOAD),
    "llama3_lora_sft_ray": (LORA_SFT_RAY, DS_Z3_OFFLOAD),
    "llama3_full_sft": (FULL_SFT, DS_Z3_OFFLOAD),
    "qwen2_5vl_full_sft": (FULL_SFT_VL, DS_Z3_OFFLOAD),
}

# The data sets the YAMLs name, as a LLaMA-Factory data folder would declare them.
DATASET_INFO = {
    "car_sft": {"file_name": "car_sft.json", "formatting": "sharegpt",
                "columns": {"messages": "messages"}, "tags": {"role_tag": "role", "content_tag": "content",
                                                              "user_tag": "user", "assistant_tag": "assistant"}},
    "identity": {"file_name": "identity.json"},
    "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
}


def render(text: str, **paths: str) -> dict:
    return yaml.safe_load(text.format(**paths))
