"""Loading real files: JSONL line numbers, JSON arrays, folders, LLaMA-Factory
dataset_info.json, mixing; and `hyft data check` end to end."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hyft_trainer.config import TrainerConfig
from hyft_trainer.data_check import check
from hyft_trainer.knobs import DataFile
from hyft_trainer.loading import (
    DataError,
    load_checked,
    sources_for_config,
    sources_from_dataset_info,
    sources_from_paths,
)
from tests.helpers import ROOT

GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))
    return path


def test_jsonl_errors_name_file_line_and_sample(tmp_path):
    f = write_jsonl(tmp_path / "chat.jsonl", [GOOD, "{not json", GOOD, {"messages": []}])
    ds = load_checked(sources_from_paths([f]))
    errors = [e for e in ds["error"] if e]
    assert errors[0].startswith(f"{f} line 2 (sample 1): invalid JSON")
    assert errors[1] == f"{f} line 4 (sample 3): 'messages' is empty"
    assert ds["reason"] == ["", "invalid_json", "", "empty_conversation"]


def test_blank_lines_do_not_shift_sample_numbers_but_lines_stay_true(tmp_path):
    f = tmp_path / "gaps.jsonl"
    f.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({"messages": "x"}) + "\n")
    ds = load_checked(sources_from_paths([f]))
    assert ds["error"][1] == f"{f} line 3 (sample 1): 'messages' must be a list, got str"


def test_json_array_files_and_bad_json_files(tmp_path):
    good = tmp_path / "a.json"
    good.write_text(json.dumps([GOOD, {"instruction": "i", "output": "o"}]))
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"not": "a list"}))
    ds = load_checked(sources_from_paths([tmp_path]))
    assert ds.num_rows == 3
    assert ds["reason"] == ["", "", "invalid_json"]
    assert "must hold a list of samples, got dict" in ds["error"][2]


def test_dataset_info_folders_work_unchanged(tmp_path):
    write_jsonl(tmp_path / "chats.jsonl", [{"conversations": [{"from": "human", "value": "q"},
                                                              {"from": "gpt", "value": "a"}]}])
    (tmp_path / "alpaca.json").write_text(json.dumps([{"q": "question", "a": "answer"}]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({
        "chats": {"file_name": "chats.jsonl", "formatting": "sharegpt",
                  "columns": {"messages": "conversations"}},
        "qa": {"file_name": "alpaca.json", "columns": {"prompt": "q", "response": "a"}},
    }))
    ds = load_checked(sources_from_dataset_info(tmp_path, ["chats", "qa"]))
    assert ds["reason"] == ["", ""]
    assert [m["role"] for m in ds["messages"][1]] == ["user", "assistant"]
    assert ds["messages"][1][0]["content"] == "question"
    with pytest.raises(DataError, match="no dataset named nope"):
        sources_from_dataset_info(tmp_path, ["nope"])


def test_missing_paths_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        sources_from_paths([tmp_path / "missing.jsonl"])


def test_a_changed_file_is_not_served_from_the_cache(tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [GOOD])
    assert load_checked(sources_from_paths([f])).num_rows == 1
    write_jsonl(f, [GOOD, GOOD])
    assert load_checked(sources_from_paths([f])).num_rows == 2


def test_report_on_the_shipped_sample_data(tokenizers):
    report = check([str(ROOT / "examples" / "data")], tokenizers["small"], cutoff_len=1024)
    assert not report.failed and report.samples == report.valid == 300
    assert report.fast > 50 and report.slow > 50
    assert 0 < report.padded_efficiency < report.packed_efficiency <= 1


def test_samples_over_cutoff_len_are_errors(tokenizers, tmp_path):
    long = {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]}
    f = write_jsonl(tmp_path / "long.jsonl", [GOOD, long])
    report = check([str(f)], tokenizers["small"], cutoff_len=64)
    assert report.errors["too_long"] == 1 and report.valid == 1
    assert f"{f} line 2 (sample 1):" in report.examples[0] and "> cutoff_len 64" in report.examples[0]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "hyft_trainer.cli", "data", "check", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_passes_on_sample_data_and_fails_readably_on_planted_errors(tmp_path):
    ok = run_cli(str(ROOT / "examples" / "data"))
    assert ok.returncode == 0, ok.stderr
    assert "samples: 300  valid: 300  invalid: 0" in ok.stdout and ok.stdout.strip().endswith("OK")

    lines = (ROOT / "examples" / "data" / "hunyuan_chat.jsonl").read_text().splitlines()[:20]
    lines[3] = '{"messages": [{"role": "user", "content": "q"}]}'
    lines[7] = lines[7].replace("<answer>", "", 1)
    lines[11] = "{oops"
    planted = tmp_path / "planted.jsonl"
    planted.write_text("\n".join(lines) + "\n")
    bad = run_cli(str(planted))
    assert bad.returncode == 1
    assert "samples: 20  valid: 17  invalid: 3" in bad.stdout
    assert f"{planted} line 4 (sample 3): the conversation ends with a user turn" in bad.stdout
    assert f"{planted} line 8 (sample 7):" in bad.stdout and "missing <answer>" in bad.stdout
    assert f"{planted} line 12 (sample 11): invalid JSON" in bad.stdout
    assert "FAILED" in bad.stdout


def test_each_data_file_entry_gives_its_format_to_what_it_expands_to(tmp_path):
    """A folder entry expands to several files: the entries after it keep their own formats."""
    folder = tmp_path / "dir"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [GOOD])
    write_jsonl(folder / "b.jsonl", [GOOD])
    alpaca = write_jsonl(tmp_path / "c.jsonl", [{"instruction": "q", "output": "a"}])
    config = TrainerConfig(model_name_or_path="m", data_files=[DataFile(path=str(folder), format="sharegpt"),
                                                                DataFile(path=str(alpaca), format="alpaca")])
    formats = {s.path.name: s.format for s in sources_for_config(config)}
    assert formats == {"a.jsonl": "sharegpt", "b.jsonl": "sharegpt", "c.jsonl": "alpaca"}


def test_unreadable_lines_are_sample_errors_and_the_valid_samples_stay(tmp_path):
    """Bytes that are not UTF-8, a lone surrogate escape, deep nesting and a BOM: no traceback,
    each bad line counted with its line number, every valid sample kept."""
    good = json.dumps(GOOD).encode()
    lines = [b"\xef\xbb\xbf" + good,                      # 1: BOM, then a valid sample
             b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # 2: Latin-1, not UTF-8
             good,                                         # 3
             json.dumps({"messages": [{"role": "user", "content": "\ud800"},
                                      {"role": "assistant", "content": "a"}]}).encode(),  # 4: lone surrogate
             b"[" * 100000 + b"]" * 100000,                # 5: deeper than the parser's recursion
             good]                                         # 6
    f = tmp_path / "mixed.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    ds = load_checked(sources_from_paths([f]))
    errors = [e for e in ds["error"] if e]
    assert ds["reason"] == ["", "invalid_json", "", "invalid_text", "invalid_json", ""]
    assert errors[0].startswith(f"{f} line 2 (sample 1): not UTF-8 text: byte ")
    assert errors[1].startswith(f"{f} line 4 (sample 3): message 0 (user): content has a lone surrogate")
    assert errors[2] == f"{f} line 5 (sample 4): invalid JSON: nested too deeply"
    assert sum(1 for m in ds["messages"] if m) == 3


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe not text", "not UTF-8"),                   # the whole file
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
])
def test_an_unreadable_json_file_is_one_clear_error(tmp_path, content, message):
    f = tmp_path / "data.json"
    f.write_bytes(content)
    ds = load_checked(sources_from_paths([f]))
    assert ds.num_rows == 1 and message in ds["error"][0]


def test_every_kind_of_malformed_sample_is_counted_with_its_line_and_no_valid_one_is_lost(tokenizers, tmp_path):
    from collections import Counter

    from tests import malformed

    assert len(malformed.MALFORMED) >= 40
    folder = tmp_path / "tok"
    tokenizers["small"].save_pretrained(folder)
    path, expected, valid = malformed.write(tmp_path / "mixed.jsonl")
    args = (str(path), "--tokenizer", str(folder), "--cutoff-len", "1024", "--max-errors", "100")

    strict = run_cli(*args)
    assert strict.returncode == 1 and "Traceback" not in strict.stderr, strict.stderr[-3000:]
    total = valid + len(expected)
    assert f"samples: {total}  valid: {valid}  invalid: {len(expected)}" in strict.stdout, strict.stdout
    for reason, n in Counter(expected.values()).items():
        assert f"  {reason}: {n}\n" in strict.stdout, reason
    for line in expected:
        assert f"{path} line {line} (sample " in strict.stdout, line
    assert max(len(row) for row in strict.stdout.splitlines()) < 500  # long values are cut to an excerpt
    assert strict.stdout.strip().endswith("set skip_invalid_samples to train without them")

    skipping = run_cli(*args, "--skip-invalid")
    assert skipping.returncode == 0, skipping.stdout[-2000:]
    assert f"training uses the {valid} valid ones" in skipping.stdout


def test_file_level_problems_are_one_clear_error_each(tokenizers, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    not_json = tmp_path / "broken.json"
    not_json.write_bytes(b"\xff not json")
    an_object = tmp_path / "object.json"
    an_object.write_text('{"messages": []}')
    report = check([str(empty), str(not_json), str(an_object)])
    assert report.samples == 3 and report.valid == 0 and report.errors["invalid_json"] == 3
    text = "\n".join(report.examples)
    assert f"{empty}: empty file: no samples" in text
    assert f"{not_json}: not UTF-8 text: byte 0" in text
    assert f"{an_object}: a .json data file must hold a list of samples, got dict" in text
    missing = run_cli(str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    not_a_tokenizer = run_cli(str(empty), "--tokenizer", str(tmp_path))
    assert not_a_tokenizer.returncode == 2 and "Traceback" not in not_a_tokenizer.stderr
    assert f"{tmp_path}: not a tokenizer folder" in not_a_tokenizer.stderr


def test_data_check_compares_with_the_tokenizers_own_chat_template(tokenizers, tmp_path):
    folder = tmp_path / "tok"
    tokenizers["7b"].save_pretrained(folder)
    data = str(ROOT / "examples" / "data")
    intact = run_cli(data, "--tokenizer", str(folder))
    assert intact.returncode == 0, intact.stdout[-2000:]
    assert "chat template: 32 conversations match the model's chat_template token for token" in intact.stdout
    template = folder / "chat_template.jinja"
    template.write_text(template.read_text().replace("'<|extra_0|>'", "'<|extra_1|>'", 1))
    changed = run_cli(data, "--tokenizer", str(folder))
    assert changed.returncode == 1
    assert "the model's chat_template and hyft's 7b-family rendering differ at token" in changed.stdout
    assert "--template-check 0" in changed.stdout
    assert run_cli(data, "--tokenizer", str(folder), "--template-check", "0").returncode == 0


def test_rows_and_max_samples_count_across_the_files_of_a_dataset(tokenizers, tmp_path):
    """A folder is one dataset: max_samples takes its first N samples over all its files, and the
    chat-template check finds each picked sample again (row numbers run across files)."""
    from hyft_trainer.config import parse_config
    from hyft_trainer.data_check import prepare
    from hyft_trainer.loading import sources_for_config
    from hyft_trainer.sample_data import make_samples

    folder = tmp_path / "two-files"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", make_samples(5, seed=1))
    write_jsonl(folder / "b.jsonl", make_samples(5, seed=2))
    config = parse_config({"model_name_or_path": "/m", "data_files": [{"path": str(folder)}], "max_samples": 7})
    encoded, report = prepare(sources_for_config(config), tokenizers["small"], max_samples=config.max_samples,
                              cutoff_len=1024)
    assert report.samples == 7 and encoded.num_rows == 7
    assert report.template_mismatch is None and report.template_check.startswith("7 conversations match")


def test_default_system_is_the_system_message_of_conversations_without_one(tokenizers, tmp_path):
    """LLaMA-Factory's default_system: trained as every such conversation's system turn (not its own,
    where it has one), and rendered alike by the model's chat_template."""
    from hyft_trainer.data_check import prepare
    from hyft_trainer.loading import sources_from_paths

    tokenizer = tokenizers["small"]
    own = {"messages": [{"role": "system", "content": "Own system."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello"}]}
    bare = {"messages": own["messages"][1:]}
    write_jsonl(tmp_path / "d.jsonl", [own, bare])
    sources = sources_from_paths([tmp_path / "d.jsonl"])
    plain, _ = prepare(sources, tokenizer, cutoff_len=256)
    given, report = prepare(sources, tokenizer, cutoff_len=256, default_system="Be brief.")
    texts = [tokenizer.decode(ids) for ids in given["input_ids"]]
    assert "Own system." in texts[0] and "Be brief." not in texts[0]
    assert "Be brief." in texts[1] and given["input_ids"][0] == plain["input_ids"][0]
    assert report.template_mismatch is None and report.template_check.startswith("2 conversations match")
