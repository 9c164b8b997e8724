"""Hunyuan chat formats, rendered exactly as the models' own chat templates do
(../shared/hunyuan-chat-format.md), as pieces that carry what each part is, so
that labels can be derived from them.

Pure: no tokenizer here. `encode.py` turns pieces into ids and labels.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

Role = Literal["system", "user", "assistant", "tool"]
# What a piece of the rendered text is; labels are derived from it.
Kind = Literal["prompt", "header", "content", "eos", "end", "history"]


class ToolCall(NamedTuple):
    name: str
    arguments: Any  # as the data writes it: a JSON object, or a string holding one (rendered as written)


class Message(NamedTuple):  # tuples: made for every sample, and cheaper than frozen dataclasses
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn that calls tools


class Tools(NamedTuple):
    """A conversation's tools (the JSON list as the data gives it) and the date its prompt shows."""
    specs: list
    date: datetime


class Piece(NamedTuple):
    text: str
    kind: Kind
    turn: int = -1  # index of the assistant turn this piece belongs to (-1: none)


@dataclass(frozen=True)
class Family:
    name: Literal["small", "7b", "a13b"]
    bos: str
    eos: str
    pad: str
    system_end: str
    special_tokens: tuple[str, ...]
    reduces_history: bool = False  # earlier assistant turns shown by their answer only (Hunyuan-7B)
    generation_prompt: str = ""  # appended for a reply unless the last message is a user turn


SMALL = Family(
    name="small",
    bos="<｜hy_begin▁of▁sentence｜>",
    eos="<｜hy_place▁holder▁no▁2｜>",
    pad="<｜hy_▁pad▁｜>",
    system_end="<｜hy_place▁holder▁no▁3｜>",
    special_tokens=("<｜hy_begin▁of▁sentence｜>", "<｜hy_end▁of▁sentence｜>", "<｜hy_User｜>", "<｜hy_Assistant｜>",
                    "<｜hy_place▁holder▁no▁2｜>", "<｜hy_place▁holder▁no▁3｜>", "<｜hy_place▁holder▁no▁8｜>",
                    "<｜hy_▁pad▁｜>"),
)
SMALL_USER = "<｜hy_User｜>"
SMALL_ASSISTANT = "<｜hy_Assistant｜>"
SMALL_END = "<｜hy_place▁holder▁no▁8｜>"

SEVEN_B = Family(
    name="7b",
    bos="<|startoftext|>",
    eos="<|eos|>",
    pad="<|pad|>",
    system_end="<|extra_4|>",
    special_tokens=("<|endoftext|>", "<|startoftext|>", "<|bos|>", "<|eos|>", "<|pad|>",
                    *(f"<|extra_{i}|>" for i in range(6))),
)
SEVEN_B_USER_END = "<|extra_0|>"
SEVEN_B = replace(SEVEN_B, reduces_history=True, generation_prompt=SEVEN_B_USER_END)
# Hunyuan-A13B: the 7b tokens, but every earlier turn shown in full and no generation prompt of its own
A13B = replace(SEVEN_B, name="a13b", reduces_history=False, generation_prompt="")

FAMILIES = {"small": SMALL, "7b": SEVEN_B, "a13b": A13B}
# The architectures (config.json) whose template is A13B's: the 7b tokens alone cannot tell them apart
A13B_ARCHITECTURES = frozenset({"HunYuanMoEV1ForCausalLM"})
A13B_MODEL_TYPES = frozenset({"hunyuan_v1_moe"})


class FamilyError(ValueError):
    pass


def detect_family(vocab: set[str] | dict[str, int], model_config: dict | None = None) -> Family:
    """Pick the chat family from the tokenizer's special tokens, and for the 7b tokens from the model's
    config.json (Hunyuan-A13B, a MoE, shares them with Hunyuan-7B but not its template)."""
    if SMALL_ASSISTANT in vocab and SMALL.eos in vocab:
        return SMALL
    if SEVEN_B_USER_END in vocab and SEVEN_B.eos in vocab:
        config = model_config or {}
        moe = (config.get("model_type") in A13B_MODEL_TYPES
               or A13B_ARCHITECTURES.intersection(config.get("architectures") or ()))
        return A13B if moe else SEVEN_B
    raise FamilyError("the tokenizer has neither the small-family (<｜hy_Assistant｜>) nor the 7b-family "
                      "(<|extra_0|>, <|eos|>) chat tokens: set template: small, 7b or a13b explicitly, or use a "
                      "Hunyuan tokenizer")


def model_config_of(folder: str | Path | None) -> dict | None:
    """The model folder's config.json, where there is one (a tokenizer may live without it)."""
    try:
        return json.loads((Path(folder) / "config.json").read_text()) if folder else None
    except (OSError, ValueError):
        return None


def resolve_family(name: str, vocab: set[str] | dict[str, int], model_folder: str | Path | None = None) -> Family:
    family = detect_family(vocab, model_config_of(model_folder)) if name == "auto" else FAMILIES[name]
    missing = [t for t in (family.bos, family.eos, family.system_end) if t not in vocab]
    if missing:
        raise FamilyError(f"template {family.name}: the tokenizer lacks {missing}")
    return family


# ---------------------------------------------------------------- thinking markup
THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"


def history_text(content: str) -> str:
    """An earlier 7b assistant turn as the official template shows it: the part after the last <answer>,
    then Python's str.strip('</answer>') (a CHARACTER-SET strip: `<answer>Sure</answer>` keeps `Su`),
    then strip(). The quirk is kept on purpose: the model sees exactly this at inference."""
    if ANSWER_OPEN not in content:
        return content
    return content.split(ANSWER_OPEN)[-1].strip(ANSWER_CLOSE).strip()


# --------------------------------------------------------------------- rendering
def render(family: Family, messages: list[Message], add_generation_prompt: bool = False,
           tools: Tools | None = None) -> list[Piece]:
    """The conversation as the official template renders it, split into labelled pieces."""
    if tools is not None:
        if family.name != "a13b":
            raise FamilyError(f"template {family.name}: hyft renders tool calls for Hunyuan-A13B (template a13b) "
                              "only, whose tool markup Tencent publishes; remove the tool samples or train A13B")
        from .a13b_tools import render_with_tools

        return render_with_tools(family, messages, tools)
    return (_render_small if family.name == "small" else _render_7b)(family, messages, add_generation_prompt)


def _render_small(family: Family, messages: list[Message], add_generation_prompt: bool) -> list[Piece]:
    pieces = [Piece(family.bos, "prompt")]
    turn = 0
    for m in messages:
        if m.role == "system":
            pieces += [Piece(m.content, "prompt"), Piece(family.system_end, "prompt")]
        elif m.role == "user":
            pieces += [Piece(SMALL_USER, "prompt"), Piece(m.content, "prompt")]
        else:
            pieces += [Piece(SMALL_ASSISTANT, "header", turn), Piece(m.content, "content", turn),
                       Piece(family.eos, "eos", turn)]
            turn += 1
    pieces.append(Piece(SMALL_ASSISTANT, "header") if add_generation_prompt else Piece(SMALL_END, "end"))
    return pieces


def _render_7b(family: Family, messages: list[Message], add_generation_prompt: bool) -> list[Piece]:
    pieces = [Piece(family.bos, "prompt")]
    users = turn = 0
    for i, m in enumerate(messages):
        if m.role == "system":
            pieces += [Piece(m.content, "prompt"), Piece(family.system_end, "prompt")]
        elif m.role == "user":
            if users:
                pieces.append(Piece(family.bos, "prompt"))
            pieces += [Piece(m.content, "prompt"), Piece(SEVEN_B_USER_END, "prompt")]
            users += 1
        else:
            shown = m.content if i == len(messages) - 1 or not family.reduces_history else history_text(m.content)
            if shown == m.content:  # shown as the model generates it: a target like the last turn
                pieces += [Piece(m.content, "content", turn), Piece(family.eos, "eos", turn)]
            else:  # reduced to its answer: context, a form the model never generates
                pieces += [Piece(shown, "history", turn), Piece(family.eos, "history", turn)]
            turn += 1
    if add_generation_prompt and family.generation_prompt and messages and messages[-1].role != "user":
        pieces.append(Piece(family.generation_prompt, "prompt"))  # a user turn already ends with it
    return pieces


def text_of(pieces: list[Piece]) -> str:
    return "".join(p.text for p in pieces)


# The same rules as Jinja chat templates, shipped with the tiny tokenizers (hyft tiny-model) so that
# `tokenizer.apply_chat_template` behaves like the official templates (tests/official_templates.py
# holds the reference they are checked against).
_NO_THINK = "{% if enable_thinking is defined and not enable_thinking %}{{ '<think>\\n\\n</think>\\n' }}{% endif %}"
_SYSTEM = ("{% set ns = namespace(system='', users=0) %}"
           "{% for m in messages if m['role'] == 'system' %}"
           "{% set ns.system = ns.system + ('\\n\\n' if not loop.first else '') + m['content'] %}{% endfor %}")
CHAT_TEMPLATES = {
    "small": (
        _SYSTEM + "{{ bos_token + ns.system }}{% if ns.system %}{{ '<｜hy_place▁holder▁no▁3｜>' }}{% endif %}"
        "{% for m in messages %}"
        "{% if m['role'] == 'user' %}{{ '<｜hy_User｜>' + m['content'] }}"
        "{% elif m['role'] == 'assistant' %}{{ '<｜hy_Assistant｜>' + m['content'] + '<｜hy_place▁holder▁no▁2｜>' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<｜hy_Assistant｜>' }}"
        "{% else %}{{ '<｜hy_place▁holder▁no▁8｜>' }}{% endif %}" + _NO_THINK
    ),
    "7b": (
        _SYSTEM + "{{ bos_token + ns.system }}{% if ns.system %}{{ '<|extra_4|>' }}{% endif %}"
        "{% for m in messages %}"
        "{% if m['role'] == 'user' %}{% if ns.users > 0 %}{{ bos_token }}{% endif %}"
        "{{ m['content'] + '<|extra_0|>' }}{% set ns.users = ns.users + 1 %}"
        "{% elif m['role'] == 'assistant' %}{% set content = m['content'] %}"
        "{% if '<answer>' in content and not loop.last %}"
        "{% set content = content.split('<answer>')[-1].strip('</answer>').strip() %}{% endif %}"
        "{{ content + '<|eos|>' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt and messages[-1]['role'] != 'user' %}{{ '<|extra_0|>' }}{% endif %}" + _NO_THINK
    ),
    "a13b": (
        "{% for m in messages %}"
        "{% if m['role'] == 'system' and loop.first %}{{ bos_token + m['content'] + '<|extra_4|>' }}"
        "{% elif m['role'] == 'user' %}"
        "{% if not (loop.index0 == 1 and messages[0]['role'] == 'system') %}{{ bos_token }}{% endif %}"
        "{{ m['content'] + '<|extra_0|>' }}"
        "{% elif m['role'] == 'assistant' %}{{ m['content'] + '<|eos|>' }}"
        "{% endif %}{% endfor %}" + _NO_THINK
    ),
}
