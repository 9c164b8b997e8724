"""A JSONL file with many kinds of malformed samples between valid ones: every
invalid line with the reason hyft must give it, so that each consumer (data check,
data check --skip-invalid, training with skip_invalid_samples) can be held to
counting every invalid sample with its line and losing no valid one."""
from __future__ import annotations

import json
from pathlib import Path

from hyft_trainer.sample_data import make_samples


def _chat(*turns) -> bytes:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]}).encode()


ANSWER = "<think>\nsum\n</think>\n<answer>\n4\n</answer>"

# (kind, line bytes, reason). A line is one sample; no kind depends on a tokenizer except too_long.
MALFORMED: list[tuple[str, bytes, str]] = [
    ("bytes that are not UTF-8", b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "invalid_json"),
    ("a lone surrogate escape", _chat(("user", "a\ud800b"), ("assistant", "x")), "invalid_text"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
    ("a NUL character in content", _chat(("user", "a\u0000b"), ("assistant", "x")), "invalid_text"),
    ("a raw NUL byte", b'{"messages": \x00}', "invalid_json"),
    ("not JSON at all", b"hello, world", "invalid_json"),
    ("truncated JSON", b'{"messages": [{"role": "user"', "invalid_json"),
    ("two JSON values on a line", b'{"a": 1}{"b": 2}', "invalid_json"),
    ("a line far longer than any sample", b"x" * 3_000_000, "invalid_json"),
    ("a JSON list", b"[1, 2]", "not_object"),
    ("a JSON string", b'"hi"', "not_object"),
    ("a JSON number", b"5", "not_object"),
    ("JSON null", b"null", "not_object"),
    ("an empty object", b"{}", "unknown_format"),
    ("messages not a list", b'{"messages": "hi"}', "bad_messages"),
    ("messages null", b'{"messages": null}', "missing_messages"),
    ("messages empty", b'{"messages": []}', "empty_conversation"),
    ("a message that is not an object", b'{"messages": [1]}', "bad_message"),
    ("role missing", b'{"messages": [{"content": "hi"}]}', "missing_role"),
    ("content missing", b'{"messages": [{"role": "user"}]}', "missing_content"),
    ("from missing", b'{"conversations": [{"value": "hi"}]}', "missing_role"),
    ("value missing", b'{"conversations": [{"from": "human"}]}', "missing_content"),
    ("an unknown role", _chat(("robot", "hi"), ("assistant", "x")), "unknown_role"),
    ("a role that is a number", b'{"messages": [{"role": 5, "content": "hi"}]}', "unknown_role"),
    ("content a number", _chat(("user", 5), ("assistant", "x")), "bad_content"),
    ("content a list of parts", _chat(("user", [{"type": "text", "text": "hi"}]), ("assistant", "x")), "bad_content"),
    ("content NaN", b'{"messages": [{"role": "user", "content": NaN}]}', "bad_content"),
    ("empty content", _chat(("user", ""), ("assistant", "x")), "empty_content"),
    ("whitespace content", _chat(("user", "  \n"), ("assistant", "x")), "empty_content"),
    ("system not first", _chat(("user", "q"), ("system", "s"), ("assistant", "x")), "system_not_first"),
    ("two user turns in a row", _chat(("user", "q"), ("user", "q"), ("assistant", "x")), "bad_role_order"),
    ("starts with the assistant", _chat(("assistant", "x"), ("user", "q")), "bad_role_order"),
    ("ends with a user turn", _chat(("user", "q"), ("assistant", "x"), ("user", "q")), "no_assistant_reply"),
    ("only a system message", _chat(("system", "s")), "no_assistant_reply"),
    ("<think> twice", _chat(("user", "q"), ("assistant", "<think>a</think><think>b</think><answer>c</answer>")),
     "think_markup"),
    ("markup without </answer>", _chat(("user", "q"), ("assistant", "<think>a</think><answer>c")), "think_markup"),
    ("markup out of order", _chat(("user", "q"), ("assistant", "<answer>c</answer><think>a</think>")),
     "think_markup"),
    ("text outside the tags", _chat(("user", "q"), ("assistant", "hi <think>a</think><answer>c</answer>")),
     "think_markup"),
    ("an empty answer", _chat(("user", "q"), ("assistant", "<think>a</think><answer> </answer>")), "empty_answer"),
    ("/no_think with reasoning", _chat(("user", "/no_think q"), ("assistant", ANSWER)), "no_think_mismatch"),
    ("empty think without /no_think", _chat(("user", "q"), ("assistant", "<think>\n\n</think>\n<answer>4</answer>")),
     "empty_think"),
    ("alpaca without output", b'{"instruction": "q", "input": ""}', "unknown_format"),
    ("alpaca history not pairs", b'{"instruction": "q", "output": "a", "history": [["only one"]]}', "bad_history"),
    ("alpaca input a number", b'{"instruction": "q", "input": 5, "output": "a"}', "bad_content"),
    ("a huge value", _chat(("user", "word " * 60_000), ("assistant", "x")), "too_long"),
]


def write(path: Path, valid_every: int = 1) -> tuple[Path, dict[int, str], int]:
    """(file, {line: reason} of the invalid samples, valid samples); the first line carries a BOM,
    and empty lines sit between samples (neither is an error)."""
    valid = [json.dumps(s, ensure_ascii=False).encode() for s in make_samples(len(MALFORMED) * valid_every, seed=5)]
    lines: list[bytes] = []
    expected: dict[int, str] = {}
    for i, (_, raw, reason) in enumerate(MALFORMED):
        for sample in valid[i * valid_every:(i + 1) * valid_every]:
            lines.append(sample)
        lines.append(b"")
        lines.append(raw)
        expected[len(lines)] = reason
    lines[0] = b"\xef\xbb\xbf" + lines[0]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, expected, len(valid)
