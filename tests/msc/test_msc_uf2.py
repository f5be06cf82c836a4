"""UF2 blocks written to the ghost drive: any order, repeats, other families, bad blocks, CURRENT.UF2."""

import random
import struct
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msc_helpers import Drive, need_tool, uf2_block

from bootkit.formats import parse_uf2, write_uf2
from bootkit.formats.uf2 import FAMILIES
from bootkit.samples import sample_image

CHIP = "stm32f411"


def sample(drive, size=20 * 1024 + 4):
    app = drive.chip.layout().application_ranges("flash")[0][0]
    image = sample_image(drive.chip, size, 0x10000, 1028)
    assert image.start == app
    return image


def free_lba(drive):
    return drive.volume.cluster_lba(drive.volume.first_free_cluster) + 8


def write_blocks(drive, blocks, order):
    base = free_lba(drive)
    for i in order:
        csw = drive.write(base + i, blocks[i])
        assert csw.status == 0


def blocks_of(uf2: bytes):
    return [uf2[i:i + 512] for i in range(0, len(uf2), 512)]


def flash_after(order_name):
    drive = Drive(CHIP)
    image = sample(drive)
    blocks = blocks_of(write_uf2(image, family=drive.chip.uf2_family))
    order = list(range(len(blocks)))
    if order_name == "random":
        random.Random(5).shuffle(order)
    elif order_name == "reversed":
        order.reverse()
    elif order_name == "twice":
        order = order + order[::-1]
    write_blocks(drive, blocks, order)
    result = (drive.memory.flash_bytes(), drive.memory.app_valid, drive.em.events,
              drive.device.take_signals() if False else None)
    ok = all(drive.memory.read(s, len(d)) == d for s, d in image.segments)
    drive.close()
    return result[0], result[1], ok


def test_any_order_gives_the_same_flash():
    ref, valid, ok = flash_after("in order")
    assert valid and ok
    for name in ("random", "reversed", "twice"):
        flash, valid, ok = flash_after(name)
        assert valid and ok, name
        assert flash == ref, name


def test_complete_file_signals_leave_with_delay():
    drive = Drive(CHIP, leave_delay=0.75)
    blocks = blocks_of(write_uf2(sample(drive), family=drive.chip.uf2_family))
    write_blocks(drive, blocks[:-1], range(len(blocks) - 1))
    assert not drive.memory.app_valid and not drive.fn._signals
    drive.write(free_lba(drive) + len(blocks), blocks[-1])
    (sig,) = drive.fn._signals
    assert sig.kind == "leave" and sig.delay == 0.75
    assert drive.memory.app_valid
    # the host's last writes still work during the delay
    assert drive.write(drive.volume.fat0, drive.read(drive.volume.fat0)).status == 0
    drive.close()


def test_other_family_changes_nothing():
    drive = Drive(CHIP)
    before = drive.memory.flash_bytes()
    volume_before = drive.volume_image()
    blocks = blocks_of(write_uf2(sample(drive), family=FAMILIES["rp2040"]))
    write_blocks(drive, blocks, range(len(blocks)))
    assert drive.memory.flash_bytes() == before and not drive.memory.app_valid
    assert not drive.fn._signals and not drive.sink.refusals
    assert drive.sink.other_families == {FAMILIES["rp2040"]}
    # the host still reads back exactly what it wrote, everything else unchanged
    base = free_lba(drive)
    assert [drive.read(base + i) for i in range(len(blocks))] == blocks
    drive.close()
    assert len(volume_before) == drive.volume.total_sectors * 512


def test_multi_family_file():
    drive = Drive(CHIP)
    image = sample(drive)
    other = write_uf2(sample_image("rp2040", 8192, 0x4000, 64), family=FAMILIES["rp2040"])
    ours = write_uf2(image, family=drive.chip.uf2_family)
    blocks = blocks_of(other + ours + other)
    write_blocks(drive, blocks, range(len(blocks)))
    assert drive.memory.app_valid
    assert all(drive.memory.read(s, len(d)) == d for s, d in image.segments)
    drive.close()


def test_no_family_blocks_only_when_allowed():
    for allow in (False, True):
        drive = Drive(CHIP, accept_no_family=allow)
        blocks = blocks_of(write_uf2(sample(drive)))
        write_blocks(drive, blocks, range(len(blocks)))
        assert drive.memory.app_valid is allow
        drive.close()


BAD = {
    "magic": lambda t, d, n, m, f: uf2_block(t, d, n, m, f, magic0=0x12345678),
    "payload 480": lambda t, d, n, m, f: uf2_block(t, d, n, m, f, size=480),
    "payload 254": lambda t, d, n, m, f: uf2_block(t, d[:254], n, m, f),
    "target outside": lambda t, d, n, m, f: uf2_block(0x08000000 + 0x80000, d, n, m, f),
    "target in another space": lambda t, d, n, m, f: uf2_block(0x20000000, d, n, m, f),
    "numBlocks changes": lambda t, d, n, m, f: uf2_block(t, d, n, m + 1, f),
    "blockNo past numBlocks": lambda t, d, n, m, f: uf2_block(t, d, m, m, f),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_block_programs_nothing(kind):
    drive = Drive(CHIP)
    fam = drive.chip.uf2_family
    image = sample(drive, 2048)
    blocks = blocks_of(write_uf2(image, family=fam))
    n = len(blocks)
    write_blocks(drive, blocks[:2], range(2))  # a file is being written
    flash = drive.memory.flash_bytes()
    good = blocks[3]
    t, size = struct.unpack_from("<II", good, 12)
    bad = BAD[kind](t, good[32:32 + size], 3, n, fam)
    lba = free_lba(drive) + 3
    assert drive.write(lba, bad).status == 0  # the host never sees an error
    assert drive.memory.flash_bytes() == flash
    assert drive.read(lba) == bad  # and reads back what it wrote
    if kind != "magic":
        assert drive.sink.refusals
    # the file can still complete with the right block
    write_blocks(drive, blocks, range(2, n))
    assert drive.memory.app_valid
    drive.close()


def test_current_uf2_reads_the_flash_and_writes_back():
    drive = Drive(CHIP)
    image = sample(drive)
    for s, d in image.segments:
        drive.memory.program(s, d)
    vol = drive.volume
    first = vol.cluster_lba(vol.current.first_cluster)
    n = vol.current.size // 512
    current = b"".join(drive.read(first + i, min(128, n - i)) for i in range(0, n, 128))
    back = parse_uf2(current, family=drive.chip.uf2_family)
    app_start, app_end = drive.chip.layout().application_ranges("flash")[0]
    assert back.start == app_start and back.end == app_end
    assert back.tobytes() == drive.memory.read(app_start, app_end - app_start)
    drive.close()
    # a blank device given that CURRENT.UF2 as a new file: the same flash
    fresh = Drive(CHIP)
    blocks = blocks_of(current)
    order = list(range(len(blocks)))
    random.Random(1).shuffle(order)
    write_blocks(fresh, blocks, order)
    assert fresh.memory.app_valid
    assert fresh.memory.read(app_start, app_end - app_start) == back.tobytes()
    fresh.close()


def test_fsck_on_ghost_volume_of_every_uf2_chip(tmp_path):
    fsck = need_tool("fsck.fat")
    for chip in ("stm32f411", "rp2040", "nrf52840", "stm32f103c8", "atmega32u4"):
        drive = Drive(chip)
        path = tmp_path / f"{chip}.img"
        path.write_bytes(drive.volume_image())
        r = subprocess.run([fsck, "-n", "-v", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "4 files" in r.stdout  # label + INFO_UF2.TXT, INDEX.HTM, CURRENT.UF2
        drive.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 600), st.binary(min_size=0, max_size=40),
                          st.sampled_from(["uf2", "raw", "header"])), max_size=12))
def test_property_no_write_outside_the_application(sectors):
    drive = Drive("stm32f103c8", accept=("uf2", "bin", "hex"))
    boot = drive.memory.read(drive.chip.boot_start, drive.chip.boot_size)
    fam = drive.chip.uf2_family
    for lba, junk, kind in sectors:
        if kind == "uf2":
            target = int.from_bytes(junk[:4].ljust(4, b"\0"), "little") & 0x0801FFFF
            sector = uf2_block(target, junk[4:], lba % 7, 7, fam, size=len(junk[4:]) & ~3)
        elif kind == "header":
            sector = junk.ljust(512, b"\xff")
        else:
            sector = bytes(junk).ljust(512, b"\0")
        assert drive.write(lba, sector).status == 0
        assert drive.read(lba) == sector or lba >= drive.volume.data_start
    assert drive.memory.read(drive.chip.boot_start, drive.chip.boot_size) == boot
    drive.close()
