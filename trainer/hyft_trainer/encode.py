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

from .chat_format import Family, Message, Piece, render, text_of

IGNORE = -100


@dataclass(frozen=True)
class MaskOptions:
    train_on_prompt: bool = False
    mask_history: bool = False
    train_assistant_header: bool = False


def trained(piece: Piece, last_turn: int, opts: MaskOptions) -> bool:
    if piece.kind == "end":
        return False
    if opts.train_on_prompt:
        return True
    if piece.kind in ("content", "eos") or (piece.kind == "header" and opts.train_assistant_header):
        return not opts.mask_history or piece.turn == last_turn
    return False


def trained_spans(pieces: list[Piece], opts: MaskOptions) -> list[tuple[int, int]]:
    last_turn = max((p.turn for p in pieces if p.kind in ("content", "eos")), default=-1)
    spans, pos = [], 0
    for piece in pieces:
        end = pos + len(piece.text)
        if trained(piece, last_turn, opts) and end > pos:
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


def encode_batch(tokenizer, family: Family, conversations: list[list[Message]], opts: MaskOptions
                 ) -> dict[str, list[list[int]]]:
    pieces = [render(family, conv) for conv in conversations]
    enc = tokenizer([text_of(p) for p in pieces], add_special_tokens=False, return_offsets_mapping=True)
    labels = [labels_from_offsets(ids, offs, trained_spans(p, opts))
              for ids, offs, p in zip(enc["input_ids"], enc["offset_mapping"], pieces, strict=True)]
    return {"input_ids": enc["input_ids"], "labels": labels}


def encode(tokenizer, family: Family, conversation: list[Message], opts: MaskOptions = MaskOptions()
           ) -> tuple[list[int], list[int]]:
    out = encode_batch(tokenizer, family, [conversation], opts)
    return out["input_ids"][0], out["labels"][0]
