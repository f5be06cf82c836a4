"""Printer host side: print an image as Intel HEX, then read what the device says.

Two ways to reach the printer:

* a kernel printer device file (``printer="/dev/usb/lp0"``, Linux usblp):
  the job is written to it, then the usblp ioctls give the port status
  (``LPGETSTATUS``) and SOFT_RESET (``LPIOC_SOFT_RESET``), and a read
  returns the device's status line (bidirectional printers only);
* pyusb (real hardware through libusb, or the emulator on the virtual
  bus): bulk writes to the OUT endpoint found in the descriptors, the
  class requests on endpoint 0, a bulk read of the status line.

After the job the client sends SOFT_RESET: a job the device has not seen
end (no end-of-file record) then counts as cut off and the device says
so, instead of waiting for more.  The device's status line carries a
CRC-32 of the programmed data read back from flash; it is compared with
the image's.
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
from ..common import FlashResult, HostError, ImageRejected, check_ranges
from ..usbhost import endpoint_pair, matching_devices, take_interfaces
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

GONE_ERRNOS = {errno.ENODEV, errno.EIO, errno.EPIPE, errno.ENOENT, errno.EPROTO}
CHUNK = 8192  # usblp's USBLP_BUF_SIZE: what one write() to /dev/usb/lpN sends at most


class PrinterError(HostError):
    """The printer reported an error, or the exchange failed: the device's own line where it sent one."""


@dataclass
class PrinterInterface:
    """A printer-class interface found on a USB device."""

    device: object  # usb.core.Device
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
    found = []
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


def _gone(exc: Exception) -> bool:
    return isinstance(exc, usb.core.USBError) and getattr(exc, "errno", None) in GONE_ERRNOS


class UsbPrinter:
    """A printer interface through pyusb: bulk OUT job, class requests, bulk IN status."""

    def __init__(self, target: PrinterInterface, *, timeout: int = 5000):
        self.target = target
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
        ready, _, _ = select.select([self.fd], [], [], timeout_ms / 1000)
        if not ready:
            return None
        try:
            out = os.read(self.fd, 1024)
        except OSError:
            return None
        return out.decode("ascii", "replace") if out else None

    def close(self) -> None:
        os.close(self.fd)


def open_printer(backend=None, *, printer=None, vid=None, pid=None, serial=None):
    """A FilePrinter for ``printer=PATH``, else the first matching USB printer interface."""
    if printer is not None:
        return FilePrinter(printer)
    found = find_printers(backend, vid=vid, pid=pid, serial=serial)
    if not found:
        sel = f" {vid:04x}:{pid:04x}" if vid is not None and pid is not None else ""
        raise PrinterError(f"no USB printer{sel} found (interface class 07, subclass 01)")
    return UsbPrinter(found[0])


def _image_crc(image: Image) -> int:
    crc = 0
    for _, data in image.segments:
        crc = zlib.crc32(data, crc)
    return crc


def _outcome(status: int | None, line: str | None) -> JobStatus | None:
    """Raise PrinterError for a device that reports an error; the job's status line otherwise."""
    job = parse_status_line(line) if line else None
    if job is not None and not job.ok:
        raise PrinterError(line.strip())
    if status is not None and (not status & NOT_ERROR or status & PAPER_EMPTY or not status & SELECT):
        raise PrinterError(f"printer reports {describe_port_status(status)} (port status 0x{status:02X})"
                           + (f": {line.strip()}" if line else ""))
    return job


def send_job(job: bytes, backend=None, *, printer=None, vid=None, pid=None, serial=None,
             expect: Image | None = None, progress=None, what: str = "print") -> FlashResult:
    """Send a print job as-is, then SOFT_RESET, GET_PORT_STATUS and the status line."""
    t0 = time.perf_counter()
    steps = []
    p = open_printer(backend, printer=printer, vid=vid, pid=pid, serial=serial)
    status = line = None
    try:
        try:
            with progress_bar(what, len(job), progress) as bar:
                p.write(job, bar)
            steps.append(f"sent {len(job)} bytes")
        except (usb.core.USBError, OSError) as exc:
            raise PrinterError(f"printing failed: {exc}") from None
        try:
            p.soft_reset()  # a job without its EOF record now counts as cut off
            status = p.port_status()
            line = p.read_status()
        except usb.core.USBError as exc:
            if not _gone(exc):
                raise PrinterError(f"reading the printer status failed: {exc}") from None
            # The device programmed the job and left for the application.
            steps.append("the device left before its status was read")
            return FlashResult("lufa", expect.size if expect else len(job), time.perf_counter() - t0, False, steps)
    finally:
        try:
            p.close()
        except Exception:  # noqa: BLE001 - closing a vanished device
            pass
    job_status = _outcome(status, line)
    verified = False
    if job_status is not None:
        steps.append(line.strip())
        if expect is not None:
            crc = _image_crc(expect)
            if job_status.crc32 != crc or job_status.size != expect.size:
                raise PrinterError(f"printer programmed {job_status.size} bytes with crc32 {job_status.crc32:08x}, "
                                   f"the image has {expect.size} bytes with crc32 {crc:08x}")
            verified = True
            steps.append("verified (crc32 of flash read back by the device)")
    elif status is None:
        steps.append("no status available (not a usblp device file)")
    size = expect.size if expect is not None else len(job)
    return FlashResult("lufa", size, time.perf_counter() - t0, verified, steps)


def _chip(chip) -> Chip | None:
    if chip is None or isinstance(chip, Chip):
        return chip
    return get_chip(chip)


def validate(image: Image, chip) -> None:
    chip = _chip(chip)
    if chip is None:
        return
    layout = chip.layout()
    check_ranges(image, layout.application_ranges("flash"), layout.protected, f"the {chip.name} application flash")


def flash(image_or_path, backend=None, *, printer=None, vid=None, pid=None, serial=None, chip=None,
          progress=None, record_size: int = 16, **_) -> FlashResult:
    """Print an image (an Image or a firmware file of any format) as Intel HEX.

    The image is checked against ``chip`` first (nothing is sent when it
    does not fit); the device's CRC-32 of what it programmed is compared
    with the image's.  Raises ImageRejected or PrinterError (a HostError).
    """
    if isinstance(image_or_path, Image):
        image = image_or_path
    else:
        try:
            image = load(image_or_path)
        except (FormatError, OSError) as exc:
            raise ImageRejected(str(exc)) from None
    if not image:
        raise ImageRejected("the image is empty")
    validate(image, chip)
    job = write_hex(image, record_size=record_size).encode("ascii")
    return send_job(job, backend, printer=printer, vid=vid, pid=pid, serial=serial, expect=image,
                    progress=progress)


def print_file(path, backend=None, *, printer=None, vid=None, pid=None, serial=None, chip=None,
               progress=None, **_) -> FlashResult:
    """Send a HEX file's bytes exactly as they are (as ``cat FILE > /dev/usb/lp0`` would).

    A corrupt file reaches the device, and the device's error comes back
    as a PrinterError.  When the file parses and ``chip`` is known, it is
    checked against the chip first and the result verified by CRC.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ImageRejected(f"{path}: {exc.strerror}") from None
    try:
        expect = parse_hex(raw, source=str(path))
    except FormatError:
        expect = None
    if expect is not None:
        validate(expect, chip)
    return send_job(raw, backend, printer=printer, vid=vid, pid=pid, serial=serial, expect=expect,
                    progress=progress)


def device_id(backend=None, *, printer=None, vid=None, pid=None, serial=None) -> str | None:
    p = open_printer(backend, printer=printer, vid=vid, pid=pid, serial=serial)
    try:
        return p.device_id()
    finally:
        p.close()


def read(backend=None, **_) -> Image:
    """The printer bootloader has no way to read flash back."""
    raise HostError("the printer personality cannot read flash (a printer only receives jobs)")
