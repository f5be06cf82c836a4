"""The power-cut campaign, CI-sized (issue 17 item 4).

benchmarks/powercut.py cuts the power at chosen program/erase/file steps of a
flash through every personality and dialect, reboots from what survived on
disk and retries.  Here it runs about 100 cut points per personality (CUTS) on the small
image (half of them on file steps, half on memory steps), and must find no
brick, no silent corruption, and a good retry after every cut.  The full
campaign (1000 cuts per dialect, the large images too) is in docs/reliability.md.

The classifier is tested on its own too: a campaign that cannot see a
corrupt outcome proves nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_campaign():
    spec = importlib.util.spec_from_file_location("powercut", ROOT / "benchmarks" / "powercut.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["powercut"] = module  # the pool's workers find its functions under this name
    spec.loader.exec_module(module)
    return module


powercut = _load_campaign()

# one worker runs the module: under pytest-xdist its module fixtures (the whole campaign)
# ran once on every worker that got one of its tests
pytestmark = pytest.mark.xdist_group("powercut")

# Cut points: about 100 per personality, as the issue suggests, shared among its dialects
# (34 each for the three DFU, HID and MSC dialects, 50 for the two CDC and MIDI ones, 100 for
# the printer).  A cut costs 0.1-1 s of wall time, mostly the host watching the bus after
# leaving (a sleep), which the campaign's worker pool overlaps.
PER_PERSONALITY = 100
DIALECTS = powercut.all_dialects()
CUTS = {key: -(-PER_PERSONALITY // sum(1 for p, _ in DIALECTS if p == key[0])) for key in DIALECTS}


@pytest.fixture(scope="module")
def rows():
    rows = {}
    for n in sorted(set(CUTS.values())):  # one campaign per cut count, each over its dialects
        group = [key for key in DIALECTS if CUTS[key] == n]
        rows.update({(r.personality, r.dialect): r for r in powercut.campaign(group, n, seed=17, small_only=True)})
    return rows


def test_every_dialect_is_in_the_campaign():
    declared = {(name, dialect) for name in ("dfu", "hid", "cdc", "printer", "msc", "midi", "isp")
                for dialect in importlib.import_module(f"bootkit.classes.{name}").DIALECTS}
    assert set(DIALECTS) == declared


@pytest.mark.parametrize("key", DIALECTS, ids="/".join)
def test_no_brick_no_silent_corruption_every_retry_succeeds(rows, key):
    row = rows[key]
    failures = "\n".join(powercut.failures_text([row]))
    assert row.cuts == CUTS[key]
    assert row.bricks == 0, failures
    assert row.silent == 0, failures
    assert row.retries == CUTS[key] and row.retries_ok == row.retries, failures
    # the memory as the cut left it (what a real chip's flash would hold) passes the same judgement
    assert row.chip_bricks == 0 and row.chip_silent == 0, failures
    # the cuts landed where they were aimed: some at memory steps, some at file steps
    assert row.memory_cuts > 0 and row.file_cuts > 0, (row.memory_cuts, row.file_cuts, row.unfired)


def test_cuts_leave_old_new_and_invalid_states(rows):
    """Across the campaign a cut leaves every one of the three acceptable states: the old image
    (cut before anything was saved), the new one (cut after the manifest was saved) and an
    invalid application (cut mid-flash after a write-through save)."""
    total = {k: sum(r.after[k] for r in rows.values()) for k in ("A", "B", "invalid")}
    assert all(total.values()), total


# ----------------------------------------------------------------------------------------------
# the classifier sees what it must

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The fastest case (plain DFU, small image): A on disk, B's uncut outcome as reference."""
    workdir = str(tmp_path_factory.mktemp("classify"))
    case = powercut.cases_for("dfu", "dfu", 17)[0]
    return powercut.prepare(case, workdir), workdir


def _outcome_of(prepared, tmp_path, change):
    """Flash B uncut on a copy of A, then ``change(memory, chip)`` and save it valid; classify the reboot."""
    prep, _ = prepared
    case = prep.case
    shutil.copytree(os.path.join(prep.base, "A"), tmp_path, dirs_exist_ok=True)
    path = str(tmp_path / powercut.IMAGE_NAME)
    _, b = powercut.images_for(case)
    run = powercut.flash_once(case, b, path, None, prep.limit)
    assert run.error is None and run.hang is None
    chip = powercut._adapted_chip(case)
    memory = powercut.SimulatedFlash(chip, path)
    change(memory, chip)
    memory.app_valid = True  # whatever happened, the state says "valid"
    memory.save()
    memory.close()
    return powercut.classify(powercut.reboot(case, path), prep.refs)


def test_classifier_accepts_an_uncut_flash(prepared, tmp_path):
    assert _outcome_of(prepared, tmp_path, lambda memory, chip: None)[0] == "B"


def test_classifier_counts_a_flipped_byte_marked_valid_as_silent_corruption(prepared, tmp_path):
    def flip(memory, chip):
        start = chip.layout().application_ranges("flash")[0][0]
        address = start + 1001
        memory.poke(address, bytes([memory.read(address, 1)[0] ^ 0x01]))

    verdict, why = _outcome_of(prepared, tmp_path, flip)
    assert verdict == "silent", why
    assert "offset 0x3E9" in why


def test_classifier_counts_a_changed_bootloader_byte_as_brick(prepared, tmp_path):
    def touch_bootloader(memory, chip):
        base = chip.flash_start
        start, end = chip.layout().application_ranges("flash")[0]
        address = base if start > base else end  # the bootloader region before or after the application
        memory.poke(address, bytes([memory.read(address, 1)[0] ^ 0xFF]))

    verdict, why = _outcome_of(prepared, tmp_path, touch_bootloader)
    assert verdict == "brick" and "bootloader region" in why


def test_classifier_counts_an_invalid_application_that_runs_as_brick(prepared):
    prep, _ = prepared
    boot = powercut.Boot(valid=False, app=prep.refs.a_app, outside=prep.refs.outside, mode="application")
    verdict, why = powercut.classify(boot, prep.refs)
    assert verdict == "brick" and "runs application" in why


def test_campaign_finds_silent_corruption_in_a_flash_that_forgets_to_invalidate(monkeypatch):
    """A mutant memory core whose erase and program leave the application marked valid: a
    write-through save in the middle of a flash then says "valid" over a half-written image.
    The campaign must count that as silent corruption (the pool's workers are forked after
    the patch, so they run the mutant)."""
    from bootkit.memory.flash import SimulatedFlash

    def keeping_valid(method):
        def mutant(self, *args, **kwargs):
            valid = self.app_valid
            try:
                return method(self, *args, **kwargs)
            finally:
                self.app_valid = valid
        return mutant

    monkeypatch.setattr(SimulatedFlash, "erase", keeping_valid(SimulatedFlash.erase))
    monkeypatch.setattr(SimulatedFlash, "program", keeping_valid(SimulatedFlash.program))
    [row] = powercut.campaign([("msc", "uf2")], 16, seed=17, small_only=True)
    assert row.silent > 0, powercut.failures_text([row])
