"""Printer host side: print an image as Intel HEX, then read what the device says.

Two ways to reach the printer:

* a kernel printer device file (``printer="/dev/usb/lp0"``, Linux usblp):
  the job is written to it, then the usblp ioctls give the port status
  (``LPGETSTATUS``) and SOFT_RESET (``LPIOC_SOFT_RESET``), and a read
  returns the device's status line (bidirectional printers only);
* pyusb (real hardware through libusb, or the emulator on the virtual
  bus): bulk writes to the OUT endpoint found in the descriptors, the
  class requests on endpoint 0, a bulk read of the status line.

Nothing is sent before the whole file has been parsed and checked against
the chip (:func:`prepare`, :func:`validate`).  After the job the client
reads the device's status line; when none comes it sends SOFT_RESET, so a
job the device has not seen end (no end-of-file record) counts as cut off
and the device says so instead of waiting for more.  The status line
carries a CRC-32 of the programmed data read back from flash; it is
compared with the image's, and only then is the job "verified".  What the
device does next is watched and reported as seen (:func:`_report`).
"""

from __future__ import annotations

import errno
import os
import select
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import usb.core
import usb.util

from ...formats import load
from ...formats.ihex import parse_hex, write_hex
from ...formats.image import FormatError, Image
from ...memory import Chip, get_chip
from ...progress import progress_bar
from ..common import FlashResult, HostError, ImageRejected, check_ranges, preflight
from ..usbhost import (
    CAME_BACK,
    STAYED,
    Arrival,
    LeaveWatch,
    Look,
    UsbLook,
    bus_snapshot,
    endpoint_pair,
    gone,
    in_process,
    matching_devices,
    stalled,
    take_interfaces,
)
from .protocol import (
    GET_DEVICE_ID,
    GET_PORT_STATUS,
    LPGETSTATUS,
    LPIOC_GET_DEVICE_ID,
    LPIOC_SOFT_RESET,
    NOT_ERROR,
    PAPER_EMPTY,
    PRINTER_CLASS,
    PRINTER_SUBCLASS,
    REQTYPE_IN_INTERFACE,
    REQTYPE_OUT_INTERFACE,
    SELECT,
    SOFT_RESET,
    USBLP_DEVICE_ID_SIZE,
    JobStatus,
    decode_device_id,
    describe_port_status,
    parse_status_line,
)

DIALECT = "lufa"  # LUFA's Bootloaders/Printer: the one printer dialect
CHUNK = 8192  # usblp's USBLP_BUF_SIZE: what one write() to /dev/usb/lpN sends at most


class PrinterError(HostError):
    """The printer reported an error, or the exchange failed: the device's own line where it sent one."""


@dataclass
class PrinterInterface:
    """A printer-class interface found on a USB device."""

    device: usb.core.Device
    interface: int
    alternate: int
    protocol: int
    ep_out: int
    ep_in: int | None

    def describe(self) -> str:
        d = self.device
        return (f"[{d.idVendor:04x}:{d.idProduct:04x}] intf={self.interface} alt={self.alternate} "
                f"protocol={self.protocol} out=0x{self.ep_out:02x}"
                + (f" in=0x{self.ep_in:02x}" if self.ep_in is not None else ""))


def find_printers(backend=None, *, vid=None, pid=None, serial=None) -> list[PrinterInterface]:
    """Printer interfaces (class 07, subclass 01), endpoints read from the descriptors."""
    found: list[PrinterInterface] = []
    for dev, cfg in matching_devices(backend, vid=vid, pid=pid, serial=serial):
        best: dict[int, PrinterInterface] = {}
        for intf in cfg:
            if intf.bInterfaceClass != PRINTER_CLASS or intf.bInterfaceSubClass != PRINTER_SUBCLASS:
                continue
            ep_in, ep_out = endpoint_pair(intf, usb.util.ENDPOINT_TYPE_BULK)
            if ep_out is None:
                continue
            item = PrinterInterface(dev, intf.bInterfaceNumber, intf.bAlternateSetting, intf.bInterfaceProtocol,
                                    ep_out, ep_in)
            # usblp_select_alts: prefer the bidirectional alternate (protocol 2)
            old = best.get(item.interface)
            if old is None or (old.protocol != 2 and item.protocol == 2):
                best[item.interface] = item
        found.extend(best.values())
    return found


class UsbPrinter:
    """A printer interface through pyusb: bulk OUT job, class requests, bulk IN status."""

    def __init__(self, target: PrinterInterface, *, timeout: int = 5000, backend=None):
        self.target = target
        self.backend = backend
        self.dev = target.device
        self.intf = target.interface
        self.timeout = timeout
        take_interfaces(self.dev, self.intf)  # usblp holds a real printer
        if target.alternate:
            self.dev.set_interface_altsetting(interface=self.intf, alternate_setting=target.alternate)

    @property
    def bidirectional(self) -> bool:
        return self.target.ep_in is not None

    def device_id(self) -> str:
        # usblp's request exactly: wIndex = (interface << 8) | alternate
        raw = self.dev.ctrl_transfer(REQTYPE_IN_INTERFACE, GET_DEVICE_ID, 0,
                                     (self.intf << 8) | self.target.alternate, USBLP_DEVICE_ID_SIZE - 1,
                                     self.timeout)
        return decode_device_id(bytes(raw))

    def port_status(self) -> int:
        raw = self.dev.ctrl_transfer(REQTYPE_IN_INTERFACE, GET_PORT_STATUS, 0, self.intf, 1, self.timeout)
        if len(raw) < 1:
            raise PrinterError("GET_PORT_STATUS returned no data")
        return raw[0]

    def soft_reset(self) -> None:
        self.dev.ctrl_transfer(REQTYPE_OUT_INTERFACE, SOFT_RESET, 0, self.intf, None, self.timeout)

    def write(self, data: bytes, advance=lambda n: None) -> None:
        for i in range(0, len(data), CHUNK):
            chunk = data[i:i + CHUNK]
            n = self.dev.write(self.target.ep_out, chunk, self.timeout)
            if n != len(chunk):
                raise PrinterError(f"short bulk write at byte {i}: {n} of {len(chunk)}")
            advance(len(chunk))

    def read_status(self, timeout_ms: int = 1000) -> str | None:
        if self.target.ep_in is None:
            return None
        out = b""
        deadline = time.monotonic() + timeout_ms / 1000
        while not out.endswith(b"\n"):
            left = max(1, int((deadline - time.monotonic()) * 1000))
            try:
                chunk = bytes(self.dev.read(self.target.ep_in, 64, left))
            except usb.core.USBTimeoutError:
                break
            out += chunk
            if not chunk or time.monotonic() >= deadline:
                break
        return out.decode("ascii", "replace") if out else None

    def close(self) -> None:
        usb.util.dispose_resources(self.dev)

    # what happens after the job (issue 16 item 3: report only what was seen)
    def snapshot(self) -> set:
        """What is on the bus while the bootloader is there (taken before the job)."""
        return set(bus_snapshot(self.backend) or ())

    def watch_leave(self, before: set, wait: float, again: float, *, sleep=time.sleep,
                    clock=time.monotonic) -> str:
        """Watch the bus after a good job; see :func:`_report`."""
        look = UsbLook(self.backend, self.dev, before, bootloader=_has_printer)
        return _report(LeaveWatch(look, wait=wait, again=again, sleep=sleep, clock=clock), wait)


class FilePrinter:
    """A kernel printer device file (/dev/usb/lpN): write(), the usblp ioctls, read()."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        try:
            self.fd = os.open(self.path, os.O_RDWR)
            self.readable = True
        except OSError:
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            except OSError as exc:
                raise PrinterError(f"cannot open printer {self.path}: {exc.strerror}") from None
            self.readable = False
        # the printer's USB device in sysfs, set by snapshot()
        self._sysid: tuple[int, int] | None = None
        self._sysids: tuple[int, int] | None = None

    def _ioctl(self, request: int, arg):
        import fcntl

        try:
            return fcntl.ioctl(self.fd, request, arg, True) if isinstance(arg, bytearray) else \
                fcntl.ioctl(self.fd, request, arg)
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EINVAL):  # not a usblp device (a plain file, a pipe)
                return None
            raise

    def device_id(self) -> str | None:
        buf = bytearray(USBLP_DEVICE_ID_SIZE)
        if self._ioctl(LPIOC_GET_DEVICE_ID(len(buf)), buf) is None:
            return None
        return decode_device_id(bytes(buf))

    def port_status(self) -> int | None:
        buf = bytearray(4)  # usblp copies an int
        if self._ioctl(LPGETSTATUS, buf) is None:
            return None
        return int.from_bytes(buf, "little") & 0xFF

    def soft_reset(self) -> None:
        try:
            self._ioctl(LPIOC_SOFT_RESET, 0)
        except OSError as exc:
            raise PrinterError(f"{self.path}: SOFT_RESET failed: {exc.strerror}") from None

    def write(self, data: bytes, advance=lambda n: None) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view[:CHUNK])
            advance(n)
            view = view[n:]

    def read_status(self, timeout_ms: int = 1000) -> str | None:
        if not self.readable or not Path(self.path).is_char_device():
            return None
        # one read() returns one bulk IN transfer: a 64-byte packet of the line at a time
        out = b""
        deadline = time.monotonic() + timeout_ms / 1000
        while not out.endswith(b"\n"):
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                chunk = os.read(self.fd, 1024)
            except OSError as exc:
                if (gone(exc) or stalled(exc)) and not out:
                    raise
                break
            if not chunk:
                break
            out += chunk
        return out.decode("ascii", "replace") if out else None

    def close(self) -> None:
        os.close(self.fd)

    # what happens after the job, through sysfs: usblp's /dev/usb/lpN is
    # /sys/class/usbmisc/lpN, whose device is the printer interface
    def _usb_device(self) -> Path | None:
        if not Path(self.path).is_char_device():
            return None
        link = SYSFS / "class" / "usbmisc" / Path(self.path).name / "device"
        try:
            return link.resolve(strict=True).parent
        except OSError:
            return None

    def snapshot(self) -> set | None:
        dev = self._usb_device()
        if dev is None:
            return None
        self._sysdev = dev
        self._sysid = _sysfs_key(dev)
        try:
            self._sysids = (int(_read_sys(dev / "idVendor"), 16), int(_read_sys(dev / "idProduct"), 16))
        except (OSError, ValueError):
            self._sysids = None
        return set(_sysfs_devices())

    def watch_leave(self, before: set, wait: float, again: float, *, sleep=time.sleep,
                    clock=time.monotonic) -> str:
        me, ids = self._sysid, self._sysids

        def look() -> Look:
            now = _sysfs_devices()
            if me is not None and me in now:
                return Look(True)
            new = [d for k, d in now.items() if k not in before]
            if not new:
                return Look(False)
            d = new[0]
            try:
                vid, pid = int(_read_sys(d / "idVendor"), 16), int(_read_sys(d / "idProduct"), 16)
            except (OSError, ValueError):  # still appearing
                return Look(False)
            return Look(False, Arrival(vid, pid, (vid, pid) == ids and _sysfs_has_printer(d), where=str(d)))

        return _report(LeaveWatch(look, wait=wait, again=again, sleep=sleep, clock=clock), wait)


SYSFS = Path("/sys")


def _read_sys(path: Path) -> str:
    return path.read_text().strip()


def _sysfs_key(dev: Path) -> tuple[int, int] | None:
    try:
        return int(_read_sys(dev / "busnum")), int(_read_sys(dev / "devnum"))
    except (OSError, ValueError):
        return None


def _sysfs_devices() -> dict:
    """(busnum, devnum) -> the device's sysfs directory, for every USB device (not interfaces)."""
    out: dict[tuple[int, int], Path] = {}
    root = SYSFS / "bus" / "usb" / "devices"
    try:
        entries = list(root.iterdir())
    except OSError:
        return out
    for entry in entries:
        if ":" in entry.name:  # an interface (1-1:1.0)
            continue
        try:
            dev = entry.resolve(strict=True)
        except OSError:
            continue
        key = _sysfs_key(dev)
        if key is not None:
            out[key] = dev
    return out


def _sysfs_has_printer(dev: Path) -> bool:
    for intf in dev.glob("*:*"):
        try:
            if int(_read_sys(intf / "bInterfaceClass"), 16) == PRINTER_CLASS:
                return True
        except (OSError, ValueError):
            continue
    return False


def _has_printer(dev) -> bool:
    try:
        return any(intf.bInterfaceClass == PRINTER_CLASS and intf.bInterfaceSubClass == PRINTER_SUBCLASS
                   for cfg in dev for intf in cfg)
    except (usb.core.USBError, ValueError):
        return False


LEAVE_WAIT = 5.0  # s a real device gets to leave after its status, and then to come back as its application
LEAVE_WAIT_IN_PROCESS = 1.5  # the emulated printer leaves 0.5 s after its status ...
AGAIN_IN_PROCESS = 0.2  # ... and what replaces it is there at once


def _wait_for(backend) -> tuple[float, float]:
    if in_process(backend):
        return LEAVE_WAIT_IN_PROCESS, AGAIN_IN_PROCESS
    return LEAVE_WAIT, LEAVE_WAIT


def _report(watch: LeaveWatch, wait: float) -> str:
    """The outcome after a good job, as observed by ``watch``:

    - it left and another device appeared: "application started (came back as VVVV:PPPP)";
    - it left and nothing came back within ``again`` s: "left the bootloader (not seen again within N s)";
    - it left and came back as the printer bootloader, or it is still there after ``wait`` s:
      PrinterError "the device stayed in its bootloader: ...".
    """
    out = watch.run()
    if out.seen == CAME_BACK and out.arrival is not None:
        raise PrinterError(f"{STAYED}: it came back as the printer bootloader "
                           f"({out.arrival.vid:04X}:{out.arrival.pid:04X})")
    if out.stayed:
        raise PrinterError(f"{STAYED}: it is still there {wait:g} s after its status said the job was programmed")
    return out.step


def open_printer(backend=None, *, printer=None, vid=None, pid=None, serial=None):
    """A FilePrinter for ``printer=PATH``, else the first matching USB printer interface."""
    if printer is not None:
        return FilePrinter(printer)
    found = find_printers(backend, vid=vid, pid=pid, serial=serial)
    if not found:
        sel = f" {vid:04x}:{pid:04x}" if vid is not None and pid is not None else ""
        raise PrinterError(f"no USB printer{sel} found (interface class 07, subclass 01)")
    return UsbPrinter(found[0], backend=backend)


def _image_crc(image: Image) -> int:
    crc = 0
    for _, data in image.segments:
        crc = zlib.crc32(data, crc)
    return crc


def _outcome(status: int | None, line: str | None) -> JobStatus | None:
    """Raise PrinterError for a device that reports an error; the job's status line otherwise."""
    job = parse_status_line(line) if line else None
    port = f"port status 0x{status:02X} ({describe_port_status(status)})" if status is not None else None
    if job is not None and line is not None and not job.ok:
        # a failed job leaves the application invalid: the device keeps its bootloader
        raise PrinterError(f"{STAYED}: {line.strip()}" + (f"; {port}" if port else ""))
    if status is not None and (not status & NOT_ERROR or status & PAPER_EMPTY or not status & SELECT):
        raise PrinterError(f"printer reports {describe_port_status(status)} (port status 0x{status:02X})"
                           + (f": {line.strip()}" if line else ""))
    return job


def _drain_status(p, quiet_ms: int, most: int = 16) -> None:
    """Read and drop status data until none comes for ``quiet_ms`` (at most ``most`` reads)."""
    for _ in range(most):
        try:
            if p.read_status(quiet_ms) is None:
                return
        except (usb.core.USBError, OSError):
            return  # a device that cannot be read now is judged after the job


def send_job(job: bytes, backend=None, *, printer=None, vid=None, pid=None, serial=None,
             expect: Image | None = None, progress=None, what: str = "print",
             wait: tuple[float, float] | None = None) -> FlashResult:
    """Send a print job as-is, then SOFT_RESET, GET_PORT_STATUS and the status line; then watch
    what the device does (``wait``: seconds for it to leave, and for what replaces it to appear).

    Steps, as observed: "sent N bytes"; the device's status line; "verified (...)" only when
    the device's CRC-32 of flash read back equals the image's, else "not verified (why)";
    then "application started (came back as VVVV:PPPP)" or "left the bootloader (not seen
    again within N s)".  An error status, a CRC mismatch or a device that stays in its
    bootloader raises PrinterError.
    """
    t0 = time.perf_counter()
    steps = []
    wait = wait or _wait_for(backend)
    first_ms = 200 if wait[1] < 1 else 3000  # the in-process device answers at once
    p = open_printer(backend, printer=printer, vid=vid, pid=pid, serial=serial)
    status = line = None
    left_early = False
    try:
        before = p.snapshot()
        # A line (or the rest of one) from an earlier job nobody read, e.g. after
        # `cat fw.hex > /dev/usb/lp0`: usblp's read-ahead took part of it and dropped that
        # at close, the rest waits in the device.  It is read and dropped first, so the
        # line read after this job is this job's own.
        _drain_status(p, 50 if wait[1] < 1 else 300)
        try:
            with progress_bar(what, len(job), progress) as bar:
                p.write(job, bar)
            steps.append(f"sent {len(job)} bytes")
        except (usb.core.USBError, OSError) as exc:
            raise PrinterError(f"printing failed after the job started: {exc}") from None
        try:
            # The status line comes when the device has seen the end-of-file record.  Only
            # without it is SOFT_RESET sent (the job then counts as cut off and is reported):
            # sent at once, it could overtake the job's last packet inside the device.
            line = p.read_status(first_ms)
            if line is None or not line.endswith("\n"):
                p.soft_reset()
                more = p.read_status(500)
                line = ((line or "") + (more or "")) or None
            status = p.port_status()
        except (usb.core.USBError, OSError) as exc:
            if not (gone(exc) or stalled(exc)):
                raise PrinterError(f"reading the printer status failed: {exc}") from None
            left_early = True
    finally:
        try:
            p.close()
        except Exception:  # noqa: BLE001 - closing a vanished device
            pass
    size = expect.size if expect is not None else len(job)
    if left_early:
        # it went before it said anything: what it programmed is unknown
        steps.append("not verified (the device left before its status was read)")
    else:
        job_status = _outcome(status, line)
        if job_status is not None and line is not None:  # a job status is only read from a line
            steps.append(line.strip())
            if expect is not None:
                crc = _image_crc(expect)
                if job_status.crc32 != crc or job_status.size != expect.size:
                    raise PrinterError(f"printer programmed {job_status.size} bytes with crc32 "
                                       f"{job_status.crc32:08x}, the image has {expect.size} bytes with crc32 "
                                       f"{crc:08x}")
                steps.append("verified (crc32 of flash read back by the device)")
            else:
                steps.append("not verified (no image to compare the device's crc32 with)")
        elif status is None:
            steps.append("not verified (not a usblp device file: no port status, no status line)")
            return FlashResult(DIALECT, size, time.perf_counter() - t0, False, steps)
        elif line is None:
            # LUFA's Bootloaders/Printer never writes to its IN endpoint: it detaches at the
            # end-of-file record, so there is nothing to compare and nothing is claimed
            steps.append(f"port status 0x{status:02X} (ok)")
            steps.append("not verified (the printer sent no status line)" if getattr(p, "bidirectional", True)
                         else "not verified (a unidirectional printer sends no status line)")
        else:
            raise PrinterError(f"the printer's status line is not a job status: {line.strip()[:80]!r}")
    seconds = time.perf_counter() - t0  # the job and its status, not the watch after it
    if before is None:
        steps.append("not watched (no sysfs entry for the printer)")
    else:
        steps.append(p.watch_leave(before, *wait))
    verified = any(s.startswith("verified") for s in steps)
    return FlashResult(DIALECT, size, seconds, verified, steps)


def _chip(chip) -> Chip | None:
    if chip is None or isinstance(chip, Chip):
        return chip
    return get_chip(chip)


def _hex_line(raw: bytes, address: int) -> int | None:
    """The line of the first data record of a (valid) HEX file that holds ``address``."""
    base = 0
    for number, text in enumerate(raw.splitlines(), 1):
        text = text.strip()
        if len(text) < 11 or text[:1] != b":":
            continue
        try:
            rec = bytes.fromhex(text[1:].decode("ascii"))
        except ValueError:
            continue
        kind, offset = rec[3], (rec[1] << 8) | rec[2]
        if kind == 0 and base + offset <= address < base + offset + rec[0]:
            return number
        if kind == 4:
            base = ((rec[4] << 8) | rec[5]) << 16
        elif kind == 2:
            base = ((rec[4] << 8) | rec[5]) << 4
        elif kind == 1:
            break
    return None


def validate(image: Image, chip, *, force: bool = False, raw: bytes | None = None) -> None:
    """Refuse (ImageRejected) an image the target cannot take: data outside the application
    flash or in the bootloader region (check_ranges), another UF2 family or no reset vector
    (preflight).  ``raw``: the HEX file, so a refusal names the line."""
    chip = _chip(chip)
    if chip is None:
        return
    layout = chip.layout()
    try:
        check_ranges(image, layout.application_ranges("flash"), layout.protected, f"the {chip.name} application flash")
    except ImageRejected as exc:
        line = None
        if raw is not None:
            import re

            m = re.search(r"0x([0-9A-F]+)", str(exc))
            line = _hex_line(raw, int(m[1], 16)) if m else None
        raise ImageRejected(f"line {line}: {exc}" if line else str(exc)) from None
    preflight(image, chip, force=force, memory="flash")


@dataclass
class PrintJob:
    """What is sent (``data``) and what it programs (``image``), checked before anything is sent."""

    data: bytes
    image: Image
    source: str
    raw_hex: bool  # ``data`` is the file's own bytes


def prepare(path, *, fmt: str | None = None, base: int | None = None, record_size: int = 16,
            family: int | None = None) -> PrintJob:
    """Read and parse a whole firmware file before anything is sent (ImageRejected naming the
    file and line).  A HEX file is sent as its own bytes (as ``cat FILE > /dev/usb/lp0`` would);
    any other format is converted to Intel HEX.  ``family`` (the target's UF2 family) keeps
    only that family's blocks of a multi-family UF2 file that has some, as a UF2 bootloader
    does; a file without any is left whole for the family check (preflight) to refuse."""
    from ...formats import identify

    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ImageRejected(f"{source}: {exc.strerror}") from None
    if not raw.strip():
        raise ImageRejected(f"{source}: empty file ({len(raw)} bytes): nothing to print")
    try:
        fmt = identify(raw, source, fmt)  # content and extension must agree (or --format)
        image = parse_hex(raw, source=source) if fmt == "hex" else load(raw, fmt=fmt, base=base, source=source)
        if fmt == "uf2" and family is not None and image.origin is not None and family in image.origin.uf2_families:
            image = load(raw, fmt=fmt, family=family, source=source)
    except FormatError as exc:
        raise ImageRejected(str(exc)) from None
    if not image:
        raise ImageRejected(f"{source}: no data records: nothing to print")
    if fmt == "hex":
        return PrintJob(raw, image, source, True)
    return PrintJob(write_hex(image, record_size=record_size).encode("ascii"), image, source, False)


def print_job(job: PrintJob, backend=None, *, printer=None, vid=None, pid=None, serial=None, chip=None,
              force: bool = False, progress=None, wait=None) -> FlashResult:
    """Check a prepared job against ``chip`` (nothing is sent when it does not fit), send it,
    and report what the device says and does (see :func:`send_job`)."""
    validate(job.image, chip, force=force, raw=job.data if job.raw_hex else None)
    result = send_job(job.data, backend, printer=printer, vid=vid, pid=pid, serial=serial, expect=job.image,
                      progress=progress, wait=wait)
    if chip is None:  # the device checks ranges itself, but only after the job has started
        result.steps.insert(0, "not checked against a chip before sending (no chip given)")
    return result


def flash(image_or_path, backend=None, *, printer=None, vid=None, pid=None, serial=None, dialect: str | None = None,
          chip=None, progress=None, record_size: int = 16, force: bool = False, memory: str = "flash",
          verify: bool = True, leave: bool = True, wait=None) -> FlashResult:
    """Print an image (an Image or a firmware file of any format) as Intel HEX.

    The image is checked against ``chip`` first (nothing is sent when it does not fit); the
    device's CRC-32 of what it programmed is compared with the image's.  Raises
    ImageRejected or PrinterError (a HostError).  ``dialect``, ``verify`` and ``leave`` are
    taken to be refused when asked for what the printer bootloader cannot do (LUFA's is its
    one dialect; it always reports its CRC-32, and starts the application after a good job).
    """
    if dialect not in (None, DIALECT):
        raise ImageRejected(f"the printer personality has one dialect, {DIALECT}, not {dialect}")
    if memory != "flash":
        raise ImageRejected(f"the printer bootloader programs flash only, not {memory}")
    if not verify:
        raise ImageRejected("the printer always compares the device's CRC-32 of the job: it cannot skip "
                            "verification")
    if not leave:
        raise ImageRejected("the printer bootloader starts the application after a good job: it cannot stay")
    if isinstance(image_or_path, Image):
        image = image_or_path
        if not image:
            raise ImageRejected("the image is empty")
        job = PrintJob(write_hex(image, record_size=record_size).encode("ascii"), image, "image", False)
    else:
        job = prepare(image_or_path, record_size=record_size)
    return print_job(job, backend, printer=printer, vid=vid, pid=pid, serial=serial, chip=chip, force=force,
                     progress=progress, wait=wait)


def print_file(path, backend=None, *, printer=None, vid=None, pid=None, serial=None, chip=None,
               progress=None, force: bool = False, fmt: str | None = None, base: int | None = None,
               wait=None) -> FlashResult:
    """Print a firmware file: parsed and checked whole first (ImageRejected, nothing sent), then
    a HEX file goes as its own bytes, any other format as Intel HEX."""
    job = prepare(path, fmt=fmt, base=base)
    return print_job(job, backend, printer=printer, vid=vid, pid=pid, serial=serial, chip=chip, force=force,
                     progress=progress, wait=wait)


def device_id(backend=None, *, printer=None, vid=None, pid=None, serial=None) -> str | None:
    p = open_printer(backend, printer=printer, vid=vid, pid=pid, serial=serial)
    try:
        return p.device_id()
    finally:
        p.close()


def read(backend=None, *, printer=None, vid=None, pid=None, serial=None, dialect: str | None = None, chip=None,
         memory: str = "flash", start: int | None = None, length: int | None = None, progress=None) -> Image:
    """The printer bootloader has no way to read flash back: whatever is selected, HostError."""
    raise HostError("the printer personality cannot read flash (a printer only receives jobs)")
