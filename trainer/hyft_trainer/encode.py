"""Conversations -> input_ids and labels.

The rendered text is tokenized in one piece (exactly what apply_chat_template
does), and labels come from character spans of the pieces: a token is trained
when it starts inside a trained piece. Every boundary between pieces is a
special token, so no token straddles two pieces.

Default labels (LLaMA-Factory's convention): each assistant turn's content and
its end-of-turn token are trained; system, user and header tokens are -100. The
assistant header is always supplied at inference (it is the generation prompt),
so the model never has to predict it; `train_assistant_header` trains it anyway,
as Tencent's own script does. The small family's closing `no▁8` token comes
after the stop token and is never trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from .chat_format import Family, Message, Piece, Tools, render, text_of

IGNORE = -100


@dataclass(frozen=True)
class MaskOptions:
    train_on_prompt: bool = False
    mask_history: bool = False
    train_assistant_header: bool = False


@cache  # once per MaskOptions, not per sample
def trained_kinds(opts: MaskOptions) -> frozenset[str]:
    """The kinds of piece whose tokens are trained (mask_history then keeps only the last turn's)."""
    if opts.train_on_prompt:
        return frozenset({"prompt", "header", "content", "eos", "history"})  # all but the closing "end"
    return frozenset({"content", "eos", *(["header"] if opts.train_assistant_header else [])})


def trained_spans(pieces: list[Piece], opts: MaskOptions) -> list[tuple[int, int]]:
    kinds = trained_kinds(opts)
    only_turn = None  # with mask_history: the last assistant turn
    if opts.mask_history and not opts.train_on_prompt:
        only_turn = max((p.turn for p in pieces if p.kind in ("content", "eos")), default=-1)
    spans, pos = [], 0
    for text, kind, turn in pieces:
        end = pos + len(text)
        if kind in kinds and end > pos and (only_turn is None or turn == only_turn):
            if spans and spans[-1][1] == pos:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((pos, end))
        pos = end
    return spans


def labels_from_offsets(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    labels, i = [], 0
    for token, (start, _end) in zip(ids, offsets, strict=True):
        while i < len(spans) and spans[i][1] <= start:
            i += 1
        labels.append(token if i < len(spans) and spans[i][0] <= start else IGNORE)
    return labels


def labels_from_spans(ids: list[int], encoding, spans: list[tuple[int, int]]) -> list[int] | None:
    """Labels from a tokenizers Encoding: each trained span's tokens, found with char_to_token (a few
    calls per sample, not one per token). None when a span edge maps to no token."""
    labels = [IGNORE] * len(ids)
    for start, end in spans:
        first, last = encoding.char_to_token(start), encoding.char_to_token(end - 1)
        if first is None or last is None:
            return None
        labels[first:last + 1] = ids[first:last + 1]
    return labels


def _backend(tokenizer):
    """The Rust tokenizer behind a fast tokenizer, when calling it directly gives what tokenizer(...)
    gives (no truncation or padding configured in it); else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.truncation is not None or backend.padding is not None:
        return None
    return backend


def encode_batch(tokenizer, family: Family, conversations: list[list[Message]], opts: MaskOptions,
                 tools: list[Tools | None] | None = None) -> dict[str, list[list[int]]]:
    """tools: each conversation's declared tools (None: it has none)."""
    pieces = [render(family, conv, tools=t) for conv, t in zip(conversations, tools or [None] * len(conversations),
                                                                strict=True)]
    texts = [text_of(p) for p in pieces]
    spans = [trained_spans(p, opts) for p in pieces]
    backend = _backend(tokenizer)
    if backend is not None:
        encodings = backend.encode_batch(texts, add_special_tokens=False)
        input_ids = [e.ids for e in encodings]
        labels = [labels_from_spans(ids, e, s) for ids, e, s in zip(input_ids, encodings, spans, strict=True)]
        for i, row in enumerate(labels):
            if row is None:
                labels[i] = labels_from_offsets(input_ids[i], encodings[i].offsets, spans[i])
        return {"input_ids": input_ids, "labels": labels}
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    labels = [labels_from_offsets(ids, offs, s)
              for ids, offs, s in zip(enc["input_ids"], enc["offset_mapping"], spans, strict=True)]
    return {"input_ids": enc["input_ids"], "labels": labels}


def encode(tokenizer, family: Family, conversation: list[Message], opts: MaskOptions = MaskOptions(),
           tools: Tools | None = None) -> tuple[list[int], list[int]]:
    out = encode_batch(tokenizer, family, [conversation], opts, [tools])
    return out["input_ids"][0], out["labels"][0]
