"""Interop with real FAT tools: mtools writes into an image of the ghost volume, the changed sectors
are replayed into the device (in several orders); fsck.fat checks the result."""

import random
import subprocess

import pytest
from msc_helpers import Drive, need_tool

from bootkit.formats import write_hex, write_uf2
from bootkit.samples import sample_image

CHIP = "stm32f103c8"


def mcopy_sectors(drive, tmp_path, files):
    """Sectors (lba -> bytes) that change when mtools copies ``files`` {name: bytes} onto the volume."""
    mcopy = need_tool("mcopy")
    img = tmp_path / "volume.img"
    before = drive.volume_image()
    img.write_bytes(before)
    for name, data in files.items():
        src = tmp_path / name.replace("/", "_")
        src.write_bytes(data)
        r = subprocess.run([mcopy, "-i", str(img), "-o", str(src), f"::{name}"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    after = img.read_bytes()
    return {lba: after[lba * 512:(lba + 1) * 512] for lba in range(len(after) // 512)
            if after[lba * 512:(lba + 1) * 512] != before[lba * 512:(lba + 1) * 512]}


def replay(drive, changed, order):
    vol = drive.volume
    fat = [lba for lba in changed if lba < vol.root_start]
    root = [lba for lba in changed if vol.root_start <= lba < vol.data_start]
    data = [lba for lba in changed if lba >= vol.data_start]
    groups = {"data dir fat": data + root + fat, "dir data fat": root + data + fat,
              "fat dir data": fat + root + data, "random": random.Random(3).sample(sorted(changed), len(changed)),
              "reversed": sorted(changed, reverse=True)}[order]
    for lba in groups:
        assert drive.write(lba, changed[lba]).status == 0


def app(drive):
    return drive.chip.layout().application_ranges("flash")[0]


def image_for(drive, size=9 * 1024 + 4):
    return sample_image(drive.chip, size, 0x3000, 300)


@pytest.mark.interop
@pytest.mark.parametrize("order", ["data dir fat", "random", "reversed"])
def test_mcopy_uf2_replayed_gives_the_same_flash(tmp_path, order):
    ref = Drive(CHIP)
    image = image_for(ref)
    uf2 = write_uf2(image, family=ref.chip.uf2_family)
    changed = mcopy_sectors(ref, tmp_path, {"NEW.UF2": uf2})
    replay(ref, changed, order)
    assert ref.memory.app_valid
    assert all(ref.memory.read(s, len(d)) == d for s, d in image.segments)
    # the device's volume after the copy: clean for fsck, the file readable by mtools
    img = tmp_path / "after.img"
    img.write_bytes(ref.volume_image())
    r = subprocess.run([need_tool("fsck.fat"), "-n", str(img)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    out = subprocess.run([need_tool("mtype"), "-i", str(img), "::NEW.UF2"], capture_output=True)
    assert out.stdout == uf2
    ref.close()


@pytest.mark.interop
@pytest.mark.parametrize("order", ["data dir fat", "dir data fat", "fat dir data", "random", "reversed"])
def test_mcopy_bin_any_order(tmp_path, order):
    drive = Drive(CHIP, accept=("uf2", "bin"))
    image = image_for(drive)
    start, _ = app(drive)
    changed = mcopy_sectors(drive, tmp_path, {"firmware.bin": image.tobytes(start, image.end)})
    replay(drive, changed, order)
    assert drive.memory.app_valid, drive.sink.refusals
    assert all(drive.memory.read(s, len(d)) == d for s, d in image.segments)
    assert drive.fn._signals and drive.fn._signals[0].kind == "leave"
    drive.close()


@pytest.mark.interop
def test_mcopy_hex(tmp_path):
    drive = Drive(CHIP, accept=("hex",))
    image = image_for(drive)
    changed = mcopy_sectors(drive, tmp_path, {"APP.HEX": write_hex(image).encode()})
    replay(drive, changed, "dir data fat")
    assert drive.memory.app_valid, drive.sink.refusals
    assert all(drive.memory.read(s, len(d)) == d for s, d in image.segments)
    drive.close()


@pytest.mark.interop
def test_bin_not_accepted_by_default(tmp_path):
    drive = Drive(CHIP)
    image = image_for(drive)
    changed = mcopy_sectors(drive, tmp_path, {"firmware.bin": image.tobytes(app(drive)[0], image.end)})
    replay(drive, changed, "data dir fat")
    assert not drive.memory.app_valid and drive.memory.is_blank()
    drive.close()


@pytest.mark.interop
def test_bin_larger_than_the_application_is_refused(tmp_path):
    drive = Drive(CHIP, accept=("uf2", "bin"))
    start, end = app(drive)
    changed = mcopy_sectors(drive, tmp_path, {"big.bin": b"\x11" * (end - start + 512)})
    replay(drive, changed, "dir data fat")
    assert drive.memory.is_blank() and not drive.memory.app_valid
    assert any("larger than the application" in r for r in drive.sink.refusals)
    drive.close()


@pytest.mark.interop
def test_truncated_bin_leaves_the_application_invalid(tmp_path):
    drive = Drive(CHIP, accept=("uf2", "bin"))
    image = image_for(drive)
    changed = mcopy_sectors(drive, tmp_path, {"firmware.bin": image.tobytes(app(drive)[0], image.end)})
    data = sorted(lba for lba in changed if lba >= drive.volume.data_start)
    for lba in data[-3:]:  # the copy stopped short: the last sectors never came
        del changed[lba]
    replay(drive, changed, "dir data fat")
    assert not drive.memory.app_valid and drive.memory.is_blank() and not drive.fn._signals
    drive.close()


@pytest.mark.interop
def test_truncated_bin_does_not_spoil_a_valid_application(tmp_path):
    drive = Drive(CHIP, accept=("uf2", "bin"))
    old = image_for(drive, 4096)
    for s, d in old.segments:
        drive.memory.program(s, d)
    drive.memory.manifest()
    new = sample_image(drive.chip, 9000, 0x3000, 300, seed=2)
    changed = mcopy_sectors(drive, tmp_path, {"firmware.bin": new.tobytes(app(drive)[0], new.end)})
    del changed[max(changed)]
    replay(drive, changed, "data dir fat")
    assert drive.memory.app_valid and all(drive.memory.read(s, len(d)) == d for s, d in old.segments)
    drive.close()


@pytest.mark.interop
def test_macos_appledouble_companion_is_ignored(tmp_path):
    drive = Drive(CHIP, accept=("uf2", "bin"))
    changed = mcopy_sectors(drive, tmp_path, {"._firmware.bin": b"\x00\x05\x16\x07" + bytes(4092)})
    replay(drive, changed, "data dir fat")
    assert drive.memory.is_blank() and not drive.sink.refusals and not drive.fn._signals
    drive.close()


@pytest.mark.interop
def test_fat_writes_stay_consistent_for_fsck(tmp_path):
    """A file of junk (not UF2, not accepted) and a directory: the volume stays what mtools made."""
    drive = Drive(CHIP)
    mmd = need_tool("mmd")
    changed = mcopy_sectors(drive, tmp_path, {"NOTES.TXT": b"hello\r\n" * 300})
    replay(drive, changed, "random")
    img = tmp_path / "v.img"
    img.write_bytes(drive.volume_image())
    assert subprocess.run([mmd, "-i", str(img), "::.fseventsd"], capture_output=True).returncode == 0
    r = subprocess.run([need_tool("fsck.fat"), "-n", str(img)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert subprocess.run([need_tool("mtype"), "-i", str(img), "::NOTES.TXT"],
                          capture_output=True).stdout == b"hello\r\n" * 300
    drive.close()
