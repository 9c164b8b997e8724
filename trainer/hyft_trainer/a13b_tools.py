"""Hunyuan-A13B's tool-calling markup, rendered as its official chat template renders a conversation
with `tools` (../shared/hunyuan-chat-format.md): a fixed Chinese preamble listing the tools as JSON
and the current date, opening the first (system or user) turn; user turns prefixed 用户：, plain
replies 助手：, tool calls as <tool_calls>[{"name": ..., "arguments": ...}]</tool_calls>, tool results
inside <tool_response>. The date is pinned per sample (pinned_date), so a sample tokenizes the same
every day.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from .chat_format import SEVEN_B_USER_END, Family, Message, Piece, ToolCall, Tools

_FORMAT = ('<tool_calls>[{"name": "func_name1", "arguments": {"argument1": "value1", "argument2": "value2"}},...]'
           '</tool_calls>')
PREAMBLE = ("你是一位函数组合专家。你会得到一个问题和一组可能的函数。"
            "根据问题，你需要进行一个或多个函数/工具调用以实现目的。\n"
            "如果没有一个函数可以使用，请直接使用自然语言回复用户，以助手：开头。\n"
            "如果给定的问题缺少函数所需的参数，请使用自然语言进行提问，向用户询问必要信息，以助手：开头。\n"
            "如果调用结果已经足够回答用户问题，请对历史结果进行总结，使用自然语言回复用户，以助手：开头。\n"
            f"你应该只在工具调用部分返回函数调用。如果你决定调用任何函数，你必须将其格式化为{_FORMAT}。"
            "你不应该在回复中包含任何其他文本。以下是你可以调用的函数列表，格式为JSON。\n")
SYSTEM_HEAD = "\n额外要求：\n"  # then the system message
SYSTEM_TAIL = (f"\n\n如果你决定返回函数调用，请将其格式化为{_FORMAT}，不得包含其他文本。"
               "如果额外要求里有格式要求，请忽略，以此处为准。\n"
               "否则，请参考开头说的三种情况，以助手：开头进行回复。\n\n如果额外要求里有时间信息，就以额外要求里的时间为准，否则，参考当前时间：")
USER_TAIL = (f"\n如果你决定返回函数调用，请将其格式化为{_FORMAT}，不得包含其他文本。\n"
             "否则，请参考开头说的三种情况，以助手：开头进行回复。\n\n当前时间：")
USER, ASSISTANT = "用户：", "助手："
CALLS_OPEN, CALLS_CLOSE = "<tool_calls>", "</tool_calls>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
WEEKDAYS = {"Monday": "星期一", "Tuesday": "星期二", "Wednesday": "星期三", "Thursday": "星期四", "Friday": "星期五",
            "Saturday": "星期六", "Sunday": "星期日"}
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# A sample without its own date gets one drawn from its content within these two years, as Tencent's
# data generator draws a random one per sample, but the same every time the sample is read.
PINNED_FROM, PINNED_SPAN = datetime(2024, 1, 1), timedelta(days=731)


def tojson(value) -> str:
    """Jinja's tojson as transformers' chat templates define it."""
    return json.dumps(value, ensure_ascii=False)


def pinned_date(given: str | None, conversation_key: str) -> datetime:
    """The sample's `date` when it has one (YYYY-MM-DD or YYYY-MM-DD HH:MM:SS), else a date drawn from a
    hash of its content (ValueError for a date in neither form)."""
    if given is not None:
        for form in (DATE_FORMAT, "%Y-%m-%d"):
            try:
                return datetime.strptime(given, form)
            except ValueError:
                continue
        raise ValueError(f"date {given!r}: expected YYYY-MM-DD or YYYY-MM-DD HH:MM:SS")
    seconds = int.from_bytes(hashlib.sha256(conversation_key.encode()).digest()[:8], "big")
    return PINNED_FROM + timedelta(seconds=seconds % int(PINNED_SPAN.total_seconds()))


def shown_date(date: datetime) -> str:
    return f"{date.strftime(DATE_FORMAT)} {WEEKDAYS[date.strftime('%A')]}"


def calls_text(calls: tuple[ToolCall, ...]) -> str:
    return CALLS_OPEN + "[" + ", ".join(
        f'{{"name": "{c.name}", "arguments": {c.arguments if isinstance(c.arguments, str) else tojson(c.arguments)}}}'
        for c in calls) + "]" + CALLS_CLOSE


def render_with_tools(family: Family, messages: list[Message], tools: Tools) -> list[Piece]:
    """The official template's tool branch, as labelled pieces: the assistant's replies and tool calls
    are targets (the model writes the 助手： prefix and the markup itself); tool results are prompt."""
    head = family.bos + PREAMBLE + "\n" + tojson(tools.specs) + "\n"
    date = shown_date(tools.date)
    pieces, turn = [], 0
    for i, m in enumerate(messages):
        if i == 0 and m.role == "system":
            pieces.append(Piece(head + SYSTEM_HEAD + m.content + SYSTEM_TAIL + date + family.system_end, "prompt"))
        elif i == 0:  # the first user turn carries the preamble
            pieces.append(Piece(head + USER_TAIL + date + family.system_end + USER + m.content + SEVEN_B_USER_END,
                                "prompt"))
        elif m.role == "user":
            pieces.append(Piece(USER + m.content + SEVEN_B_USER_END, "prompt"))
        elif m.role == "tool":
            pieces.append(Piece(RESPONSE_OPEN + m.content + RESPONSE_CLOSE + SEVEN_B_USER_END, "prompt"))
        else:
            text = m.content + calls_text(m.tool_calls) if m.tool_calls else ASSISTANT + m.content
            pieces += [Piece(text, "content", turn), Piece(family.eos, "eos", turn)]
            turn += 1
    return pieces


def _quoted(text: str) -> str:
    """text as a Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def with_tools(template: str) -> str:
    """A chat template that renders conversations with `tools` by these rules (the tiny A13B tokenizer's),
    and the others by `template`."""
    weekdays = "{" + ", ".join(f"{_quoted(k)}: {_quoted(v)}" for k, v in WEEKDAYS.items()) + "}"
    call = ("{% set f = c['function'] %}{{ '{\"name\": \"' + f['name'] + '\", \"arguments\": ' + "
            "(f['arguments'] if f['arguments'] is string else f['arguments'] | tojson) + '}' }}"
            "{% if not loop.last %}{{ ', ' }}{% endif %}")
    return (
        "{% if tools %}"
        f"{{% set date = strftime_now({_quoted(DATE_FORMAT)}) + ' ' + {weekdays}[strftime_now('%A')] %}}"
        f"{{% set head = bos_token + {_quoted(PREAMBLE)} + '\\n' + (tools | tojson) + '\\n' %}}"
        "{% for m in messages %}"
        f"{{% if loop.first and m['role'] == 'system' %}}{{{{ head + {_quoted(SYSTEM_HEAD)} + m['content'] + "
        f"{_quoted(SYSTEM_TAIL)} + date + '<|extra_4|>' }}}}"
        f"{{% elif loop.first %}}{{{{ head + {_quoted(USER_TAIL)} + date + '<|extra_4|>' + {_quoted(USER)} + "
        "m['content'] + '<|extra_0|>' }}"
        f"{{% elif m['role'] == 'user' %}}{{{{ {_quoted(USER)} + m['content'] + '<|extra_0|>' }}}}"
        f"{{% elif m['role'] == 'tool' %}}{{{{ {_quoted(RESPONSE_OPEN)} + m['content'] + "
        f"{_quoted(RESPONSE_CLOSE + SEVEN_B_USER_END)} }}}}"
        "{% elif m['role'] == 'assistant' %}"
        f"{{% if m['tool_calls'] is defined and m['tool_calls'] %}}{{{{ m['content'] + '{CALLS_OPEN}[' }}}}"
        f"{{% for c in m['tool_calls'] %}}{call}{{% endfor %}}{{{{ ']{CALLS_CLOSE}' }}}}"
        f"{{% else %}}{{{{ {_quoted(ASSISTANT)} + m['content'] }}}}{{% endif %}}{{{{ '<|eos|>' }}}}"
        "{% endif %}{% endfor %}"
        "{% if enable_thinking is defined and not enable_thinking %}{{ '<think>\\n\\n</think>\\n' }}{% endif %}"
        "{% else %}" + template + "{% endif %}"
    )
