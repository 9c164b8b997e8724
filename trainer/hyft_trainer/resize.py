"""Resuming on another world size. A ZeRO checkpoint holds one shard per rank and DeepSpeed refuses it
on another number of ranks; its universal checkpoint (deepspeed.checkpoint.ds_to_universal) holds each
parameter and optimizer state whole, and loads on any number. hyft converts a checkpoint once, beside
it (marked complete like the checkpoint), loads it with DeepSpeed's `checkpoint.load_universal`, and
keeps the global batch: gradient accumulation follows the new world size unless the config changed it.
The stage stays the checkpoint's (zero_stage auto resumes under it: saved_stage): DeepSpeed names the
module states by stage, and loads neither a ZeRO-2 checkpoint under ZeRO-3 nor the reverse, universal or not.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .estimate import stage_name

FACTS = "hyft_checkpoint.json"  # the batch layout and ZeRO stage a checkpoint was written with (CompleteMarker)
CONVERTED = "COMPLETE_UNIVERSAL"
# each rank's optimizer shard, under ZeRO-2 and 3 alike (bf16_ in front under bf16)
_ZERO_RANK = re.compile(r"zero_pp_rank_(\d+)_mp_rank_\d+_optim_states\.pt$")
_ZERO_MODULE = re.compile(r"zero_pp_rank_\d+_mp_rank_\d+_model_states\.pt$")  # ZeRO-3's, one per rank


class ResizeError(ValueError):
    pass


@dataclass(frozen=True)
class Resize:
    saved_world: int
    accumulation: int  # the gradient accumulation that keeps the checkpoint's global batch
    zero: bool  # ZeRO shards to convert (plain DDP checkpoints load on any world size as they are)
    note: str


def write_facts(checkpoint: Path, world: int, micro: int, accumulation: int, stage: int | None = None) -> None:
    (checkpoint / FACTS).write_text(json.dumps({"world_size": world, "per_device_train_batch_size": micro,
                                                "gradient_accumulation_steps": accumulation, "zero_stage": stage}))


def _tag(checkpoint: Path) -> str | None:
    latest = checkpoint / "latest"
    return latest.read_text().strip() if latest.is_file() else None


def zero_ranks(checkpoint: Path) -> int | None:
    """How many data-parallel ranks wrote the checkpoint's ZeRO shards; None for a checkpoint without."""
    tag = _tag(checkpoint)
    ranks = {int(m.group(1)) for p in (checkpoint / tag).glob("*.pt") if (m := _ZERO_RANK.search(p.name))} \
        if tag else set()
    return len(ranks) or None


def _keeping(batch: int, world: int, micro: int, what: str) -> int:
    """The gradient accumulation with which `world` ranks of `micro` samples keep a global batch of `batch`."""
    if batch % (world * micro):
        raise ResizeError(f"{what} {world} ranks of per_device_train_batch_size {micro} cannot keep ({batch} is no "
                          f"multiple of {world * micro}): set gradient_accumulation_steps (or the batch size) to the "
                          "global batch you want")
    return batch // (world * micro)


def facts(checkpoint: Path) -> dict:
    return json.loads((checkpoint / FACTS).read_text()) if (checkpoint / FACTS).is_file() else {}


def saved_stage(checkpoint: Path | None) -> int | None:
    """The ZeRO stage a checkpoint was written under (None: no checkpoint, or none of DeepSpeed's): as recorded,
    else from its files (a checkpoint of a hyft that did not record it): ZeRO-3 writes each rank's module
    states, ZeRO-2 one file of them beside each rank's optimizer shard."""
    if checkpoint is None:
        return None
    if "zero_stage" in (written := facts(checkpoint)):
        return written["zero_stage"]
    tag = _tag(checkpoint)
    names = [p.name for p in (checkpoint / tag).glob("*.pt")] if tag else []
    if any(_ZERO_MODULE.search(n) for n in names):
        return 3
    return 2 if any(_ZERO_RANK.search(n) for n in names) else None


def plan(checkpoint: Path, world: int, micro: int, accumulation: int, stage: int | None = None) -> Resize | None:
    """What resuming `checkpoint` on `world` ranks under ZeRO `stage` takes; None when it was written by as
    many. A gradient_accumulation_steps other than the checkpoint's was changed on purpose, and wins; a stage
    other than the checkpoint's is refused."""
    written = facts(checkpoint)
    ranks = zero_ranks(checkpoint)
    if stage is not None and (saved := saved_stage(checkpoint)) not in (None, stage):
        raise ResizeError(f"{checkpoint.name} was written under {stage_name(saved)} and cannot be resumed under "
                          f"{stage_name(stage)} (DeepSpeed and plain DDP read only their own stage's checkpoints): "
                          f"set zero_stage {saved} (or auto, which resumes under the checkpoint's stage), or start "
                          "over in another output_dir")
    saved = written.get("world_size") or ranks
    if not saved or saved == world:
        return None
    saved_micro = written.get("per_device_train_batch_size", micro)
    saved_accumulation = written.get("gradient_accumulation_steps", accumulation)
    batch = saved * saved_micro * saved_accumulation
    if accumulation != saved_accumulation:
        kept = accumulation
        why = f"gradient_accumulation_steps {accumulation} as set (global batch {world * micro * accumulation})"
    else:
        kept = _keeping(batch, world, micro, f"{checkpoint.name} was written by {saved} ranks with a global batch "
                                             f"of {batch}, which")
        why = f"gradient_accumulation_steps {saved_accumulation} -> {kept} keeps the global batch of {batch}"
    how = "converted to DeepSpeed's universal checkpoint" if ranks else "loaded as it is"
    return Resize(saved, kept, bool(ranks), f"resuming {checkpoint.name}, written by {saved} ranks, on {world}: "
                                            f"{how}; {why}")


def below_plan(planned_world: int, world: int, micro: int, accumulation: int) -> tuple[int, str] | None:
    """The gradient accumulation that keeps the planned global batch on a gang shrunk below its planned size
    (the operator's runPolicy.resize), and what to say; None at the planned size."""
    if planned_world == world:
        return None
    batch = planned_world * micro * accumulation
    kept = _keeping(batch, world, micro, f"the job plans {planned_world} ranks and a global batch of {batch}, which")
    return kept, (f"running on {world} of the {planned_world} ranks the job plans: gradient_accumulation_steps "
                  f"{accumulation} -> {kept} keeps the global batch of {batch}")


def convert(checkpoint: Path) -> None:
    """The universal checkpoint beside the ZeRO one (once: a complete conversion is kept and reused)."""
    if (checkpoint / CONVERTED).is_file():
        return
    tag = _tag(checkpoint)
    target = checkpoint / f"{tag}_universal"
    shutil.rmtree(target, ignore_errors=True)  # a conversion cut short
    # --inject_missing_state: a ZeRO-2 checkpoint of transformers' Trainer lacks the universal_checkpoint_info
    # Megatron-DeepSpeed writes (ZeRO-3 derives it from the shards); DeepSpeed fills in its version
    done = subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                           str(checkpoint / tag), "--output_folder", str(target), "--inject_missing_state"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ResizeError(f"converting {checkpoint} to DeepSpeed's universal checkpoint failed: "
                          f"{(done.stderr or done.stdout).strip()[-1500:]}")
    (checkpoint / CONVERTED).write_text(f"{tag}_universal\n")


def converted(checkpoint: Path) -> bool:
    return (checkpoint / CONVERTED).is_file()


UNIVERSAL = {"checkpoint": {"load_universal": True}}  # merged into the DeepSpeed config of a resized resume
