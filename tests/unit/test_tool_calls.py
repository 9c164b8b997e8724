"""Tool-calling data for Hunyuan-A13B: read, validated, rendered exactly as Tencent's published
template renders it (the date pinned), and labelled: calls and replies trained, tool results never."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

from hyft_trainer.a13b_tools import pinned_date, shown_date
from hyft_trainer.chat_format import FAMILIES, FamilyError, render, text_of
from hyft_trainer.data_check import clock_at, template_input
from hyft_trainer.encode import IGNORE, MaskOptions, encode
from hyft_trainer.samples import SampleError, to_conversation

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "今天的天气",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"name": "get_time", "description": "Local time", "parameters": {"type": "object", "properties": {}}}


def call(name, arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def sample(*messages, tools=(WEATHER, TIME), **extra):
    return {"messages": list(messages), "tools": list(tools), **extra}


USER = {"role": "user", "content": "北京和上海天气如何？"}
CALL = {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "北京"})]}
PARALLEL = {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "北京"}),
                                                               call("get_weather", '{"city": "上海"}')]}
RESULT = {"role": "tool", "content": '{"temp": 21, "sky": "晴"}'}
ERROR = {"role": "tool", "content": "Error: service unavailable"}
ANSWER = {"role": "assistant", "content": "北京晴，21 度。"}

# Every branch of the tool template: system first or not, one and several tools, parallel calls,
# arguments as objects and as strings, a tool error, several rounds, a reply with thinking markup.
CORPUS = [
    sample(USER, CALL, RESULT, ANSWER),
    sample({"role": "system", "content": "回答要简短。"}, USER, PARALLEL, RESULT, ERROR, ANSWER),
    sample(USER, PARALLEL, ERROR, ERROR, {"role": "assistant", "content": "服务不可用，请稍后再试。"}),
    sample(USER, CALL, RESULT, ANSWER, {"role": "user", "content": "现在几点？"},
           {"role": "assistant", "content": "", "tool_calls": [call("get_time", {})]},
           {"role": "tool", "content": "10:42"}, {"role": "assistant", "content": "现在 10:42。"}),
    sample(USER, {"role": "assistant",
                  "content": "<think>\n需要城市。\n</think>\n<answer>\n哪个城市？\n</answer>"}, tools=[WEATHER]),
    sample({"role": "user", "content": "Weather in Paris?"},
           {"role": "assistant", "content": "", "tool_calls": [call("get_weather", '{"city":"Paris"}')]},
           RESULT, {"role": "assistant", "content": "Sunny."}, date="2025-06-27 09:30:00"),
]


def official_text(tokenizer, record, template=None):
    from tests.official_templates import OFFICIAL

    conv = to_conversation(record)
    with clock_at(conv.tools.date):
        return tokenizer.apply_chat_template(template_input(conv.messages), tools=conv.tools.specs, tokenize=False,
                                             chat_template=template or OFFICIAL["a13b"])


@pytest.mark.parametrize("record", CORPUS, ids=range(len(CORPUS)))
def test_tool_conversations_render_exactly_as_tencents_template(tokenizers, record):
    conv = to_conversation(record)
    ours = text_of(render(FAMILIES["a13b"], conv.messages, tools=conv.tools))
    assert ours == official_text(tokenizers["a13b"], record)
    assert ours == official_text(tokenizers["a13b"], record, tokenizers["a13b"].chat_template)  # the tiny one's


def trained(tok, ids, labels):
    return tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE])


def test_calls_and_replies_are_trained_tool_results_never(tokenizers):
    tok = tokenizers["a13b"]
    conv = to_conversation(CORPUS[1])
    ids, labels = encode(tok, FAMILIES["a13b"], conv.messages, tools=conv.tools)
    assert trained(tok, ids, labels) == ('<tool_calls>[{"name": "get_weather", "arguments": {"city": "北京"}}, '
                       '{"name": "get_weather", "arguments": {"city": "上海"}}]</tool_calls><|eos|>'
                       "助手：北京晴，21 度。<|eos|>")
    ids, labels = encode(tok, FAMILIES["a13b"], conv.messages, MaskOptions(mask_history=True), tools=conv.tools)
    assert trained(tok, ids, labels) == "助手：北京晴，21 度。<|eos|>"


def test_the_date_is_the_samples_own_or_drawn_from_its_content():
    given = to_conversation(CORPUS[5]).tools.date
    assert given == datetime(2025, 6, 27, 9, 30) and shown_date(given) == "2025-06-27 09:30:00 星期五"
    drawn = to_conversation(CORPUS[0]).tools.date
    assert drawn == to_conversation(json.loads(json.dumps(CORPUS[0]))).tools.date  # every day the same
    assert drawn != to_conversation(CORPUS[2]).tools.date  # and varied across samples, as Tencent's data
    assert datetime(2024, 1, 1) <= drawn < datetime(2026, 1, 2)
    assert pinned_date("2025-01-02", "x") == datetime(2025, 1, 2)


def test_llamafactory_function_call_and_observation_turns_read_as_tool_calls():
    record = {"conversations": [{"from": "human", "value": "北京天气？"},
                                {"from": "function_call", "value": '{"name": "get_weather", "arguments": '
                                                                   '{"city": "北京"}}'},
                                {"from": "observation", "value": "晴"}, {"from": "gpt", "value": "晴天。"}],
              "tools": json.dumps([WEATHER["function"]], ensure_ascii=False)}
    conv = to_conversation(record)
    assert [m.role for m in conv.messages] == ["user", "assistant", "tool", "assistant"]
    assert conv.messages[1].tool_calls[0].name == "get_weather" and conv.tools.specs[0]["name"] == "get_weather"


@pytest.mark.parametrize("record, reason, message", [
    (sample(USER, {"role": "assistant", "content": "", "tool_calls": [call("book_flight", {})]}), "undeclared_tool",
     "calls 'book_flight', which the sample's tools do not declare (get_time, get_weather)"),
    ({"messages": [USER, CALL, RESULT, ANSWER]}, "undeclared_tool", "tools do not declare (none)"),
    (sample(USER, {"role": "assistant", "content": "", "tool_calls": [call("get_weather", "{city: x}")]}),
     "bad_tool_call", "arguments: not JSON"),
    (sample(USER, {"role": "assistant", "content": "", "tool_calls": [call("get_weather", "[1]")]}),
     "bad_tool_call", "arguments: must be a JSON object"),
    (sample(USER, {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}),
     "bad_tool_call", "a tool call needs a name"),
    (sample(USER, RESULT, ANSWER), "bad_role_order", "message 1: a tool result without a tool call before it"),
    (sample(USER, CALL, ANSWER), "bad_role_order", "message 2: expected tool, got assistant"),
    (sample(USER, CALL, RESULT), "no_assistant_reply", "ends with a tool result"),
    ({"messages": [USER, ANSWER], "tools": "not json"}, "bad_tools", "tools: not JSON"),
    (sample(USER, ANSWER, tools=[{"description": "no name"}]), "bad_tools",
     "tools[0]: a tool definition needs a name"),
    (sample(USER, ANSWER, date="yesterday"), "bad_date", "date 'yesterday': expected YYYY-MM-DD"),
    (sample(USER, {"role": "assistant", "content": "", "tool_calls": [call("get_weather", '{"city": "\ud800"}')]}),
     "invalid_text", "(get_weather arguments): content has a lone surrogate"),
])
def test_broken_tool_samples_say_what_is_wrong(record, reason, message):
    with pytest.raises(SampleError) as err:
        to_conversation(record)
    assert err.value.reason == reason and message in err.value.message, err.value.message


def test_only_a13b_renders_tools():
    conv = to_conversation(CORPUS[0])
    with pytest.raises(FamilyError, match="template 7b: hyft renders tool calls for Hunyuan-A13B"):
        render(FAMILIES["7b"], conv.messages, tools=conv.tools)
