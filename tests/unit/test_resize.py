"""Resuming on another world size: what the plan keeps and what it refuses."""
from __future__ import annotations

import pytest

from hyft_trainer import resize


def checkpoint(tmp_path, ranks=2, facts=(2, 1, 3), stage=3):
    """A ZeRO checkpoint's files as DeepSpeed names them: ZeRO-3 writes each rank's module states, ZeRO-2 one
    file of them; both write each rank's optimizer shard."""
    folder = tmp_path / "checkpoint-4"
    (folder / "global_step4").mkdir(parents=True)
    (folder / "latest").write_text("global_step4")
    if stage == 2:
        (folder / "global_step4" / "mp_rank_00_model_states.pt").write_bytes(b"")
    for r in range(ranks):
        if stage == 3:
            (folder / "global_step4" / f"zero_pp_rank_{r}_mp_rank_00_model_states.pt").write_bytes(b"")
        (folder / "global_step4" / f"bf16_zero_pp_rank_{r}_mp_rank_00_optim_states.pt").write_bytes(b"")
    if facts:
        resize.write_facts(folder, *facts)
    return folder


@pytest.mark.parametrize("world, micro, accumulation, kept, note", [
    (1, 1, 3, 6, "written by 2 ranks, on 1: converted to DeepSpeed's universal checkpoint; "
                 "gradient_accumulation_steps 3 -> 6 keeps the global batch of 6"),
    (3, 1, 3, 2, "3 -> 2 keeps the global batch of 6"),
    (3, 2, 3, 1, "3 -> 1 keeps the global batch of 6"),
    (4, 1, 1, 1, "gradient_accumulation_steps 1 as set (global batch 4)"),  # changed on purpose: it wins
])
def test_the_global_batch_is_kept_unless_the_accumulation_was_changed(tmp_path, world, micro, accumulation, kept,
                                                                       note):
    plan = resize.plan(checkpoint(tmp_path), world, micro, accumulation)
    assert (plan.saved_world, plan.accumulation, plan.zero) == (2, kept, True) and note in plan.note


def test_the_same_world_needs_nothing_and_a_batch_that_cannot_be_kept_is_refused(tmp_path):
    ckpt = checkpoint(tmp_path)
    assert resize.plan(ckpt, 2, 1, 3) is None
    with pytest.raises(resize.ResizeError, match=r"a global batch of 6, which 4 ranks of per_device_train_batch_size"
                                                 r" 1 cannot keep"):
        resize.plan(ckpt, 4, 1, 3)


def test_an_older_checkpoint_counts_its_shards_and_a_ddp_one_loads_as_it_is(tmp_path):
    older = resize.plan(checkpoint(tmp_path / "a", ranks=2, facts=None), 1, 1, 2)
    assert (older.saved_world, older.accumulation) == (2, 4)  # its accumulation taken as the config's
    ddp = tmp_path / "b" / "checkpoint-4"
    ddp.mkdir(parents=True)
    resize.write_facts(ddp, 2, 1, 1)
    plan = resize.plan(ddp, 1, 1, 1)
    assert not plan.zero and "loaded as it is" in plan.note and plan.accumulation == 2


@pytest.mark.parametrize("planned, world, micro, accumulation, kept", [
    (4, 4, 1, 2, None),  # at its planned size: nothing to keep
    (3, 2, 1, 2, 3),  # runPolicy.resize ran 3 nodes' job on 2: 6 micro-batches per step stay 6
    (16, 8, 2, 1, 2),
])
def test_a_gang_below_its_planned_size_keeps_the_global_batch(planned, world, micro, accumulation, kept):
    got = resize.below_plan(planned, world, micro, accumulation)
    assert (got and got[0]) == kept
    if kept:
        assert got[1].endswith(f"keeps the global batch of {planned * micro * accumulation}")


def test_a_gang_below_its_planned_size_that_cannot_keep_the_batch_is_refused():
    with pytest.raises(resize.ResizeError, match="the job plans 3 ranks and a global batch of 3, which 2 ranks"):
        resize.below_plan(3, 2, 1, 1)


def test_zero2_shards_are_counted_and_converted_like_zero3s(tmp_path):
    older = resize.plan(checkpoint(tmp_path, ranks=2, facts=None, stage=2), 1, 1, 2)
    assert (older.saved_world, older.zero) == (2, True) and "converted to DeepSpeed's universal" in older.note


def test_a_checkpoint_keeps_its_stage(tmp_path):
    """DeepSpeed loads a checkpoint under the stage it was written under only: another is refused naming both
    (zero_stage auto resumes under the checkpoint's own: offload.for_node)."""
    ckpt = checkpoint(tmp_path, facts=None)
    resize.write_facts(ckpt, 2, 1, 3, stage=3)
    assert resize.saved_stage(ckpt) == 3 and resize.saved_stage(None) is None
    assert resize.plan(ckpt, 2, 1, 3, stage=3) is None
    # a checkpoint of a hyft that did not record its stage: read from DeepSpeed's file names
    assert resize.saved_stage(checkpoint(tmp_path / "older3", facts=None)) == 3
    assert resize.saved_stage(checkpoint(tmp_path / "older2", facts=None, stage=2)) == 2
    assert resize.saved_stage(checkpoint(tmp_path / "ddp", ranks=0, facts=None, stage=2)) is None
    with pytest.raises(resize.ResizeError, match="checkpoint-4 was written under ZeRO-3 and cannot be resumed under "
                                                 "ZeRO-2 .*: set zero_stage 3 "):
        resize.plan(ckpt, 2, 1, 3, stage=2)
    ddp = checkpoint(tmp_path / "ddp-recorded", ranks=0, facts=None)
    resize.write_facts(ddp, 2, 1, 3, stage=0)  # plain DDP's checkpoint: no DeepSpeed shards to convert
    assert resize.saved_stage(ddp) == 0 and resize.plan(ddp, 2, 1, 3, stage=0) is None
    with pytest.raises(resize.ResizeError, match="checkpoint-4 was written under plain DDP and cannot be resumed "
                                                 "under ZeRO-2 .*: set zero_stage 0 "):
        resize.plan(ddp, 2, 1, 3, stage=2)
