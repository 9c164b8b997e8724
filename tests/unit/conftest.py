from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizers():
    """Tiny locally built tokenizers of both chat families (no model weights needed)."""
    from hyft_trainer.tiny import build_tokenizer

    return {family: build_tokenizer(family) for family in ("small", "7b")}
