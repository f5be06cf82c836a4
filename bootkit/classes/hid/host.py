"""HID host side: find, validate, write, (read), verify, boot and watch.

Works through pyusb, so the same code drives real hardware (libusb) and
the emulator (the virtual backend).  HalfKay follows teensy_loader_cli
(the first block always goes, erasing the chip; blank blocks are skipped;
address bytes 0xFF boot), LUFA follows its hid_bootloader_cli (a patched
teensy_loader_cli) and Bootloaders/HID/HostLoaderApp_Python.  Interrupt
endpoints are found from the descriptors, never assumed: a Linux UDC
renumbers them.

Only what was observed is reported (issue 16): "verified" only after the
native dialect's read-back and CRC (HalfKay and LUFA cannot read:
"not verified"); after the boot command the host watches the bus
(:func:`observe_leave`), since HalfKay and LUFA answer nothing.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import usb.core
import usb.util

from ...formats.image import Image
from ...memory import Chip
from ...progress import phase, progress_bar
from ..common import FlashResult, HostError, ImageRejected, check_ranges, preflight
from ..native import NativeInfo, crc32, first_difference
from ..usbhost import (
    CAME_BACK,
    STAYED,
    Arrival,
    FoundDevice,
    LeaveWatch,
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
    BOOTKIT_VID,
    CRC_APPLICATION,
    CRC_BOOTLOADER,
    HALFKAY_BY_ID,
    HALFKAY_MCUS,
    HALFKAY_PID,
    HALFKAY_USAGE_PAGE,
    HID_CLASS,
    HID_DESCRIPTOR,
    LUFA_HID_PID,
    LUFA_VID,
    NATIVE_HID_PID,
    OUT_CLASS_INTF,
    REPORT_DESCRIPTOR,
    REPORT_SIZE,
    SET_REPORT,
    SET_REPORT_OUTPUT,
    TEENSY_VID,
    Command,
    HalfKayMcu,
    NativeStatus,
    ReportInfo,
    chip_named,
    halfkay_chip,
    halfkay_encode,
    halfkay_mcu_for,
    lufa_encode,
    native_command,
    parse_report_descriptor,
    unpack_info,
    XUSB_PID,
    XUSB_PROTOTYPE_PID,
    XUSB_PROTOTYPE_VID,
    XUSB_REPORT_SIZE,
    XUSB_VID,
    XusbBootInfo,
    XusbCommand,
    XusbPacket,
    XusbStatus,
    nvm_crc,
    unpack_boot_info,
    xusb_command,
)

KNOWN_IDS = {
    (TEENSY_VID, HALFKAY_PID): "halfkay",
    (LUFA_VID, LUFA_HID_PID): "lufa",
    (BOOTKIT_VID, NATIVE_HID_PID): "native",
    (XUSB_VID, XUSB_PID): "xusb",  # xusbboot's DEFAULT_USB_IDS
    (XUSB_PROTOTYPE_VID, XUSB_PROTOTYPE_PID): "xusb",
}
# How the end of a flash is reported (issue 16 item 3: only what was observed).
ERASED_FIRST_WORD = "first word of flash is erased: the bootloader kept control"
LEAVE_WAIT = 5.0  # s a real device gets to go and to come back (as its application, or its bootloader)
LEAVE_WAIT_IN_PROCESS = 0.5  # the in-process bus re-enumerates at once (native: 50 ms after RESET's reply)


class HidError(HostError):
    """The device or the exchange failed: one line saying what and where."""


@dataclass
class HidTarget(FoundDevice):
    """A HID bootloader interface found on the bus."""

    device: usb.core.Device
    interface: int
    dialect: str | None
    report: ReportInfo
    ep_in: int | None  # bEndpointAddress from the descriptors
    ep_out: int | None

    def describe(self) -> str:
        eps = " ".join(f"{n}=0x{a:02x}" for n, a in (("in", self.ep_in), ("out", self.ep_out)) if a is not None)
        board = ""
        if self.dialect == "halfkay" and self.report.usage_page == HALFKAY_USAGE_PAGE:
            m = HALFKAY_BY_ID.get(self.report.usage)
            board = f" board=\"{m.board}\"" if m else f" board=0x{self.report.usage:02x}"
        return (f"[{self.vid:04x}:{self.pid:04x}] {self.dialect or 'hid'} intf={self.interface} "
                f"usage={self.report.usage_page:04x}:{self.report.usage:02x} "
                f"report={self.report.output_length}B {eps} serial=\"{self.serial or ''}\"{board}")


def _report_descriptor(dev, interface: int, extra: bytes) -> ReportInfo:
    length = 0
    i = 0
    while i + 2 <= len(extra) and extra[i] >= 2:
        if extra[i + 1] == HID_DESCRIPTOR and extra[i] >= 9:
            length = struct.unpack_from("<H", extra, i + 7)[0]
        i += extra[i]
    try:
        raw = bytes(dev.ctrl_transfer(0x81, 6, REPORT_DESCRIPTOR << 8, interface, length or 256, 1000))
    except usb.core.USBError:
        return ReportInfo()
    return parse_report_descriptor(raw)


def find_devices(backend=None, *, vid=None, pid=None, serial=None, dialect=None) -> list[HidTarget]:
    """HID bootloaders on the bus: the known VID:PIDs, or whatever ``vid``/``pid`` select."""
    found = []
    dev: usb.core.Device  # matching_devices yields pyusb's device and configuration
    cfg: usb.core.Configuration
    for dev, cfg in matching_devices(backend, vid=vid, pid=pid, serial=serial):
        known = KNOWN_IDS.get((dev.idVendor, dev.idProduct))
        if known is None and vid is None and pid is None:
            continue
        if dialect is not None and known is not None and known != dialect:
            continue
        for intf in cfg:
            if intf.bInterfaceClass != HID_CLASS or intf.bAlternateSetting != 0:
                continue
            ep_in, ep_out = endpoint_pair(intf, usb.util.ENDPOINT_TYPE_INTR)
            report = _report_descriptor(dev, intf.bInterfaceNumber, bytes(intf.extra_descriptors))
            found.append(HidTarget(dev, intf.bInterfaceNumber, dialect or known, report, ep_in, ep_out))
            break
    return found


def list_devices(backend=None) -> list[str]:
    """One line per HID bootloader on the bus (teensy_loader_cli / dfu-util -l style); an
    xusb-boot device adds its boot info (xusbboot-cli -l asks GET_BOOT_INFO too)."""
    lines = []
    for t in find_devices(backend):
        line = t.describe()
        if t.dialect == "xusb":
            line += _boot_info_line(t)
        lines.append(line)
    return lines


def _boot_info_line(t: HidTarget) -> str:
    """GET_BOOT_INFO for a listing; usbhid, detached for the exchange, is given the interface
    back (a listing must not leave hidraw gone for the next tool)."""
    try:
        bound = bool(t.device.is_kernel_driver_active(t.interface))
    except (usb.core.USBError, NotImplementedError):
        bound = False
    try:
        info = XusbHost.boot_info_of(HidClient(t, timeout=1000))
        return (f" mcu=\"{info.mcu}\" version={info.version[0]}.{info.version[1]} "
                f"flash={info.flash_size} page={info.page_size}")
    except (HidError, usb.core.USBError) as exc:
        return f" boot info unreadable ({exc})"
    finally:
        usb.util.dispose_resources(t.device)
        if bound:
            try:
                t.device.attach_kernel_driver(t.interface)
            except (usb.core.USBError, NotImplementedError):
                pass


def wait_for_device(backend=None, *, vid=None, pid=None, serial=None, dialect=None,
                    timeout: float = 10.0, interval: float = 0.25) -> HidTarget:
    """Poll until a bootloader appears (teensy_loader_cli -w polls every 0.25 s)."""
    deadline = time.monotonic() + timeout
    while True:
        items = find_devices(backend, vid=vid, pid=pid, serial=serial, dialect=dialect)
        if items:
            return items[0]
        if time.monotonic() >= deadline:
            raise HidError(f"no HID bootloader appeared within {timeout:g} s")
        time.sleep(interval)


class HidClient:
    """Output reports by SET_REPORT or on the interrupt OUT endpoint; input reports from interrupt IN."""

    def __init__(self, target: HidTarget, *, timeout: int = 5000):
        self.target = target
        self.dev = target.device
        self.intf = target.interface
        self.timeout = timeout
        take_interfaces(self.dev, self.intf)  # usbhid: teensy_loader_cli detaches it too

    def set_report(self, data: bytes, timeout: int | None = None) -> None:
        """HID SET_REPORT (output, id 0): bmRequestType 0x21, bRequest 9, wValue 0x0200."""
        self.dev.ctrl_transfer(OUT_CLASS_INTF, SET_REPORT, SET_REPORT_OUTPUT, self.intf, data,
                               timeout or self.timeout)

    def write(self, data: bytes, timeout: int | None = None) -> None:
        if self.target.ep_out is not None:
            self.dev.write(self.target.ep_out, data, timeout or self.timeout)
        else:
            self.set_report(data, timeout)

    def read(self, timeout: int | None = None) -> bytes:
        if self.target.ep_in is None:
            raise HidError("the interface has no interrupt IN endpoint")
        return bytes(self.dev.read(self.target.ep_in, REPORT_SIZE, timeout or self.timeout))


def _refused_leave(what: str, exc: usb.core.USBError) -> HidError:
    """The boot request itself failed: the device is still its bootloader."""
    return HidError(f"{STAYED}: {_refused(what, exc)}")


def _refused(what: str, exc: usb.core.USBError) -> HidError:
    if stalled(exc):
        return HidError(f"{what}: the device refused the report (STALL)")
    if gone(exc):
        return HidError(f"{what}: device disconnected ({exc})")
    return HidError(f"{what}: {exc}")


# --------------------------------------------------------------------------
class _Dialect:
    """What every dialect's client offers :func:`flash`: a new dialect (a subclass here, a row in
    DIALECT_CLASSES) gives app_range, write and leave, and reads or not (``can_read``), verifies
    or not (``can_verify``: a read-back or a CRC compared with the image), and erases the
    application itself before writing (``erases_first``)."""

    name = "hid"
    can_read = False
    can_verify = False
    erases_first = False
    leave_command = "boot command"

    def __init__(self, client: HidClient, chip: Chip | None, progress=None):
        self.client = client
        self.chip = chip
        self.progress = progress
        self.steps: list[str] = []
        self.backend = None  # the pyusb backend the device was found on (to watch it leave)

    def app_range(self) -> tuple[int, int]:
        raise NotImplementedError

    def target_chip(self) -> Chip | None:
        """The chip common.preflight checks the image against."""
        return self.chip

    def first_word(self, image: Image) -> bytes | None:
        """The application's first word as the flash holds it after writing ``image``, or None
        when the host cannot know.  HalfKay (chip erase on the first block) and native (ERASE)
        erase the whole application first: what the image leaves out reads 0xFF."""
        first = self.app_range()[0]
        return image.tobytes(first, first + 2)

    def protected(self) -> tuple[tuple[int, int], ...]:
        return self.chip.layout().protected if self.chip else ()

    def describe_target(self) -> str:
        return self.chip.name if self.chip else "the device"

    def validate(self, image: Image, memory: str = "flash") -> None:
        if memory != "flash":
            raise ImageRejected(f"the {self.name} bootloader carries flash only")
        if not image:
            raise ImageRejected("the image is empty")
        check_ranges(image, [self.app_range()], self.protected(), self.describe_target())

    def read(self, start=None, length=None) -> Image:
        raise HidError(f"the {self.name} bootloader has no read command")

    def write(self, image: Image) -> int:
        """Program the image; the bytes sent."""
        raise NotImplementedError

    def verify(self, image: Image) -> None:
        """Read back and compare (dialects with ``can_read``); HidError on a difference."""
        raise HidError(f"the {self.name} bootloader has no read command")

    def leave(self) -> None:
        """Send the boot request; what the device then does is watched by :func:`observe_leave`."""
        raise NotImplementedError


class HalfKayHost(_Dialect):
    """PJRC HalfKay, as teensy_loader_cli drives it."""

    name = "halfkay"
    chip: Chip  # given, or the board's from the report descriptor's usage

    def __init__(self, client, chip, progress=None, mcu: HalfKayMcu | None = None):
        if mcu is None:
            if chip is not None:
                mcu = halfkay_mcu_for(chip)
            else:
                r = client.target.report
                mcu = HALFKAY_BY_ID.get(r.usage) if r.usage_page == HALFKAY_USAGE_PAGE else None
                if mcu is None:
                    raise ImageRejected("cannot tell which Teensy this is: give --mcu (teensy_loader_cli's "
                                        f"list: {', '.join(HALFKAY_MCUS)})")
        self.mcu = mcu
        if chip is None or isinstance(chip, str):
            chip = halfkay_chip(mcu)
        super().__init__(client, chip, progress)

    def app_range(self):
        start, end = self.chip.layout().application_ranges("flash")[0]
        return start, min(end, start + self.mcu.code_size)

    def protected(self):
        start, end = self.app_range()
        flash_end = self.chip.flash_end
        return ((end, flash_end),) if end < flash_end else ()

    def blocks(self, image: Image):
        """teensy_loader_cli's loop: the first block always (it erases), then non-blank blocks."""
        size = self.mcu.block_size
        start, end = self.app_range()
        addresses = sorted({start} | {a for a, _ in image.pages(size, align=start) if start <= a < end})
        for i, address in enumerate(addresses):
            data = image.tobytes(address, address + size)
            if i and data.count(0xFF) == size:
                continue
            yield address, data

    def write(self, image: Image) -> int:
        blocks = list(self.blocks(image))
        total = 0
        with progress_bar("program", len(blocks) * self.mcu.block_size, self.progress) as bar:
            for i, (address, data) in enumerate(blocks):
                report = halfkay_encode(self.mcu, address, data)
                self._send(report, f"block at 0x{address:X}", 3.0 if i == 0 else 0.25)
                total += len(data)
                bar(len(data))
        self.steps.append(f"programmed {len(blocks)} blocks of {self.mcu.block_size} bytes (first erased the chip)")
        return total

    SEND_LIMIT = 30.0  # s: a wall-clock bound on one block's tries (teensy_write has none)

    def _send(self, report: bytes, what: str, seconds: float) -> None:
        """teensy_write(): try until the budget is spent while the device does not answer (busy
        erasing, or a slow host: under QEMU a transfer can take longer than 250 ms).  Each try
        gets what is left of the budget as its timeout, and the budget shrinks by only 10 ms a
        try (PJRC's "TODO: subtract actual elapsed time"), so a slow device gets several
        full-length tries.  A STALL is an answer, not busy: it is not retried."""
        budget = seconds
        limit = time.monotonic() + self.SEND_LIMIT
        while True:
            try:
                self.client.set_report(report, max(int(budget * 1000), 10))
                return
            except usb.core.USBTimeoutError:
                budget -= 0.01
                if budget <= 0 or time.monotonic() >= limit:
                    raise HidError(f"{what}: no answer from the device (a SET_REPORT of {len(report)} bytes "
                                   f"timed out)") from None
                time.sleep(0.01)
            except usb.core.USBError as exc:
                raise _refused(what, exc) from None

    def leave(self) -> None:
        """Address bytes 0xFF: HalfKay reboots (teensy_loader_cli boot()); it answers nothing
        more, so :func:`observe_leave` watches what it does."""
        try:
            self.client.set_report(halfkay_encode(self.mcu, None), 250)
        except usb.core.USBError as exc:
            # gone, or no status stage before the reboot: what happened is watched next
            if not (gone(exc) or isinstance(exc, usb.core.USBTimeoutError)):
                raise _refused_leave("boot command", exc) from None


class LufaHost(_Dialect):
    """LUFA's HID bootloader: one page per report, 0xFFFF starts the application."""

    name = "lufa"
    leave_command = "start-application report (0xFFFF)"
    chip: Chip  # LUFA does not say which chip it is: --chip is required

    def __init__(self, client, chip, progress=None):
        if chip is None:
            raise ImageRejected("the LUFA HID bootloader does not say which chip it is: give --chip")
        super().__init__(client, chip, progress)
        reported = client.target.report.output_length - 2
        self.page_size = chip.page_size
        if reported > 0 and reported != chip.page_size:
            raise ImageRejected(f"the device's report carries {reported}-byte pages, "
                                f"{chip.name} has {chip.page_size}: wrong --chip?")

    def app_range(self):
        return self.chip.layout().application_ranges("flash")[0]

    def write(self, image: Image) -> int:
        pages = list(image.pages(self.page_size, align=0))
        total = 0
        with progress_bar("program", len(pages) * self.page_size, self.progress) as bar:
            for address, data in pages:
                try:
                    self.client.write(lufa_encode(address, data, self.chip.flash_size))
                except usb.core.USBError as exc:
                    raise _refused(f"page at 0x{address:X}", exc) from None
                total += len(data)
                bar(len(data))
        self.steps.append(f"programmed {len(pages)} pages (each erased first)")
        return total

    def first_word(self, image: Image) -> bytes | None:
        # BootloaderHID.c erases only the pages it is sent: an unsent first page keeps its old word
        first = self.app_range()[0]
        page = first - first % self.page_size
        if not image.crop(page, page + self.page_size):
            return None
        return image.tobytes(first, first + 2)

    def leave(self) -> None:
        """0xFFFF: LUFA starts the application (BootloaderHID.c: RunBootloader = false), which it
        does only when pgm_read_word(0) != 0xFFFF; :func:`observe_leave` watches which it was."""
        try:
            self.client.write(lufa_encode(None, bytes(self.page_size), self.chip.flash_size), 250)
        except usb.core.USBError as exc:
            if not (gone(exc) or isinstance(exc, usb.core.USBTimeoutError)):
                raise _refused_leave("start-application report", exc) from None


class NativeHost(_Dialect):
    """bootkit's raw-HID dialect: GET_INFO, ERASE, WRITE, READ, CRC, RESET."""

    name = "native"
    can_read = True
    can_verify = True
    erases_first = True
    leave_command = "RESET"

    def __init__(self, client, chip, progress=None):
        super().__init__(client, chip, progress)
        self.info = self.get_info()

    # --- exchanges
    def command(self, cmd: int, arg0: int = 0, arg1: int = 0) -> bytes:
        c = self.client
        try:
            c.write(native_command(cmd, arg0, arg1))
            reply = c.read()
        except usb.core.USBError as exc:
            raise _refused(Command(cmd).name, exc) from None
        return self._check(reply, cmd, Command(cmd).name)

    @staticmethod
    def _check(reply: bytes, cmd: int, what: str) -> bytes:
        if len(reply) < 4 or reply[0] != cmd:
            raise HidError(f"{what}: unexpected reply {reply[:8].hex()}")
        if reply[1] != NativeStatus.OK:
            try:
                status = NativeStatus(reply[1]).name
            except ValueError:
                status = f"status 0x{reply[1]:02X}"
            raise HidError(f"{what}: device reports {status}")
        return reply[4:]

    def get_info(self) -> NativeInfo:
        try:
            return unpack_info(self.command(Command.GET_INFO))
        except ValueError as exc:
            raise HidError(f"GET_INFO: unreadable answer ({exc})") from None

    def app_range(self):
        return self.info.app_start, self.info.app_end

    def protected(self):
        return self.info.protected

    def describe_target(self):
        return self.info.chip or "the device"

    def target_chip(self):
        """The chip the device says it is (GET_INFO), when the database knows it; else the one given."""
        try:
            return chip_named(self.info.chip) if self.info.chip else self.chip
        except KeyError:
            return self.chip

    def crc(self, region: int = CRC_APPLICATION) -> tuple[int, int, int]:
        """(crc32, start, size) of the application or the bootloader."""
        return struct.unpack_from("<III", self.command(Command.CRC, region))

    def erase(self) -> None:
        self.command(Command.ERASE)
        self.steps.append("application erased")

    def runs(self, image: Image):
        """Consecutive pages of the image as (start, bytes) runs: one WRITE each."""
        run_start, run = None, bytearray()
        for address, data in image.pages(self.info.page_size, align=self.info.flash_start):
            if run_start is not None and address == run_start + len(run):
                run += data
                continue
            if run_start is not None:
                yield run_start, bytes(run)
            run_start, run = address, bytearray(data)
        if run_start is not None:
            yield run_start, bytes(run)

    def write(self, image: Image) -> int:
        c = self.client
        total = 0
        with progress_bar("program", image.size, self.progress) as bar:
            for start, data in self.runs(image):
                self.command(Command.WRITE, start, len(data))
                for off in range(0, len(data), REPORT_SIZE):
                    chunk = data[off:off + REPORT_SIZE]
                    try:
                        c.write(chunk.ljust(REPORT_SIZE, b"\xff"))
                        ack = c.read()
                    except usb.core.USBError as exc:
                        raise _refused(f"data at 0x{start + off:X}", exc) from None
                    self._check(ack, Command.WRITE, f"write at 0x{start + off:X}")
                    total += len(chunk)
                    bar(len(chunk))
        self.steps.append(f"wrote {total} bytes")
        return total

    def read(self, start: int | None = None, length: int | None = None) -> Image:
        c = self.client
        start, length = self.info.span(start, length)
        self.command(Command.READ, start, length)
        out = bytearray()
        with progress_bar("read", length, self.progress) as bar:
            while len(out) < length:
                try:
                    chunk = c.read()
                except usb.core.USBError as exc:
                    raise _refused(f"read at 0x{start + len(out):X}", exc) from None
                n = min(len(chunk), length - len(out))
                out += chunk[:n]
                bar(n)
        return Image([(start, bytes(out))])

    def verify(self, image: Image) -> None:
        phase("verify")  # the read below is the verify bar (bootkit.progress)
        back = self.read(image.start, image.end - image.start)
        for seg_start, data in image.segments:
            differs = first_difference(seg_start, data, back.tobytes(seg_start, seg_start + len(data)))
            if differs:
                raise HidError(differs)
        # the whole application, gaps included, as the image placed on erased flash
        crc, start, size = self.crc(CRC_APPLICATION)
        if crc != crc32(image.tobytes(start, start + size)):
            raise HidError("verify failed: the application CRC differs from the image placed on erased flash")

    def leave(self) -> None:
        """RESET: the device replies, then leaves; a refusal names its status.  A reply lost
        to the reset itself is no answer: :func:`observe_leave` watches what happened."""
        c = self.client
        try:
            c.write(native_command(Command.RESET))
            reply = c.read(250)
        except usb.core.USBError as exc:
            if gone(exc) or isinstance(exc, usb.core.USBTimeoutError):
                return
            raise _refused_leave("RESET", exc) from None
        try:
            self._check(reply, Command.RESET, "RESET")
        except HidError as exc:
            raise HidError(f"{STAYED}: {exc}") from None


class XusbHost(_Dialect):
    """xusb-boot 1.0 (the xmega raw-HID bootloader), as its xusbboot tool drives it:
    GET_BOOT_INFO, ERASE, WRITE runs of whole pages, CRC compared with the image, RESET.

    Unlike xusbboot (one WRITE from 0 to the image's last page), each run of pages the
    image touches is one WRITE, so gaps stay erased and cost nothing.  The check is the
    application section's NVM CRC against the image placed on erased flash: the device
    cannot be read back, so that CRC is the comparison behind "verified"."""

    name = "xusb"
    can_verify = True
    erases_first = True
    leave_command = "RESET"

    def __init__(self, client, chip, progress=None):
        super().__init__(client, chip, progress)
        self.info = self.boot_info_of(client)
        if self.info.page_size <= 0 or self.info.page_size % XUSB_REPORT_SIZE:
            raise HidError(f"GET_BOOT_INFO: page size {self.info.page_size} is not a multiple of "
                           f"{XUSB_REPORT_SIZE} bytes")

    @staticmethod
    def boot_info_of(client: HidClient) -> XusbBootInfo:
        try:
            client.write(xusb_command(XusbCommand.GET_BOOT_INFO))
            reply = client.read()
        except usb.core.USBError as exc:
            raise _refused("GET_BOOT_INFO", exc) from None
        try:
            return unpack_boot_info(reply)
        except ValueError as exc:
            raise HidError(f"GET_BOOT_INFO: unreadable answer ({exc})") from None

    # --- exchanges
    def _status(self, report: bytes, what: str) -> None:
        if len(report) < 2 or report[0] != XusbPacket.ERROR_STATUS:
            raise HidError(f"{what}: unexpected answer {bytes(report[:9]).hex()}")
        if report[1] != XusbStatus.OKAY:
            try:
                status = XusbStatus(report[1]).name
            except ValueError:
                status = f"status 0x{report[1]:02X}"
            raise HidError(f"{what}: device reports {status}")

    def _exchange(self, report: bytes, what: str) -> bytes:
        try:
            self.client.write(report)
            return self.client.read()
        except usb.core.USBError as exc:
            raise _refused(what, exc) from None

    def app_range(self):
        return 0, self.info.flash_size

    def target_chip(self):
        """The chip the boot info's MCU string names, when the database knows it; else the one given."""
        try:
            return chip_named(self.info.mcu) if self.info.mcu else self.chip
        except KeyError:
            return self.chip

    def protected(self):
        chip = self.target_chip()
        return chip.layout().protected if chip else ()

    def describe_target(self):
        return self.info.mcu or "the device"

    def erase(self) -> None:
        self._status(self._exchange(xusb_command(XusbCommand.ERASE), "ERASE"), "ERASE")
        self.steps.append("application section erased")

    def runs(self, image: Image):
        """Consecutive pages of the image as (start, bytes) runs: one WRITE each."""
        run_start, run = None, bytearray()
        for address, data in image.pages(self.info.page_size, align=0):
            if run_start is not None and address == run_start + len(run):
                run += data
                continue
            if run_start is not None:
                yield run_start, bytes(run)
            run_start, run = address, bytearray(data)
        if run_start is not None:
            yield run_start, bytes(run)

    def write(self, image: Image) -> int:
        total = 0
        with progress_bar("program", image.size, self.progress) as bar:
            for start, data in self.runs(image):
                what = f"WRITE of {len(data)} bytes at 0x{start:X}"
                self._status(self._exchange(xusb_command(XusbCommand.WRITE, start, len(data)), what), what)
                for off in range(0, len(data), XUSB_REPORT_SIZE):
                    at = f"data at 0x{start + off:X}"
                    self._status(self._exchange(data[off:off + XUSB_REPORT_SIZE], at), at)
                    total += XUSB_REPORT_SIZE
                    bar(XUSB_REPORT_SIZE)
        self.steps.append(f"wrote {total} bytes in pages of {self.info.page_size}")
        return total

    def crc(self) -> tuple[int, int]:
        """(application CRC, boot CRC): the NVM controller's 24-bit CRCs."""
        reply = self._exchange(xusb_command(XusbCommand.CRC), "CRC")
        if reply and reply[0] == XusbPacket.ERROR_STATUS:
            self._status(reply, "CRC")
        if len(reply) < 9 or reply[0] != XusbPacket.CRC:
            raise HidError(f"CRC: unexpected answer {bytes(reply[:9]).hex()}")
        app, boot = struct.unpack_from("<II", reply, 1)
        return app & 0xFFFFFF, boot & 0xFFFFFF

    def verify(self, image: Image) -> None:
        start, end = self.app_range()
        expected = nvm_crc(image.tobytes(start, end))
        got, _boot = self.crc()
        if got != expected:
            raise HidError(f"verify failed: the application CRC the device computed, 0x{got:06X}, differs "
                           f"from the image's on erased flash, 0x{expected:06X} (xmega NVM CRC)")
        self.steps.append(f"application CRC 0x{got:06X} equals the image's")

    def leave(self) -> None:
        """RESET: xusb-boot answers nothing; it detaches and resets 50 ms later, and
        :func:`observe_leave` watches what it became."""
        try:
            self.client.write(xusb_command(XusbCommand.RESET), 250)
        except usb.core.USBError as exc:
            if not (gone(exc) or isinstance(exc, usb.core.USBTimeoutError)):
                raise _refused_leave("RESET", exc) from None


DIALECT_CLASSES = {"halfkay": HalfKayHost, "lufa": LufaHost, "native": NativeHost, "xusb": XusbHost}


def open_dialect(backend=None, *, vid=None, pid=None, serial=None, dialect=None, chip=None, mcu=None,
                 progress=None, wait: float | None = None) -> _Dialect:
    """Find the bootloader (waiting up to ``wait`` s) and return its dialect client."""
    if wait:
        target = wait_for_device(backend, vid=vid, pid=pid, serial=serial, dialect=dialect, timeout=wait)
    else:
        items = find_devices(backend, vid=vid, pid=pid, serial=serial, dialect=dialect)
        if not items:
            sel = f" matching {vid:04x}:{pid:04x}" if vid is not None and pid is not None else ""
            raise HidError(f"no HID bootloader found{sel}")
        target = items[0]
    dialect = dialect or target.dialect
    if dialect not in DIALECT_CLASSES:
        raise HidError(f"unknown HID dialect {dialect!r} for {target.vid:04x}:{target.pid:04x}: give --dialect")
    if isinstance(chip, str):
        chip = chip_named(chip)
    client = HidClient(target)
    if dialect == "halfkay":
        d = HalfKayHost(client, chip, progress, halfkay_mcu_for(mcu) if mcu else None)
    else:
        if mcu and chip is None:
            chip = chip_named(mcu)
        d = DIALECT_CLASSES[dialect](client, chip, progress)
    d.backend = backend
    return d


# --------------------------------------------------------------------------
# after the boot command: what the bus shows (issue 16 item 3)

def default_leave_wait(backend) -> float:
    """How long to watch for the device after it was told to leave."""
    if in_process(backend):
        return LEAVE_WAIT_IN_PROCESS
    return LEAVE_WAIT


def _why_stayed(d: _Dialect, image: Image | None, again: Arrival) -> str:
    """Why a bootloader told to leave came back: what the host knows of the flash."""
    if image is not None and d.first_word(image) == b"\xff\xff":
        # nothing at the reset vector: LUFA's bootloaders and Caterina test pgm_read_word(0)
        # != 0xFFFF before starting the application, as bootkit's entry policy does (is_blank)
        return ERASED_FIRST_WORD
    return f"it came back as its bootloader ({again.vid:04X}:{again.pid:04X})"


def observe_leave(d: _Dialect, before: dict | None, image: Image | None = None,
                  timeout: float | None = None, *, sleep=time.sleep, clock=time.monotonic) -> str:
    """After the leave request, watch the bus for ``timeout`` s and say what happened
    (usbhost.LeaveWatch: only what was seen is reported).

    ``before``: the bus while the bootloader was on it (usbhost.bus_snapshot).  The bootloader
    gone and a device that was not there before appearing: "application started (came back
    as VVVV:PPPP)", unless it has the bootloader's ids, then the bootloader kept control
    (HidError "the device stayed in its bootloader: <why>").  Gone and nothing new within
    ``timeout`` s: "left the bootloader (not seen again within N s)".  Still there after
    ``timeout`` s: HidError.  The step is appended to ``d.steps`` and returned.
    """
    timeout = default_leave_wait(d.backend) if timeout is None else timeout
    look = UsbLook(d.backend, d.client.dev, before)
    outcome = LeaveWatch(look, wait=timeout, sleep=sleep, clock=clock).run()
    if outcome.seen == CAME_BACK and outcome.arrival is not None:
        raise HidError(f"{STAYED}: {_why_stayed(d, image, outcome.arrival)}")
    if outcome.stayed:
        raise HidError(f"{STAYED}: it was still there {timeout:g} s after the {d.leave_command}")
    d.steps.append(outcome.step)
    return outcome.step


def flash(image: Image, backend=None, *, vid=None, pid=None, serial=None, dialect=None, chip=None, mcu=None,
          memory: str = "flash", verify: bool = True, leave: bool = True, progress=None,
          wait: float | None = None, force: bool = False, leave_wait: float | None = None) -> FlashResult:
    """Validate, (erase), write, verify where the dialect can read, boot, and watch what the device does.

    Nothing is erased unless the image fits and :func:`bootkit.classes.common.preflight` accepts
    it for the target chip (--chip/--emulate, --mcu for HalfKay, GET_INFO for native).  ``force``
    lifts only what preflight lets it (a UF2 of another family), never the bootloader region or an
    AVR image without the application's first word.  ``leave_wait``: how long to watch the bus
    after the boot command (default 5 s, 0.5 s on the in-process bus).
    """
    t0 = time.perf_counter()
    d = open_dialect(backend, vid=vid, pid=pid, serial=serial, dialect=dialect, chip=chip, mcu=mcu,
                     progress=progress, wait=wait)
    d.validate(image, memory)
    preflight(image, d.target_chip(), force=force, memory=memory)
    if d.erases_first:
        assert isinstance(d, (NativeHost, XusbHost))
        d.erase()
    n = d.write(image)
    verified = False
    if verify and d.can_verify:
        d.verify(image)  # HidError on the first difference: never "verified" unless it compared equal
        verified = True
        d.steps.append("verified")
    elif verify:
        d.steps.append(f"not verified: {d.name} has no read command")
    seconds = time.perf_counter() - t0
    if leave:
        before = bus_snapshot(backend)
        d.leave()
        seconds = time.perf_counter() - t0  # the rate printed is the flash's, not the watch's
        observe_leave(d, before, image, leave_wait)
    return FlashResult(d.name, n, seconds, verified, d.steps)


def read(backend=None, *, vid=None, pid=None, serial=None, dialect=None, chip=None, mcu=None,
         memory: str = "flash", start: int | None = None, length: int | None = None, progress=None,
         wait: float | None = None) -> Image:
    """Read the application region (native dialect only: HalfKay and LUFA cannot read)."""
    if memory != "flash":
        raise ImageRejected("HID bootloaders carry flash only")
    d = open_dialect(backend, vid=vid, pid=pid, serial=serial, dialect=dialect, chip=chip, mcu=mcu,
                     progress=progress, wait=wait)
    return d.read(start, length)


def boot(backend=None, *, vid=None, pid=None, serial=None, dialect=None, chip=None, mcu=None,
         wait: float | None = None, leave_wait: float | None = None) -> str:
    """Reboot into the application without programming (teensy_loader_cli -b style); returns
    what was observed (see :func:`observe_leave`), raises HidError when it stayed."""
    d = open_dialect(backend, vid=vid, pid=pid, serial=serial, dialect=dialect, chip=chip, mcu=mcu,
                     progress=False, wait=wait)
    before = bus_snapshot(backend)
    d.leave()
    return observe_leave(d, before, None, leave_wait)


def crc(backend=None, *, vid=None, pid=None, serial=None, region: str = "application") -> tuple[int, int, int]:
    """(crc32, start, size) of the application or the bootloader (native dialect)."""
    d = open_dialect(backend, vid=vid, pid=pid, serial=serial, dialect="native", progress=False)
    assert isinstance(d, NativeHost)  # dialect="native" opens a NativeHost
    return d.crc(CRC_BOOTLOADER if region == "bootloader" else CRC_APPLICATION)
