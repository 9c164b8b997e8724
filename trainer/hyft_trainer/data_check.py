"""Validate, tokenize and report on training data: `hyft data check`, and the
trainer's preprocessing (same code, so the check says what training will see)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .chat_format import Family, Message, resolve_family
from .encode import MaskOptions, encode_batch
from .loading import load_checked, location, procs, sources_from_paths
from .packing import packed_efficiency, padded_efficiency


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

    @property
    def failed(self) -> bool:
        return bool(self.errors)

    def percentile(self, q: float) -> int:
        ordered = sorted(self.lengths)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0

    def render(self, max_examples: int = 20) -> str:
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
        if self.errors:
            out.append("errors by reason:")
            out += [f"  {reason}: {n}" for reason, n in self.errors.most_common()]
            out.append(f"first {min(max_examples, len(self.examples))} errors:")
            out += [f"  {e}" for e in self.examples[:max_examples]]
        out.append("FAILED: fix the samples above, or set skip_invalid_samples to train without them"
                   if self.errors else "OK")
        return "\n".join(out)


def _columns(ds, *names: str) -> dict[str, list]:
    """Whole columns as Python lists, in one pass (a datasets Column is lazy, row by row)."""
    return ds.select_columns(list(names)).to_dict()


def _where(test):
    """A batched datasets filter over one column (reads only that column)."""
    return lambda values: [test(v) for v in values]


def _encode_rows(batch, tokenizer, family: Family, opts: MaskOptions):
    convs = [[Message(m["role"], m["content"]) for m in msgs] for msgs in batch["messages"]]
    out = encode_batch(tokenizer, family, convs, opts)
    out["length"] = [len(ids) for ids in out["input_ids"]]
    return out


def prepare(sources, tokenizer=None, template: str = "auto", cutoff_len: int = 2048, require_markup: bool = False,
            opts: MaskOptions = MaskOptions(), num_proc: int | None = None):
    """(encoded dataset of valid samples or None without a tokenizer, report). Samples longer than
    cutoff_len are invalid (reason too_long): they are never truncated into a target without its EOS."""
    ds = load_checked(sources, require_markup, num_proc)
    report = Report(samples=ds.num_rows, cutoff_len=cutoff_len if tokenizer is not None else None)
    bad = ds.filter(_where(lambda reason: reason != ""), input_columns="reason", batched=True)
    bad_rows = _columns(bad, "reason", "error")
    report.errors.update(bad_rows["reason"])
    report.examples += bad_rows["error"][:50]
    good = ds.filter(_where(lambda reason: reason == ""), input_columns="reason", batched=True)
    good = good.remove_columns(["reason", "error"])
    report.valid = good.num_rows
    counts = _columns(good, "fast", "slow", "plain")
    report.fast, report.slow, report.plain = (sum(counts[k]) for k in ("fast", "slow", "plain"))
    report.turns = report.fast + report.slow + report.plain
    if tokenizer is None or not good.num_rows:
        return None, report

    family = resolve_family(template, tokenizer.get_vocab())
    encoded = good.map(_encode_rows, batched=True, batch_size=1000, num_proc=procs(num_proc, good.num_rows),
                       fn_kwargs={"tokenizer": tokenizer, "family": family, "opts": opts}, desc="tokenizing")
    too_long = encoded.filter(_where(lambda n: n > cutoff_len), input_columns="length", batched=True)
    report.errors["too_long"] += too_long.num_rows
    report.valid -= too_long.num_rows
    for row in too_long.select(range(min(50, too_long.num_rows))):
        report.examples.append(f"{location(row)}: {row['length']} tokens > cutoff_len {cutoff_len}")
    if not report.errors["too_long"]:
        del report.errors["too_long"]
    fitting = encoded
    if too_long.num_rows:
        fitting = encoded.filter(_where(lambda n: n <= cutoff_len), input_columns="length", batched=True)
    report.lengths = _columns(fitting, "length")["length"]
    if report.lengths:
        report.padded_efficiency = padded_efficiency(report.lengths, 8)
        report.packed_efficiency = packed_efficiency(report.lengths, cutoff_len)
    return fitting, report


def check(paths: list[str], tokenizer=None, template: str = "auto", cutoff_len: int = 2048,
          require_markup: bool = False, fmt: str = "auto", opts: MaskOptions = MaskOptions(),
          num_proc: int | None = None) -> Report:
    return prepare(sources_from_paths(paths, fmt), tokenizer, template, cutoff_len, require_markup, opts,
                   num_proc)[1]
