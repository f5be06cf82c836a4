"""The ISP programmer personality's host side: flash, read, signature and fuses of the
AVR on a programmer's ISP header, through an STK500 v2 programmer (bootkit.isp.stk500v2's
Stk500v2Link, on a serial port or found on a USB bus as a CDC-ACM device) or a USBasp
(bootkit.isp.usbasp's UsbaspLink).

The sequence is avrdude's for an ISP programmer: enter programming mode, read the
signature and refuse a target that is not the chip named (nothing written), chip erase
before flash is written (a chip erase is the only way to clear flash bits and lock
bits), program page by page, read back and compare.  EEPROM is written without a chip
erase (it would take the flash with it), and refused on a write-locked target, where the
chip would silently ignore every byte.  The whole image is checked against the chip
before the programmer is even opened when the chip is known, and again against the chip
the signature names before anything is erased.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ...formats.image import Image
from ...memory.chips import EEPROM_BASE, Chip, chips_by_signature
from ...progress import phase, progress_bar
from ..common import FlashResult, HostError, ImageRejected, check_ranges

if TYPE_CHECKING:
    from ...contracts import DeviceOptions, Link
    from ...isp.link import IspLink

MEMORIES = ("flash", "eeprom")
#: Lock bits LB1 (bit 0) and LB2 (bit 1), 1 = unprogrammed (ATmega328P Table 27-2,
#: ATtiny85 Table 20-2): LB1 programmed stops writes, LB2 programmed also stops reads.
LB1, LB2 = 0x01, 0x02
#: a USB read waits this long for the programmer's answer to start (pyserial's timeout
#: plays the same part on a serial port); Stk500v2Link keeps asking until its own 2 s
USB_POLL_MS = 50


def isp_chip(chip: Chip) -> Chip:
    """The chip as an ISP programmer sees it: all of flash writable (no bootloader region)."""
    if chip.family != "avr":
        raise ValueError(f"an ISP programmer programs classic AVRs (family avr): {chip.name} is of family "
                         f"{chip.family}")
    return chip.with_boot(0)


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02X}" for b in data)


# ----------------------------------------------------------------------------------------
# the link


class UsbCdcStream:
    """A pyserial-like stream on a CDC-ACM device's bulk endpoints, through pyusb: how the
    host reaches an STK500 v2 programmer on a USB bus with no serial port in between (the
    in-process bus, USB/IP's client backend; with libusb, a device the kernel's cdc_acm
    driver does not hold).  Endpoints come from the descriptors, never hardcoded."""

    def __init__(self, device: Any):
        import usb.core
        import usb.util

        self.device = device
        try:
            device.set_configuration()
        except usb.core.USBError:
            pass  # already configured
        config = device.get_active_configuration()
        ep_out = ep_in = None
        for intf in config:
            if intf.bInterfaceClass != 0x0A:  # CDC data interface
                continue
            for ep in intf:
                if usb.util.endpoint_type(ep.bmAttributes) != usb.util.ENDPOINT_TYPE_BULK:
                    continue
                if usb.util.endpoint_direction(ep.bEndpointAddress) == usb.util.ENDPOINT_IN:
                    ep_in = ep
                else:
                    ep_out = ep
        if ep_out is None or ep_in is None:
            raise HostError(f"USB device {device.idVendor:04x}:{device.idProduct:04x} has no CDC-ACM data "
                            "interface: not an STK500 v2 programmer")
        self.ep_out, self.ep_in = ep_out, ep_in
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        return int(self.ep_out.write(bytes(data)))

    def read(self, n: int = 1) -> bytes:
        import usb.core

        if not self._buffer:
            try:
                self._buffer += bytes(self.ep_in.read(max(self.ep_in.wMaxPacketSize, 4096), USB_POLL_MS))
            except usb.core.USBTimeoutError:
                return b""
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    @property
    def in_waiting(self) -> int:
        return len(self._buffer)

    def reset_input_buffer(self) -> None:
        self._buffer.clear()

    def close(self) -> None:
        import usb.util

        usb.util.dispose_resources(self.device)


def _find_cdc_programmer(backend: Any, vid: int | None, pid: int | None, serial: str | None) -> Any:
    import usb.core
    import usb.util

    from .protocol import BOOTKIT_ISP_PID, BOOTKIT_VID

    vid = BOOTKIT_VID if vid is None else vid
    pid = BOOTKIT_ISP_PID if pid is None else pid
    try:
        found = list(usb.core.find(find_all=True, idVendor=vid, idProduct=pid, backend=backend) or [])
    except usb.core.USBError as exc:
        raise HostError(f"listing USB devices failed: {exc}") from None
    for dev in found:
        if serial is not None:
            try:
                if usb.util.get_string(dev, dev.iSerialNumber) != serial:
                    continue
            except (usb.core.USBError, ValueError):
                continue
        return dev
    raise HostError(f"no STK500 v2 programmer {vid:04x}:{pid:04x}{f' serial {serial!r}' if serial else ''} found "
                    "on the USB bus: give its serial port (--port)")


def open_link(backend: Any = None, *, port: str | None = None, vid: int | None = None, pid: int | None = None,
              serial: str | None = None, dialect: str = "stk500v2", chip: Chip | None = None,
              baudrate: int = 115200) -> IspLink:
    """The programmer: an :class:`~bootkit.isp.stk500v2.Stk500v2Link` (``port``, or a CDC-ACM
    device found on ``backend``) or a :class:`~bootkit.isp.usbasp.UsbaspLink` (``backend``,
    ``vid``/``pid``/``serial``)."""
    from ...isp.errors import IspError

    try:
        if dialect == "usbasp":
            from ...isp.usbasp import USBASP_PID, USBASP_VID, UsbaspLink

            if port:
                raise ImageRejected("a USBasp is a USB device: it takes no --port (give --device VID:PID)")
            return UsbaspLink(backend=backend, vid=vid or USBASP_VID, pid=pid or USBASP_PID, serial=serial, chip=chip)
        from ...isp.stk500v2 import Stk500v2Link

        if port:
            return Stk500v2Link(port, baudrate, chip=chip)
        if backend is None:
            raise HostError("an STK500 v2 programmer needs its serial port (--port)")
        stream = UsbCdcStream(_find_cdc_programmer(backend, vid, pid, serial))
        try:
            return Stk500v2Link(stream=stream, chip=chip)
        except BaseException:
            stream.close()
            raise
    except IspError as exc:
        raise HostError(str(exc)) from None


class _Session:
    """A link in programming mode with the target identified; a context manager that
    leaves programming mode (the target runs) and closes the programmer."""

    def __init__(self, backend: Any, where: dict[str, Any], dialect: str | None, chip: Chip | None,
                 sck_hz: int | None = None):
        from ...isp.errors import IspError

        self.dialect = dialect = _dialect(dialect)
        self.link = open_link(backend, dialect=dialect, chip=chip, **where)
        try:
            self.link.connect(sck_hz=sck_hz)
            self.signature = self.link.read_signature()
        except IspError as exc:
            self._close()
            raise HostError(str(exc)) from None
        except BaseException:
            self._close()
            raise
        try:
            self.chip = self._identify(chip)
        except BaseException:
            self._close()
            raise
        self.link.chip = self.chip

    def _identify(self, chip: Chip | None) -> Chip:
        sig = self.signature
        if chip is not None:
            if sig != chip.signature:
                named = chips_by_signature(sig)
                what = f" ({', '.join(c.name for c in named)})" if named else ""
                if sig in (b"\xff\xff\xff", b"\x00\x00\x00"):
                    what = " (no target answers: check wiring, power, clock)"
                raise HostError(f"the target's signature is {_hex(sig)}{what}, not {chip.name}'s "
                                f"{_hex(chip.signature)}: nothing written")
            return isp_chip(chip)
        named = [c for c in chips_by_signature(sig) if c.family == "avr"]
        if not named:
            raise HostError(f"the target's signature {_hex(sig)} is no AVR bootkit knows: name it with --chip")
        return isp_chip(named[0])

    def lock(self) -> int:
        return self.link.read_fuses().get("lock", 0xFF)

    def _close(self) -> None:
        try:
            self.link.close()
        except Exception:  # noqa: BLE001 - closing after a failure must not hide the failure
            pass

    def close(self) -> None:
        from ...isp.errors import IspError

        try:
            self.link.close()
        except IspError as exc:
            raise HostError(str(exc)) from None

    def __enter__(self) -> "_Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._close()


def _isp_errors(func):  # an IspError anywhere in a host call: HostError, one line
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kw: Any) -> Any:
        from ...isp.errors import IspError, IspInputError

        try:
            return func(*args, **kw)
        except IspInputError:
            raise
        except IspError as exc:
            raise HostError(str(exc)) from None

    return wrapper


# ----------------------------------------------------------------------------------------
# images


def normalise(image: Image, memory: str, chip: Chip) -> Image:
    """The image as addresses of ``memory`` (EEPROM from 0: a HEX at avr-gcc's 0x810000 is
    moved down), refused when it does not fit the chip (ISP: all of flash is writable)."""
    if memory not in MEMORIES:
        raise ImageRejected(f"an ISP programmer writes flash or eeprom, not {memory!r}")
    if not image:
        raise ImageRejected("the image is empty")
    if memory == "eeprom":
        if image.start >= EEPROM_BASE:
            image = image.shifted(-EEPROM_BASE)
        if not chip.eeprom_size:
            raise ImageRejected(f"{chip.name} has no EEPROM")
        check_ranges(image, [(0, chip.eeprom_size)], [], f"{chip.name} EEPROM ({chip.eeprom_size} bytes)")
        return image
    check_ranges(image, [(chip.flash_start, chip.flash_end)], [], f"{chip.name} flash ({chip.flash_size} bytes)")
    return image


def _chunks(image: Image, page_size: int) -> list[tuple[int, bytes]]:
    """The image's data split at page boundaries (no fill: EEPROM pages change only the
    bytes loaded, and a flash page only needs what the image has after a chip erase)."""
    out = []
    for start, data in image.segments:
        pos = 0
        while pos < len(data):
            address = start + pos
            n = min(len(data) - pos, page_size - address % page_size)
            out.append((address, bytes(data[pos:pos + n])))
            pos += n
    return out


# ----------------------------------------------------------------------------------------
# the operations


def _dialect(dialect: str | None) -> str:
    from . import DIALECTS

    dialect = dialect or DIALECTS[0]
    if dialect not in DIALECTS:
        raise ImageRejected(f"unknown isp dialect {dialect!r} (choose from {', '.join(DIALECTS)})")
    return dialect


def _where(port: str | None, vid: int | None, pid: int | None, serial: str | None, baudrate: int) -> dict[str, Any]:
    return {"port": port, "vid": vid, "pid": pid, "serial": serial, "baudrate": baudrate}


@_isp_errors
def flash(image: Image, backend: Any = None, *, port: str | None = None, vid: int | None = None,
          pid: int | None = None, serial: str | None = None, dialect: str | None = None, chip: Chip | None = None,
          memory: str = "flash", verify: bool = True, leave: bool = True, progress: bool | None = None,
          baudrate: int = 115200, sck_hz: int | None = None) -> FlashResult:
    """Check, (chip erase,) program, verify; ``leave`` releases RESET (the target runs).
    ``backend``: a pyusb backend (a USBasp; an STK500 v2 programmer's CDC-ACM device);
    ``port``: an STK500 v2 programmer's serial port."""
    t0 = time.perf_counter()
    if chip is not None:  # refuse bad input before the programmer is touched
        image = normalise(image, memory, isp_chip(chip))
    elif memory not in MEMORIES:
        raise ImageRejected(f"an ISP programmer writes flash or eeprom, not {memory!r}")
    steps: list[str] = []
    with _Session(backend, _where(port, vid, pid, serial, baudrate), dialect, chip, sck_hz) as s:
        dialect = s.dialect
        target = s.chip
        image = normalise(image, memory, target)  # the chip the signature names: before the erase
        steps.append(f"signature {_hex(s.signature)}: {target.name}")
        if memory == "flash":
            page = target.page_size
            chunks = list(image.pages(page))
            with progress_bar("erasing chip", None, False):
                s.link.chip_erase()
            steps.append("chip erased")
        else:
            page = max(target.eeprom_page, 1)
            lock = s.lock()
            if lock & (LB1 | LB2) != (LB1 | LB2):
                raise HostError(f"the target is locked (lock 0x{lock:02X}): it ignores EEPROM writes; a chip erase "
                                "(flashing it) clears the lock bits: nothing written")
            chunks = _chunks(image, page)
        total = sum(len(d) for _, d in chunks)
        with progress_bar(f"writing {memory}", total, progress) as advance:
            for address, data in chunks:
                s.link.write_page(memory, address, data, page_size=page)
                advance(len(data))
        if verify:
            with progress_bar(f"verifying {memory}", total, progress) as advance:
                for address, data in chunks:
                    got = s.link.read_memory(memory, address, len(data))
                    if got != data:
                        i = next(i for i in range(len(data)) if got[i:i + 1] != data[i:i + 1])
                        raise HostError(f"verify failed: {memory} 0x{address + i:X} reads "
                                        f"0x{got[i] if i < len(got) else 0:02X}, the image has 0x{data[i]:02X}")
                    advance(len(data))
            steps.append(f"verified {total} bytes by reading back")
        # the session's end releases RESET whatever ``leave`` says (avrdude does too): an ISP
        # target has no bootloader to stay in
        phase("leave")
        steps.append("RESET released: the target runs")
    return FlashResult(dialect, image.size, time.perf_counter() - t0, verify, steps)


@_isp_errors
def read(backend: Any = None, *, port: str | None = None, vid: int | None = None, pid: int | None = None,
         serial: str | None = None, dialect: str | None = None, chip: Chip | None = None, start: int | None = None,
         length: int | None = None, memory: str = "flash", progress: bool | None = None, trim: bool = True,
         baudrate: int = 115200, sck_hz: int | None = None) -> Image:
    """Read flash (from 0, the whole of it by default) or EEPROM (returned at avr-gcc's
    0x810000); trailing 0xFF is dropped unless ``trim=False``."""
    if memory not in MEMORIES:
        raise ImageRejected(f"an ISP programmer reads flash or eeprom, not {memory!r}")
    with _Session(backend, _where(port, vid, pid, serial, baudrate), dialect, chip, sck_hz) as s:
        target = s.chip
        hi = target.flash_end if memory == "flash" else target.eeprom_size
        lo = target.flash_start if memory == "flash" else 0
        start = lo if start is None else start
        length = hi - start if length is None else length
        if start < lo or length < 0 or start + length > hi:
            raise ImageRejected(f"0x{start:X}+{length} is outside {target.name} {memory} (0x{lo:X}-0x{hi - 1:X})")
        lock = s.lock()
        if not lock & LB2:
            raise HostError(f"the target is read-locked (lock 0x{lock:02X}): its {memory} reads as 0xFF; only a "
                            "chip erase clears the lock bits")
        out = bytearray()
        with progress_bar(f"reading {memory}", length, progress) as advance:
            for pos in range(start, start + length, 4096):
                n = min(4096, start + length - pos)
                out += s.link.read_memory(memory, pos, n)
                advance(n)
    data = bytes(out).rstrip(b"\xff") if trim else bytes(out)
    base = EEPROM_BASE if memory == "eeprom" else 0
    return Image([(base + start, data)] if data else [])


@_isp_errors
def signature(backend: Any = None, *, port: str | None = None, vid: int | None = None, pid: int | None = None,
              serial: str | None = None, dialect: str | None = None, chip: Chip | None = None,
              baudrate: int = 115200, sck_hz: int | None = None) -> bytes:
    """The target's three signature bytes (a target that is not ``chip`` is a HostError)."""
    with _Session(backend, _where(port, vid, pid, serial, baudrate), dialect, chip, sck_hz) as s:
        return s.signature


@_isp_errors
def read_fuses(backend: Any = None, *, port: str | None = None, vid: int | None = None, pid: int | None = None,
               serial: str | None = None, dialect: str | None = None, chip: Chip | None = None,
               baudrate: int = 115200, sck_hz: int | None = None) -> dict[str, int]:
    """The fuse bytes the target has (avrdude's names) and "lock"."""
    with _Session(backend, _where(port, vid, pid, serial, baudrate), dialect, chip, sck_hz) as s:
        return s.link.read_fuses()


def check_fuses(values: dict[str, int], chip: Chip) -> None:
    """Every value against the chip's fuses and masks, before anything is written
    (IspInputError, a ValueError: bad input, exit 2)."""
    from ...isp.errors import IspInputError
    from ...isp.protocol import fuse_value_problem

    masks = {f.name: f.mask for f in chip.fuses}
    if chip.lock is not None:
        masks["lock"] = chip.lock.mask
    if not values:
        raise IspInputError("no fuse value given")
    for name, value in values.items():
        if name not in masks:
            raise IspInputError(f"{chip.name} has no fuse {name!r} (it has: {', '.join(masks)})")
        problem = fuse_value_problem(name, value, masks[name])
        if problem is not None:
            raise IspInputError(f"{chip.name}: {problem}")


@_isp_errors
def write_fuses(values: dict[str, int], backend: Any = None, *, port: str | None = None, vid: int | None = None,
                pid: int | None = None, serial: str | None = None, dialect: str | None = None,
                chip: Chip | None = None, baudrate: int = 115200, sck_hz: int | None = None) -> dict[str, int]:
    """Check every value, write them (the lock byte last: it may stop further writes), return
    what the target reads back."""
    if chip is not None:
        check_fuses(values, chip)
    with _Session(backend, _where(port, vid, pid, serial, baudrate), dialect, chip, sck_hz) as s:
        check_fuses(values, s.chip)  # the chip the signature names
        for name in sorted(values, key=lambda n: n == "lock"):
            s.link.write_fuse(name, values[name])
        return s.link.read_fuses()


@_isp_errors
def erase(backend: Any = None, *, port: str | None = None, vid: int | None = None, pid: int | None = None,
          serial: str | None = None, dialect: str | None = None, chip: Chip | None = None,
          progress: bool | None = None, baudrate: int = 115200, sck_hz: int | None = None) -> str:
    """Chip Erase: flash, EEPROM (unless EESAVE is programmed) and the lock bits (the datasheets'
    serial programming instruction set: the only way to unlock a locked AVR)."""
    with _Session(backend, _where(port, vid, pid, serial, baudrate), dialect, chip, sck_hz) as s:
        with progress_bar("erasing chip", None, False):
            s.link.chip_erase()
        return (f"{s.chip.name} (signature {_hex(s.signature)}): chip erased (flash, EEPROM unless EESAVE, "
                "lock bits)")


@_isp_errors
def verify(image: Image, backend: Any = None, *, port: str | None = None, vid: int | None = None,
           pid: int | None = None, serial: str | None = None, dialect: str | None = None, chip: Chip | None = None,
           memory: str = "flash", progress: bool | None = None, baudrate: int = 115200,
           sck_hz: int | None = None) -> str:
    """Read back every byte the image holds and compare; HostError at the first difference."""
    if chip is not None:
        image = normalise(image, memory, isp_chip(chip))
    elif memory not in MEMORIES:
        raise ImageRejected(f"an ISP programmer reads flash or eeprom, not {memory!r}")
    with _Session(backend, _where(port, vid, pid, serial, baudrate), dialect, chip, sck_hz) as s:
        image = normalise(image, memory, s.chip)
        lock = s.lock()
        if not lock & LB2:
            raise HostError(f"the target is read-locked (lock 0x{lock:02X}): its {memory} reads as 0xFF and "
                            "cannot be verified")
        page = s.chip.page_size if memory == "flash" else max(s.chip.eeprom_page, 1)
        chunks = _chunks(image, page)
        total = sum(len(d) for _, d in chunks)
        with progress_bar(f"verifying {memory}", total, progress) as advance:
            for address, data in chunks:
                got = s.link.read_memory(memory, address, len(data))
                if got != data:
                    i = next(i for i in range(len(data)) if got[i:i + 1] != data[i:i + 1])
                    raise HostError(f"verify failed: {memory} 0x{address + i:X} reads "
                                    f"0x{got[i] if i < len(got) else 0:02X}, the image has 0x{data[i]:02X}")
                advance(len(data))
    return f"{image.size} bytes of {memory} equal to a read-back through the programmer"


@_isp_errors
def reset(backend: Any = None, *, port: str | None = None, vid: int | None = None, pid: int | None = None,
          serial: str | None = None, dialect: str | None = None, chip: Chip | None = None,
          baudrate: int = 115200, sck_hz: int | None = None) -> str:
    """Enter programming mode (RESET held), then release RESET: the target runs what it holds.
    Nothing on the USB bus shows it (the programmer stays), so the line says only what was done."""
    with _Session(backend, _where(port, vid, pid, serial, baudrate), dialect, chip, sck_hz) as s:
        name = s.chip.name
    return f"{name}: RESET released: the target runs (an ISP target shows nothing on the bus to confirm it)"


# ----------------------------------------------------------------------------------------
# the HostSide adapter


class IspHost:
    """The ISP programmers behind the one HostSide signature, with FuseAccess
    (:mod:`bootkit.contracts`): ``link.port`` (STK500 v2 on a serial port), or ``link.backend``
    with ``vid``/``pid``/``serial`` (a USBasp; an STK500 v2 programmer's CDC-ACM device)."""

    def _prepare(self, link: Link, dialect: str | None, options: DeviceOptions | None) -> dict[str, Any]:
        from .personality import PERSONALITY, IspOptions

        link.check(PERSONALITY.name, PERSONALITY.link_fields)
        dialect = PERSONALITY.check_dialect(dialect)
        o = PERSONALITY.options_or_default(dialect, options)
        assert isinstance(o, IspOptions)
        return {"port": link.port, "vid": link.vid, "pid": link.pid, "serial": link.serial, "dialect": dialect,
                "baudrate": getattr(o, "baudrate", 115200), "sck_hz": o.sck_hz}

    def flash(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash",
              verify: bool = True, leave: bool = True, force: bool = False) -> FlashResult:
        return flash(image, link.backend, chip=chip, memory=memory, verify=verify, leave=leave, progress=progress,
                     **self._prepare(link, dialect, options))

    def read(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
             options: DeviceOptions | None = None, start: int | None = None, length: int | None = None,
             memory: str = "flash", progress: bool | None = None) -> Image:
        return read(link.backend, chip=chip, start=start, length=length, memory=memory, progress=progress,
                    **self._prepare(link, dialect, options))

    def erase(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None, progress: bool | None = None) -> str:
        return erase(link.backend, chip=chip, progress=progress, **self._prepare(link, dialect, options))

    def verify(self, image: Image, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
               options: DeviceOptions | None = None, progress: bool | None = None, memory: str = "flash") -> str:
        return verify(image, link.backend, chip=chip, memory=memory, progress=progress,
                      **self._prepare(link, dialect, options))

    def reset(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
              options: DeviceOptions | None = None) -> str:
        return reset(link.backend, chip=chip, **self._prepare(link, dialect, options))

    def signature(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
                  options: DeviceOptions | None = None) -> bytes:
        return signature(link.backend, chip=chip, **self._prepare(link, dialect, options))

    def read_fuses(self, link: Link, *, dialect: str | None = None, chip: Chip | None = None,
                   options: DeviceOptions | None = None) -> dict[str, int]:
        return read_fuses(link.backend, chip=chip, **self._prepare(link, dialect, options))

    def write_fuses(self, link: Link, values: dict[str, int], *, dialect: str | None = None,
                    chip: Chip | None = None, options: DeviceOptions | None = None) -> dict[str, int]:
        return write_fuses(values, link.backend, chip=chip, **self._prepare(link, dialect, options))


__all__ = ["IspHost", "UsbCdcStream", "open_link", "flash", "read", "erase", "verify", "reset", "signature", "read_fuses", "write_fuses",
           "check_fuses", "normalise", "isp_chip"]
