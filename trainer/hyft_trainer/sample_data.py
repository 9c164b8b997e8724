"""A deterministic ShareGPT sample set in Hunyuan's thinking markup: Chinese and
English, fast (/no_think) and slow thinking, single and multi-turn, with and
without a system prompt. Shipped as examples/data/ and used by tests and demos.

    python -m hyft_trainer.sample_data examples/data [--samples 300] [--seed 7]
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SYSTEMS = {
    "en": ["You are a helpful assistant.", "You are a concise math tutor.", "Answer as a friendly support agent."],
    "zh": ["你是一个乐于助人的助手。", "你是一位简洁的数学老师。", "请以友好的客服身份回答。"],
}
NAMES = {"en": ["Alice", "Bob", "Chen", "Dana"], "zh": ["小明", "小红", "老王", "阿华"]}
FRUITS = {"en": ["apples", "pears", "oranges", "plums"], "zh": ["苹果", "梨", "橙子", "李子"]}


def _arith(rng: random.Random, lang: str) -> tuple[str, str, str]:
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    who, fruit = rng.choice(NAMES[lang]), rng.choice(FRUITS[lang])
    if lang == "en":
        q = f"{who} has {a} {fruit} and buys {b} more. How many {fruit} does {who} have now?"
        think = f"{who} starts with {a}. Buying {b} more adds them: {a} + {b} = {a + b}."
        answer = f"{who} has {a + b} {fruit}."
    else:
        q = f"{who}有{a}个{fruit}，又买了{b}个。{who}现在有多少个{fruit}？"
        think = f"{who}原来有{a}个，再买{b}个，相加：{a} + {b} = {a + b}。"
        answer = f"{who}现在有{a + b}个{fruit}。"
    return q, think, answer


def _multiply(rng: random.Random, lang: str) -> tuple[str, str, str]:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    if lang == "en":
        return (f"What is {a} times {b}?", f"{a} x {b}: add {a} to itself {b} times, giving {a * b}.",
                f"{a} x {b} = {a * b}.")
    return f"{a}乘以{b}等于多少？", f"{a}乘{b}，即{b}个{a}相加，结果是{a * b}。", f"{a} × {b} = {a * b}。"


def _capital(rng: random.Random, lang: str) -> tuple[str, str, str]:
    pairs = {"en": [("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima")],
             "zh": [("法国", "巴黎"), ("日本", "东京"), ("肯尼亚", "内罗毕"), ("秘鲁", "利马")]}
    country, city = rng.choice(pairs[lang])
    if lang == "en":
        return (f"What is the capital of {country}?", f"The capital of {country} is a well-known fact: {city}.",
                f"The capital of {country} is {city}.")
    return f"{country}的首都是哪里？", f"这是常识：{country}的首都是{city}。", f"{country}的首都是{city}。"


TASKS = (_arith, _multiply, _capital)


def _assistant(think: str, answer: str, fast: bool) -> str:
    # Whitespace inside the think block varies in real data; keep a little variety.
    if fast:
        return f"<think>\n\n</think>\n<answer>\n{answer}\n</answer>"
    return f"<think>\n{think}\n</think>\n<answer>\n{answer}\n</answer>"


def make_samples(count: int = 300, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    samples = []
    for i in range(count):
        lang = "zh" if i % 2 else "en"
        messages = []
        if rng.random() < 0.4:
            messages.append({"role": "system", "content": rng.choice(SYSTEMS[lang])})
        turns = 2 if rng.random() < 0.25 else 1
        for _ in range(turns):
            q, think, answer = rng.choice(TASKS)(rng, lang)
            fast = rng.random() < 0.5
            messages.append({"role": "user", "content": f"/no_think{q}" if fast else q})
            messages.append({"role": "assistant", "content": _assistant(think, answer, fast)})
        samples.append({"messages": messages})
    return samples


def write(out: Path, count: int = 300, seed: int = 7) -> None:
    out.mkdir(parents=True, exist_ok=True)
    samples = make_samples(count, seed)
    with open(out / "hunyuan_chat.jsonl", "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    info = {"hunyuan_chat": {"file_name": "hunyuan_chat.jsonl", "formatting": "sharegpt",
                             "columns": {"messages": "messages"},
                             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                      "assistant_tag": "assistant", "system_tag": "system"}}}
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    write(args.out, args.samples, args.seed)


if __name__ == "__main__":
    main()
