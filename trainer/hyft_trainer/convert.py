"""`hyft data convert`: the `turns` format -> ShareGPT with Hunyuan thinking markup.

Input samples (JSON or JSONL), either turn pairs or role entries:

    {"system": "...", "turns": [{"human": "Q", "assistant": "A", "requires_reasoning": true, "thinking": "..."}]}
    {"turns": [{"role": "human", "content": "Q"},
               {"role": "assistant", "content": "A", "requires_reasoning": false}]}

A turn that requires reasoning becomes slow thinking (its `thinking` is the think
block and must not be empty); one that does not becomes fast thinking: the user
text gets the `/no_think` prefix and the think block is empty. An assistant text
that already carries <think>/<answer> markup is kept as written.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .loading import MAX_ERROR_CHARS, Source, location, parse_record, raw_records
from .samples import FAST_PREFIX, SampleError, check_text

ROLES = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant"}


def _assistant(turn: dict, where: str) -> tuple[str, bool]:
    answer = turn.get("assistant", turn.get("content"))
    if not isinstance(answer, str) or not answer.strip():
        raise SampleError("bad_content", f"{where}: the assistant text must be a non-empty string")
    reasoning = turn.get("requires_reasoning", bool(turn.get("thinking")))
    if not isinstance(reasoning, bool):
        raise SampleError("bad_content", f"{where}: requires_reasoning must be true or false")
    if "<think>" in answer:
        return answer, not reasoning
    if not reasoning:
        return f"<think>\n\n</think>\n<answer>\n{answer}\n</answer>", True
    thinking = turn.get("thinking")
    if not isinstance(thinking, str) or not thinking.strip():
        raise SampleError("missing_thinking", f"{where}: requires_reasoning is true but 'thinking' is empty")
    return f"<think>\n{thinking}\n</think>\n<answer>\n{answer}\n</answer>", False


def _user(text: Any, fast: bool, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise SampleError("bad_content", f"{where}: the human text must be a non-empty string")
    return f"{FAST_PREFIX}{text}" if fast and not text.lstrip().startswith(FAST_PREFIX) else text


def convert_sample(record: Any) -> dict:
    if not isinstance(record, dict) or not isinstance(record.get("turns"), list) or not record["turns"]:
        raise SampleError("missing_turns", "expected an object with a non-empty 'turns' list")
    messages = []
    if isinstance(record.get("system"), str) and record["system"].strip():
        messages.append({"role": "system", "content": record["system"]})
    turns = record["turns"]
    if all(isinstance(t, dict) and "human" in t for t in turns):  # pairs
        for i, turn in enumerate(turns):
            content, fast = _assistant(turn, f"turns[{i}]")
            messages += [{"role": "user", "content": _user(turn["human"], fast, f"turns[{i}]")},
                         {"role": "assistant", "content": content}]
        return {"messages": messages}
    pending_user = None
    for i, turn in enumerate(turns):
        raw_role = (turn.get("role") or turn.get("from")) if isinstance(turn, dict) else None
        role = ROLES.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise SampleError("unknown_role", f"turns[{i}]: expected role human or assistant")
        if role == "user":
            pending_user = (turn.get("content", turn.get("value")), f"turns[{i}]")
            continue
        if pending_user is None:
            raise SampleError("bad_role_order", f"turns[{i}]: an assistant turn must follow a human turn")
        content, fast = _assistant(turn, f"turns[{i}]")
        messages += [{"role": "user", "content": _user(pending_user[0], fast, pending_user[1])},
                     {"role": "assistant", "content": content}]
        pending_user = None
    if pending_user is not None:
        raise SampleError("no_assistant_reply", f"{pending_user[1]}: the last human turn has no answer")
    return {"messages": messages}


def read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, JSON value or SampleError) per sample, read as training reads data (loading.raw_records)."""
    for row in raw_records(Source(path)):
        try:
            yield location(row), parse_record(row["raw"], row["load_error"])
        except SampleError as err:
            yield location(row), err


def convert_file(src: Path, dst: Path, skip_invalid: bool = False) -> tuple[int, list[str]]:
    """Write dst atomically; with errors and not skip_invalid, write nothing."""
    lines, errors = [], []
    for where, record in read_records(src):
        try:
            if isinstance(record, SampleError):
                raise record
            sample = convert_sample(record)
            for i, message in enumerate(sample["messages"]):
                check_text(message["content"], f"message {i} ({message['role']})")
            lines.append(json.dumps(sample, ensure_ascii=False) + "\n")
        except SampleError as err:
            errors.append(f"{where}: {err.message}"[:MAX_ERROR_CHARS])
    if errors and not skip_invalid:
        return 0, errors
    tmp = dst.with_name(dst.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    tmp.replace(dst)
    return len(lines), errors
