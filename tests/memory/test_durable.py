"""The image file survives any crash: consistent saves, recovery, write-through (issue 17 items 1, 2, 4).

A "crash" here is a :class:`PowerCut` raised by a :class:`FaultPlan` at a
chosen file step of a save (write, fsync, rename, dirsync), torn writes
included; the next process loads what the directory holds.  The power-loss
model further down also drops what was written but never fsynced.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
from itertools import combinations
from pathlib import Path

import pytest

from bootkit.emulator import Emulator
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.memory.faults import FILE_STEPS, FaultPlan, PowerCut
from bootkit.memory.store import ImageStore, image_hash
from bootkit.usb.device import Signal

CHIP = get_chip("stm32f103c8")          # 64 KiB, 1 KiB pages, application at 0x08002000
APP = 0x08002000
OLD = bytes((i * 7 + 1) & 0xFF for i in range(3000))
NEW = bytes((i * 13 + 5) & 0xFF for i in range(5000))


def snapshot(flash: SimulatedFlash) -> tuple:
    """What a reloaded board is: flash bytes, application valid, erase counters."""
    return flash.flash_bytes(), flash.app_valid, dict(flash.erase_counters.counts)


def make_old(directory: Path) -> tuple:
    """An image holding OLD, manifested; returns its snapshot."""
    with SimulatedFlash(CHIP, directory / "img.bin") as flash:
        flash.erase_all()
        flash.program(APP, OLD)
        flash.manifest()
        return snapshot(flash)


def update(flash: SimulatedFlash) -> None:
    """A complete update to NEW, as a DFU download does it: erase, program, manifest (which saves)."""
    flash.erase_all()
    flash.program(APP, NEW)
    flash.manifest()


def load_after_crash(path: Path) -> tuple:
    gc.collect()  # the crashed flash's lock goes with it, as a killed process's does
    with SimulatedFlash(CHIP, path) as flash:
        return snapshot(flash)


def expected_states(tmp_path: Path) -> tuple[tuple, tuple]:
    (tmp_path / "ref").mkdir()
    old = make_old(tmp_path / "ref")
    with SimulatedFlash(CHIP, tmp_path / "ref" / "img.bin") as flash:
        update(flash)
        new = snapshot(flash)
    assert old != new and old[1] and new[1]
    return old, new


def test_a_cut_at_every_step_of_a_save_leaves_the_old_or_the_new_pair(tmp_path):
    old, new = expected_states(tmp_path)
    (tmp_path / "base").mkdir()
    make_old(tmp_path / "base")

    # count the file steps of one update, uncut
    work = tmp_path / "count"
    shutil.copytree(tmp_path / "base", work)
    plan = FaultPlan(kinds=FILE_STEPS)
    with SimulatedFlash(CHIP, work / "img.bin", faults=plan) as flash:
        update(flash)
    assert plan.count >= 8, plan.log
    assert {"write", "fsync", "rename", "dirsync"} <= set(plan.log)

    seen = set()
    for cut_at in range(1, plan.count + 1):
        work = tmp_path / f"cut{cut_at}"
        shutil.copytree(tmp_path / "base", work)
        flash = SimulatedFlash(CHIP, work / "img.bin", faults=FaultPlan(cut_at, kinds=FILE_STEPS))
        with pytest.raises(PowerCut):
            update(flash)
        with pytest.raises(PowerCut):
            flash.close()   # no power: nothing more reaches the disk, but the lock is released
        del flash
        got = load_after_crash(work / "img.bin")
        assert got in (old, new), f"cut at step {cut_at} ({plan.log[cut_at - 1]}): a mixed state"
        seen.add("old" if got == old else "new")
        # and the recovery left a directory that loads the same again, without leftovers
        assert load_after_crash(work / "img.bin") == got
        assert sorted(p.name for p in work.iterdir()) == ["img.bin", "img.bin.lock", "img.bin.state.json"]
    assert seen == {"old", "new"}  # the commit point is inside the range: both outcomes happen


def test_a_cut_during_the_roll_forward_of_a_cut_save_still_ends_consistent(tmp_path):
    old, new = expected_states(tmp_path)
    (tmp_path / "base").mkdir()
    make_old(tmp_path / "base")
    plan = FaultPlan(kinds=FILE_STEPS)
    work = tmp_path / "count"
    shutil.copytree(tmp_path / "base", work)
    with SimulatedFlash(CHIP, work / "img.bin", faults=plan) as flash:
        update(flash)
    for cut_at in range(1, plan.count + 1):
        work = tmp_path / f"cut{cut_at}"
        shutil.copytree(tmp_path / "base", work)
        flash = SimulatedFlash(CHIP, work / "img.bin", faults=FaultPlan(cut_at, kinds=FILE_STEPS))
        with pytest.raises(PowerCut):
            update(flash)
        del flash
        gc.collect()
        # the next boot is cut too, at each step of its recovery (rename, dirsync, unlink)
        recovery = FaultPlan(kinds=FILE_STEPS)
        probe = tmp_path / f"probe{cut_at}"
        shutil.copytree(work, probe)
        SimulatedFlash(CHIP, probe / "img.bin", faults=recovery).close()
        for second in range(1, recovery.count + 1):
            again = tmp_path / f"cut{cut_at}-{second}"
            shutil.copytree(work, again)
            with pytest.raises(PowerCut):
                SimulatedFlash(CHIP, again / "img.bin", faults=FaultPlan(second, kinds=FILE_STEPS))
            assert load_after_crash(again / "img.bin") in (old, new)


# ---------------------------------------------------------------------------
# power loss: what was written but not fsynced may be lost


class PowerLossModel:
    """Watches the store's system calls and knows what a power loss would keep.

    Modelled (POSIX, and ext4/xfs in practice): a file's bytes are durable
    only once fsync(fd) returned; a directory entry (a create or a rename)
    only once fsync of the directory returned.  Before that an entry may or
    may not have reached the disk, in any order subset, and a file whose
    bytes never were fsynced reads back empty.  Not modelled: a disk that
    lies about its cache flush, or a file system without atomic rename.
    """

    def __init__(self, directory: Path):
        self.dir = directory
        self.names = {p.name: p.stat().st_ino for p in directory.iterdir()}     # durable entries
        self.data = {p.stat().st_ino: p.read_bytes() for p in directory.iterdir()}  # durable bytes
        self.pending: list[tuple] = []   # directory operations since the last directory fsync
        self.fds: dict[int, Path] = {}

    def install(self, monkeypatch):
        import bootkit.memory.store as store

        real = os
        model = self

        class OS:
            def __getattr__(self, name):
                return getattr(real, name)

            def open(self, path, flags, mode=0o777, **kw):
                existed = Path(path).exists()
                fd = real.open(path, flags, mode, **kw)
                model.fds[fd] = Path(path)
                if not existed and flags & real.O_CREAT:
                    model.pending.append(("create", Path(path).name, real.fstat(fd).st_ino))
                return fd

            def fsync(self, fd):
                real.fsync(fd)
                path = model.fds[fd]
                if path == model.dir:
                    model.pending.clear()
                    model.names = {p.name: p.stat().st_ino for p in model.dir.iterdir()}
                else:
                    model.data[real.fstat(fd).st_ino] = path.read_bytes()

            def replace(self, src, dst):
                model.pending.append(("rename", Path(src).name, Path(dst).name))
                real.replace(src, dst)

        monkeypatch.setattr(store, "os", OS())

    def outcomes(self):
        """Every directory a power loss now could leave: each subset of the pending entries."""
        for n in range(len(self.pending) + 1):
            for chosen in combinations(self.pending, n):
                names = dict(self.names)
                for op in chosen:
                    if op[0] == "create":
                        names[op[1]] = op[2]
                    elif op[1] in names:
                        names[op[2]] = names.pop(op[1])
                yield {name: self.data.get(ino, b"") for name, ino in names.items()}


def power_loss_outcomes(tmp_path, monkeypatch, update, steps: int, allowed: tuple) -> int:
    """Cut the power at each of ``steps`` + 1 file steps of ``update`` on a copy of
    tmp_path/base (count + 1: after the last step), then load every disk a power loss can
    leave (PowerLossModel: only fsynced data is sure); each must load as one of ``allowed``.
    Returns how many disks were loaded."""
    outcomes = 0
    for cut_at in range(1, steps + 2):
        work = tmp_path / f"cut{cut_at}"
        shutil.copytree(tmp_path / "base", work)
        model = PowerLossModel(work)
        with monkeypatch.context() as m:
            model.install(m)
            flash = SimulatedFlash(CHIP, work / "img.bin", faults=FaultPlan(cut_at, kinds=FILE_STEPS))
            try:
                update(flash)
            except PowerCut:
                pass
            del flash
            gc.collect()
        for i, files in enumerate(model.outcomes()):
            disk = tmp_path / f"loss{cut_at}-{i}"
            disk.mkdir()
            for name, data in files.items():
                (disk / name).write_bytes(data)
            got = load_after_crash(disk / "img.bin")
            assert got in allowed, f"power lost at step {cut_at} keeping {sorted(files)}: a mixed state"
            outcomes += 1
    return outcomes


def test_power_loss_keeps_only_what_was_synced_and_still_loads_old_or_new(tmp_path, monkeypatch):
    old, new = expected_states(tmp_path)
    (tmp_path / "base").mkdir()
    make_old(tmp_path / "base")
    work = tmp_path / "count"
    shutil.copytree(tmp_path / "base", work)
    plan = FaultPlan(kinds=FILE_STEPS)
    with SimulatedFlash(CHIP, work / "img.bin", faults=plan) as flash:
        update(flash)

    assert power_loss_outcomes(tmp_path, monkeypatch, update, plan.count, (old, new)) > plan.count + 1
    # (more outcomes than cut points: some cut points had unsynced entries to lose or keep)


# ---------------------------------------------------------------------------
# a state that does not describe the image never says "valid"


def write_app(path: Path) -> bytes:
    """A manifested image; returns its bytes."""
    with SimulatedFlash(CHIP, path) as flash:
        flash.program(APP, OLD)
        flash.manifest()
        assert flash.app_valid
        return flash.flash_bytes()


@pytest.mark.parametrize("state", [None, "", "{", "[1, 2]", '"valid"', '{"app_valid": true}',
                                   "\udcff"], ids=["missing", "empty", "unparsable", "a-list", "a-string",
                                                   "no-hash", "not-utf8"])
def test_a_state_that_names_no_image_means_application_invalid(tmp_path, state):
    path = tmp_path / "img.bin"
    data = write_app(path)
    state_path = tmp_path / "img.bin.state.json"
    if state is None:
        state_path.unlink()
    elif state == "\udcff":
        state_path.write_bytes(b'{"app_valid": true, \xff}')
    else:
        state_path.write_text(state)
    with SimulatedFlash(CHIP, path) as flash:
        assert flash.flash_bytes() == data      # the image is loaded as it is
        assert flash.app_valid is False         # but the bootloader keeps control


def test_a_hand_edited_image_beside_a_valid_state_is_invalid(tmp_path):
    path = tmp_path / "img.bin"
    data = bytearray(write_app(path))
    data[0x2100] ^= 0xFF                        # someone patched the file by hand
    path.write_bytes(bytes(data))
    assert json.loads((tmp_path / "img.bin.state.json").read_text())["app_valid"] is True
    with SimulatedFlash(CHIP, path) as flash:
        assert flash.flash_bytes() == bytes(data)
        assert flash.app_valid is False


def test_a_foreign_image_loads_invalid_and_an_update_makes_it_valid_again(tmp_path):
    path = tmp_path / "img.bin"
    foreign = bytearray(b"\xff" * CHIP.flash_size)
    foreign[0x2000:0x2000 + len(NEW)] = NEW
    path.write_bytes(bytes(foreign))
    with SimulatedFlash(CHIP, path) as flash:
        assert flash.app_valid is False
        update(flash)
    with SimulatedFlash(CHIP, path) as flash:
        assert flash.app_valid is True
    state = json.loads((tmp_path / "img.bin.state.json").read_text())
    assert state["image_sha256"] == image_hash(path.read_bytes())


# ---------------------------------------------------------------------------
# write-through


def on_disk(path: Path) -> tuple[bytes, dict]:
    """What a second reader sees in the files, without the writer closing anything."""
    return path.read_bytes(), json.loads(path.with_name(path.name + ".state.json").read_text())


def test_a_read_back_of_changed_bytes_is_on_disk_before_it_is_answered(tmp_path):
    path = tmp_path / "img.bin"
    flash = SimulatedFlash(CHIP, path)
    flash.erase(APP)
    flash.program(APP, NEW[:1024])
    assert path.read_bytes()[0x2000:0x2400] == b"\xff" * 1024     # not saved yet
    assert flash.read(APP, 1024) == NEW[:1024]
    data, state = on_disk(path)
    assert data[0x2000:0x2400] == NEW[:1024]
    assert state["app_valid"] is False and state["image_sha256"] == image_hash(data)
    assert not flash.dirty
    flash.close()


def test_reading_bytes_that_did_not_change_does_not_save(tmp_path, monkeypatch):
    path = tmp_path / "img.bin"
    flash = SimulatedFlash(CHIP, path)
    saves = []
    real = ImageStore.save
    monkeypatch.setattr(ImageStore, "save", lambda self, *a: (saves.append(1), real(self, *a)))
    flash.program(APP, NEW[:128])     # (a new image is erased: no erase to dirty the sector)
    flash.program(APP + 128, NEW[128:256])
    flash.read(APP + 256, 128)        # the next 128-byte page, before it is written (MIDI, HID native)
    flash.read(APP + 1024, 1024)      # a page the update did not touch (a pre-write blank check)
    assert saves == [] and flash.dirty
    assert flash.peek(APP, 256) == NEW[:256]   # a device's own check: no save
    assert saves == [] and flash.dirty
    flash.read(APP + 200, 100)        # overlaps what changed
    assert saves == [1]
    flash.read(APP, 256)              # clean again: nothing to save
    assert saves == [1]
    flash.close()
    assert saves == [1]


def test_manifest_is_on_disk_when_it_returns(tmp_path):
    path = tmp_path / "img.bin"
    flash = SimulatedFlash(CHIP, path)
    flash.program(APP, NEW)
    flash.manifest()
    data, state = on_disk(path)
    assert data[0x2000:0x2000 + len(NEW)] == NEW
    assert state["app_valid"] is True and state["image_sha256"] == image_hash(data)
    flash.close()


def test_changes_unsaved_for_a_second_are_saved_at_the_next_operation(tmp_path):
    path = tmp_path / "img.bin"
    flash = SimulatedFlash(CHIP, path)
    now = [100.0]
    flash.clock = lambda: now[0]
    flash.program(APP, NEW[:512])
    now[0] += SimulatedFlash.PERSIST_AFTER / 2
    flash.program(APP + 1024, NEW[:512])
    assert path.read_bytes()[0x2000:0x2200] == b"\xff" * 512     # half a second: not yet
    now[0] += SimulatedFlash.PERSIST_AFTER / 2
    flash.program(APP + 2048, NEW[:512])                           # a second after the first change
    data = path.read_bytes()
    assert data[0x2000:0x2200] == NEW[:512] and data[0x2400:0x2600] == NEW[:512]
    assert data[0x2800:0x2A00] == b"\xff" * 512                    # this operation's own change waits
    flash.close()
    assert path.read_bytes()[0x2800:0x2A00] == NEW[:512]


@pytest.mark.parametrize("kind", ["leave", "reenumerate", "disconnect"])
def test_the_emulator_saves_when_its_personality_signals_the_end_of_a_session(tmp_path, kind):
    path = tmp_path / "img.bin"
    em = Emulator("atmega32u4", "hid", image=path, options={"dialect": "halfkay"})
    em.memory.program(0, b"\x0c\x94\x5c\x00")
    assert path.read_bytes()[:4] == b"\xff" * 4
    em._on_signal(Signal(kind, "test"))
    assert path.read_bytes()[:4] == b"\x0c\x94\x5c\x00"
    em.close()


KILLED = textwrap.dedent("""
    import os, signal, sys
    from bootkit.memory import SimulatedFlash, get_chip
    flash = SimulatedFlash(get_chip("stm32f103c8"), sys.argv[1])
    data = bytes.fromhex(sys.argv[2])
    flash.erase_all()
    flash.program(0x08002000, data)
    if flash.read(0x08002000, len(data)) == data:  # the host's read-back verify
        print("verified", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)            # before any close() or exit handler
""")


def test_a_sigkill_after_verified_keeps_what_the_host_read_back(tmp_path):
    path = tmp_path / "img.bin"
    write_app(path)
    out = subprocess.run([sys.executable, "-c", KILLED, str(path), NEW.hex()], capture_output=True,
                         text=True, timeout=120)   # generous: a python start on a loaded 2-core machine
    assert out.returncode == -9 and out.stdout.strip() == "verified", out
    with SimulatedFlash(CHIP, path) as flash:
        assert flash.read(APP, len(NEW)) == NEW
        assert flash.app_valid is False     # never manifested: the bootloader keeps control


def test_a_read_only_flash_writes_nothing(tmp_path):
    path = tmp_path / "img.bin"
    write_app(path)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    with SimulatedFlash(CHIP, path, readonly=True) as flash:
        assert flash.app_valid is True
        flash.program(APP + 0x4000, b"\x00" * 16)   # in RAM only
        flash.read(APP + 0x4000, 16)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before
    missing = tmp_path / "absent.bin"
    with SimulatedFlash(CHIP, missing, readonly=True) as flash:
        assert flash.app_valid is False
    assert not missing.exists()


def test_program_and_erase_are_cut_before_they_complete_with_half_done():
    flash = SimulatedFlash(CHIP, faults=FaultPlan(2))
    flash.erase(APP)                                   # step 1: whole
    with pytest.raises(PowerCut):
        flash.program(APP, NEW[:1024])                 # step 2: the first half is programmed
    assert flash.flash_bytes()[0x2000:0x2400] == NEW[:512] + b"\xff" * 512

    flash = SimulatedFlash(CHIP)
    flash.program(APP, b"\x00" * 3072)
    flash.manifest()
    flash.faults = FaultPlan(1)
    with pytest.raises(PowerCut):
        flash.erase(APP)                               # half the sector is erased
    assert flash.flash_bytes()[0x2000:0x2400] == b"\xff" * 512 + b"\x00" * 512
    assert flash.app_valid is False

    flash = SimulatedFlash(CHIP)
    flash.program(APP, b"\x00" * 3072)
    flash.manifest()
    flash.faults = FaultPlan(3)
    with pytest.raises(PowerCut):
        flash.erase_all()                              # the third sector is cut half way
    data = flash.flash_bytes()
    assert data[0x2000:0x2A00] == b"\xff" * 0xA00
    assert data[0x2A00:0x2C00] == b"\x00" * 512
    assert flash.app_valid is False                    # never valid with part of an image erased
    assert flash.faults.log == ["erase"] * 3
    # and a refused operation is no step: nothing changed, nothing to cut
    flash = SimulatedFlash(CHIP, faults=FaultPlan(1))
    with pytest.raises(Exception):
        flash.program(0x08000000, b"\x00")              # the bootloader region
    assert flash.faults.count == 0
