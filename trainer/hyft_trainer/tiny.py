"""Tiny random-weight Hunyuan models for tests and demos (no hub download is possible).

    hyft tiny-model --family small|7b|a13b OUT

Writes a HunYuanDenseV1ForCausalLM (a13b: a HunYuanMoEV1ForCausalLM, Hunyuan-A13B's
mixture of experts) with a few thousand parameters per layer and
a byte-level BPE tokenizer trained locally on the bundled sample data, carrying
the family's special tokens and a chat template that behaves like the official
one. Loadable offline with AutoModelForCausalLM / AutoTokenizer.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .a13b_tools import with_tools
from .chat_format import CHAT_TEMPLATES, FAMILIES
from .sample_data import make_samples

# Hunyuan-A13B's layout at tiny width: routed experts, a few per token, and one shared expert (transformers'
# hunyuan_v1_moe has exactly one, sized like the experts)
TINY_MOE = dict(experts=4, topk=2, shared_experts=1)


def _corpus() -> list[str]:
    texts = []
    for sample in make_samples(400, seed=11):
        texts += [m["content"] for m in sample["messages"]]
    return texts + ["<think>", "</think>", "<answer>", "</answer>", "/no_think", "/think"]


def build_tokenizer(family_name: str, vocab_size: int = 1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    family = FAMILIES[family_name]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(family.special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=family.bos, eos_token=family.eos, pad_token=family.pad,
        chat_template=with_tools(CHAT_TEMPLATES[family_name]) if family_name == "a13b" else CHAT_TEMPLATES[family_name],
        model_max_length=4096, clean_up_tokenization_spaces=False,
    )


def build(out: str | Path, family: str = "small", hidden_size: int = 64, layers: int = 2, seed: int = 0,
          dtype: str = "float32", width: dict | None = None) -> Path:
    """width: a published size's shape (choices.SIZES: hidden, ffn, heads, kv_heads, head_dim, vocab) at
    `layers` layers, instead of the tiny one (the GPU check's model)."""
    import torch
    from transformers import AutoModelForCausalLM, HunYuanDenseV1Config, HunYuanMoEV1Config

    out = Path(out)
    tokenizer = build_tokenizer(family)
    width = width or dict(hidden=hidden_size, ffn=hidden_size * 2, heads=4, kv_heads=2, head_dim=hidden_size // 4,
                          vocab=len(tokenizer), **(TINY_MOE if family == "a13b" else {}))
    moe = {"num_experts": width["experts"], "moe_topk": width["topk"]} if width.get("experts") else {}
    config = (HunYuanMoEV1Config if moe else HunYuanDenseV1Config)(
        **moe,
        vocab_size=max(width["vocab"], len(tokenizer)),
        hidden_size=width["hidden"],
        intermediate_size=width["ffn"],
        num_hidden_layers=layers,
        num_attention_heads=width["heads"],
        num_key_value_heads=width["kv_heads"],
        head_dim=width["head_dim"],  # must be explicit: HunYuan reads head_dim from the config
        max_position_embeddings=4096,
        tie_word_embeddings=width.get("tied", family != "7b"),  # as the published models: 7B alone unties
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.to(getattr(torch, dtype)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "hyft_tiny.json").write_text(json.dumps({"family": family, "seed": seed,
                                                     "parameters": sum(p.numel() for p in model.parameters())}))
    return out


def quantize(src: str | Path, out: str | Path, method: str = "gptq", bits: int = 4, group_size: int = 32) -> Path:
    """A GPTQ or AWQ copy of a tiny model, made as Tencent's Hunyuan-*-GPTQ-Int4 and -AWQ-Int4 are (GPTQ with
    desc_act; AWQ in the GEMM layout; the embeddings and lm_head left unquantized), by gptqmodel on the CPU from
    calibration text of the tokenizer's own corpus. AWQ packs with gptqmodel's torch kernel (its others need
    CUDA), and its clip search takes a projection's output rows 64 at a time: build the model 128 wide.
    Run it in a process of its own, in a folder of its own: gptqmodel sets environment variables as it is
    imported, writes its log under ./logs, and sizes its
    worker pools from them (GPTQMODEL_CPU_WORKERS: its model loader asks for 2, which a 2-core machine's default
    of 1 refuses)."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    calibration = [{"input_ids": ids, "attention_mask": [1] * len(ids)}
                   for ids in (tokenizer(text)["input_ids"] for text in _corpus()[:32]) if ids]
    config, backend = {
        "gptq": (dict(desc_act=True), BACKEND.AUTO),
        "awq": (dict(quant_method="awq", format="gemm"), BACKEND.AWQ_TORCH),
    }[method]
    config = QuantizeConfig(bits=bits, group_size=group_size, **config)
    model = GPTQModel.load(str(src), config, device="cpu")
    model.quantize(calibration, batch_size=4, backend=backend)
    model.save(str(out))
    return Path(out)
