"""Token-exact chat formats for both families, and the label masks."""
from __future__ import annotations

import json
import random

import pytest

from hyft_trainer.chat_format import FAMILIES, Message, detect_family, render, text_of
from hyft_trainer.encode import IGNORE, MaskOptions, encode
from hyft_trainer.sample_data import make_samples


def conversations(count=60, seed=3):
    """Varied conversations: multi-turn, with/without system, fast/slow/plain, Chinese/English."""
    rng = random.Random(seed)
    convs = []
    for i, sample in enumerate(make_samples(count, seed)):
        msgs = [Message(m["role"], m["content"]) for m in sample["messages"]]
        if i % 5 == 0:  # a plain ShareGPT answer without markup
            msgs[-1] = Message("assistant", rng.choice(["Sure, 42.", "好的，没问题。", "Line one\nline two  "]))
        if i % 7 == 0:  # a longer, three-turn chat
            msgs += [Message("user", "And in Chinese? 用中文说"), Message("assistant", "好的：四十二。")]
        convs.append(msgs)
    return convs


CONVERSATIONS = conversations()


def as_dicts(msgs):
    return [{"role": m.role, "content": m.content} for m in msgs]


@pytest.mark.parametrize("family", FAMILIES)
def test_encoder_matches_apply_chat_template_token_for_token(tokenizers, family):
    tok = tokenizers[family]
    assert len(CONVERSATIONS) >= 50
    for msgs in CONVERSATIONS:
        ids, labels = encode(tok, FAMILIES[family], msgs)
        reference = tok.apply_chat_template(as_dicts(msgs), tokenize=True)["input_ids"]
        assert ids == reference, tok.decode(ids)
        assert len(labels) == len(ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_prompt_matches_too(tokenizers, family):
    tok = tokenizers[family]
    for msgs in CONVERSATIONS[:20]:
        prompt = msgs[:-1]
        ours = tok(text_of(render(FAMILIES[family], prompt, add_generation_prompt=True)),
                   add_special_tokens=False)["input_ids"]
        assert ours == tok.apply_chat_template(as_dicts(prompt), add_generation_prompt=True,
                                               tokenize=True)["input_ids"]


def test_small_family_rendering_follows_the_official_layout():
    text = text_of(render(FAMILIES["small"], [Message("system", "S"), Message("user", "Q"),
                                              Message("assistant", "A")]))
    assert text == ("<｜hy_begin▁of▁sentence｜>S<｜hy_place▁holder▁no▁3｜><｜hy_User｜>Q<｜hy_Assistant｜>A"
                    "<｜hy_place▁holder▁no▁2｜><｜hy_place▁holder▁no▁8｜>")


def test_7b_family_rendering_reduces_earlier_thinking_turns_to_their_answer():
    msgs = [Message("user", "Q1"), Message("assistant", "<think>\nr\n</think>\n<answer>\nA1\n</answer>"),
            Message("user", "Q2"), Message("assistant", "<think>\nr2\n</think>\n<answer>\nA2\n</answer>")]
    text = text_of(render(FAMILIES["7b"], msgs))
    assert text == ("<|startoftext|>Q1<|extra_0|>A1<|eos|><|startoftext|>Q2<|extra_0|>"
                    "<think>\nr2\n</think>\n<answer>\nA2\n</answer><|eos|>")


def test_family_is_detected_from_special_tokens(tokenizers):
    assert detect_family(tokenizers["small"].get_vocab()).name == "small"
    assert detect_family(tokenizers["7b"].get_vocab()).name == "7b"
    with pytest.raises(ValueError, match="neither"):
        detect_family({"hello": 1})


def test_a13b_is_told_from_7b_by_the_models_config(tokenizers, tmp_path):
    """Both have the 7b tokens; the model's config tells the MoE, in transformers' spelling or Tencent's own
    (model_type hunyuan with the MoE architecture, as published)."""
    from hyft_trainer.chat_format import resolve_family
    from tests.llamafactory_corpus import TENCENT

    vocab = tokenizers["7b"].get_vocab()
    tencent = json.loads((TENCENT / "hunyuan_a13b_config.json").read_text())
    assert detect_family(vocab, tencent).name == "a13b"
    assert detect_family(vocab, {"model_type": "hunyuan_v1_moe"}).name == "a13b"
    assert detect_family(vocab, {"model_type": "hunyuan_v1_dense"}).name == "7b"
    assert detect_family(vocab).name == "7b"  # a tokenizer without its model: Hunyuan-7B's
    (tmp_path / "config.json").write_text(json.dumps(tencent))
    assert resolve_family("auto", vocab, tmp_path).name == "a13b"
    assert resolve_family("7b", vocab, tmp_path).name == "7b"  # said explicitly, it wins
    assert detect_family(tokenizers["a13b"].get_vocab(), tencent).name == "a13b"


def trained_text(tok, ids, labels):
    return tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE])


TWO_TURNS = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello!"),
             Message("user", "/no_think 2+2?"), Message("assistant", "<think>\n\n</think>\n<answer>\n4\n</answer>")]


def test_default_mask_trains_assistant_content_and_eos_only(tokenizers):
    tok = tokenizers["small"]
    ids, labels = encode(tok, FAMILIES["small"], TWO_TURNS)
    assert trained_text(tok, ids, labels) == ("Hello!<｜hy_place▁holder▁no▁2｜>"
                                              "<think>\n\n</think>\n<answer>\n4\n</answer><｜hy_place▁holder▁no▁2｜>")
    assert labels[-1] == IGNORE  # the closing no▁8 comes after the stop token


def test_mask_history_trains_the_last_turn_only(tokenizers):
    tok = tokenizers["small"]
    ids, labels = encode(tok, FAMILIES["small"], TWO_TURNS, MaskOptions(mask_history=True))
    assert trained_text(tok, ids, labels) == "<think>\n\n</think>\n<answer>\n4\n</answer><｜hy_place▁holder▁no▁2｜>"


def test_train_assistant_header_option(tokenizers):
    tok = tokenizers["small"]
    ids, labels = encode(tok, FAMILIES["small"], TWO_TURNS[:3], MaskOptions(train_assistant_header=True))
    assert trained_text(tok, ids, labels) == "<｜hy_Assistant｜>Hello!<｜hy_place▁holder▁no▁2｜>"


def test_train_on_prompt_trains_everything_but_the_closing_token(tokenizers):
    tok = tokenizers["small"]
    ids, labels = encode(tok, FAMILIES["small"], TWO_TURNS, MaskOptions(train_on_prompt=True))
    assert labels[:-1] == ids[:-1] and labels[-1] == IGNORE


def test_7b_trains_the_eos_and_not_the_reduced_history(tokenizers):
    tok = tokenizers["7b"]
    msgs = [Message("user", "Q1"), Message("assistant", "<think>\nr\n</think>\n<answer>\nA1\n</answer>"),
            Message("user", "Q2"), Message("assistant", "plain A2")]
    ids, labels = encode(tok, FAMILIES["7b"], msgs)
    assert trained_text(tok, ids, labels) == "plain A2<|eos|>"


def test_7b_trains_a_history_turn_the_template_shows_unchanged(tokenizers):
    """A plain earlier turn is shown exactly as the model generates it: every turn of a 4-turn plain
    chat is a target; a reduced turn beside it stays context."""
    tok = tokenizers["7b"]
    plain = [m for i in range(4) for m in (Message("user", f"Q{i}"), Message("assistant", f"A{i}"))]
    ids, labels = encode(tok, FAMILIES["7b"], plain)
    assert trained_text(tok, ids, labels) == "".join(f"A{i}<|eos|>" for i in range(4))
    mixed = [Message("user", "Q1"), Message("assistant", "<think>\nr\n</think>\n<answer>\nA1\n</answer>"),
             Message("user", "Q2"), Message("assistant", "A2"), Message("user", "Q3"), Message("assistant", "A3")]
    ids, labels = encode(tok, FAMILIES["7b"], mixed)
    assert trained_text(tok, ids, labels) == "A2<|eos|>A3<|eos|>"
    ids, labels = encode(tok, FAMILIES["7b"], plain, MaskOptions(mask_history=True))
    assert trained_text(tok, ids, labels) == "A3<|eos|>"


def official(tok, family, conv, **kwargs):
    from tests.official_templates import OFFICIAL

    return tok.apply_chat_template(conv, chat_template=OFFICIAL[family], tokenize=False, **kwargs)


def messages_of(conv):
    return [Message(m["role"], m["content"]) for m in conv]


@pytest.mark.parametrize("family", FAMILIES)
def test_fidelity_corpus_renders_exactly_as_the_official_templates(tokenizers, family):
    """hyft's renderer, for training and for generation prompts, against the official templates'
    text; the tiny tokenizers' shipped templates against them too, thinking switch included."""
    from tests.official_templates import FIDELITY, FIDELITY_PROMPTS

    tok = tokenizers[family]
    for conv in FIDELITY:
        assert text_of(render(FAMILIES[family], messages_of(conv))) == official(tok, family, conv)
        assert tok.apply_chat_template(conv, tokenize=False) == official(tok, family, conv)
    for conv in FIDELITY_PROMPTS:
        ours = text_of(render(FAMILIES[family], messages_of(conv), add_generation_prompt=True))
        assert ours == official(tok, family, conv, add_generation_prompt=True), conv
        for thinking in (True, False):
            assert tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True,
                                           enable_thinking=thinking) == official(
                tok, family, conv, add_generation_prompt=True, enable_thinking=thinking)


def test_7b_history_keeps_the_official_templates_character_strip():
    """`<answer>Sure</answer>` in history shows as `Su`: str.strip('</answer>') strips characters."""
    from tests.official_templates import TIGHT

    msgs = [Message("user", "Q1"), Message("assistant", TIGHT), Message("user", "Q2")]
    text = text_of(render(FAMILIES["7b"], msgs, add_generation_prompt=True))
    assert text == "<|startoftext|>Q1<|extra_0|>Su<|eos|><|startoftext|>Q2<|extra_0|>"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_fast_path_gives_the_same_ids_and_labels_as_offsets(tokenizers, family, monkeypatch):
    """Labels from char_to_token on the Rust tokenizer equal labels from the offset mapping, token for
    token, for every mask option (multi-byte characters and emoji included)."""
    import hyft_trainer.encode as enc
    from tests.official_templates import FIDELITY

    convs = CONVERSATIONS + [messages_of(c) for c in FIDELITY]
    tok = tokenizers[family]
    for opts in (MaskOptions(), MaskOptions(mask_history=True), MaskOptions(train_on_prompt=True),
                 MaskOptions(train_assistant_header=True)):
        fast = enc.encode_batch(tok, FAMILIES[family], convs, opts)
        with monkeypatch.context() as m:
            m.setattr(enc, "_backend", lambda _tokenizer: None)
            slow = enc.encode_batch(tok, FAMILIES[family], convs, opts)
        assert fast == slow
