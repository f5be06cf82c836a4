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
exits by itself.
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
        assert "via hid/halfkay" in r.stdout and "booted" in r.stdout, r.describe()
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
        assert "reset" in r.stdout, r.describe()
        s.wait_exit()
    assert s.image() == reference
    assert s.app_valid is True, s.log
