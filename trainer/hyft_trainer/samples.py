"""One raw sample (any JSON value) -> a validated conversation, or a SampleError
that says what is wrong. Pure; never crashes on any JSON value.

Formats: ShareGPT (`messages`/`role`/`content` and `conversations`/`from`/`value`,
or any LLaMA-Factory `columns`/`tags`), and alpaca (instruction/input/output,
optional system and history). Hunyuan thinking markup, where an assistant turn
uses it, must be `<think>…</think><answer>…</answer>` with nothing outside the
tags: slow thinking has a non-empty think block, fast thinking (user turn
starting with /no_think) an empty one. Whitespace is kept as written. Tool calling:
a sample's `tools`, assistant `tool_calls` (OpenAI) or LLaMA-Factory's
function_call/observation turns; called names must be declared, arguments JSON
objects, every call followed by its results.

Over 300 lines: the one validator that data check, training and convert share, every
format and rule of a sample in one place.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from .chat_format import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, Message, ToolCall, Tools

FAST_PREFIX, SLOW_PREFIX = "/no_think", "/think"
SHAREGPT_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
                  "model": "assistant", "system": "system", "tool": "tool", "observation": "tool",
                  "function_call": "assistant"}  # LLaMA-Factory's tool roles: its call turn and the result
FUNCTION_CALL = "function_call"


def excerpt(value: Any, limit: int = 60) -> str:
    """A value as it appears in an error message: repr, cut to a short excerpt."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


class SampleError(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Columns:
    """LLaMA-Factory dataset_info.json `columns` and `tags` (defaults: ShareGPT auto-detect)."""

    messages: str | None = None
    system: str | None = None
    role_tag: str | None = None
    content_tag: str | None = None
    user_tag: str | None = None
    assistant_tag: str | None = None
    system_tag: str | None = None
    prompt: str = "instruction"
    query: str = "input"
    response: str = "output"
    history: str = "history"
    tools: str = "tools"
    function_tag: str | None = None
    observation_tag: str | None = None


@dataclass(slots=True)
class Conversation:
    messages: list[Message]
    fast_turns: int = 0
    slow_turns: int = 0
    plain_turns: int = 0
    tools: Tools | None = None  # a conversation that declares tools


def detect_format(record: Any) -> str:
    if not isinstance(record, dict):
        raise SampleError("not_object", f"sample must be a JSON object, got {type(record).__name__}")
    if "messages" in record or "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    raise SampleError("unknown_format", "neither ShareGPT (messages/conversations) nor alpaca "
                                        "(instruction/output): cannot tell the format")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SampleError("bad_content", f"{where}: content must be a string, got {type(value).__name__}")
    if not value.strip():
        raise SampleError("empty_content", f"{where}: empty content")
    return value


def from_sharegpt(record: Any, cols: Columns = Columns()) -> list[Message]:
    if not isinstance(record, dict):
        raise SampleError("not_object", f"sample must be a JSON object, got {type(record).__name__}")
    key = cols.messages or ("messages" if "messages" in record else "conversations")
    turns = record.get(key)
    if turns is None:
        raise SampleError("missing_messages", f"no '{key}' list in the sample")
    if not isinstance(turns, list):
        raise SampleError("bad_messages", f"'{key}' must be a list, got {type(turns).__name__}")
    if not turns:
        raise SampleError("empty_conversation", f"'{key}' is empty")
    messages = []
    roles = _roles(cols)
    system_column = cols.system and record.get(cols.system)
    if system_column:
        messages.append(Message("system", _text(system_column, cols.system)))
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise SampleError("bad_message", f"{where}: must be an object, got {type(turn).__name__}")
        role_key, content_key = _vocabulary(turn, key, cols)
        if role_key not in turn:
            raise SampleError("missing_role", f"{where}: no '{role_key}'{_stray(turn, role_key, content_key)}")
        raw_role = turn[role_key]
        role = roles.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise SampleError("unknown_role", f"{where}: unknown role {excerpt(raw_role)} (expected system, "
                                              "user/human, assistant/gpt, tool/observation, function_call)")
        if roles.get(FUNCTION_CALL) == role and raw_role in (FUNCTION_CALL, cols.function_tag):
            # LLaMA-Factory: the call itself is the turn's text, a JSON object or a list of them
            messages.append(Message("assistant", "", _calls(_json(turn.get(content_key), where), where)))
            continue
        if "tool_calls" in turn and role == "assistant":  # OpenAI style: beside an optional content
            calls = _calls(turn["tool_calls"], f"{where}.tool_calls")
            content = turn.get(content_key) or ""
            messages.append(Message(role, content if isinstance(content, str) else _text(content, where), calls))
            continue
        if content_key not in turn:
            raise SampleError("missing_content", f"{where}: no '{content_key}'{_stray(turn, role_key, content_key)}")
        messages.append(Message(role, _text(turn[content_key], where)))
    return messages


def _json(value: Any, where: str, reason: str = "bad_tool_call") -> Any:
    """A JSON value given as text (LLaMA-Factory writes tools and calls as strings) or as JSON."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as err:
        raise SampleError(reason, f"{where}: not JSON: {err}") from None


def _calls(value: Any, where: str) -> tuple[ToolCall, ...]:
    """Tool calls: a list (or one) of {"name", "arguments"}, bare or under "function" (OpenAI)."""
    calls = value if isinstance(value, list) else [value]
    if not calls:
        raise SampleError("bad_tool_call", f"{where}: no tool call in it")
    out = []
    for k, call in enumerate(calls):
        call = call.get("function", call) if isinstance(call, dict) else call
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
            raise SampleError("bad_tool_call", f"{where}[{k}]: a tool call needs a name (and arguments)")
        arguments = call.get("arguments", {})
        parsed = _json(arguments, f"{where}[{k}].arguments") if isinstance(arguments, str) else arguments
        if not isinstance(parsed, dict):
            raise SampleError("bad_tool_call", f"{where}[{k}].arguments: must be a JSON object, got "
                                               f"{excerpt(arguments)}")
        out.append(ToolCall(call["name"], arguments))
    return tuple(out)


def tool_names(specs: Any, where: str = "tools") -> set[str]:
    """The names a sample's tools declare (OpenAI {"type": "function", "function": {...}} or bare)."""
    if not isinstance(specs, list) or not specs:
        raise SampleError("bad_tools", f"{where}: must be a non-empty list of tool definitions")
    names = set()
    for k, spec in enumerate(specs):
        spec = spec.get("function", spec) if isinstance(spec, dict) else spec
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            raise SampleError("bad_tools", f"{where}[{k}]: a tool definition needs a name")
        names.add(spec["name"])
    return names


def _vocabulary(turn: dict, list_key: str, cols: Columns) -> tuple[str, str]:
    """The turn's own key names: role/content (OpenAI style) or from/value (ShareGPT style); a turn that
    shows neither is read in its list's usual style (messages: role/content, conversations: from/value)."""
    if "role" in turn or "content" in turn:
        names = ("role", "content")
    elif "from" in turn or "value" in turn:
        names = ("from", "value")
    else:
        names = ("from", "value") if list_key == "conversations" else ("role", "content")
    return cols.role_tag or names[0], cols.content_tag or names[1]


def _stray(turn: dict, role_key: str, content_key: str) -> str:
    """A hint for a turn that mixes the two vocabularies."""
    stray = [k for k in ("role", "content", "from", "value") if k in turn and k not in (role_key, content_key)]
    return f" (it has {', '.join(map(repr, stray))}: write role/content or from/value)" if stray else ""


@cache  # once per dataset's columns, not per sample
def _roles(cols: Columns) -> dict[str, str]:
    """Role names as written -> roles: the dataset's own tags first, then the usual ShareGPT names."""
    custom = {cols.user_tag: "user", cols.assistant_tag: "assistant", cols.system_tag: "system",
              cols.function_tag: "assistant", cols.observation_tag: "tool"}
    custom.pop(None, None)
    return {**SHAREGPT_ROLES, **custom} if custom else SHAREGPT_ROLES


def from_alpaca(record: Any, cols: Columns = Columns()) -> list[Message]:
    if not isinstance(record, dict):
        raise SampleError("not_object", f"sample must be a JSON object, got {type(record).__name__}")
    for key in (cols.prompt, cols.response):
        if key not in record:
            raise SampleError("missing_field", f"alpaca sample has no '{key}'")
    messages = []
    system_key = cols.system or "system"
    if record.get(system_key):
        messages.append(Message("system", _text(record[system_key], system_key)))
    history = record.get(cols.history) or []
    if not isinstance(history, list) or not all(isinstance(h, list) and len(h) == 2 for h in history):
        raise SampleError("bad_history", f"'{cols.history}' must be a list of [question, answer] pairs")
    for i, (q, a) in enumerate(history):
        messages += [Message("user", _text(q, f"{cols.history}[{i}][0]")),
                     Message("assistant", _text(a, f"{cols.history}[{i}][1]"))]
    prompt = _text(record[cols.prompt], cols.prompt)
    query = record.get(cols.query) or ""
    if not isinstance(query, str):
        raise SampleError("bad_content", f"{cols.query}: must be a string, got {type(query).__name__}")
    messages += [Message("user", f"{prompt}\n{query}" if query.strip() else prompt),
                 Message("assistant", _text(record[cols.response], cols.response))]
    return messages


def check_order(messages: list[Message]) -> None:
    """Optional system first, then user/assistant alternating, ending with an assistant turn; an
    assistant turn that calls tools is followed by their results (tool turns), then the assistant again."""
    for i, m in enumerate(messages):
        if m.role == "system" and i != 0:
            raise SampleError("system_not_first", f"message {i}: a system message may only come first")
    offset = 1 if messages and messages[0].role == "system" else 0
    if len(messages) == offset:
        raise SampleError("no_assistant_reply", "only a system message: no user/assistant turns")
    want = ("user",)
    for i, m in enumerate(messages[offset:], start=offset):
        if m.role not in want:
            if m.role == "tool":
                raise SampleError("bad_role_order", f"message {i}: a tool result without a tool call before it")
            raise SampleError("bad_role_order", f"message {i}: expected {' or '.join(want)}, got {m.role} "
                                                "(turns must alternate user/assistant, starting with user)")
        if m.role == "user":
            want = ("assistant",)
        elif m.role == "tool":
            want = ("tool", "assistant")
        else:
            want = ("tool",) if m.tool_calls else ("user",)
    if messages[-1].role != "assistant":
        what = "a user turn" if messages[-1].role == "user" else "a tool result"
        raise SampleError("no_assistant_reply", f"the conversation ends with {what}: nothing to train on")


_WELL_FORMED = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.S)
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
_ANY_TAG = re.compile("|".join(map(re.escape, _TAGS)))


def thinking(content: str, user: str, where: str) -> str:
    """'slow', 'fast' or 'plain' for one assistant turn; SampleError for broken markup."""
    match = _WELL_FORMED.fullmatch(content)  # the common case in one pass; anything else is diagnosed below
    if match and not _ANY_TAG.search(content, match.start(1), match.end(1)) \
            and not _ANY_TAG.search(content, match.start(2), match.end(2)):
        return _kind(match.group(1), match.group(2), user, where)
    counts = {tag: content.count(tag) for tag in _TAGS}
    if not any(counts.values()):
        return "plain"
    for tag, n in counts.items():
        if n > 1:
            raise SampleError("think_markup", f"{where}: {tag} appears {n} times")
    missing = [tag for tag, n in counts.items() if n == 0]
    if missing:
        raise SampleError("think_markup", f"{where}: incomplete thinking markup, missing {' '.join(missing)}")
    i_think, i_think_end = content.index(THINK_OPEN), content.index(THINK_CLOSE)
    i_answer, i_answer_end = content.index(ANSWER_OPEN), content.index(ANSWER_CLOSE)
    if not i_think < i_think_end < i_answer < i_answer_end:
        raise SampleError("think_markup", f"{where}: tags out of order (want <think>…</think><answer>…</answer>)")
    outside = (content[:i_think], content[i_think_end + len(THINK_CLOSE):i_answer],
               content[i_answer_end + len(ANSWER_CLOSE):])
    if any(part.strip() for part in outside):
        raise SampleError("think_markup", f"{where}: text outside the <think>/<answer> tags")
    return _kind(content[i_think + len(THINK_OPEN):i_think_end], content[i_answer + len(ANSWER_OPEN):i_answer_end],
                 user, where)


def _kind(reasoning: str, answer: str, user: str, where: str) -> str:
    if not answer.strip():
        raise SampleError("empty_answer", f"{where}: empty <answer> block")
    fast = user.lstrip().startswith(FAST_PREFIX)
    if fast and reasoning.strip():
        raise SampleError("no_think_mismatch", f"{where}: the user turn asks for /no_think but the think block "
                                               "is not empty")
    if not fast and not reasoning.strip():
        forced = " (/think forces slow thinking)" if user.lstrip().startswith(SLOW_PREFIX) else ""
        raise SampleError("empty_think", f"{where}: empty think block, but the user turn does not start with "
                                         f"/no_think{forced}")
    return "fast" if fast else "slow"


def check_text(content: str, where: str) -> None:
    """Text a tokenizer can take: no lone surrogates (valid JSON escapes, not Unicode), no NUL characters."""
    try:
        content.encode("utf-8")
    except UnicodeEncodeError as err:
        raise SampleError("invalid_text", f"{where}: content has a lone surrogate {content[err.start]!r} at "
                                          f"character {err.start}") from None
    if "\x00" in content:
        raise SampleError("invalid_text", f"{where}: content has a NUL character at character "
                                          f"{content.index(chr(0))}")


def to_conversation(record: Any, fmt: str = "auto", cols: Columns = Columns(),
                    require_markup: bool = False, default_system: str | None = None) -> Conversation:
    """default_system: the system message of a conversation that has none (LLaMA-Factory's default_system)."""
    if fmt == "auto":
        fmt = detect_format(record)
    messages = from_alpaca(record, cols) if fmt == "alpaca" else from_sharegpt(record, cols)
    check_order(messages)
    if default_system and messages[0].role != "system":
        messages.insert(0, Message("system", default_system))
    conv = Conversation(messages, tools=_tools(record, cols) if fmt == "sharegpt" else None)
    declared = tool_names(conv.tools.specs) if conv.tools else set()
    last_user = ""
    for i, m in enumerate(messages):
        check_text(m.content, f"message {i} ({m.role})")
        if m.role == "user":
            last_user = m.content
        elif m.tool_calls:  # a call turn: the markup is the tool calls', not thinking's
            for call in m.tool_calls:
                if call.name not in declared:
                    known = ", ".join(sorted(declared)) or "none"
                    raise SampleError("undeclared_tool", f"message {i}: calls {call.name!r}, which the sample's "
                                                         f"tools do not declare ({known})")
                check_text(call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments),
                           f"message {i} ({call.name} arguments)")
            conv.plain_turns += 1
        elif m.role == "assistant":
            kind = thinking(m.content, last_user, f"message {i}")
            if kind == "plain" and require_markup:
                raise SampleError("missing_markup", f"message {i}: no <think>/<answer> markup (required)")
            setattr(conv, f"{kind}_turns", getattr(conv, f"{kind}_turns") + 1)
    return conv


DATE_KEY = "date"  # a tool sample's own date, shown in its prompt (a13b_tools.pinned_date)


def _tools(record: dict, cols: Columns) -> Tools | None:
    """The sample's tools (a list, or LLaMA-Factory's JSON text of one) with its pinned date; None without."""
    from .a13b_tools import pinned_date

    specs = record.get(cols.tools)
    if specs is None or specs == "" or specs == []:
        return None
    specs = _json(specs, cols.tools, "bad_tools")
    tool_names(specs, cols.tools)
    given = record.get(DATE_KEY)
    if given is not None and not isinstance(given, str):
        raise SampleError("bad_date", f"{DATE_KEY}: expected a string YYYY-MM-DD or YYYY-MM-DD HH:MM:SS")
    try:
        return Tools(specs, pinned_date(given, json.dumps(record, sort_keys=True)))
    except ValueError as err:
        raise SampleError("bad_date", str(err)) from None
