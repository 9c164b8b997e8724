"""Validate, tokenize and report on training data: `hyft data check`, and the
trainer's preprocessing (same code, so the check says what training will see)."""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from unittest.mock import patch

from . import knobs
from .chat_format import Family, FamilyError, Message, Tools, resolve_family
from .encode import MaskOptions, encode_batch
from .loading import DataError, conversation_at, load_checked, location, records_at, sources_from_paths
from .packing import packed_efficiency, padded_efficiency

TEMPLATE_CHECK_SAMPLES = knobs.default("template_check_samples")  # also `hyft data check`'s default


@dataclass
class Report:
    samples: int = 0
    valid: int = 0
    errors: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    turns: int = 0
    fast: int = 0
    slow: int = 0
    plain: int = 0
    lengths: list[int] = field(default_factory=list)
    cutoff_len: int | None = None
    padded_efficiency: float | None = None
    packed_efficiency: float | None = None
    template_check: str | None = None  # one line: what the model's own chat_template said
    template_mismatch: str | None = None  # its diff against hyft's rendering, when they differ

    @property
    def failed(self) -> bool:
        return bool(self.errors) or self.template_mismatch is not None

    def percentile(self, q: float) -> int:
        ordered = sorted(self.lengths)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0

    def top_reasons(self, n: int = 5) -> str:
        return ", ".join(f"{reason} {count}" for reason, count in self.errors.most_common(n))

    def skipped_summary(self) -> str:
        """One start-up line for a run that trains without its invalid samples."""
        invalid = sum(self.errors.values())
        first = f"; first: {self.examples[0]}" if self.examples else ""
        return (f"skipping {invalid} invalid of {self.samples} samples ({invalid / max(self.samples, 1):.0%}): "
                f"{self.top_reasons()}{first}")

    def render(self, max_examples: int = 20, skip_invalid: bool = False) -> str:
        out = [f"samples: {self.samples}  valid: {self.valid}  invalid: {sum(self.errors.values())}",
               f"assistant turns: {self.turns}  slow thinking: {self.slow}  fast (/no_think): {self.fast}  "
               f"plain (no markup): {self.plain}"]
        marked = self.fast + self.slow
        if marked:
            out.append(f"fast/slow ratio: {self.fast / marked:.0%} fast / {self.slow / marked:.0%} slow")
        if self.lengths:
            out.append("tokens per sample: " + "  ".join(f"p{q}={self.percentile(q)}" for q in (50, 90, 99))
                       + f"  max={max(self.lengths)}  (cutoff_len {self.cutoff_len})")
            out.append(f"real-token share: {self.padded_efficiency:.1%} padded in batches of 8, "
                       f"{self.packed_efficiency:.1%} with packing")
        if self.template_check:
            out.append(f"chat template: {self.template_check}")
        if self.template_mismatch:
            out.append(self.template_mismatch)
        if self.errors:
            out.append("errors by reason:")
            out += [f"  {reason}: {n}" for reason, n in self.errors.most_common()]
            out.append(f"first {min(max_examples, len(self.examples))} errors:")
            out += [f"  {e}" for e in self.examples[:max_examples]]
        if self.template_mismatch:
            out.append("FAILED: the model's chat_template and hyft's rendering differ")
        elif not self.errors:
            out.append("OK")
        elif skip_invalid and self.valid:
            out.append(f"SKIPPING {sum(self.errors.values())} invalid samples: with skip_invalid_samples, "
                       f"training uses the {self.valid} valid ones")
        else:
            out.append("FAILED: no valid samples" if skip_invalid else
                       "FAILED: fix the samples above, or set skip_invalid_samples to train without them")
        return "\n".join(out)


def _columns(ds, *names: str) -> dict[str, list]:
    """Whole columns as Python lists, in one pass (a datasets Column is lazy, row by row)."""
    return ds.select_columns(list(names)).to_dict()


def encode_messages(rows: list[list[Message] | None], tools: list[Tools | None], tokenizer, family: Family,
                    opts: MaskOptions) -> dict[str, list]:
    """input_ids, labels and length per row, in one tokenizer call; empty for an invalid row (None)."""
    valid = [i for i, messages in enumerate(rows) if messages is not None]
    try:
        encoded = encode_batch(tokenizer, family, [rows[i] for i in valid], opts, [tools[i] for i in valid])
    except FamilyError as err:  # tool samples for a family whose tool markup hyft does not render
        raise DataError(str(err)) from None
    out: dict[str, list] = {"input_ids": [[]] * len(rows), "labels": [[]] * len(rows), "length": [0] * len(rows)}
    for i, ids, labels in zip(valid, encoded["input_ids"], encoded["labels"], strict=True):
        out["input_ids"][i], out["labels"][i], out["length"][i] = ids, labels, len(ids)
    return out


def _encoded_features():
    from datasets import Features, Sequence, Value

    text, number = Value("string"), Value("int64")
    return Features({"file": text, "format": text, "index": number, "line": number, "row": number, "reason": text,
                     "error": text, "fast": number, "slow": number, "plain": number, "turns": number,
                     "system": Value("bool"), "tools": Value("bool"), "input_ids": Sequence(Value("int32")),
                     "labels": Sequence(Value("int32")), "length": number})


def prepare(sources, tokenizer=None, template: str = "auto", cutoff_len: int = 2048, require_markup: bool = False,
            opts: MaskOptions = MaskOptions(), num_proc: int | None = None, max_samples: int | None = None,
            template_check_samples: int = TEMPLATE_CHECK_SAMPLES, default_system: str | None = None):
    """(encoded dataset of valid samples or None without a tokenizer, report). Samples longer than
    cutoff_len are invalid (reason too_long): they are never truncated into a target without its EOS.
    With a tokenizer, the first template_check_samples conversations (a varied pick) are also rendered
    by the tokenizer's own chat_template and compared with hyft's ids (report.template_*)."""
    try:
        family = (resolve_family(template, tokenizer.get_vocab(), tokenizer.name_or_path) if tokenizer is not None
                  else None)
    except FamilyError as err:
        raise DataError(str(err)) from None
    encoder = None if tokenizer is None else partial(encode_messages, tokenizer=tokenizer, family=family, opts=opts)
    # one pass: validation and tokenization in the same map (no conversations written in between)
    ds = load_checked(sources, require_markup, num_proc, max_samples, encoder,
                      _encoded_features() if encoder else None, default_system)
    report = Report(samples=ds.num_rows, cutoff_len=cutoff_len if tokenizer is not None else None)
    # the verdicts in one read of the small columns; rows are then picked by index (no filter passes)
    summary = _columns(ds, "reason", "fast", "slow", "plain", *(["length"] if encoder else []))
    reasons = summary["reason"]
    bad = [i for i, reason in enumerate(reasons) if reason]
    report.errors.update(reasons[i] for i in bad)
    report.examples += _columns(ds.select(bad[:50]), "error")["error"]
    good = [i for i, reason in enumerate(reasons) if not reason]
    report.valid = len(good)
    report.fast, report.slow, report.plain = (sum(summary[k][i] for i in good) for k in ("fast", "slow", "plain"))
    report.turns = report.fast + report.slow + report.plain
    if tokenizer is None or not good:
        return None, report

    lengths = summary["length"]
    too_long = [i for i in good if lengths[i] > cutoff_len]
    report.errors["too_long"] += len(too_long)
    report.valid -= len(too_long)
    for row in ds.select(too_long[:50]):
        report.examples.append(f"{location(row)}: {row['length']} tokens > cutoff_len {cutoff_len}")
    if not report.errors["too_long"]:
        del report.errors["too_long"]
    fits = [i for i in good if lengths[i] <= cutoff_len]
    fitting = ds if len(fits) == ds.num_rows else ds.select(fits)
    report.lengths = [lengths[i] for i in fits]
    if report.lengths:
        report.padded_efficiency = padded_efficiency(report.lengths, 8)
        report.packed_efficiency = packed_efficiency(report.lengths, cutoff_len)
        if template_check_samples:
            report.template_check, report.template_mismatch = check_chat_template(
                tokenizer, family, fitting, template_check_samples, sources, require_markup, max_samples,
                default_system)
    return fitting, report


TEMPLATE_CHECK_OFF = "set template_check_samples: 0 (hyft data check: --template-check 0) to train anyway"


def _varied_pick(rows: dict[str, list], n: int) -> list[int]:
    """Row indices: the first of each kind (system or not, one or more turns, fast/slow/plain), then
    the first rows, up to n."""
    kinds: dict[tuple, int] = {}
    for i in range(len(rows["turns"])):
        kind = (rows["system"][i], rows["turns"][i] - rows["system"][i] > 2, rows["fast"][i] > 0,
                rows["slow"][i] > 0, rows["plain"][i] > 0, rows["tools"][i])
        kinds.setdefault(kind, i)
    picked = sorted(kinds.values())[:n]
    return picked + [i for i in range(len(rows["turns"])) if i not in picked][:n - len(picked)]


def check_chat_template(tokenizer, family: Family, encoded, n: int, sources, require_markup: bool = False,
                        max_samples: int | None = None, default_system: str | None = None) -> tuple[str, str | None]:
    """(summary, diff or None): the ids training uses against the tokenizer's own chat_template, for a
    varied pick of n conversations (read again from the files); the diff decodes a few tokens either
    side of the first difference."""
    if not getattr(tokenizer, "chat_template", None):
        return "not checked: the tokenizer has no chat_template", None
    head = encoded.select(range(min(encoded.num_rows, 2000)))
    rows = _columns(head, "system", "turns", "fast", "slow", "plain", "tools", "row")
    picked = _varied_pick(rows, n)
    rows["input_ids"] = dict(zip(picked, head.select(picked)["input_ids"], strict=True))
    records = records_at(sources, {rows["row"][i] for i in picked}, max_samples)
    columns = {str(s.path): s.columns for s in sources}
    for i in picked:
        record = records[rows["row"][i]]
        conv = conversation_at(record, columns, require_markup, default_system)
        tools = {"tools": conv.tools.specs} if conv.tools else {}
        try:
            with clock_at(conv.tools.date if conv.tools else None):
                text = tokenizer.apply_chat_template(template_input(conv.messages), tokenize=False, **tools)
        except Exception as err:  # noqa: BLE001 - a broken template can raise anything from Jinja
            return "failed", (f"the model's chat_template cannot render {location(record)}: {type(err).__name__}: "
                              f"{str(err)[:200]}\n{TEMPLATE_CHECK_OFF}")
        theirs = tokenizer(text, add_special_tokens=False)["input_ids"]
        ours = rows["input_ids"][i]
        if theirs != ours:
            at = next((k for k, (a, b) in enumerate(zip(theirs, ours, strict=False)) if a != b),
                      min(len(theirs), len(ours)))
            window = slice(max(0, at - 8), at + 8)
            return "differs", (
                f"the model's chat_template and hyft's {family.name}-family rendering differ at token {at} of "
                f"{location(record)}:\n  chat_template: {tokenizer.decode(theirs[window])!r}\n"
                f"  hyft:          {tokenizer.decode(ours[window])!r}\n"
                f"Training would teach a format the model is not prompted with. Use the model's official "
                f"tokenizer files, or {TEMPLATE_CHECK_OFF}.")
    return f"{len(picked)} conversations match the model's chat_template token for token", None


def template_input(messages: list[Message]) -> list[dict]:
    """Messages as a chat template reads them: tool calls in OpenAI's form."""
    out = []
    for m in messages:
        entry = {"role": m.role, "content": m.content}
        if m.tool_calls:
            entry["tool_calls"] = [{"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                   for c in m.tool_calls]
        out.append(entry)
    return out


@contextmanager
def clock_at(date):
    """Chat templates that show the date (A13B's, with tools) call transformers' strftime_now, which reads
    the clock: the check shows them the sample's pinned date instead (a13b_tools.pinned_date)."""
    if date is None:
        yield
        return
    from transformers.utils import chat_template_utils

    class Pinned(datetime):
        @classmethod
        def now(cls, tz=None):
            return date

    with patch.object(chat_template_utils, "datetime", Pinned):
        yield


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """The tokenizer of a model folder; DataError (not a transformers traceback) when there is none."""
    from pathlib import Path

    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{path}: no such folder (expected a model or tokenizer folder)")
    if not any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise DataError(f"{path}: not a tokenizer folder (no tokenizer.json or tokenizer_config.json)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds for a broken folder
        raise DataError(f"{path}: cannot load the tokenizer: {type(err).__name__}: {str(err)[:300]}") from None


def check(paths: list[str], tokenizer=None, template: str = "auto", cutoff_len: int = 2048,
          require_markup: bool = False, fmt: str = "auto", opts: MaskOptions = MaskOptions(),
          num_proc: int | None = None, template_check_samples: int = TEMPLATE_CHECK_SAMPLES,
          default_system: str | None = None) -> Report:
    return prepare(sources_from_paths(paths, fmt), tokenizer, template, cutoff_len, require_markup, opts,
                   num_proc, template_check_samples=template_check_samples, default_system=default_system)[1]
