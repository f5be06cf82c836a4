"""teensy_loader_cli and bootkit's own host client against the HID personality (issue 6).

In the guest, `bootkit serve hid ... --transport functionfs` puts an emulated
Teensy (HalfKay) or bootkit's native raw-HID bootloader on dummy_hcd; the
guest kernel binds usbhid/hid-generic (hidraw0) to it, and the host tools go
through libusb, which detaches usbhid.  Each scenario checks the tool's exit
status, the flash image the emulator writes back (the HEX placed on 0xFF
over the chip's whole flash), serve's exit status and a clean configfs.

HalfKay and the native dialect have no application device: after the boot
command (teensy_loader_cli without -n, `bootkit flash` without --no-leave)
the emulated board runs its application, the gadget disappears and serve
exits by itself; bootkit's host, watching the bus, says exactly that
("left the bootloader (not seen again within 5 s)").  An application whose
first word is erased starts nothing: the bootloader re-enumerates and
bootkit fails with "the device stayed in its bootloader: ...".

Besides random contiguous firmware, generated images: gaps, odd lengths,
segments starting off any block/page boundary, runs across 0x10000 and up
to the last byte below the bootloader (Teensy++ 2.0 has 128 KiB).
"""

from __future__ import annotations

import time

import pytest

from .harness import GuestVM
from .served import (
    cli_serving,
    hex_on_ff,
    ihex,
    rand,
    require_tools,
    run_tool,
    wait_for,
)

pytestmark = pytest.mark.vm

HALFKAY_ID = "16c0:0478"
NATIVE_ID = "1209:b00f"
M32U4_FLASH = 32 * 1024  # Teensy 2.0: HalfKay in the top 512 B
AT90USB1286_FLASH = 128 * 1024  # Teensy++ 2.0: HalfKay in the top 1 KiB
LEFT = "left the bootloader (not seen again within 5 s)"  # bootkit's host: the gadget went, nothing came
STAYED_ERASED = "the device stayed in its bootloader: first word of flash is erased: the bootloader kept control"

# (offset, length) per segment: odd lengths, starts off any 128/256-byte block, gaps of
# whole and partial blocks, a run across 0x10000, the last bytes below HalfKay.
GENERATED = {
    "atmega32u4": (M32U4_FLASH, [(0, 1001), (0x0F37, 301), (0x2011, 1500), (0x3FFF, 0x103), (0x6A81, 5),
                                 (0x7DF5, 11)]),  # code size 32256 = 0x7E00
    "at90usb1286": (AT90USB1286_FLASH, [(0, 1001), (0x0F37, 301), (0x2011, 1500), (0xFFE3, 0x21),
                                        (0x10007, 3001), (0x1DEE1, 0x11F), (0x1FBF5, 11)]),  # code 0x1FC00
}


def generated(chip: str, seed: int, end: int | None = None) -> tuple[str, bytes]:
    """An Intel HEX of random segments (served.ihex per segment, one EOF record) and the
    flash it must leave: the segments placed on 0xFF, built here without bootkit's code.
    ``end``: leave out the segments that reach past it (a larger bootloader region)."""
    size, segments = GENERATED[chip]
    reference = bytearray(b"\xff" * size)
    records = []
    for i, (start, n) in enumerate(segments):
        if end is not None and start + n > end:
            continue
        data = rand(n, seed * 100 + i)
        reference[start:start + n] = data
        records += ihex(data, start).splitlines(keepends=True)[:-1]  # drop each EOF record
    return "".join(records) + ":00000001FF\n", bytes(reference)


@pytest.fixture
def hid_guest(guest: GuestVM) -> GuestVM:
    guest.run("modprobe -a dummy_hcd libcomposite usb_f_fs usbhid hid_generic", check=True)
    return guest


def _hidraw_bound(guest: GuestVM) -> bool:
    return guest.run("ls /sys/bus/usb/drivers/usbhid/ | grep -q '^1-1:'").ok


# --------------------------------------------------------------------------
# teensy_loader_cli (PJRC's, through libusb)

@pytest.mark.parametrize("mcu,chip,flash_size,size", [
    ("atmega32u4", "atmega32u4", M32U4_FLASH, 20 * 1024 + 3),
    ("at90usb1286", "at90usb1286", AT90USB1286_FLASH, 80 * 1024 + 5),  # over 64 KiB: 24-bit block addresses
])
def test_teensy_loader_cli(hid_guest, mcu, chip, flash_size, size):
    require_tools("teensy_loader_cli", package="teensy-loader-cli")
    g = hid_guest
    fw = rand(size, 61 + size)
    fw_hex = ihex(fw)
    name = f"teensy-{mcu}"
    (g.xfer_dir / f"{name}.hex").write_text(fw_hex)
    with cli_serving(g, "hid", chip, f"{name}.bin", HALFKAY_ID, dialect="halfkay") as s:
        assert _hidraw_bound(g), "usbhid did not bind the HalfKay interface"
        t0 = time.monotonic()
        r = run_tool(g, f"teensy_loader_cli --mcu={mcu} -w -v {name}.hex", served=s)
        took = time.monotonic() - t0
        assert "Found HalfKay Bootloader" in r.stdout and "Booting" in r.stdout, r.describe()
        # the boot command: the board runs the application, the gadget goes away
        res = s.wait_exit()
        assert "leave: HalfKay boot command" in res.stdout, res.describe()
    assert s.image() == hex_on_ff(fw_hex, flash_size)
    assert s.app_valid is True, s.log
    print(f"teensy_loader_cli --mcu={mcu}: {len(fw)} bytes in {took:.1f}s")


# --------------------------------------------------------------------------
# bootkit's own host client (pyusb + libusb) in the guest

def test_bootkit_flash_halfkay(hid_guest):
    g = hid_guest
    fw = rand(12 * 1024 + 1, 63)
    fw_hex = ihex(fw)
    (g.xfer_dir / "bk-halfkay.hex").write_text(fw_hex)
    with cli_serving(g, "hid", "atmega32u4", "bk-halfkay.bin", HALFKAY_ID, dialect="halfkay") as s:
        r = run_tool(g, "bootkit flash bk-halfkay.hex --via hid --dialect halfkay --mcu atmega32u4 --no-progress",
                     served=s)
        assert "via hid/halfkay" in r.stdout and r.stdout.rstrip().endswith(LEFT), r.describe()
        s.wait_exit()
    assert s.image() == hex_on_ff(fw_hex, M32U4_FLASH)
    assert s.app_valid is True, s.log


def test_bootkit_flash_and_read_native(hid_guest):
    """Native dialect: flash (verified by read-back) staying in the bootloader,
    `bootkit read` back, then flash again and leave."""
    g = hid_guest
    fw = rand(20 * 1024 + 3, 64)
    fw_hex = ihex(fw)
    reference = hex_on_ff(fw_hex, M32U4_FLASH)
    (g.xfer_dir / "bk-native.hex").write_text(fw_hex)
    back = g.xfer_dir / "bk-native-back.hex"
    if back.exists():
        back.unlink()
    with cli_serving(g, "hid", "atmega32u4", "bk-native.bin", NATIVE_ID, dialect="native") as s:
        r = run_tool(g, "bootkit flash bk-native.hex --via hid --dialect native --no-leave --no-progress", served=s)
        assert "via hid/native" in r.stdout and ", verified" in r.stdout, r.describe()
        wait_for(g, NATIVE_ID, daemon=s.daemon)  # still the bootloader
        r = run_tool(g, "bootkit read bk-native-back.hex --via hid --dialect native --no-progress", served=s)
        read_back = hex_on_ff(back.read_text(), M32U4_FLASH)
        # `bootkit read` reads the application region (below LUFA's 4 KiB boot section)
        app_end = M32U4_FLASH - 4096
        assert read_back[:app_end] == reference[:app_end], r.describe()
        r = run_tool(g, "bootkit flash bk-native.hex --via hid --dialect native --no-progress", served=s)
        assert ", verified" in r.stdout and r.stdout.rstrip().endswith(LEFT), r.describe()
        s.wait_exit()
    assert s.image() == reference
    assert s.app_valid is True, s.log


# --------------------------------------------------------------------------
# generated images (issue 16): gaps, odd lengths, unaligned starts, above 64 KiB

@pytest.mark.parametrize("mcu", ["atmega32u4", "at90usb1286"])
def test_teensy_loader_cli_generated_image(hid_guest, mcu):
    require_tools("teensy_loader_cli", package="teensy-loader-cli")
    g = hid_guest
    text, reference = generated(mcu, 71)
    (g.xfer_dir / f"gen-{mcu}.hex").write_text(text)
    with cli_serving(g, "hid", mcu, f"gen-{mcu}.bin", HALFKAY_ID, dialect="halfkay") as s:
        r = run_tool(g, f"teensy_loader_cli --mcu={mcu} -w -v gen-{mcu}.hex", served=s)
        assert "Booting" in r.stdout, r.describe()
        s.wait_exit()
    assert s.image() == reference, r.describe()
    assert s.app_valid is True, s.log


@pytest.mark.parametrize("dialect,mcu,end", [
    ("halfkay", "at90usb1286", None),
    ("native", None, 0x1E000),  # native keeps the chip database's 8 KiB boot section: up to 0x1DFFF
])
def test_bootkit_flash_generated_image(hid_guest, dialect, mcu, end):
    g = hid_guest
    chip = "at90usb1286"
    text, reference = generated(chip, 72, end)
    name = f"bkgen-{dialect}"
    (g.xfer_dir / f"{name}.hex").write_text(text)
    ids = HALFKAY_ID if dialect == "halfkay" else NATIVE_ID
    with cli_serving(g, "hid", chip, f"{name}.bin", ids, dialect=dialect) as s:
        r = run_tool(g, f"bootkit flash {name}.hex --via hid --dialect {dialect} --no-progress"
                        + (f" --mcu {mcu}" if mcu else ""), served=s)
        out = r.stdout.rstrip()
        assert out.endswith(LEFT), r.describe()
        assert (", verified; " if dialect == "native" else ", not verified; ") in out, r.describe()
        s.wait_exit()
    assert s.image() == reference, r.describe()
    assert s.app_valid is True, s.log


def test_bootkit_reports_the_bootloader_kept_control(hid_guest):
    """An image whose first word is 0xFFFF (it covers the word, so preflight lets it through):
    HalfKay is told to boot, starts nothing and re-enumerates; bootkit watches the kernel's
    bus, sees its bootloader come back, and fails (it used to print "booted")."""
    g = hid_guest
    fw = b"\xff\xff" + rand(3000, 73)
    (g.xfer_dir / "bk-ff.hex").write_text(ihex(fw))
    with cli_serving(g, "hid", "atmega32u4", "bk-ff.bin", HALFKAY_ID, dialect="halfkay") as s:
        r = run_tool(g, "bootkit flash bk-ff.hex --via hid --dialect halfkay --mcu atmega32u4 --no-progress",
                     ok=False)
        assert r.rc == 1 and r.stdout == "", r.describe()
        assert r.stderr.strip() == f"bootkit: failed: {STAYED_ERASED}", r.describe()
        assert s.running(), s.log  # the bootloader is back on the bus
        wait_for(g, HALFKAY_ID, daemon=s.daemon)
    assert s.image() == hex_on_ff(ihex(fw), M32U4_FLASH)
    assert s.app_valid is False, s.log
