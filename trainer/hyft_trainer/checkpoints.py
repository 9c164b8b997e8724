"""Checkpoints in the shared output folder: only complete ones are ever resumed.

A checkpoint is complete once every rank finished writing it: after a barrier,
global rank 0 writes the COMPLETE marker into it (the Trainer's on_save runs
after its save). A checkpoint cut short by a crash or SIGKILL has no marker
and is never picked.
"""
from __future__ import annotations

import os
import re
import stat
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


def starting_point(config) -> Path | None:
    """This run's own newest resumable checkpoint; else the one resume_from_checkpoint names."""
    own = newest_complete(config.output_dir)
    if own is not None or not isinstance(config.resume_from_checkpoint, str):
        return own
    return Path(config.resume_from_checkpoint)


def mark_complete(checkpoint: Path, resumable: bool = True) -> None:
    readable_by_all(checkpoint)
    tmp = checkpoint / (MARKER + ".tmp")
    tmp.write_text("ok\n" if resumable else MODEL_ONLY + "\n")
    tmp.replace(checkpoint / MARKER)


def readable_by_all(root: Path) -> list[str]:
    """Let every uid read what training wrote (a serving or evaluation pod seldom runs as the trainer's
    uid): safetensors writes through a private temporary file, so its files land with mode 0600.
    Adds read (and, for folders, search) permission for group and others; takes nothing away. Returns
    the paths it could not change (owned by another uid)."""
    refused = []
    for folder, _dirs, files in os.walk(root):
        for path in (folder, *(os.path.join(folder, f) for f in files)):
            try:
                mode = os.lstat(path).st_mode
                if stat.S_ISLNK(mode):
                    continue
                want = mode | (0o055 if stat.S_ISDIR(mode) else 0o044)
                if want != mode:
                    os.chmod(path, stat.S_IMODE(want))
            except FileNotFoundError:  # removed meanwhile (save_total_limit rotates checkpoints)
                continue
            except PermissionError:
                refused.append(path)
    return refused
