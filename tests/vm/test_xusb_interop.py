"""xusbboot-cli (PyPI xusbboot, through easyhid and hidapi's hidraw backend) and
bootkit's own host client against the HID personality's xusb dialect (issue 19).

In the guest, `bootkit serve hid --dialect xusb ... --transport functionfs`
puts an emulated xmega with xusb-boot 1.0 on dummy_hcd; the guest kernel binds
usbhid (hidraw), and xusbboot-cli writes and reads 64-byte reports through
/dev/hidraw* on the interrupt endpoints, as it does with a real board.  Each
scenario checks the tool's exit status and output, the flash image the emulator
writes back (the HEX placed on 0xFF over the chip's whole flash, boot section
included), serve's exit status and a clean configfs.

xusb-boot has no application device: after RESET the emulated board runs its
application (the first word is programmed), the gadget disappears and serve
exits by itself.
"""

from __future__ import annotations

import pytest

from .harness import GuestVM
from .served import cli_serving, hex_on_ff, ihex, rand, require_tools, run_tool, wait_for, wait_until

pytestmark = pytest.mark.vm

XUSB_ID = "1209:bb01"
LEFT = "left the bootloader (not seen again within 5 s)"
# chip: (flash incl. boot section, application section, page)
CHIPS = {
    "atxmega32a4u": (36 * 1024, 32 * 1024, 256),
    "atxmega128a3u": (136 * 1024, 128 * 1024, 512),
}


@pytest.fixture
def xusb_guest(guest: GuestVM) -> GuestVM:
    require_tools("xusbboot-cli", package="libhidapi-hidraw0, and pip install xusbboot easyhid")
    guest.run("modprobe -a dummy_hcd libcomposite usb_f_fs usbhid hid_generic", check=True)
    return guest


def _hidraw(guest: GuestVM) -> bool:
    return guest.run("ls /sys/class/hidraw/ | grep -q hidraw").ok


def _firmware(size: int, seed: int) -> bytes:
    # xusbboot writes up to ceil(maxaddr / page) * page, maxaddr being the last address: a
    # HEX whose last byte starts a page loses that page (its CRC check then fails, exit 5),
    # so no size here is one more than a page multiple
    assert size % 256 != 1
    return b"\x0c\x94" + rand(size - 2, seed)


@pytest.mark.parametrize("chip,size", [
    ("atxmega32a4u", 20 * 1024 + 3),
    ("atxmega128a3u", 80 * 1024 + 5),  # above 64 KiB: extended address records, 512-byte pages
])
def test_xusbboot_lists_and_flashes(xusb_guest, chip, size):
    g = xusb_guest
    flash, app, page = CHIPS[chip]
    fw_hex = ihex(_firmware(size, 190 + size))
    name = f"xusb-{chip}"
    (g.xfer_dir / f"{name}.hex").write_text(fw_hex)
    with cli_serving(g, "hid", chip, f"{name}.bin", XUSB_ID, dialect="xusb") as s:
        wait_until(g, lambda: _hidraw(g), "a hidraw node for the xusb interface", daemon=s.daemon)
        r = run_tool(g, "xusbboot-cli -l", served=s)
        out = r.stdout
        assert "Found device 1209:bb01  Xusb - Xusb-boot" in out, r.describe()
        assert "Bootloader Version: 1.0" in out and f"MCU:  {chip}" in out, r.describe()
        assert f"flash size:  {app}" in out and f"page size:  {page}" in out, r.describe()
        r = run_tool(g, f"xusbboot-cli -f {name}.hex", served=s, timeout=300)
        assert "Write successful, CRC: 0x" in r.stdout, r.describe()
        res = s.wait_exit()  # RESET: the application runs, the gadget goes
        assert "leave: xusb RESET" in res.stdout, res.describe()
    assert s.image() == hex_on_ff(fw_hex, flash)
    assert s.app_valid is True, s.log


def test_xusbboot_erase(xusb_guest):
    g = xusb_guest
    flash, app, _page = CHIPS["atxmega32a4u"]
    initial = b"\x0c\x94" + rand(app - 2, 201) + b"\xff" * (flash - app)
    with cli_serving(g, "hid", "atxmega32a4u", "xusb-erase.bin", XUSB_ID, dialect="xusb", initial=initial) as s:
        wait_until(g, lambda: _hidraw(g), "a hidraw node for the xusb interface", daemon=s.daemon)
        r = run_tool(g, "xusbboot-cli -e -d 1209:bb01", served=s)
        assert "Erasing device..." in r.stdout and "Done." in r.stdout, r.describe()
        wait_for(g, XUSB_ID, daemon=s.daemon)  # erasing does not reset: still the bootloader
    assert s.image() == b"\xff" * flash


def test_xusbboot_refuses_a_hex_larger_than_the_application(xusb_guest):
    g = xusb_guest
    flash, app, _page = CHIPS["atxmega32a4u"]
    initial = b"\x0c\x94" + rand(4000, 202) + b"\xff" * (flash - 4002)
    (g.xfer_dir / "xusb-big.hex").write_text(ihex(_firmware(app + 300, 203)))
    with cli_serving(g, "hid", "atxmega32a4u", "xusb-big.bin", XUSB_ID, dialect="xusb", initial=initial) as s:
        wait_until(g, lambda: _hidraw(g), "a hidraw node for the xusb interface", daemon=s.daemon)
        r = run_tool(g, "xusbboot-cli -f xusb-big.hex", ok=False)
        assert r.rc != 0, r.describe()
        assert "Hex file to large for flash size" in r.stderr, r.describe()
        wait_for(g, XUSB_ID, daemon=s.daemon)
    assert s.image() == initial


def test_bootkit_list_and_flash_xusb(xusb_guest):
    """bootkit list (libusb: usbhid detached for GET_BOOT_INFO, then given back), xusbboot-cli
    still finds the hidraw node after it, then bootkit flash: erase, write, NVM CRC, RESET."""
    g = xusb_guest
    flash, app, _page = CHIPS["atxmega128a3u"]
    fw_hex = ihex(_firmware(70 * 1024 + 7, 204), 0)
    (g.xfer_dir / "bk-xusb.hex").write_text(fw_hex)
    with cli_serving(g, "hid", "atxmega128a3u", "bk-xusb.bin", XUSB_ID, dialect="xusb") as s:
        r = run_tool(g, "bootkit list", served=s)
        assert "hid/xusb " in r.stdout and "1209:bb01" in r.stdout, r.describe()
        assert f"chip atxmega128a3u  version=1.0 flash_size={app} page_size=512" in r.stdout, r.describe()
        # libusb detached usbhid for the exchange; bootkit list gave it back: hidraw comes back
        wait_until(g, lambda: _hidraw(g), "the hidraw node back after bootkit list", daemon=s.daemon)
        r = run_tool(g, "xusbboot-cli -l", served=s)
        assert "MCU:  atxmega128a3u" in r.stdout, r.describe()
        r = run_tool(g, "bootkit flash bk-xusb.hex --via hid --dialect xusb --no-progress", served=s, timeout=300)
        out = r.stdout.rstrip()
        assert "via hid/xusb" in out and ", verified; " in out and "application CRC 0x" in out, r.describe()
        assert out.endswith(LEFT), r.describe()
        s.wait_exit()
    assert s.image() == hex_on_ff(fw_hex, flash)
    assert s.app_valid is True, s.log


def test_bootkit_refuses_the_boot_section(xusb_guest):
    g = xusb_guest
    flash, app, _page = CHIPS["atxmega32a4u"]
    (g.xfer_dir / "bk-xusb-big.hex").write_text(ihex(_firmware(app + 2, 205)))  # 2 bytes into the boot section
    with cli_serving(g, "hid", "atxmega32a4u", "bk-xusb-big.bin", XUSB_ID, dialect="xusb") as s:
        r = run_tool(g, "bootkit flash bk-xusb-big.hex --via hid --dialect xusb --no-progress", ok=False)
        assert r.rc == 2 and r.stdout == "", r.describe()
        assert "0x8000" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.describe()
    assert s.image() == b"\xff" * flash
