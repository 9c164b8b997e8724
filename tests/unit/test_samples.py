"""Sample validation: every malformed case gets a message that says what is wrong."""
from __future__ import annotations

import json

import pytest

from hyft_trainer.samples import Columns, SampleError, to_conversation

SLOW = "<think>\nbecause\n</think>\n<answer>\nyes\n</answer>"
FAST = "<think>\n\n</think>\n<answer>\nyes\n</answer>"


def chat(*turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


MALFORMED = [
    ("a number", 42, "not_object", "must be a JSON object, got int"),
    ("a list", [1, 2], "not_object", "must be a JSON object, got list"),
    ("null", None, "not_object", "must be a JSON object, got NoneType"),
    ("no messages key", {"text": "hi"}, "unknown_format", "cannot tell the format"),
    ("messages not a list", {"messages": "hi"}, "bad_messages", "'messages' must be a list, got str"),
    ("empty messages", {"messages": []}, "empty_conversation", "'messages' is empty"),
    ("message not an object", {"messages": ["hi"]}, "bad_message", "messages[0]: must be an object, got str"),
    ("missing role", {"messages": [{"content": "hi"}]}, "missing_role", "messages[0]: no 'role'"),
    ("missing from", {"conversations": [{"value": "hi"}]}, "missing_role", "conversations[0]: no 'from'"),
    ("unknown role", chat(("bot", "hi")), "unknown_role", "messages[0]: unknown role 'bot'"),
    ("role not a string", {"messages": [{"role": 3, "content": "x"}]}, "unknown_role", "unknown role 3"),
    ("content a number", chat(("user", 5)), "bad_content", "messages[0]: content must be a string, got int"),
    ("content null", chat(("user", None)), "bad_content", "content must be a string, got NoneType"),
    ("content missing", {"messages": [{"role": "user"}]}, "missing_content", "messages[0]: no 'content'"),
    ("value missing", {"conversations": [{"from": "human"}]}, "missing_content", "conversations[0]: no 'value'"),
    ("mixed vocabularies", {"messages": [{"role": "user", "value": "hi"}]}, "missing_content",
     "no 'content' (it has 'value': write role/content or from/value)"),
    ("a long role is cut", chat(("x" * 5000, "hi")), "unknown_role", "characters)"),
    ("empty content", chat(("user", "  ")), "empty_content", "messages[0]: empty content"),
    ("system not first", chat(("user", "q"), ("system", "s"), ("assistant", "a")), "system_not_first",
     "message 1: a system message may only come first"),
    ("two users", chat(("user", "q"), ("user", "q2"), ("assistant", "a")), "bad_role_order",
     "message 1: expected assistant, got user"),
    ("assistant first", chat(("assistant", "a"), ("user", "q")), "bad_role_order",
     "message 0: expected user, got assistant"),
    ("two assistants", chat(("user", "q"), ("assistant", "a"), ("assistant", "b")), "bad_role_order",
     "message 2: expected user, got assistant"),
    ("ends with user", chat(("user", "q"), ("assistant", "a"), ("user", "q2")), "no_assistant_reply",
     "ends with a user turn"),
    ("only system", chat(("system", "s")), "no_assistant_reply", "only a system message"),
    ("think not closed", chat(("user", "q"), ("assistant", "<think>\nx\n<answer>\ny\n</answer>")), "think_markup",
     "message 1: incomplete thinking markup, missing </think>"),
    ("answer missing", chat(("user", "q"), ("assistant", "<think>\nx\n</think>\ny")), "think_markup",
     "missing <answer> </answer>"),
    ("think missing", chat(("user", "q"), ("assistant", "<answer>\ny\n</answer>")), "think_markup",
     "missing <think> </think>"),
    ("duplicated think", chat(("user", "q"), ("assistant", "<think>a</think><think>b</think><answer>y</answer>")),
     "think_markup", "<think> appears 2 times"),
    ("tags out of order", chat(("user", "q"), ("assistant", "<answer>\ny\n</answer><think>\nx\n</think>")),
     "think_markup", "tags out of order"),
    ("text before the tags", chat(("user", "q"), ("assistant", "Sure! " + SLOW)), "think_markup",
     "text outside the <think>/<answer> tags"),
    ("text between the blocks", chat(("user", "q"), ("assistant", "<think>x</think> so <answer>y</answer>")),
     "think_markup", "text outside"),
    ("text after the answer", chat(("user", "q"), ("assistant", SLOW + "\nbye")), "think_markup", "text outside"),
    ("empty answer", chat(("user", "q"), ("assistant", "<think>\nx\n</think>\n<answer>\n\n</answer>")),
     "empty_answer", "message 1: empty <answer> block"),
    ("no_think with reasoning", chat(("user", "/no_think q"), ("assistant", SLOW)), "no_think_mismatch",
     "asks for /no_think but the think block is not empty"),
    ("empty think without no_think", chat(("user", "q"), ("assistant", FAST)), "empty_think",
     "empty think block, but the user turn does not start with /no_think"),
    ("/think with an empty think block", chat(("user", "/think q"), ("assistant", FAST)), "empty_think",
     "/think forces slow thinking"),
    ("alpaca without output", {"instruction": "do", "input": ""}, "unknown_format", "cannot tell the format"),
    ("alpaca empty output", {"instruction": "do", "output": " "}, "empty_content", "output: empty content"),
    ("NUL in content", chat(("user", "a\x00b"), ("assistant", "x")), "invalid_text",
     "message 0 (user): content has a NUL character at character 1"),
    ("lone surrogate in content", chat(("user", "q"), ("assistant", "a\ud800")), "invalid_text",
     "message 1 (assistant): content has a lone surrogate"),
    ("NUL in an alpaca input", {"instruction": "do", "input": "x\x00", "output": "ok"}, "invalid_text",
     "message 0 (user): content has a NUL character at character 4"),
    ("alpaca bad history", {"instruction": "do", "output": "ok", "history": [["only one"]]}, "bad_history",
     "list of [question, answer] pairs"),
]


@pytest.mark.parametrize("record, reason, message", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_samples_are_rejected_with_a_clear_message(record, reason, message):
    assert len(MALFORMED) >= 25
    with pytest.raises(SampleError) as err:
        to_conversation(record)
    assert err.value.reason == reason
    assert message in err.value.message


def test_plain_answers_are_ordinary_sharegpt_unless_markup_is_required():
    record = chat(("user", "q"), ("assistant", "a plain answer"))
    assert to_conversation(record).plain_turns == 1
    with pytest.raises(SampleError, match="no <think>/<answer> markup"):
        to_conversation(record, require_markup=True)


def test_thinking_turns_are_counted_and_whitespace_kept():
    odd = "<think>  spaced\n\n reasoning </think><answer>yes</answer>"
    conv = to_conversation(chat(("system", "s"), ("user", "q"), ("assistant", odd),
                                ("user", "/no_think q2"), ("assistant", FAST)))
    assert (conv.slow_turns, conv.fast_turns) == (1, 1)
    assert conv.messages[2].content == odd


def test_conversations_from_value_and_custom_llamafactory_tags():
    record = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert [m.role for m in to_conversation(record).messages] == ["user", "assistant"]
    custom = {"dialog": [{"speaker": "customer", "text": "q"}, {"speaker": "agent", "text": "a"}], "sys": "S"}
    cols = Columns(messages="dialog", system="sys", role_tag="speaker", content_tag="text", user_tag="customer",
                   assistant_tag="agent")
    msgs = to_conversation(custom, "sharegpt", cols).messages
    assert [(m.role, m.content) for m in msgs] == [("system", "S"), ("user", "q"), ("assistant", "a")]


def test_alpaca_with_input_system_and_history():
    record = {"instruction": "Translate", "input": "hello", "output": "你好", "system": "S",
              "history": [["hi", "嗨"]]}
    msgs = to_conversation(record).messages
    assert [(m.role, m.content) for m in msgs] == [("system", "S"), ("user", "hi"), ("assistant", "嗨"),
                                                  ("user", "Translate\nhello"), ("assistant", "你好")]


@pytest.mark.parametrize("value", [0, 1.5, True, "text", [], {}, [None], {"messages": [None, 1]},
                                   {"messages": [{"role": []}]}, {"instruction": 3, "output": {}}])
def test_no_json_value_crashes_the_validator(value):
    with pytest.raises(SampleError):
        to_conversation(json.loads(json.dumps(value)))


def test_one_validator_judges_a_sample_alike_everywhere():
    """The data path's table of malformed lines, given to to_conversation as parsed JSON: the same reason
    for every line that parses (the data path adds only JSON parsing and the tokenizer's length)."""
    from tests import malformed

    judged = 0
    for kind, raw, reason in malformed.MALFORMED:
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if reason == "too_long":
            continue
        with pytest.raises(SampleError) as err:
            to_conversation(record)
        assert err.value.reason == reason, kind
        judged += 1
    assert judged >= 35
