"""avrdude and the Linux cdc_acm driver against bootkit's CDC personality (issue 5).

In the guest, `bootkit serve cdc ... --transport functionfs` (the CLI) puts
an emulated ATmega32U4 on dummy_hcd; the guest kernel binds cdc_acm to it
(/dev/ttyACM0) and avrdude (which nobody here wrote) programs it over
AVR109.  Every scenario checks the tool's exit status, the image the
emulator writes back when serve exits on SIGTERM (the HEX placed on 0xFF
over the chip's whole flash), serve's exit status and a clean configfs.

Kernel note (every Linux so far): FunctionFS takes no CDC functional
descriptor (f_fs.c ffs_do_single_desc refuses CS_INTERFACE 0x24), so the
transport serves the ACM interfaces without Header/Call Management/ACM/
Union descriptors and cdc_acm refuses the device ("Zero length descriptor
references", probe error -22).  The tests give cdc_acm the NO_UNION_NORMAL
quirk for our ids through its new_id file, borrowing the driver_info of a
quirky modem in its table (0572:1321, Conexant CX93010: "has no union
descriptor"): interface 0 control, interface 1 data.

The helpers here (ihex, cli_serving, wait_for, ...) are shared by
test_hid_interop.py and test_printer_interop.py.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from contextlib import contextmanager

import pytest

from .harness import GuestVM

pytestmark = pytest.mark.vm

GADGET_DIR = "/sys/kernel/config/usb_gadget/bootkit"
M32U4_FLASH = 32 * 1024
LUFA_CDC_BOOT, LUFA_CDC_APP = "03eb:204a", "03eb:2044"
CATERINA_BOOT, CATERINA_APP = "2341:0036", "2341:8036"
# cdc_acm's acm_ids[]: { USB_DEVICE(0x0572, 0x1321), .driver_info = NO_UNION_NORMAL }
NO_UNION_REFERENCE = "0572 1321"
AVRDUDE = "avrdude -c avr109 -p m32u4 -P {port} -b 57600"


# --------------------------------------------------------------------------
# helpers (also used by test_hid_interop.py and test_printer_interop.py)

def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_tools(*tools: str, package: str = "") -> None:
    """Skip when a host tool is missing, unless CI is set (then fail)."""
    missing = [t for t in tools if shutil.which(t) is None and not os.path.exists(t)]
    if missing:
        why = (f"{', '.join(missing)} not installed"
               + (f" (apt-get install {package}; see tests/vm/apt-packages.txt)" if package else ""))
        if in_ci():
            pytest.fail(f"CI is set and a required tool is missing: {why}", pytrace=False)
        pytest.skip(why)


def rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def ihex(data: bytes, base: int = 0, width: int = 16) -> str:
    """Intel HEX of `data` at `base` (extended linear address records)."""
    lines, upper = [], None

    def rec(kind, addr, payload):
        raw = bytes([len(payload), (addr >> 8) & 0xFF, addr & 0xFF, kind]) + payload
        lines.append(":" + raw.hex().upper() + "%02X" % ((-sum(raw)) & 0xFF))

    for off in range(0, len(data), width):
        addr = base + off
        if addr >> 16 != upper:
            upper = addr >> 16
            rec(4, 0, upper.to_bytes(2, "big"))
        rec(0, addr & 0xFFFF, data[off:off + width])
    rec(1, 0, b"")
    return "\n".join(lines) + "\n"


def hex_on_ff(text: str, size: int, base: int = 0) -> bytes:
    """An Intel HEX file placed on 0xFF over `size` bytes from `base` (the reference flash)."""
    out = bytearray(b"\xff" * size)
    upper = 0
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith(":"):
            continue
        raw = bytes.fromhex(line[1:])
        n, addr, kind, data = raw[0], raw[1] << 8 | raw[2], raw[3], raw[4:4 + raw[0]]
        assert len(data) == n and sum(raw) & 0xFF == 0, f"bad record {line!r}"
        if kind == 0:
            a = upper + addr - base
            out[a:a + n] = data
        elif kind == 2:
            upper = (data[0] << 8 | data[1]) << 4
        elif kind == 4:
            upper = (data[0] << 8 | data[1]) << 16
        elif kind == 1:
            break
    return bytes(out)


def usb_ids(guest: GuestVM) -> set[str]:
    r = guest.run("for d in /sys/bus/usb/devices/*; do [ -e $d/idVendor ] && "
                  "echo $(cat $d/idVendor):$(cat $d/idProduct); done; true", check=True)
    return set(r.stdout.split())


def wait_until(guest: GuestVM, check, what: str, timeout: float = 20.0, daemon=None) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            extra = daemon.output().describe() if daemon is not None else ""
            raise AssertionError(f"{what} not within {timeout}s; USB devices: {usb_ids(guest)}\n{extra}")
        time.sleep(0.25)
    return time.monotonic() - t0


def wait_for(guest: GuestVM, want: str, timeout: float = 20.0, present: bool = True, daemon=None) -> float:
    return wait_until(guest, lambda: (want in usb_ids(guest)) == present,
                      f"{want} {'present' if present else 'gone'}", timeout, daemon)


def devnum(guest: GuestVM, port: str = "1-1") -> str:
    """The bus address of the device on dummy_hcd's port: it changes at every enumeration."""
    return guest.run(f"cat /sys/bus/usb/devices/{port}/devnum 2>/dev/null; true").stdout.strip()


def wait_reenumerated(guest: GuestVM, old: str, timeout: float = 20.0, daemon=None) -> float:
    return wait_until(guest, lambda: devnum(guest) not in ("", old), f"a new enumeration (was device {old})",
                      timeout, daemon)


def wait_path(guest: GuestVM, path: str, timeout: float = 20.0, daemon=None) -> float:
    return wait_until(guest, lambda: guest.run(f"test -e {path}").ok, f"{path} exists", timeout, daemon)


class Served:
    """A `bootkit serve ... --transport functionfs` running in the guest."""

    def __init__(self, guest, daemon, image_host, image_guest):
        self.guest, self.daemon = guest, daemon
        self.image_host, self.image_guest = image_host, image_guest
        self.result = None

    @property
    def log(self) -> str:
        return self.result.stdout if self.result is not None else self.daemon.output().stdout

    def running(self) -> bool:
        return self.result is None and self.daemon.poll() is None

    def stop(self):
        if self.result is None:
            self.result = self.daemon.stop()
        return self.result

    def wait_exit(self, timeout: float = 20.0):
        """For a serve that stops by itself (its target disconnected)."""
        wait_until(self.guest, lambda: self.daemon.poll() is not None, "serve exiting by itself", timeout,
                   self.daemon)
        return self.stop()

    @property
    def app_valid(self) -> bool | None:
        m = re.search(r": flash written back \(application (valid|not valid)\)", self.log)
        return None if m is None else m[1] == "valid"

    def image(self) -> bytes:
        return self.image_host.read_bytes()


@contextmanager
def cli_serving(guest: GuestVM, personality: str, chip: str, image: str, usb_id: str, *,
                dialect: str | None = None, initial: bytes | None = None, extra: str = ""):
    """`bootkit serve PERSONALITY --chip CHIP --image xfer/IMAGE --transport functionfs`
    until the block ends (SIGTERM), then: exit status 0, the image written
    back, the gadget removed from configfs."""
    host_img = guest.xfer_dir / image
    for p in (host_img, host_img.with_name(host_img.name + ".state.json")):
        if p.exists():
            p.unlink()
    if initial is not None:
        host_img.write_bytes(initial)
    cmd = (f"exec bootkit serve {personality} --chip {chip} --image {guest.guest_path(image)} "
           f"--transport functionfs" + (f" --dialect {dialect}" if dialect else "") + (f" {extra}" if extra else ""))
    served = Served(guest, guest.run_bg(cmd), host_img, guest.guest_path(image))
    try:
        wait_for(guest, usb_id, daemon=served.daemon)
        yield served
    finally:
        res = served.stop()
        gone = guest.run(f"test ! -e {GADGET_DIR}")
        assert res.rc == 0 and not res.timed_out, res.describe()
        assert "functionfs: gadget removed" in res.stdout, res.describe()
        assert f"{guest.guest_path(image)}: flash written back" in res.stdout, res.describe()
        assert gone.ok, "gadget left behind in configfs:\n" + res.describe()


def run_tool(guest: GuestVM, cmd: str, timeout: float = 120.0, ok: bool = True, served: Served | None = None):
    r = guest.run(cmd, timeout=timeout, cwd=guest.guest_xfer_dir)
    if ok and r.rc != 0:
        raise AssertionError(r.describe() + ("\n--- serve ---\n" + served.log if served else ""))
    return r


# --------------------------------------------------------------------------
# CDC fixtures

def acm_ports(guest: GuestVM) -> list[str]:
    return guest.run("ls /dev/ttyACM* 2>/dev/null; true").stdout.split()


@pytest.fixture
def cdc_guest(guest: GuestVM) -> GuestVM:
    require_tools("avrdude", package="avrdude")
    guest.run("modprobe -a dummy_hcd libcomposite usb_f_fs cdc_acm", check=True)
    # NO_UNION_NORMAL for our four ids (see the module docstring); a
    # duplicate id is harmless, so no bookkeeping across tests.
    for usb_id in (LUFA_CDC_BOOT, LUFA_CDC_APP, CATERINA_BOOT, CATERINA_APP):
        vid, pid = usb_id.split(":")
        guest.run(f"echo '{vid} {pid} 2 {NO_UNION_REFERENCE}' > /sys/bus/usb/drivers/cdc_acm/new_id")
    return guest


def wait_port(guest: GuestVM, served: Served, timeout: float = 20.0) -> str:
    wait_until(guest, lambda: bool(acm_ports(guest)), "a /dev/ttyACM* port", timeout, served.daemon)
    return acm_ports(guest)[0]


def touch_1200(guest: GuestVM, port: str):
    """The Arduino IDE's reset: open at 1200 baud, close (DTR drops)."""
    return guest.run(f"stty -F {port} 1200", timeout=30)


# --------------------------------------------------------------------------
# avrdude over cdc_acm, LUFA's CDC bootloader

def test_avrdude_over_cdc_acm(cdc_guest):
    """eeprom write + fuse read, flash write (erase, write, verify), the
    application's 1200-baud touch, flash read back: all through /dev/ttyACM0."""
    g = cdc_guest
    fw = rand(10 * 1024 + 6, 51)
    ee = rand(100, 52)
    fw_hex = ihex(fw)
    (g.xfer_dir / "cdc-fw.hex").write_text(fw_hex)
    (g.xfer_dir / "cdc-ee.hex").write_text(ihex(ee))
    reference = hex_on_ff(fw_hex, M32U4_FLASH)
    for name in ("cdc-back.hex",):
        if (g.xfer_dir / name).exists():
            (g.xfer_dir / name).unlink()
    timings = {}
    with cli_serving(g, "cdc", "atmega32u4", "cdc-m32u4.bin", LUFA_CDC_BOOT) as s:
        port = wait_port(g, s)
        avrdude = AVRDUDE.format(port=port)
        before = devnum(g)
        t0 = time.monotonic()
        r = run_tool(g, f"{avrdude} -U eeprom:w:cdc-ee.hex:i -U lfuse:r:-:h", served=s)
        timings["eeprom+lfuse"] = time.monotonic() - t0
        assert "100 bytes of eeprom verified" in r.stderr, r.describe()
        assert r.stdout.strip().lower() == "0x5e", r.describe()  # the emulated chip's factory low fuse
        # avrdude's 'E' left the bootloader; the flash is blank, so it comes back
        wait_reenumerated(g, before, daemon=s.daemon)
        wait_for(g, LUFA_CDC_BOOT, daemon=s.daemon)
        port = wait_port(g, s)
        t0 = time.monotonic()
        r = run_tool(g, f"{AVRDUDE.format(port=port)} -U flash:w:cdc-fw.hex:i", served=s)
        timings["flash write+verify"] = time.monotonic() - t0
        assert f"{len(fw)} bytes of flash verified" in r.stderr, r.describe()
        # 'E' after a complete image: the application enumerates
        wait_for(g, LUFA_CDC_APP, daemon=s.daemon)
        port = wait_port(g, s)
        r = touch_1200(g, port)
        assert r.rc == 0, r.describe()
        wait_for(g, LUFA_CDC_BOOT, daemon=s.daemon)
        port = wait_port(g, s)
        t0 = time.monotonic()
        r = run_tool(g, f"{AVRDUDE.format(port=port)} -U flash:r:cdc-back.hex:i", served=s)
        timings["flash read"] = time.monotonic() - t0
    back = hex_on_ff((g.xfer_dir / "cdc-back.hex").read_text(), M32U4_FLASH)
    assert back == reference, r.describe()
    assert s.image() == reference
    assert s.app_valid is True, s.log
    state = (g.xfer_dir / "cdc-m32u4.bin.state.json").read_text()
    assert bytes.fromhex(json.loads(state)["eeprom"])[:len(ee)] == ee
    assert "touch-1200" in s.log
    print("avrdude over cdc_acm: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


# --------------------------------------------------------------------------
# Caterina: flash, the sketch runs, the 1200-baud touch brings the bootloader back

def test_caterina_1200_baud_touch(cdc_guest):
    g = cdc_guest
    fw = rand(4 * 1024, 53)
    fw_hex = ihex(fw)
    (g.xfer_dir / "cat-fw.hex").write_text(fw_hex)
    with cli_serving(g, "cdc", "atmega32u4", "cat-m32u4.bin", CATERINA_BOOT, dialect="caterina") as s:
        port = wait_port(g, s)
        # what the Arduino IDE runs for a Leonardo: -D, the bootloader erases each page
        r = run_tool(g, f"{AVRDUDE.format(port=port)} -D -U flash:w:cat-fw.hex:i", served=s)
        assert f"{len(fw)} bytes of flash verified" in r.stderr, r.describe()
        wait_for(g, CATERINA_APP, daemon=s.daemon)  # Caterina leaves 500 ms after 'E'
        assert CATERINA_BOOT not in usb_ids(g)
        port = wait_port(g, s)
        t0 = time.monotonic()
        r = touch_1200(g, port)
        assert r.rc == 0, r.describe()
        wait_for(g, CATERINA_BOOT, daemon=s.daemon)
        took = time.monotonic() - t0
        assert CATERINA_APP not in usb_ids(g)
        new_port = wait_port(g, s)  # a new ttyACM for the bootloader
        assert g.run(f"test -c {new_port}").ok
        print(f"1200-baud touch on {port}: bootloader {CATERINA_BOOT} on {new_port} after {took:.1f}s")
    assert s.image() == hex_on_ff(fw_hex, M32U4_FLASH)
    assert s.app_valid is True, s.log
    assert "touch-1200" in s.log, s.log
