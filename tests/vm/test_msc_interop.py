"""usb-storage + vfat against bootkit's mass-storage (UF2 drive) personality (issue 8).

In the guest, `bootkit serve msc --chip rp2040 ... --transport functionfs`
(the CLI) puts an emulated RP2040 UF2 drive on dummy_hcd; the guest
kernel's usb-storage and sd_mod make it /dev/sdX, vfat mounts it, and the
plain `cp FILE /mnt/ && sync` every user does programs the chip.  Every
scenario checks the tools' exit status, the flash image serve writes back
(the firmware placed on 0xFF over the chip's whole flash), serve's exit
status and a clean configfs.

After a complete update the drive leaves for the application; the MSC
personality has no application device, so the gadget goes away, /dev/sdX
disappears and serve exits by itself ("application valid").  A drive that
disappears while mounted leaves a dead vfat mount behind: it is lazily
unmounted.

The helpers here (cli_serving, wait_until, ...) are shared by
test_midi_interop.py.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import pytest

from bootkit.formats import dump, load
from bootkit.formats.image import Image

from .harness import GuestVM
from .served import (
    Served,
    cli_serving,
    on_ff,
    rand,
    require_tools,
    run_tool,
    wait_until,
)

pytestmark = pytest.mark.vm

MSC_ID = "1209:b010"
RP2040_BASE = 0x10000000
RP2040_FLASH = 2 * 1024 * 1024  # the application region is the whole flash (mask-ROM bootloader)
MNT = "/tmp/uf2drive"
STORAGE_MODULES = "dummy_hcd libcomposite usb_f_fs usb-storage sd_mod vfat nls_cp437 nls_utf8 nls_iso8859-1"


# --------------------------------------------------------------------------
# the drive

def find_drive(guest: GuestVM) -> str:
    """/dev/sdX of bootkit's drive (its SCSI vendor is "bootkit"), or ""."""
    r = guest.run("for v in /sys/block/sd*/device/vendor; do [ -e \"$v\" ] && grep -q '^bootkit' \"$v\" && "
                  "b=${v#/sys/block/} && echo /dev/${b%%/*}; done; true")
    names = r.stdout.split()
    if not names:
        return ""
    # the block device node appears (devtmpfs) once the size is known
    return names[0] if guest.run(f"test -b {names[0]} && blockdev --getsize64 {names[0]}").ok else ""


@contextmanager
def drive(guest: GuestVM, served: Served, *, mount: bool = True, options: str = ""):
    """Wait for the drive, optionally mount it on MNT; yields /dev/sdX. Unmounts (lazily if it left)."""
    dev = wait_until(guest, lambda: find_drive(guest) or (served.daemon.poll() is not None and "exited"),
                     "the UF2 drive's block device", timeout=40, daemon=served.daemon)
    assert dev != "exited", "serve exited early:\n" + served.daemon.output().describe()
    mounted = False
    try:
        if mount:
            r = guest.run(f"mkdir -p {MNT} && mount -t vfat {('-o ' + options) if options else ''} {dev} {MNT}",
                          timeout=60)
            assert r.rc == 0, r.describe()
            mounted = True
        yield dev
    finally:
        if mounted:
            guest.run(f"umount {MNT} 2>/dev/null || umount -l {MNT}; true", timeout=60)


def wait_drive_gone(guest: GuestVM, dev: str, served: Served, timeout: float = 30.0) -> None:
    wait_until(guest, lambda: not guest.run(f"test -e /sys/block/{os.path.basename(dev)}").ok,
               f"{dev} gone", timeout, served.daemon)


@pytest.fixture
def msc_guest(guest: GuestVM) -> GuestVM:
    require_tools("fsck.fat", package="dosfstools")
    guest.run(f"modprobe -a {STORAGE_MODULES}", check=True)
    return guest


def fsck(guest: GuestVM, dev: str, served: Served):
    r = run_tool(guest, f"fsck.fat -n {dev}", ok=False, served=served)
    assert r.rc == 0, r.describe()
    # dosfstools prints what it would fix even with -n; a clean volume prints only the summary
    assert "dirty" not in r.stdout.lower() and "differ" not in r.stdout and "?" not in r.stdout, r.describe()
    return r


# --------------------------------------------------------------------------
# scenarios

def test_cp_uf2_programs_the_chip(msc_guest):
    g = msc_guest
    image = Image([(RP2040_BASE, rand(6 * 1024 + 200, 81))])
    (g.xfer_dir / "fw-rp.uf2").write_bytes(dump(image, "uf2", family="rp2040"))
    with cli_serving(g, "msc", "rp2040", "rp-uf2.bin", usb_id=MSC_ID) as s:
        with drive(g, s, mount=False) as dev:
            fsck(g, dev, s)  # the freshly enumerated volume
        with drive(g, s) as dev:
            ls = run_tool(g, f"ls {MNT} && cat {MNT}/INFO_UF2.TXT", served=s)
            assert "CURRENT.UF2" in ls.stdout and "INDEX.HTM" in ls.stdout, ls.describe()
            assert "Family-ID: 0xE48BFF56" in ls.stdout, ls.describe()
            t0 = time.monotonic()
            r = run_tool(g, f"cp fw-rp.uf2 {MNT}/ && sync", served=s)
            wait_drive_gone(g, dev, s)
            took = time.monotonic() - t0
        res = s.wait_exit()
    assert r.rc == 0
    assert "application valid" in res.stdout, res.describe()
    assert s.image() == on_ff(image, RP2040_BASE, RP2040_FLASH)
    print(f"cp of a {image.size}-byte UF2 to the drive until it left: {took:.1f}s")


@pytest.mark.parametrize("kind", ["bin", "hex"])
def test_cp_bin_and_hex_when_the_product_accepts_them(msc_guest, kind):
    g = msc_guest
    image = Image([(RP2040_BASE, rand(5 * 1024 + 12, 82 if kind == "bin" else 83))])
    name = f"fw-rp.{kind}"
    (g.xfer_dir / name).write_bytes(dump(image, kind))
    with cli_serving(g, "msc", "rp2040", f"rp-{kind}.bin", dialect=kind, usb_id=MSC_ID) as s:
        with drive(g, s) as dev:
            info = run_tool(g, f"cat {MNT}/INFO_UF2.TXT", served=s)
            assert f"Accepts: UF2, {kind.upper()}" in info.stdout, info.describe()
            r = run_tool(g, f"cp {name} {MNT}/ && sync", served=s)
            wait_drive_gone(g, dev, s)
        res = s.wait_exit()
    assert r.rc == 0
    assert "application valid" in res.stdout, res.describe()
    assert s.image() == on_ff(image, RP2040_BASE, RP2040_FLASH)


def test_current_uf2_reads_the_flash_back(msc_guest):
    g = msc_guest
    content = rand(20 * 1024, 84) + b"\xff" * (RP2040_FLASH - 20 * 1024)
    back = g.xfer_dir / "back-rp.uf2"
    if back.exists():
        back.unlink()
    with cli_serving(g, "msc", "rp2040", "rp-read.bin", initial=content, usb_id=MSC_ID) as s:
        with drive(g, s, options="ro") as dev:
            t0 = time.monotonic()
            r = run_tool(g, f"cp {MNT}/CURRENT.UF2 back-rp.uf2", timeout=300, served=s)
            took = time.monotonic() - t0
        fsck(g, dev, s)
        assert s.running(), s.log
    data = back.read_bytes()
    assert len(data) == RP2040_FLASH // 256 * 512, r.describe()  # 256-byte payloads, one block per sector
    img = load(data, fmt="uf2", family="rp2040")
    assert img.tobytes(RP2040_BASE, RP2040_BASE + RP2040_FLASH) == content
    assert s.image() == content
    print(f"cp of the {len(data)}-byte CURRENT.UF2: {took:.1f}s")


def test_uf2_for_another_family_changes_nothing(msc_guest):
    g = msc_guest
    content = rand(8 * 1024, 85) + b"\xff" * (RP2040_FLASH - 8 * 1024)
    other = Image([(RP2040_BASE, rand(4 * 1024, 86))])
    (g.xfer_dir / "fw-f411.uf2").write_bytes(dump(other, "uf2", family="stm32f4"))
    with cli_serving(g, "msc", "rp2040", "rp-other.bin", initial=content, usb_id=MSC_ID) as s:
        with drive(g, s) as dev:
            r = run_tool(g, f"cp fw-f411.uf2 {MNT}/ && sync", served=s)
        # longer than the leave delay (1 s): the drive stays
        time.sleep(2.5)
        assert find_drive(g) == dev, s.log
        assert s.running(), s.log
        fsck(g, dev, s)  # the host's FAT and directory writes are kept
    assert r.rc == 0
    assert s.image() == content


# --------------------------------------------------------------------------
# generated images (issue 16): gaps, odd lengths, starts off any block or page, above 64 KiB


def generated_rp2040(seed: int) -> Image:
    """Segments with gaps, odd lengths, unaligned starts, one above 64 KiB and one above 1 MiB;
    the first word is covered (the drive starts what it was given)."""
    b = RP2040_BASE
    return Image([(b, rand(1001, seed)), (b + 0x1203, rand(77, seed + 1)), (b + 0x10035, rand(4099, seed + 2)),
                  (b + 0x1FFFF, rand(3, seed + 3)), (b + 0x100101, rand(513, seed + 4))])


def uf2_unaligned(image: Image, family: int, size: int = 476) -> bytes:
    """UF2 blocks of ``size`` bytes from each segment's own start (not 256-aligned, the last of
    a segment short), payloads rounded up to 4 bytes with 0xFF; what the drive must program."""
    from bootkit.formats.uf2 import UF2Block

    chunks = []
    for start, data in image.segments:
        for i in range(0, len(data), size):
            c = data[i:i + size]
            chunks.append((start + i, c + b"\xff" * (-len(c) % 4)))
    return b"".join(UF2Block(0x2000, a, n, len(chunks), family, c).pack() for n, (a, c) in enumerate(chunks))


@pytest.mark.parametrize("kind", ["uf2", "uf2-476", "hex", "bin"])
def test_cp_generated_images_program_byte_for_byte(msc_guest, kind):
    """`cp` of a generated file: the flash written back equals the file's data on 0xFF, byte for byte."""
    from bootkit.formats import load as load_file

    g = msc_guest
    image = generated_rp2040(90 + len(kind))
    if kind == "uf2":
        data = dump(image, "uf2", family="rp2040")  # 256-byte blocks: gaps inside a block are 0xFF
    elif kind == "uf2-476":
        data = uf2_unaligned(image, 0xE48BFF56)
    elif kind == "hex":
        data = dump(image, "hex")
    else:
        image = Image([(RP2040_BASE, rand(70001, 95))])  # odd length, past 64 KiB
        data = dump(image, "bin")
    ext = kind.split("-")[0]
    name = f"gen-{kind}.{ext}"
    (g.xfer_dir / name).write_bytes(data)
    want = image if ext == "bin" else load_file(data, fmt=ext)
    dialect = ext if ext != "uf2" else None
    with cli_serving(g, "msc", "rp2040", f"rp-gen-{kind}.bin", dialect=dialect, usb_id=MSC_ID) as s:
        with drive(g, s) as dev:
            r = run_tool(g, f"cp {name} {MNT}/ && sync", served=s)
            wait_drive_gone(g, dev, s)
        res = s.wait_exit()
    assert r.rc == 0
    assert "application valid" in res.stdout, res.describe()
    assert s.image() == on_ff(want, RP2040_BASE, RP2040_FLASH)


def test_bootkit_drop_on_the_mounted_drive_reads_back(msc_guest):
    """`bootkit drop FILE --drive MNT` through vfat: all blocks but the last written and fsynced,
    CURRENT.UF2 read back past the page cache, then the last block; the drive leaves."""
    g = msc_guest
    from bootkit.formats import load as load_file

    image = generated_rp2040(100)
    data = uf2_unaligned(image, 0xE48BFF56)
    (g.xfer_dir / "drop-rp.uf2").write_bytes(data)
    want = load_file(data, fmt="uf2")  # each segment's last payload rounded up to 4 bytes with 0xFF
    with cli_serving(g, "msc", "rp2040", "rp-drop.bin", usb_id=MSC_ID) as s:
        with drive(g, s) as dev:
            r = run_tool(g, f"bootkit drop drop-rp.uf2 --drive {MNT} --chip rp2040 --no-progress", ok=False,
                         timeout=180, served=s)
            wait_drive_gone(g, dev, s)
        res = s.wait_exit()
    assert r.rc == 0, r.describe() + "\n--- serve ---\n" + s.log
    assert f"CURRENT.UF2 read back: {want.size} bytes match" in r.stdout, r.describe()
    assert "left the bootloader (not seen again within 5 s)" in r.stdout, r.describe()
    assert "application valid" in res.stdout, res.describe()
    assert s.image() == on_ff(image, RP2040_BASE, RP2040_FLASH)


def test_bootkit_drop_of_another_family_writes_nothing(msc_guest):
    g = msc_guest
    content = rand(8 * 1024, 101) + b"\xff" * (RP2040_FLASH - 8 * 1024)
    (g.xfer_dir / "drop-f4.uf2").write_bytes(dump(Image([(RP2040_BASE, rand(4096, 102))]), "uf2",
                                                  family="stm32f4"))
    with cli_serving(g, "msc", "rp2040", "rp-drop-f4.bin", initial=content, usb_id=MSC_ID) as s:
        with drive(g, s) as dev:
            r = run_tool(g, f"bootkit drop drop-f4.uf2 --drive {MNT} --no-progress", ok=False, served=s)
            ls = run_tool(g, f"ls {MNT}", served=s)
        assert find_drive(g) == dev and s.running(), s.log
    assert r.rc == 2, r.describe()
    assert r.stderr.strip() == ("bootkit: error: drop-f4.uf2: UF2 family stm32f4 (0x57755a57) does not match the "
                                "drive's Family-ID rp2040 (0xe48bff56); --force drops it anyway"), r.describe()
    assert "FIRMWARE.UF2" not in ls.stdout, ls.describe()
    assert s.image() == content
