"""Data preprocessing benchmark: hyft vs the raw tokenizer vs LLaMA-Factory 0.9.5,
same data, same tokenizer, one run.

    python bench/data_prep.py [--samples 20000] [--cutoff-len 1024] [--workers 2]

Data: synthetic Hunyuan ShareGPT chats (half /no_think, a quarter multi-turn,
Chinese and English). Tokenizer: the tiny 7b-family tokenizer, the family whose
tokens LLaMA-Factory's `hunyuan` template emits. LLaMA-Factory runs in its own
venv (bench/setup_llamafactory.sh). Last line:
ratio_vs_llamafactory=<x> ratio_vs_raw_tokenizer=<y> packing_efficiency=<z>
"""
from __future__ import annotations

import argparse
import json
import os
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


def run_hyft(data: Path, model: Path, cutoff: int, workers: int) -> dict:
    from transformers import AutoTokenizer

    from hyft_trainer.data_check import prepare
    from hyft_trainer.loading import sources_from_paths

    tokenizer = AutoTokenizer.from_pretrained(model)
    start = time.perf_counter()
    encoded, report = prepare(sources_from_paths([data]), tokenizer, cutoff_len=cutoff, num_proc=workers)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples": encoded.num_rows, "tokens": sum(encoded["length"]), "report": report}


def run_raw_tokenizer(data: Path, model: Path) -> dict:
    from transformers import AutoTokenizer

    from hyft_trainer.chat_format import FAMILIES, Message, render, text_of

    tokenizer = AutoTokenizer.from_pretrained(model)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--cutoff-len", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    from datasets import disable_caching, disable_progress_bars

    from hyft_trainer.tiny import build

    disable_caching()  # measure the work, not a cache hit
    disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_data(work / "data", args.samples)
        model = build(work / "tiny-7b", "7b")
        ours = run_hyft(work / "data", model, args.cutoff_len, args.workers)
        raw = run_raw_tokenizer(work / "data", model)
        lf = run_llamafactory(work / "data", model, args.cutoff_len, args.workers, work)

    def rate(r):
        return r["samples"] / r["seconds"], r["tokens"] / r["seconds"]

    print(f"data: {args.samples} samples, cutoff_len {args.cutoff_len}, {args.workers} workers")
    for name, result in (("hyft (validate + template + labels)", ours), ("raw fast tokenizer (the limit)", raw),
                         ("LLaMA-Factory 0.9.5 get_dataset", lf)):
        if isinstance(result, str):
            print(f"{name:40s} unavailable: {result}")
            continue
        s, t = rate(result)
        print(f"{name:40s} {s:10,.0f} samples/s {t:12,.0f} tokens/s  ({result['seconds']:.2f} s)")
    report = ours["report"]
    print(f"real-token share: {report.padded_efficiency:.1%} padded to the longest in batches of 8, "
          f"{report.packed_efficiency:.1%} packed to {args.cutoff_len}")
    vs_lf = rate(ours)[0] / rate(lf)[0] if not isinstance(lf, str) else float("nan")
    print(f"ratio_vs_llamafactory={vs_lf:.3f} ratio_vs_raw_tokenizer={rate(ours)[0] / rate(raw)[0]:.3f} "
          f"packing_efficiency={report.packed_efficiency:.3f}")


if __name__ == "__main__":
    sys.exit(main())
