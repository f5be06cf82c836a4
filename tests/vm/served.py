"""What the VM interop tests share: serving a personality with `bootkit serve`
in the guest, waiting for USB devices, running host tools, reference images.

The skip rule is the project's: a missing host tool skips a test only when
CI is not set; under CI=true it fails.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import time
from contextlib import contextmanager

import pytest

from bootkit.formats.image import Image

from .harness import GuestVM

GADGET_DIR = "/sys/kernel/config/usb_gadget/bootkit"


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


def on_ff(image: Image, base: int, size: int) -> bytes:
    """The reference flash: `image` placed on 0xFF over `size` bytes from `base`."""
    return image.tobytes(base, base + size)


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


def wait_until(guest: GuestVM, check, what: str, timeout: float = 30.0, daemon=None):
    """Poll `check()` until it returns something true; returns that value.  `timeout` is
    for a quiet machine: it is scaled by the guest's measured slowness (GuestVM.slowness)."""
    timeout = round(timeout * guest.slowness(), 1)
    t0 = time.monotonic()
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() - t0 > timeout:
            extra = daemon.output().describe() if daemon is not None else ""
            dmesg = guest.run("dmesg | tail -25; true").stdout
            raise AssertionError(f"{what} not within {timeout}s; USB devices: {usb_ids(guest)}\n"
                                 f"--- dmesg ---\n{dmesg}\n{extra}")
        time.sleep(0.25)


def wait_for(guest: GuestVM, want: str, timeout: float = 20.0, present: bool = True, daemon=None) -> float:
    t0 = time.monotonic()
    wait_until(guest, lambda: (want in usb_ids(guest)) == present,
               f"{want} {'present' if present else 'gone'}", timeout, daemon)
    return time.monotonic() - t0


def devnum(guest: GuestVM, port: str = "1-1") -> str:
    """The bus address of the device on dummy_hcd's port: it changes at every enumeration."""
    return guest.run(f"cat /sys/bus/usb/devices/{port}/devnum 2>/dev/null; true").stdout.strip()


def wait_reenumerated(guest: GuestVM, old: str, timeout: float = 20.0, daemon=None) -> float:
    return wait_until(guest, lambda: devnum(guest) not in ("", old), f"a new enumeration (was device {old})",
                      timeout, daemon)


def wait_path(guest: GuestVM, path: str, timeout: float = 20.0, daemon=None) -> float:
    t0 = time.monotonic()
    wait_until(guest, lambda: guest.run(f"test -e {path}").ok, f"{path} exists", timeout, daemon)
    return time.monotonic() - t0


class Served:
    """A `bootkit serve ... --transport T` running in the guest."""

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

    def wait_exit(self, timeout: float = 30.0):
        """For a serve that stops by itself (the device left for the application)."""
        wait_until(self.guest, lambda: self.daemon.poll() is not None, "serve exiting by itself", timeout,
                   self.daemon)
        return self.stop()

    @property
    def app_valid(self) -> bool | None:
        m = re.search(r": flash written back \(application (valid|not valid)\)", self.log)
        return None if m is None else m[1] == "valid"

    def image(self) -> bytes:
        return self.image_host.read_bytes()


def fresh_image(guest: GuestVM, image: str, initial: bytes | None = None):
    """xfer/IMAGE for a serve to start from: no image or state file left from before, or ``initial``."""
    host_img = guest.xfer_dir / image
    for p in (host_img, host_img.with_name(host_img.name + ".state.json")):
        if p.exists():
            p.unlink()
    if initial is not None:
        host_img.write_bytes(initial)
    return host_img


@contextmanager
def cli_serving(guest: GuestVM, personality: str, chip: str, image: str, usb_id: str | None = None, *,
                dialect: str | None = None, initial: bytes | None = None, transport: str = "functionfs",
                extra: str = ""):
    """`bootkit serve PERSONALITY --chip CHIP --image xfer/IMAGE --transport T` until the block ends
    (SIGTERM unless it already exited), then: exit status 0, the image written back, no gadget left."""
    host_img = fresh_image(guest, image, initial)
    cmd = (f"exec bootkit serve {personality} --chip {chip} --image {guest.guest_path(image)} "
           f"--transport {transport}" + (f" --dialect {dialect}" if dialect else "") + (f" {extra}" if extra else ""))
    served = Served(guest, guest.run_bg(cmd), host_img, guest.guest_path(image))
    try:
        if usb_id is not None:
            wait_until(guest, lambda: usb_id in usb_ids(guest) or served.daemon.poll() is not None,
                       f"{usb_id} present", daemon=served.daemon)
            assert served.daemon.poll() is None, "serve exited early:\n" + served.daemon.output().describe()
        yield served
    finally:
        res = served.stop()
        gone = guest.run(f"test ! -e {GADGET_DIR}")
        assert res.rc == 0 and not res.timed_out, res.describe()
        assert f"{guest.guest_path(image)}: flash written back" in res.stdout, res.describe()
        if transport == "functionfs":
            assert "functionfs: gadget removed" in res.stdout, res.describe()
        assert gone.ok, "gadget left behind in configfs:\n" + res.describe()


def run_tool(guest: GuestVM, cmd: str, timeout: float = 120.0, ok: bool = True, served: Served | None = None):
    r = guest.run(cmd, timeout=timeout, cwd=guest.guest_xfer_dir)
    if ok:
        assert r.rc == 0, r.describe() + ("\n--- serve ---\n" + served.log if served is not None else "")
    return r
