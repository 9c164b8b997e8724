"""`hyft data convert`: turns -> ShareGPT, and the result passes validation."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hyft_trainer.convert import convert_sample
from hyft_trainer.samples import SampleError, to_conversation


def test_pairs_become_slow_and_fast_thinking():
    out = convert_sample({"system": "S", "turns": [
        {"human": "2+2?", "assistant": "4", "requires_reasoning": True, "thinking": "two and two"},
        {"human": "and 3+3?", "assistant": "6", "requires_reasoning": False}]})
    assert out["messages"] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\ntwo and two\n</think>\n<answer>\n4\n</answer>"},
        {"role": "user", "content": "/no_thinkand 3+3?"},
        {"role": "assistant", "content": "<think>\n\n</think>\n<answer>\n6\n</answer>"}]
    conv = to_conversation(out)
    assert (conv.slow_turns, conv.fast_turns) == (1, 1)


def test_role_entries_are_converted_too():
    out = convert_sample({"turns": [{"role": "human", "content": "hi"},
                                    {"role": "assistant", "content": "hello", "requires_reasoning": False}]})
    assert out["messages"][0]["content"] == "/no_thinkhi"
    assert to_conversation(out).fast_turns == 1


@pytest.mark.parametrize("record, message", [
    ({"turns": []}, "non-empty 'turns'"),
    ({"turns": [{"human": "q", "assistant": "a", "requires_reasoning": True}]}, "'thinking' is empty"),
    ({"turns": [{"role": "assistant", "content": "a"}]}, "must follow a human turn"),
    ({"turns": [{"role": "human", "content": "q"}]}, "has no answer"),
    ({"turns": [{"human": "q", "assistant": "a", "requires_reasoning": "yes"}]}, "true or false"),
])
def test_bad_turns_are_named(record, message):
    with pytest.raises(SampleError, match=message):
        convert_sample(record)


def test_cli_writes_nothing_when_a_sample_is_bad(tmp_path):
    src = tmp_path / "turns.jsonl"
    src.write_text(json.dumps({"turns": [{"human": "q", "assistant": "a", "requires_reasoning": False}]}) + "\n"
                   + json.dumps({"turns": [{"human": "q", "assistant": "a", "requires_reasoning": True}]}) + "\n")
    dst = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "hyft_trainer.cli", "data", "convert", str(src), str(dst)]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 1 and not dst.exists()
    assert f"{src} line 2 (sample 1): turns[0]: requires_reasoning is true but 'thinking' is empty" in bad.stderr
    ok = subprocess.run(cmd + ["--skip-invalid"], capture_output=True, text=True)
    assert ok.returncode == 0 and "wrote 1 ShareGPT samples" in ok.stdout
    assert len(dst.read_text().splitlines()) == 1


def test_convert_survives_every_malformed_line_and_writes_only_whole_files(tmp_path):
    from tests import malformed

    src, expected, _ = malformed.write(tmp_path / "mixed.jsonl")
    dst = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "hyft_trainer.cli", "data", "convert", str(src), str(dst), "--max-errors", "200"]
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and not dst.exists()
    assert not list(tmp_path.glob("*.tmp"))
    # not `turns` samples, so every line is reported, each with its line
    assert all(f"{src} line {line} (sample" in bad.stderr for line in expected)
