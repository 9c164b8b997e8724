"""Run inside the LLaMA-Factory venv: time its SFT preprocessing of one dataset folder.
argv: data_dir model_dir cutoff_len workers output_dir. Prints one JSON line."""
import json
import sys
import time

from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer

data_dir, model_dir, cutoff, workers, out = sys.argv[1:6]
model_args, data_args, training_args, finetuning_args, _ = get_train_args({
    "model_name_or_path": model_dir, "stage": "sft", "do_train": True, "finetuning_type": "lora",
    "dataset": "hunyuan_chat", "dataset_dir": data_dir, "template": "hunyuan", "cutoff_len": int(cutoff),
    "overwrite_cache": True, "preprocessing_num_workers": int(workers), "output_dir": out,
    "report_to": "none", "trust_remote_code": False,
})
tokenizer_module = load_tokenizer(model_args)  # not timed: hyft's side loads its tokenizer untimed too
template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
start = time.perf_counter()
dataset_module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
seconds = time.perf_counter() - start
train = dataset_module["train_dataset"]
print(json.dumps({"seconds": seconds, "samples": len(train), "tokens": sum(len(x) for x in train["input_ids"])}))
