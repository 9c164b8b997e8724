"""merge_lora: the base model with the trained LoRA merged into it, as a folder a serving pod loads.

Runs on global rank 0's node after every rank has exited (the launcher calls it): under ZeRO-3 the
weights are sharded across ranks during training, and a merge inside the gang would hold every other
rank in a barrier for as long as it takes. It reads what training exported (the adapter) and the base
model from model_name_or_path, merges on the CPU in 16 bits, and writes output_dir/merged through a
temporary folder, so the folder is either whole or absent.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

MERGED = "merged"
ADAPTER = "export"
SHARD_SIZE = "5GB"  # the shard size of Tencent's own checkpoints


def merged_dtype(bf16: bool, fp16: bool) -> str:
    """16 bits for serving: fp16 when training ran in fp16, else bf16 (Hunyuan's own dtype)."""
    return "float16" if fp16 and not bf16 else "bfloat16"


def merge_lora(config) -> Path:
    """Write output_dir/merged from the base model and output_dir/export's adapter; returns the folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = Path(config.output_dir)
    adapter, final = output / ADAPTER, output / MERGED
    dtype = getattr(torch, merged_dtype(config.bf16, config.fp16))
    remote = config.trust_remote_code
    base = AutoModelForCausalLM.from_pretrained(config.model_name_or_path, dtype=dtype, trust_remote_code=remote)
    model = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    tmp = output / (MERGED + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a merge cut short earlier
    model.save_pretrained(tmp, max_shard_size=SHARD_SIZE)
    # the adapter's own folder has the tokenizer as training used it (chat template included)
    AutoTokenizer.from_pretrained(adapter, trust_remote_code=remote).save_pretrained(tmp)
    if remote:
        _copy_remote_code(Path(config.model_name_or_path), tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    return final


def _copy_remote_code(source: Path, target: Path) -> None:
    """The model's own code files beside its auto_map, which save_pretrained keeps in config.json."""
    for code in source.glob("*.py"):
        if not (target / code.name).exists():
            shutil.copy2(code, target / code.name)


def record(report_path: Path, merged: Path) -> None:
    """report.json's "exported" names the merged folder too."""
    report = json.loads(report_path.read_text())
    report.setdefault("exported", {})["merged"] = str(merged)
    tmp = report_path.with_name(report_path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(report_path)
