"""Checkpoints in the shared output folder: only complete ones are ever resumed.

A checkpoint is complete once every rank finished writing it: after a barrier,
global rank 0 writes the COMPLETE marker into it (the Trainer's on_save runs
after its save). A checkpoint cut short by a crash or SIGKILL has no marker
and is never picked.
"""
from __future__ import annotations

import re
from pathlib import Path

MARKER = "COMPLETE"
MODEL_ONLY = "model-only"  # marker text of a save_only_model checkpoint: no optimizer state to resume
_NAME = re.compile(r"^checkpoint-(\d+)$")


def step_of(path: Path) -> int | None:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else None


def is_resumable(checkpoint: Path) -> bool:
    marker = checkpoint / MARKER
    return marker.exists() and marker.read_text().strip() != MODEL_ONLY


def newest_complete(output_dir: str | Path) -> Path | None:
    """The newest checkpoint training can resume from (complete, with optimizer state)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    complete = [p for p in folder.iterdir() if step_of(p) is not None and is_resumable(p)]
    return max(complete, key=step_of, default=None)


def mark_complete(checkpoint: Path, resumable: bool = True) -> None:
    tmp = checkpoint / (MARKER + ".tmp")
    tmp.write_text("ok\n" if resumable else MODEL_ONLY + "\n")
    tmp.replace(checkpoint / MARKER)
