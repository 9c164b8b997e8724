"""Data preprocessing benchmark: hyft vs the raw tokenizer vs LLaMA-Factory 0.9.5,
same data, same tokenizer, alternating runs, medians of --repeats (default 3).

    python bench/data_prep.py [--samples 20000] [--cutoff-len 1024] [--workers 2] [--repeats 3]

Data: synthetic Hunyuan ShareGPT chats (half /no_think, a quarter multi-turn,
Chinese and English). Tokenizer: the tiny 7b-family tokenizer, the family whose
tokens LLaMA-Factory's `hunyuan` template emits. LLaMA-Factory runs in its own
venv (bench/setup_llamafactory.sh). Timed on both sides: reading the files,
validation/conversion, chat template, tokenization and labels; not the tokenizer
load. The two sides tokenize different text: hyft renders multi-turn history as
the official 7b template does (earlier turns reduced to their answer), LLaMA-
Factory's `hunyuan` template keeps the full think markup, so tokens/s is printed
next to samples/s. Last line:
ratio_vs_llamafactory=<x> ratio_vs_raw_tokenizer=<y> packing_efficiency=<z>
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("HYFT_CACHE") or Path.home() / ".cache" / "hyft")
LF_PYTHON = CACHE / "llamafactory-venv" / "bin" / "python"


def make_data(folder: Path, samples: int) -> None:
    from hyft_trainer.sample_data import write

    write(folder, samples, seed=1)


def run_hyft(data: Path, tokenizer, cutoff: int, workers: int) -> dict:
    from hyft_trainer.chat_format import resolve_family
    from hyft_trainer.data_check import TEMPLATE_CHECK_SAMPLES, check_chat_template, prepare
    from hyft_trainer.loading import sources_from_paths

    sources = sources_from_paths([data])
    start = time.perf_counter()
    encoded, report = prepare(sources, tokenizer, cutoff_len=cutoff, num_proc=workers, template_check_samples=0)
    seconds = time.perf_counter() - start
    start = time.perf_counter()  # the start-up template check, timed apart: a fixed cost
    check_chat_template(tokenizer, resolve_family("auto", tokenizer.get_vocab()), encoded, TEMPLATE_CHECK_SAMPLES,
                        sources)
    return {"seconds": seconds, "samples": encoded.num_rows, "tokens": sum(encoded["length"]), "report": report,
            "template_check_seconds": time.perf_counter() - start}


def run_raw_tokenizer(data: Path, tokenizer) -> dict:
    from hyft_trainer.chat_format import FAMILIES, Message, render, text_of

    rows = [json.loads(line) for line in (data / "hunyuan_chat.jsonl").read_text().splitlines()]
    texts = [text_of(render(FAMILIES["7b"], [Message(m["role"], m["content"]) for m in r["messages"]]))
             for r in rows]
    start = time.perf_counter()
    tokens = sum(len(ids) for i in range(0, len(texts), 1000)
                 for ids in tokenizer(texts[i:i + 1000], add_special_tokens=False)["input_ids"])
    return {"seconds": time.perf_counter() - start, "samples": len(texts), "tokens": tokens}


def run_llamafactory(data: Path, model: Path, cutoff: int, workers: int, work: Path) -> dict | str:
    if not LF_PYTHON.exists():
        setup = subprocess.run(["bash", str(HERE / "setup_llamafactory.sh")], capture_output=True, text=True)
        if setup.returncode != 0:
            return f"LLaMA-Factory setup failed: {setup.stderr.strip()[-300:]}"
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "lf-cache"), "HF_HUB_OFFLINE": "1",
           "DISABLE_VERSION_CHECK": "1"}
    proc = subprocess.run([str(LF_PYTHON), str(HERE / "_llamafactory_prep.py"), str(data), str(model), str(cutoff),
                           str(workers), str(work / "lf-out")], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return f"LLaMA-Factory failed: {proc.stderr.strip()[-500:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_run(runs: list[dict | str]) -> dict | str:
    """The run with the median time (its samples and tokens with it); an error if any run failed."""
    failed = [r for r in runs if isinstance(r, str)]
    if failed:
        return failed[0]
    middle = statistics.median_low([r["seconds"] for r in runs])
    return next(r for r in runs if r["seconds"] == middle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--cutoff-len", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # The same tokenizer threads on every side in every run: without this, the first fork of datasets'
    # workers silently turns the Rust tokenizer's parallelism off for the rest of this process.
    os.environ["TOKENIZERS_PARALLELISM"] = "true"

    from datasets import disable_caching, disable_progress_bars
    from transformers import AutoTokenizer

    from hyft_trainer.tiny import build

    disable_caching()  # measure the work, not a cache hit
    disable_progress_bars()
    runs: dict[str, list] = {"hyft": [], "raw": [], "lf": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_data(work / "data", args.samples)
        model = build(work / "tiny-7b", "7b")
        tokenizer = AutoTokenizer.from_pretrained(model)
        for _ in range(args.repeats):  # alternating, so that a load change hits every side
            runs["hyft"].append(run_hyft(work / "data", tokenizer, args.cutoff_len, args.workers))
            runs["raw"].append(run_raw_tokenizer(work / "data", tokenizer))
            runs["lf"].append(run_llamafactory(work / "data", model, args.cutoff_len, args.workers, work))
    ours, raw, lf = (median_run(runs[k]) for k in ("hyft", "raw", "lf"))

    def rate(r):
        return r["samples"] / r["seconds"], r["tokens"] / r["seconds"]

    print(f"data: {args.samples} samples, cutoff_len {args.cutoff_len}, {args.workers} workers, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; medians of {args.repeats} runs")
    for name, result, text in (
            ("hyft (validate + template + labels)", ours, "official 7b template, history reduced"),
            ("raw fast tokenizer (the limit)", raw, "hyft's rendered text"),
            ("LLaMA-Factory 0.9.5 get_dataset", lf, "its `hunyuan` template, full history")):
        if isinstance(result, str):
            print(f"{name:40s} unavailable: {result}")
            continue
        s, t = rate(result)
        print(f"{name:40s} {s:10,.0f} samples/s {t:12,.0f} tokens/s  ({result['seconds']:.2f} s, "
              f"{result['tokens']:,} tokens: {text})")
    report = ours["report"]
    print(f"start-up chat_template check: {ours['template_check_seconds']:.2f} s (fixed: at most "
          f"32 conversations, whatever the data size)")
    print(f"real-token share: {report.padded_efficiency:.1%} padded to the longest in batches of 8, "
          f"{report.packed_efficiency:.1%} packed to {args.cutoff_len}")
    vs_lf = rate(ours)[0] / rate(lf)[0] if not isinstance(lf, str) else float("nan")
    print(f"ratio_vs_llamafactory={vs_lf:.3f} ratio_vs_raw_tokenizer={rate(ours)[0] / rate(raw)[0]:.3f} "
          f"packing_efficiency={report.packed_efficiency:.3f}")


if __name__ == "__main__":
    sys.exit(main())
