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

import random

import pytest

from .harness import GuestVM
from .served import (
    cli_serving,
    hex_on_ff,
    ihex,
    rand,
    require_tools,
    run_tool,
    usb_ids,
    wait_path,
)

pytestmark = pytest.mark.vm

PRINTER_ID = "03eb:206b"
M32U4_FLASH = 32 * 1024
AT128_FLASH = 128 * 1024  # at90usb1286: 256-byte pages, bootloader region 0x1E000-0x1FFFF
AT128_BOOT = 0x1E000
# serve's start-up in the TCG guest took over 30 s (cli_serving's own wait for the USB id) while
# the 2-core host ran other VMs: each test waits for /dev/usb/lp0 itself, this long
SERVE_WAIT = 150.0
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


def _records(segments, width: int, segment_records: bool = False) -> str:
    """Intel HEX of (address, data) segments in the given order, ``width`` bytes a record, no
    record crossing a 64 KiB boundary; addresses above 64 KiB by extended linear (04) or, with
    ``segment_records``, extended segment (02) address records."""
    lines, upper = [], None

    def rec(kind, addr, payload):
        raw = bytes([len(payload), (addr >> 8) & 0xFF, addr & 0xFF, kind]) + payload
        lines.append(":" + raw.hex().upper() + "%02X" % ((-sum(raw)) & 0xFF))

    for start, data in segments:
        off = 0
        while off < len(data):
            addr = start + off
            n = min(width, len(data) - off, 0x10000 - (addr & 0xFFFF))
            if addr >> 16 != upper:
                upper = addr >> 16
                if segment_records:
                    rec(2, 0, (upper << 12).to_bytes(2, "big"))
                else:
                    rec(4, 0, upper.to_bytes(2, "big"))
            rec(0, addr & 0xFFFF, data[off:off + n])
            off += n
    rec(1, 0, b"")
    return "\n".join(lines) + "\n"


def _generated(seed: int) -> tuple[str, list]:
    """A generated image for the at90usb1286: gaps, odd lengths, starts off any page or record
    boundary, a segment across 64 KiB, data above 64 KiB up to the bootloader region, segments out
    of address order, and record widths other than 16."""
    rng = random.Random(f"printer-vm:{seed}")
    segments = [
        (0x0000, rand(1001, seed)),  # the reset vector, an odd length
        (0x03F3, rand(517, seed + 1)),  # unaligned, after a gap
        (0xFFE3, rand(77, seed + 2)),  # across 64 KiB
        (0x1A001, rand(3333, seed + 3)),  # above 64 KiB, odd start and length
        (0x1DFF1, rand(15, seed + 4)),  # ends at the bootloader region
        (0x8101, rand(255, seed + 5)),  # back below, out of order
    ]
    rng.shuffle(segments)
    return _records(segments, rng.choice((7, 16, 32, 255)), segment_records=seed % 2 == 1), segments


def _port_status(guest: GuestVM) -> int:
    r = guest.run(["python3", "-c", PORT_STATUS.format(lp=LP)], timeout=30)
    assert r.rc == 0, r.describe()
    return int(r.stdout.strip(), 16)


def test_cat_hex_to_usblp(lp_guest):
    g = lp_guest
    fw = rand(6 * 1024 + 1, 71)
    fw_hex = ihex(fw)
    (g.xfer_dir / "lp-fw.hex").write_text(fw_hex)
    with cli_serving(g, "printer", "atmega32u4", "lp-good.bin", None) as s:
        wait_path(g, LP, SERVE_WAIT, daemon=s.daemon)
        assert g.run("test -e /sys/bus/usb/drivers/usblp/1-1:1.0").ok, "usblp is not bound"
        assert PRINTER_ID in usb_ids(g)
        r = run_tool(g, f"cat lp-fw.hex > {LP}", served=s)
        res = s.wait_exit(SERVE_WAIT)  # the job is programmed, the device leaves
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
    with cli_serving(g, "printer", "atmega32u4", "lp-bad.bin", None, initial=initial) as s:
        wait_path(g, LP, SERVE_WAIT, daemon=s.daemon)
        assert _port_status(g) == SELECT | NOT_ERROR
        r = run_tool(g, f"cat lp-bad.hex > {LP}", served=s)
        status = _port_status(g)
        assert not status & NOT_ERROR, f"port status 0x{status:02x} after a corrupt job\n{s.log}"
        # bootkit's own client parses the whole file first: exit 2, nothing sent
        r2 = run_tool(g, f"bootkit print lp-bad.hex --printer {LP} --no-progress", ok=False, served=s)
        assert r2.rc == 2, r2.describe()
        assert r2.stderr.startswith("bootkit: error: lp-bad.hex: line 21: bad checksum"), r2.describe()
        assert r2.stderr.count("\n") == 1, r2.describe()
        assert _port_status(g) == status  # the device saw no new job
        assert s.running(), s.log  # still the bootloader
    assert r.rc == 0
    assert s.app_valid is False, s.log
    assert "application not valid" in s.log


def test_cups_usb_backend_lists_printer(lp_guest):
    require_tools(CUPS_USB_BACKEND, package="cups")
    g = lp_guest
    with cli_serving(g, "printer", "atmega32u4", "lp-cups.bin", None) as s:
        wait_path(g, LP, SERVE_WAIT, daemon=s.daemon)
        # usblp stays bound: libusb only sends GET_DEVICE_ID, which usbfs allows
        # on a claimed printer interface (devio.c check_ctrlrecip)
        r = run_tool(g, CUPS_USB_BACKEND, timeout=60, served=s)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("direct usb://")]
    assert len(lines) == 1, r.describe()
    # direct URI "make-and-model" "info" "device-id" "location"
    assert lines[0].startswith("direct usb://Generic/Generic_/_Text_Only"), r.describe()
    assert '"Generic_/_Text_Only"' in lines[0] and f'"{DEVICE_ID}"' in lines[0], r.describe()
    assert s.image() == b"\xff" * M32U4_FLASH


@pytest.mark.parametrize("seed", [81, 82])
def test_cat_generated_hex_above_64k(lp_guest, seed):
    """cat of generated images into usblp on a 128 KiB chip: the flash byte for byte."""
    g = lp_guest
    text, segments = _generated(seed)
    name = f"lp-gen{seed}.hex"
    (g.xfer_dir / name).write_text(text)
    want = hex_on_ff(text, AT128_FLASH)
    for start, data in segments:  # the reference itself places every byte where it belongs
        assert want[start:start + len(data)] == data
    with cli_serving(g, "printer", "at90usb1286", f"lp-gen{seed}.bin", None) as s:
        wait_path(g, LP, SERVE_WAIT, daemon=s.daemon)
        r = run_tool(g, f"cat {name} > {LP}", served=s)
        res = s.wait_exit(SERVE_WAIT)
        assert "print job 1 programmed" in res.stdout, res.describe()
    assert r.rc == 0
    assert s.image() == want
    assert s.app_valid is True, s.log


def test_bootkit_print_through_usblp_reports_what_it_saw(lp_guest):
    """bootkit print --printer: checked against the chip, verified by the device's CRC-32, and
    the device's leave observed through sysfs (the printer personality has no application device)."""
    g = lp_guest
    text, _ = _generated(83)
    (g.xfer_dir / "lp-print.hex").write_text(text)
    with cli_serving(g, "printer", "at90usb1286", "lp-print.bin", None) as s:
        wait_path(g, LP, SERVE_WAIT, daemon=s.daemon)
        r = run_tool(g, f"bootkit print lp-print.hex --printer {LP} --chip at90usb1286 --no-progress", served=s)
        s.wait_exit(SERVE_WAIT)
    assert r.stdout.startswith("lp-print.hex: printed ") and ", verified; " in r.stdout, r.describe()
    assert "verified (crc32 of flash read back by the device)" in r.stdout, r.describe()
    assert r.stdout.rstrip().endswith("left the bootloader (not seen again within 5 s)"), r.describe()
    assert s.image() == hex_on_ff(text, AT128_FLASH)
    assert s.app_valid is True, s.log


def test_device_error_after_the_job_is_exit_1_and_a_checked_file_is_not_sent(lp_guest):
    """A record into the bootloader region: cat sends it and the device refuses it (port status
    paper empty); bootkit print without a chip sends it too and exits 1 with the device's line;
    with --chip it exits 2 before sending anything."""
    g = lp_guest
    text = _records([(0, rand(512, 84)), (AT128_BOOT - 8, rand(24, 85))], 16)
    (g.xfer_dir / "lp-boot.hex").write_text(text)
    before = (g.xfer_dir / "lp-boot.hex").read_bytes()
    initial = rand(4096, 86) + b"\xff" * (AT128_FLASH - 4096)
    with cli_serving(g, "printer", "at90usb1286", "lp-boot.bin", None, initial=initial) as s:
        wait_path(g, LP, SERVE_WAIT, daemon=s.daemon)
        run_tool(g, f"cat lp-boot.hex > {LP}", served=s)
        assert _port_status(g) == SELECT | 0x20, s.log  # error (0x08 clear) and paper empty
        r = run_tool(g, f"bootkit print lp-boot.hex --printer {LP} --no-progress", ok=False, served=s)
        assert r.rc == 1 and r.stdout == "", r.describe()
        assert r.stderr == ("bootkit: failed: the device stayed in its bootloader: ERROR job 2: record 35 (line 35): "
                            "data at 0x1E000 reaches into the bootloader region 0x1E000-0x1FFFF; port status 0x30 "
                            "(out of paper)\n"), r.describe()
        r = run_tool(g, f"bootkit print lp-boot.hex --printer {LP} --chip at90usb1286 --no-progress", ok=False,
                     served=s)
        assert r.rc == 2 and r.stderr == ("bootkit: error: lp-boot.hex: line 35: image data at 0x1E000 reaches "
                                          "into the bootloader region 0x1E000-0x1FFFF of the at90usb1286 "
                                          "application flash\n"), r.describe()
        assert s.running(), s.log
    assert (g.xfer_dir / "lp-boot.hex").read_bytes() == before
    assert s.app_valid is False, s.log
    # the bootloader region is untouched; the application was invalidated by the device's jobs
    assert s.image()[AT128_BOOT:] == initial[AT128_BOOT:]
