"""The reference: the families' official chat templates as Jinja text. small and 7b are
written from their documented behaviour (../shared/hunyuan-chat-format.md) in the
structure of Tencent's tokenizer_config.json templates (tool calls left out); a13b is
Tencent's own, read from its published tokenizer_config.json. hyft's renderer and the
tiny tokenizers' templates are checked against these; neither is derived from them."""
from __future__ import annotations

import json
from pathlib import Path

# Both templates open alike: every system message, joined by a blank line, right after BOS.
SYSTEM_PROMPT = """
{%- if not add_generation_prompt is defined %}{%- set add_generation_prompt = false %}{%- endif %}
{%- set ns = namespace(system_prompt='', is_first_sp=true, is_first_user=true, is_last_user=false) %}
{%- for message in messages %}
    {%- if message['role'] == 'system' %}
        {%- if ns.is_first_sp %}
            {%- set ns.system_prompt = ns.system_prompt + message['content'] %}
            {%- set ns.is_first_sp = false %}
        {%- else %}
            {%- set ns.system_prompt = ns.system_prompt + '\n\n' + message['content'] %}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{{- bos_token }}
{{- ns.system_prompt }}
"""

SMALL = SYSTEM_PROMPT + """{%- if ns.system_prompt != '' %}{{- '<｜hy_place▁holder▁no▁3｜>' }}{%- endif %}
{%- for message in messages %}
    {%- if message['role'] == 'user' %}
        {{- '<｜hy_User｜>' + message['content'] }}
    {%- elif message['role'] == 'assistant' %}
        {{- '<｜hy_Assistant｜>' + message['content'] + '<｜hy_place▁holder▁no▁2｜>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<｜hy_Assistant｜>' }}{%- else %}{{- '<｜hy_place▁holder▁no▁8｜>' }}{%- endif %}
{%- if enable_thinking is defined and not enable_thinking %}{{- '<think>\n\n</think>\n' }}{%- endif %}
"""

SEVEN_B = SYSTEM_PROMPT + """{%- if ns.system_prompt != '' %}{{- '<|extra_4|>' }}{%- endif %}
{%- for message in messages %}
    {%- if message['role'] == 'user' %}
        {%- set ns.is_last_user = true %}
        {%- if ns.is_first_user %}
            {{- message['content'] + '<|extra_0|>' }}
            {%- set ns.is_first_user = false %}
        {%- else %}
            {{- bos_token + message['content'] + '<|extra_0|>' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {%- set ns.is_last_user = false %}
        {%- set content = message['content'] %}
        {%- if '<answer>' in content and not loop.last %}
            {%- set content = content.split('<answer>')[-1].strip('</answer>').strip() %}
        {%- endif %}
        {{- content + '<|eos|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt and not ns.is_last_user %}{{- '<|extra_0|>' }}{%- endif %}
{%- if enable_thinking is defined and not enable_thinking %}{{- '<think>\n\n</think>\n' }}{%- endif %}
"""

# Hunyuan-A13B-Instruct's own template, as Tencent publishes it (tests/corpus/tencent)
A13B = json.loads((Path(__file__).parent / "corpus" / "tencent" / "hunyuan_a13b_tokenizer_config.json").read_text(
    encoding="utf-8"))["chat_template"]

OFFICIAL = {"small": SMALL, "7b": SEVEN_B, "a13b": A13B}


def _chat(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


SLOW = "<think>\nLet me add: 2 + 2 = 4.\n</think>\n<answer>\nIt is 4.\n</answer>"
FAST = "<think>\n\n</think>\n<answer>\nIt is 4.\n</answer>"
TIGHT = "<think>r</think><answer>Sure</answer>"  # the character-set strip keeps "Su"
TRAILING = "<think>\nr\n</think>\n<answer>\nok\n</answer>\n"  # text after </answer>: the tags stay

# Every branch of both templates: system or not, single and multi-turn, slow, fast (/no_think), /think,
# plain answers, whitespace quirks of the history reduction, unicode. Each ends with an assistant turn
# (training); FIDELITY_PROMPTS end with a user turn (inference).
FIDELITY = [
    _chat(("user", "What is 2 + 2?"), ("assistant", SLOW)),
    _chat(("system", "You are terse."), ("user", "What is 2 + 2?"), ("assistant", SLOW)),
    _chat(("user", "/no_think What is 2 + 2?"), ("assistant", FAST)),
    _chat(("user", "/think What is 2 + 2?"), ("assistant", SLOW)),
    _chat(("user", "Hi"), ("assistant", "Hello! Plain answer, no markup.")),
    _chat(("system", "S"), ("user", "Q1"), ("assistant", SLOW), ("user", "/no_think Q2"), ("assistant", FAST)),
    _chat(("user", "/no_think Q1"), ("assistant", FAST), ("user", "Q2"), ("assistant", SLOW)),
    _chat(("user", "Q1"), ("assistant", TIGHT), ("user", "Q2"), ("assistant", TIGHT)),
    _chat(("user", "Q1"), ("assistant", TRAILING), ("user", "Q2"), ("assistant", "plain")),
    _chat(("user", "Q1"), ("assistant", "plain history"), ("user", "Q2"), ("assistant", SLOW),
          ("user", "Q3"), ("assistant", FAST)),
    _chat(("system", "你是一个乐于助人的助手。"), ("user", "你好 👋 ½"), ("assistant", "<think>\n想一想…\n</think>\n"
                                                                          "<answer>\n你好！🙂\n</answer>")),
    _chat(("user", "  leading and trailing spaces  "), ("assistant", "  kept as written  ")),
    _chat(("user", "<answer> in a question"), ("assistant", "plain"), ("user", "Q2"), ("assistant", "plain 2")),
]
FIDELITY_PROMPTS = [conv[:-1] for conv in FIDELITY]
