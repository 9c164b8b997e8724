"""Tokenize once per job: the prepared (tokenized, split and packed) data on the shared output volume.

Global rank 0 prepares it while the other ranks wait at a barrier (bounded by ddp_timeout); every rank
then memory-maps the same Arrow files, so no node tokenizes again and no rank holds the data in Python
lists. The folder's name is a key over the data's content, the tokenizer's files and every setting that
changes the result: a restart, or another job with the same data and settings on the same volume,
loads it. A folder is complete once its marker exists (written last, after an atomic rename); a failed
preparation leaves its error there for the other ranks, which stop with the same message.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from .data_check import Report

FOLDER = ".hyft-data-cache"  # on the output volume (or output_dir, for `hyft train` alone)
FORMAT = 1  # bump when the prepared rows' layout or the encoding changes: old folders are then not used
COMPLETE = "complete"
FAILED = "failed.json"
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")  # not the tokenizer's


def _hash_file(digest, path: Path) -> None:
    digest.update(str(path.name).encode() + b"\0")
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def key(data_files: list[Path], model_dir: Path, settings: dict) -> str:
    """sha256 over the data files' bytes, the model folder's non-weight files (tokenizer, chat template,
    config) and the settings, as 24 hex digits."""
    digest = hashlib.sha256(json.dumps({"format": FORMAT, **settings}, sort_keys=True, default=str).encode())
    for path in sorted(data_files):
        _hash_file(digest, path)
    for path in sorted(p for p in model_dir.iterdir() if p.is_file() and not p.name.endswith(WEIGHTS)):
        _hash_file(digest, path)
    return digest.hexdigest()[:24]


def complete(folder: Path) -> bool:
    return (folder / COMPLETE).is_file()


def failure(folder: Path) -> dict | None:
    path = folder.with_name(folder.name + ".failed") / FAILED
    return json.loads(path.read_text()) if path.is_file() else None


def save(folder: Path, train, eval_ds, report: Report) -> None:
    """Write into a fresh folder beside it, then rename: a folder under the final name is whole."""
    partial = folder.with_name(f"{folder.name}.partial-{secrets.token_hex(4)}")
    partial.mkdir(parents=True)
    train.save_to_disk(str(partial / "train"))
    if eval_ds is not None:
        eval_ds.save_to_disk(str(partial / "eval"))
    (partial / "report.json").write_text(json.dumps({**asdict(report), "errors": dict(report.errors)}))
    (partial / COMPLETE).write_text("prepared by global rank 0\n")
    _fsync_tree(partial)
    try:
        os.rename(partial, folder)
    except OSError:  # another job with the same key got there first: theirs is the same data
        shutil.rmtree(partial, ignore_errors=True)
    (folder.with_name(folder.name + ".failed") / FAILED).unlink(missing_ok=True)


def save_failure(folder: Path, kind: str, message: str) -> None:
    failed = folder.with_name(folder.name + ".failed")
    failed.mkdir(parents=True, exist_ok=True)
    (failed / FAILED).write_text(json.dumps({"kind": kind, "message": message}))


def clear_failure(folder: Path) -> None:
    shutil.rmtree(folder.with_name(folder.name + ".failed"), ignore_errors=True)


def load(folder: Path):
    """(train, eval or None, report), memory-mapped."""
    from datasets import load_from_disk

    train = load_from_disk(str(folder / "train"))
    eval_ds = load_from_disk(str(folder / "eval")) if (folder / "eval").is_dir() else None
    data = json.loads((folder / "report.json").read_text())
    return train, eval_ds, Report(**{**data, "errors": Counter(data["errors"])})


def _fsync_tree(folder: Path) -> None:
    """The other nodes read these files over a network volume: on disk before the marker counts."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
