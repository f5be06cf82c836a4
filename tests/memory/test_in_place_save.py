"""A save that changed a few blocks rewrites them in place behind a redo journal (issue 22 item 4).

The mass-storage gadget saved its whole 2 MiB RP2040 image (write, fsync, rename) every
second while a host copied a UF2.  Now a save whose changed 4 KiB blocks are at most
IN_PLACE_SHARE of the image writes a journal, commits the state, then writes the blocks
into FILE.bin in place.  The same campaigns as test_durable.py's, on such a save: a cut at
every file step, a cut during the recovery, and a power loss that keeps only what was
fsynced, each leave the old pair or the new one, never a mix.
"""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest

from bootkit.memory import SimulatedFlash
from bootkit.memory.faults import FILE_STEPS, FaultPlan, PowerCut
from bootkit.memory.store import HASH_BLOCK, IN_PLACE_SHARE

from .test_durable import APP, CHIP, load_after_crash, make_old, power_loss_outcomes, snapshot

SMALL = bytes((i * 29 + 3) & 0xFF for i in range(HASH_BLOCK + 600))  # two blocks, erased before


def update(flash: SimulatedFlash) -> None:
    """A small update after the old image: program two blocks' worth, manifest (which saves)."""
    flash.program(APP + 0x3000 - 300, SMALL)
    flash.manifest()


def states(tmp_path: Path) -> tuple[tuple, tuple]:
    (tmp_path / "ref").mkdir()
    old = make_old(tmp_path / "ref")
    with SimulatedFlash(CHIP, tmp_path / "ref" / "img.bin") as flash:
        update(flash)
        new = snapshot(flash)
    assert old != new and old[1] and new[1]
    (tmp_path / "base").mkdir()
    make_old(tmp_path / "base")
    return old, new


def count_steps(tmp_path: Path) -> FaultPlan:
    work = tmp_path / "count"
    shutil.copytree(tmp_path / "base", work)
    inode = (work / "img.bin").stat().st_ino
    plan = FaultPlan(kinds=FILE_STEPS)
    with SimulatedFlash(CHIP, work / "img.bin", faults=plan) as flash:
        update(flash)
    # in place: FILE.bin is the same file, and only the state was renamed
    assert (work / "img.bin").stat().st_ino == inode
    assert plan.log.count("rename") == 1, plan.log
    return plan


def test_a_small_change_is_written_in_place():
    assert 3 * HASH_BLOCK <= IN_PLACE_SHARE * CHIP.flash_size  # the update below qualifies


def test_a_cut_at_every_step_of_an_in_place_save_leaves_the_old_or_the_new_pair(tmp_path):
    old, new = states(tmp_path)
    plan = count_steps(tmp_path)
    seen = set()
    for cut_at in range(1, plan.count + 1):
        work = tmp_path / f"cut{cut_at}"
        shutil.copytree(tmp_path / "base", work)
        flash = SimulatedFlash(CHIP, work / "img.bin", faults=FaultPlan(cut_at, kinds=FILE_STEPS))
        with pytest.raises(PowerCut):
            update(flash)
        with pytest.raises(PowerCut):
            flash.close()
        del flash
        got = load_after_crash(work / "img.bin")
        assert got in (old, new), f"cut at step {cut_at} ({plan.log[cut_at - 1]}): a mixed state"
        seen.add("old" if got == old else "new")
        assert load_after_crash(work / "img.bin") == got
        assert sorted(p.name for p in work.iterdir()) == ["img.bin", "img.bin.lock", "img.bin.state.json"]
    assert seen == {"old", "new"}
    # the torn in-place write (half the blocks) is among the cuts, and it rolled forward
    assert "write" in plan.log[plan.log.index("rename"):]


def test_a_cut_during_the_roll_forward_of_an_in_place_save_still_ends_consistent(tmp_path):
    old, new = states(tmp_path)
    plan = count_steps(tmp_path)
    rolled = 0
    for cut_at in range(1, plan.count + 1):
        work = tmp_path / f"cut{cut_at}"
        shutil.copytree(tmp_path / "base", work)
        flash = SimulatedFlash(CHIP, work / "img.bin", faults=FaultPlan(cut_at, kinds=FILE_STEPS))
        with pytest.raises(PowerCut):
            update(flash)
        del flash
        gc.collect()
        recovery = FaultPlan(kinds=FILE_STEPS)
        probe = tmp_path / f"probe{cut_at}"
        shutil.copytree(work, probe)
        SimulatedFlash(CHIP, probe / "img.bin", faults=recovery).close()
        rolled += "write" in recovery.log
        for second in range(1, recovery.count + 1):
            again = tmp_path / f"cut{cut_at}-{second}"
            shutil.copytree(work, again)
            with pytest.raises(PowerCut):
                SimulatedFlash(CHIP, again / "img.bin", faults=FaultPlan(second, kinds=FILE_STEPS))
            assert load_after_crash(again / "img.bin") in (old, new)
    assert rolled  # some cut left a journal to replay


def test_power_loss_after_an_in_place_save_keeps_old_or_new(tmp_path, monkeypatch):
    old, new = states(tmp_path)
    plan = count_steps(tmp_path)
    assert power_loss_outcomes(tmp_path, monkeypatch, update, plan.count, (old, new)) > plan.count + 1


def test_a_large_change_still_writes_a_new_file(tmp_path):
    (tmp_path / "base").mkdir()
    make_old(tmp_path / "base")
    path = tmp_path / "base" / "img.bin"
    inode = path.stat().st_ino
    with SimulatedFlash(CHIP, path) as flash:
        flash.erase_all()                      # most of the blocks
        flash.program(APP, SMALL)
        flash.manifest()
    assert path.stat().st_ino != inode         # FILE.bin.new renamed over it
    with SimulatedFlash(CHIP, path) as flash:
        assert flash.app_valid and flash.peek(APP, len(SMALL)) == SMALL
