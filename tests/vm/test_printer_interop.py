"""The kernel's usblp driver and CUPS' usb backend against the printer personality (issue 7).

In the guest, `bootkit serve printer ... --transport functionfs` puts an
emulated ATmega32U4 with a LUFA-style printer bootloader on dummy_hcd; the
guest kernel binds usblp (/dev/usb/lp0).  Printing a HEX file with `cat`
programs it; a corrupt file leaves the application invalid and the port
status (LPGETSTATUS) says error; CUPS' usb backend lists it by its IEEE 1284
device id.  Each scenario checks the tool's exit status, the image the
emulator writes back, serve's exit status and a clean configfs.

After a good job the device leaves for the application; the printer
personality has no application device, so the gadget goes away and serve
exits by itself.
"""

from __future__ import annotations

import pytest

from .harness import GuestVM
from .served import (
    cli_serving,
    hex_on_ff,
    ihex,
    rand,
    require_tools,
    run_tool,
    wait_path,
)

pytestmark = pytest.mark.vm

PRINTER_ID = "03eb:206b"
M32U4_FLASH = 32 * 1024
LP = "/dev/usb/lp0"
CUPS_USB_BACKEND = "/usr/lib/cups/backend/usb"
DEVICE_ID = "MFG:Generic;MDL:Generic_/_Text_Only;CMD:1284.4;CLS:PRINTER;"
# printer class 1.1 table 4-1 / usblp: 0x08 not error, 0x10 selected, 0x20 paper empty
NOT_ERROR, SELECT = 0x08, 0x10

# linux/lp.h LPGETSTATUS: the port status byte, copied out as an int
PORT_STATUS = (
    "import fcntl, os, struct; fd = os.open('{lp}', os.O_RDWR); buf = bytearray(4); "
    "fcntl.ioctl(fd, 0x060B, buf); print('0x%02x' % struct.unpack('<i', buf)[0])"
)


@pytest.fixture
def lp_guest(guest: GuestVM) -> GuestVM:
    guest.run("modprobe -a dummy_hcd libcomposite usb_f_fs usblp", check=True)
    return guest


def _corrupt(hex_text: str, line: int) -> str:
    lines = hex_text.splitlines()
    rec = lines[line]
    lines[line] = rec[:-2] + ("%02X" % ((int(rec[-2:], 16) + 1) & 0xFF))  # wrong checksum
    return "\n".join(lines) + "\n"


def _port_status(guest: GuestVM) -> int:
    r = guest.run(["python3", "-c", PORT_STATUS.format(lp=LP)], timeout=30)
    assert r.rc == 0, r.describe()
    return int(r.stdout.strip(), 16)


def test_cat_hex_to_usblp(lp_guest):
    g = lp_guest
    fw = rand(6 * 1024 + 1, 71)
    fw_hex = ihex(fw)
    (g.xfer_dir / "lp-fw.hex").write_text(fw_hex)
    with cli_serving(g, "printer", "atmega32u4", "lp-good.bin", PRINTER_ID) as s:
        wait_path(g, LP, daemon=s.daemon)
        assert g.run("test -e /sys/bus/usb/drivers/usblp/1-1:1.0").ok, "usblp is not bound"
        r = run_tool(g, f"cat lp-fw.hex > {LP}", served=s)
        res = s.wait_exit()  # the job is programmed, the device leaves
        assert "print job 1 programmed" in res.stdout, res.describe()
    assert r.rc == 0
    assert s.image() == hex_on_ff(fw_hex, M32U4_FLASH)
    assert s.app_valid is True, s.log


def test_corrupt_hex_leaves_application_invalid(lp_guest):
    g = lp_guest
    fw = rand(4 * 1024, 72)
    bad = _corrupt(ihex(fw), 20)
    (g.xfer_dir / "lp-bad.hex").write_text(bad)
    # a valid application before the job: the failed job must invalidate it
    initial = rand(2048, 73) + b"\xff" * (M32U4_FLASH - 2048)
    with cli_serving(g, "printer", "atmega32u4", "lp-bad.bin", PRINTER_ID, initial=initial) as s:
        wait_path(g, LP, daemon=s.daemon)
        assert _port_status(g) == SELECT | NOT_ERROR
        r = run_tool(g, f"cat lp-bad.hex > {LP}", served=s)
        status = _port_status(g)
        assert not status & NOT_ERROR, f"port status 0x{status:02x} after a corrupt job\n{s.log}"
        # bootkit's own client through usblp: it reads the device's error line
        r2 = run_tool(g, f"bootkit print lp-bad.hex --printer {LP} --no-progress", ok=False, served=s)
        assert r2.rc == 1, r2.describe()
        assert "ERROR job 2: record 21 (line 21): bad checksum" in r2.stderr, r2.describe()
        assert s.running(), s.log  # still the bootloader
    assert r.rc == 0
    assert s.app_valid is False, s.log
    assert "application not valid" in s.log


def test_cups_usb_backend_lists_printer(lp_guest):
    require_tools(CUPS_USB_BACKEND, package="cups")
    g = lp_guest
    with cli_serving(g, "printer", "atmega32u4", "lp-cups.bin", PRINTER_ID) as s:
        wait_path(g, LP, daemon=s.daemon)
        # usblp stays bound: libusb only sends GET_DEVICE_ID, which usbfs allows
        # on a claimed printer interface (devio.c check_ctrlrecip)
        r = run_tool(g, CUPS_USB_BACKEND, timeout=60, served=s)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("direct usb://")]
    assert len(lines) == 1, r.describe()
    # direct URI "make-and-model" "info" "device-id" "location"
    assert lines[0].startswith("direct usb://Generic/Generic_/_Text_Only"), r.describe()
    assert '"Generic_/_Text_Only"' in lines[0] and f'"{DEVICE_ID}"' in lines[0], r.describe()
    assert s.image() == b"\xff" * M32U4_FLASH
