"""The blink host side: flash and read a blink device over pyusb (real hardware through
libusb, or bootkit's in-process bus and USB/IP client: the same code).

The image is checked against the device's own info record (and the chip, when
one is given) before anything is erased; every sector an image touches is
erased (the device says where each ends), programmed, read back and compared;
then LEAVE, and the bus is watched to report what was seen, never assumed.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import usb.core

from bootkit.classes.common import FlashResult, HostError, ImageRejected, check_ranges, preflight
from bootkit.classes.usbhost import (
    STAYED,
    LeaveWatch,
    UsbLook,
    bus_snapshot,
    gone,
    in_process,
    matching_devices,
    stalled,
    take_interfaces,
)
from bootkit.formats import Image
from bootkit.memory import Chip
from bootkit.progress import phase, progress_bar

from . import protocol as P

LEAVE_WAIT = 5.0  # s a real device gets to go and come back as its application
LEAVE_WAIT_IN_PROCESS = 0.5  # the in-process bus re-enumerates at once
TIMEOUT_MS = 5000  # one control transfer (an erase of a 128 KiB STM32 sector takes up to 2 s)


def find_interface(dev, cfg, subclass: int = P.INTERFACE_SUBCLASS) -> int | None:
    """The bInterfaceNumber of the blink interface (bootloader or application) on ``dev``."""
    for intf in cfg:
        if (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol) == (
                P.INTERFACE_CLASS, subclass, P.INTERFACE_PROTOCOL):
            return int(intf.bInterfaceNumber)
    return None


def is_bootloader(dev) -> bool:
    try:
        return find_interface(dev, dev[0]) is not None
    except (usb.core.USBError, IndexError):
        return False


@dataclass
class BlinkClient:
    """One blink bootloader found on a bus, its interface claimed and its info record read."""

    backend: Any  # a pyusb backend
    dev: Any  # a usb.core.Device (pyusb has no type stubs)
    interface: int
    info: P.Info = field(init=False)
    detached: bool = False  # it was found as its application and sent DETACH first

    def __post_init__(self) -> None:
        take_interfaces(self.dev, self.interface)
        try:
            self.info = P.Info.unpack(bytes(self._in(P.GET_INFO, P.Info.SIZE, "GET_INFO")))
        except ValueError as exc:
            raise HostError(f"GET_INFO: {exc}") from None

    # -- requests
    def _in(self, code: int, length: int, what: str, address: int | None = None) -> bytes:
        try:
            return bytes(self.dev.ctrl_transfer(P.REQUEST_IN, code, 0, self.interface, length, timeout=TIMEOUT_MS))
        except usb.core.USBError as exc:
            raise self._failed(exc, what, address) from None

    def _out(self, code: int, data: bytes, what: str, address: int | None = None) -> None:
        try:
            self.dev.ctrl_transfer(P.REQUEST_OUT, code, 0, self.interface, data, timeout=TIMEOUT_MS)
        except usb.core.USBError as exc:
            raise self._failed(exc, what, address) from None

    def _failed(self, exc: usb.core.USBError, what: str, address: int | None) -> HostError:
        where = f" at 0x{address:X}" if address is not None else ""
        if stalled(exc):  # the device refused: its status says why
            try:
                why = self.status().text
            except HostError:
                why = "refused (no status)"
            return HostError(f"{what}{where}: {why}")
        if gone(exc):
            return HostError(f"{what}{where}: the device went away ({exc})")
        return HostError(f"{what}{where}: {exc}")

    def status(self) -> P.Status:
        try:
            raw = self.dev.ctrl_transfer(P.REQUEST_IN, P.GET_STATUS, 0, self.interface, P.Status.SIZE,
                                         timeout=TIMEOUT_MS)
            return P.Status.unpack(bytes(raw))
        except (usb.core.USBError, ValueError) as exc:
            raise HostError(f"GET_STATUS: {exc}") from None

    def set_address(self, address: int) -> None:
        self._out(P.SET_ADDRESS, struct.pack("<I", address), "SET_ADDRESS", address)

    def erase(self, address: int) -> int:
        """Erase the sector holding ``address``; returns where that sector ends."""
        self.set_address(address)
        self._out(P.ERASE, b"", "ERASE", address)
        return self.status().pointer

    def write(self, address: int, data: bytes, advance: Callable[[int], object]) -> None:
        self.set_address(address)
        step = self.info.max_transfer
        for off in range(0, len(data), step):
            chunk = data[off:off + step]
            self._out(P.WRITE, chunk, "WRITE", address + off)
            advance(len(chunk))

    def read(self, address: int, length: int, advance: Callable[[int], object]) -> bytes:
        self.set_address(address)
        out = bytearray()
        while len(out) < length:
            n = min(self.info.max_transfer, length - len(out))
            chunk = self._in(P.READ, n, "READ", address + len(out))
            if len(chunk) != n:
                raise HostError(f"READ at 0x{address + len(out):X}: {len(chunk)} bytes instead of {n}")
            out += chunk
            advance(n)
        return bytes(out)

    def leave(self) -> None:
        try:
            self.dev.ctrl_transfer(P.REQUEST_OUT, P.LEAVE, 0, self.interface, b"", timeout=TIMEOUT_MS)
        except usb.core.USBError as exc:
            # a device that resets while it answers the last request has done what it was asked
            if not gone(exc):
                raise self._failed(exc, "LEAVE", None) from None

    # -- what the device takes
    def check(self, image: Image, chip: Chip | None, memory: str, force: bool) -> None:
        """Refuse, before anything is erased, an image the device or the chip would not take."""
        if memory != "flash":
            raise ImageRejected(f"a blink device has flash only, not {memory}")
        info = self.info
        flash_end = info.flash_start + info.flash_size
        if chip is not None and (chip.flash_start, chip.flash_size) != (info.flash_start, info.flash_size):
            raise ImageRejected(f"the device reports flash 0x{info.flash_start:X}+{info.flash_size}, "
                                f"not {chip.name}'s 0x{chip.flash_start:X}+{chip.flash_size}")
        boot = [(s, e) for s, e in ((info.flash_start, info.app_start), (info.app_end, flash_end)) if s < e]
        check_ranges(image, [(info.app_start, info.app_end)], boot, chip.name if chip else "the device")
        preflight(image, chip, force=force, memory=memory)


def _find(backend, subclass: int, vid: int | None, pid: int | None, serial: str | None) -> tuple[Any, int] | None:
    for dev, cfg in matching_devices(backend, vid=vid, pid=pid, serial=serial):
        number = find_interface(dev, cfg, subclass)
        if number is not None:
            return dev, number
    return None


def open_device(backend=None, *, vid: int | None = None, pid: int | None = None, serial: str | None = None,
                wait: float | None = None) -> BlinkClient:
    """The first blink bootloader matching the selection; with ``wait``, poll for it that long.

    A blink application (its run-time interface) found instead is sent DETACH and given
    LEAVE_WAIT s to come back as its bootloader, as dfu-util detaches a DFU run-time device;
    the client's ``detached`` says so."""
    deadline = time.monotonic() + (wait or 0.0)
    detached = False
    detach_wait = 0.0
    while True:
        found = _find(backend, P.INTERFACE_SUBCLASS, vid, pid, serial)
        if found is not None:
            client = BlinkClient(backend, *found)
            client.detached = detached
            return client
        app = None if detached else _find(backend, P.APP_SUBCLASS, vid, pid, serial)
        if app is not None:
            dev, number = app
            take_interfaces(dev, number)
            try:
                dev.ctrl_transfer(P.REQUEST_OUT, P.DETACH, 0, number, b"", timeout=TIMEOUT_MS)
            except usb.core.USBError as exc:
                if not gone(exc):  # a device that resets as it answers did what it was asked
                    raise HostError(f"DETACH: {exc}") from None
            detached = True
            detach_wait = LEAVE_WAIT_IN_PROCESS if in_process(backend) else LEAVE_WAIT
            deadline = max(deadline, time.monotonic() + detach_wait)
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    which = f" matching {vid:04x}:{pid:04x}" if vid is not None and pid is not None else ""
    which += f" with serial {serial!r}" if serial else ""
    if detached:
        # a board enters its bootloader on its application's request only when its entry policy
        # honours that request (bootkit.memory.entry: the "magic" trigger)
        raise HostError(f"the blink application{which} was sent DETACH but no blink bootloader appeared "
                        f"within {detach_wait:g} s")
    raise HostError(f"no blink device found{which}")


def _sectors(client: BlinkClient, image: Image) -> int:
    """Erase every sector the image touches, once; returns how many."""
    count = 0
    erased_to = -1
    for start, data in image.segments:
        address = max(start, erased_to)
        while address < start + len(data):
            end = client.erase(address)
            if end <= address:
                raise HostError(f"ERASE at 0x{address:X}: the device's pointer did not move past it (0x{end:X})")
            count += 1
            erased_to = address = end
    return count


def flash(image: Image, backend=None, *, vid: int | None = None, pid: int | None = None,
          serial: str | None = None, chip: Chip | None = None, memory: str = "flash", verify: bool = True,
          leave: bool = True, progress: bool | None = None, wait: float | None = None, force: bool = False,
          leave_wait: float | None = None) -> FlashResult:
    """Check, erase, program, verify by reading back, leave and watch; the steps say what was seen."""
    t0 = time.perf_counter()
    client = open_device(backend, vid=vid, pid=pid, serial=serial, wait=wait)
    client.check(image, chip, memory, force)
    steps: list[str] = ["application detached into the bootloader"] if client.detached else []
    phase("erase")  # an interrupt from here on: the flash is partly written (bootkit.progress)
    sectors = _sectors(client, image)
    steps.append(f"erased {sectors} sector{'s' if sectors != 1 else ''}")
    with progress_bar("program", image.size, progress) as advance:
        for start, data in image.segments:
            client.write(start, data, advance)
    steps.append(f"programmed {image.size} bytes of flash")
    verified = False
    if verify:
        with progress_bar("verify", image.size, progress) as advance:
            for start, data in image.segments:
                back = client.read(start, len(data), advance)
                if back != data:
                    at = next(i for i, (a, b) in enumerate(zip(back, data)) if a != b)
                    raise HostError(f"verify failed at 0x{start + at:X}: the device has 0x{back[at]:02X}, "
                                    f"the image 0x{data[at]:02X}")
        verified = True
        steps.append("verified")
    seconds = time.perf_counter() - t0
    if leave:
        before = bus_snapshot(backend)
        client.leave()
        seconds = time.perf_counter() - t0  # the rate printed is the flash's, not the watch's
        if leave_wait is None:
            leave_wait = LEAVE_WAIT_IN_PROCESS if in_process(backend) else LEAVE_WAIT
        outcome = LeaveWatch(UsbLook(backend, client.dev, before, bootloader=is_bootloader),
                             wait=leave_wait).run()
        if outcome.stayed:
            where = "it came back as its bootloader" if outcome.arrival else \
                f"it was still there {outcome.seconds:g} s after LEAVE"
            raise HostError(f"{STAYED}: {where}")
        steps.append(outcome.step)
    return FlashResult(P.DIALECT, image.size, seconds, verified, steps)


def read(backend=None, *, vid: int | None = None, pid: int | None = None, serial: str | None = None,
         chip: Chip | None = None, memory: str = "flash", start: int | None = None, length: int | None = None,
         progress: bool | None = None, wait: float | None = None) -> Image:
    """``length`` bytes from ``start`` (default: the whole application region)."""
    if memory != "flash":
        raise ImageRejected(f"a blink device has flash only, not {memory}")
    client = open_device(backend, vid=vid, pid=pid, serial=serial, wait=wait)
    info = client.info
    start = info.app_start if start is None else start
    length = info.app_end - start if length is None else length
    flash_end = info.flash_start + info.flash_size
    if not (info.flash_start <= start and length >= 0 and start + length <= flash_end):
        raise ValueError(f"read 0x{start:X}+{length} is outside the device's flash "
                         f"0x{info.flash_start:X}-0x{flash_end - 1:X}")
    with progress_bar("read", length, progress) as advance:
        data = client.read(start, length, advance)
    return Image([(start, data)])
