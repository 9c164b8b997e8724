from __future__ import annotations

import pytest

from hyft_trainer.chat_format import FAMILIES


@pytest.fixture(scope="session")
def tokenizers():
    """Tiny locally built tokenizers of every chat family (no model weights needed)."""
    from hyft_trainer.tiny import build_tokenizer

    return {family: build_tokenizer(family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random-weight small-family model and its tokenizer (sdpa attention, as training uses)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hyft_trainer.tiny import build

    path = build(tmp_path_factory.mktemp("tiny") / "small", "small")
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa")
