"""`hyft data check`: validate training data and report on it before a long job starts."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .chat_format import Message, resolve_family
from .encode import MaskOptions, encode_batch
from .loading import load_checked, location, sources_from_paths
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


def check(paths: list[str], tokenizer=None, template: str = "auto", cutoff_len: int = 2048,
          require_markup: bool = False, fmt: str = "auto", opts: MaskOptions = MaskOptions(),
          num_proc: int | None = None) -> Report:
    ds = load_checked(sources_from_paths(paths, fmt), require_markup, num_proc)
    report = Report(samples=ds.num_rows, cutoff_len=cutoff_len if tokenizer is not None else None)
    bad = ds.filter(lambda r: r["reason"] != "")
    report.errors.update(bad["reason"])
    report.examples += bad["error"][:50]
    good = ds.filter(lambda r: r["reason"] == "")
    report.valid = good.num_rows
    report.fast, report.slow, report.plain = sum(good["fast"]), sum(good["slow"]), sum(good["plain"])
    report.turns = report.fast + report.slow + report.plain
    if tokenizer is None or not good.num_rows:
        return report

    family = resolve_family(template, tokenizer.get_vocab())

    def lengths(batch):
        convs = [[Message(m["role"], m["content"]) for m in msgs] for msgs in batch["messages"]]
        return {"length": [len(ids) for ids in encode_batch(tokenizer, family, convs, opts)["input_ids"]]}

    measured = good.map(lengths, batched=True, batch_size=1000, desc="tokenizing")
    for row in measured.filter(lambda r: r["length"] > cutoff_len):
        report.errors["too_long"] += 1
        if len(report.examples) < 50:
            report.examples.append(f"{location(row)}: {row['length']} tokens > cutoff_len {cutoff_len}")
    report.valid -= report.errors["too_long"]
    report.lengths = [n for n in measured["length"] if n <= cutoff_len]
    if report.lengths:
        report.padded_efficiency = padded_efficiency(report.lengths, 8)
        report.packed_efficiency = packed_efficiency(report.lengths, cutoff_len)
    return report
