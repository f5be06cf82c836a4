"""DFU host side: find, detach, erase, download, upload, verify and leave.

Works through pyusb, so the same code drives real hardware (libusb) and
the emulator (the virtual backend).  Behaviour follows dfu-util (DFU 1.1,
DfuSe) and dfu-programmer (FLIP): GETSTATUS polling honours bwPollTimeout;
a device that resets during the final step counts as success.

This module is the entry (:func:`flash`, :func:`read`, :func:`open_dialect`);
the DFU client is in ``client``, its pipelined download in ``download``, the
device finder in ``finder``, the three dialects in ``dialects``.
"""

from __future__ import annotations

import time

import usb.core

from ...formats.image import Image
from ...memory.chips import EEPROM_BASE, get_chip
from ...progress import phase
from ..common import FlashResult, ImageRejected, app_first_address, preflight
from ..usbhost import CAME_BACK, STAYED, LeaveWatch, UsbLook, bus_snapshot
from .client import DfuClient, DfuError
from .dialects import DIALECT_CLASSES, Dfu11, DfuSe, Dialect, Flip
from .finder import detach_to_dfu, find_interfaces
from .protocol import (
    DFU_CLASS,
    DFU_SUBCLASS,
    PROTOCOL_RUNTIME,
)

LEAVE_WAIT = 5.0  # seconds to wait for what enumerates after leaving


def open_dialect(backend=None, *, vid=None, pid=None, serial=None, dialect=None, alt=None, chip=None,
                 progress=None, detach_timeout: float = 5.0, transfer_size: int | None = None):
    """Find the device (detaching a run-time one first) and return a dialect client."""
    items = find_interfaces(backend, vid=vid, pid=pid, serial=serial)
    if not items:
        sel = " ".join(x for x in (f"{vid:04x}:{pid:04x}" if vid is not None and pid is not None else "",
                                  f"serial {serial}" if serial else "") if x)
        raise DfuError(f"no DFU device found{(' matching ' + sel) if sel else ''}")
    dfu_mode = [i for i in items if not i.runtime]
    runtime_ids = None
    if dfu_mode:
        item = dfu_mode[0]
    else:
        runtime_ids = (items[0].vid, items[0].pid)
        item = detach_to_dfu(items[0], backend, detach_timeout)
    dialect = dialect or item.guess_dialect()
    if dialect not in DIALECT_CLASSES:
        raise DfuError(f"unknown DFU dialect {dialect!r}")
    client = DfuClient(item, alt=alt, transfer_size=transfer_size)
    if isinstance(chip, str):
        chip = get_chip(chip)
    d = DIALECT_CLASSES[dialect](client, chip, progress)
    d.backend = backend
    d.runtime_ids = runtime_ids  # the application's ids when it was detached here (dfu-util accepts either)
    return d


def check_suffix_ids(image: Image, d: Dialect, force: bool = False) -> None:
    """Refuse a file whose DFU suffix names another device, as dfu-util does ("Error: File ID
    %04x:%04x does not match device"; 0xFFFF matches any, and either the run-time or the
    DFU-mode ids will do: dfu-util main.c).  ``force`` flashes it anyway."""
    origin = getattr(image, "origin", None)
    ids = getattr(origin, "dfu_ids", None)
    if ids is None or force:
        return
    fv, fp = ids
    device = [(d.client.target.vid, d.client.target.pid)]
    if d.runtime_ids is not None:
        device.append(d.runtime_ids)
    if any(fv in (0xFFFF, v) and fp in (0xFFFF, p) for v, p in device):
        return
    names = " or ".join(f"{v:04x}:{p:04x}" for v, p in device)
    raise ImageRejected(f"DFU suffix ID {fv:04x}:{fp:04x} does not match the device ({names}); "
                        f"--force flashes it anyway")


def _in_dfu_mode(dev) -> bool:
    try:
        return any(intf.bInterfaceClass == DFU_CLASS and intf.bInterfaceSubClass == DFU_SUBCLASS
                   and intf.bInterfaceProtocol != PROTOCOL_RUNTIME for cfg in dev for intf in cfg)
    except (usb.core.USBError, ValueError):
        return False


def observe_leave(d: Dialect, before: dict | None, image: Image, timeout: float = LEAVE_WAIT,
                  memory: str = "flash") -> str:
    """After the leave request: watch the bus and say what happened (issue 16 item 3).

    ``before`` is what was on the bus while the bootloader was there.  The bootloader
    going and a device that was not there before appearing is the application
    ("application started (came back as VVVV:PPPP)"), unless that device is in DFU
    mode with the bootloader's ids: then the bootloader kept control (HostError).
    Nothing new within ``timeout`` s: "left the bootloader (not seen again ...)".
    The bootloader still there after ``timeout`` s: it did not leave (HostError).
    """
    out = LeaveWatch(UsbLook(d.backend, d.client.dev, before, bootloader=_in_dfu_mode), wait=timeout).run()
    if out.seen == CAME_BACK and out.arrival is not None:
        raise DfuError(f"{STAYED}: {_why_bootloader(d, image if memory == 'flash' else None, out.arrival.device)}")
    if out.stayed:
        raise DfuError(f"{STAYED}: it is still there {timeout:g} s after the leave request")
    d.steps.append(out.step)
    return out.step


def _why_bootloader(d: Dialect, image: Image | None, dev) -> str:
    """Why a bootloader that was told to leave came back: what the host knows of it."""
    if d.chip is not None and image is not None:
        first = app_first_address(d.chip)
        word = image.crop(first, first + 2)
        if word.size == 2 and word.tobytes(first, first + 2) == b"\xff\xff":
            # LUFA and Caterina start the application only when pgm_read_word(0) != 0xFFFF
            return "first word of flash is erased: the bootloader kept control"
    return f"it came back in DFU mode as {dev.idVendor:04X}:{dev.idProduct:04X}"


def flash(image: Image, backend=None, *, vid=None, pid=None, serial=None, dialect=None, alt=None, chip=None,
          memory: str = "flash", verify: bool = True, leave: bool = True, address: int | None = None,
          progress=None, transfer_size: int | None = None, force: bool = False,
          leave_timeout: float = LEAVE_WAIT) -> FlashResult:
    """Validate, erase, download, verify, leave, and watch what the device does.

    Nothing is erased unless the image fits, is for this device (DFU suffix ids,
    :func:`bootkit.classes.common.preflight`) and the chip is known where needed.
    ``force`` flashes a file made for another device (suffix ids, UF2 family);
    it never lifts the bootloader region or AVR's first-word check.
    """
    t0 = time.perf_counter()
    d = open_dialect(backend, vid=vid, pid=pid, serial=serial, dialect=dialect, alt=alt, chip=chip,
                     progress=progress, transfer_size=transfer_size)
    if memory == "eeprom" and isinstance(d, Flip):
        image = image.shifted(-EEPROM_BASE) if image.start >= EEPROM_BASE else image
    d.validate(image, memory)
    check_suffix_ids(image, d, force)
    preflight(image, d.chip, force=force, memory=memory)
    before = bus_snapshot(backend)
    if isinstance(d, (DfuSe, Flip)) and memory == "flash":
        d.erase(image)
    n = d.write(image, memory)
    if isinstance(d, Dfu11):
        d.manifest()  # plain DFU: an upload is only possible after the download ended
    verified = False
    can_verify = d.client.functional.can_upload and not getattr(d, "gone", False) and (
        not isinstance(d, Dfu11) or d.client.functional.manifestation_tolerant)
    if verify and can_verify:
        if isinstance(d, Flip):
            d.verify(image, memory)
        else:
            phase("verify")  # the UPLOAD below is the verify bar (bootkit.progress)
            if isinstance(d, DfuSe):
                back = d.read(image.start, image.end - image.start)
            else:
                back = d.read(length=image.end - d.app_range(image)[0])
            for seg_start, data in image.segments:
                got = back.crop(seg_start, seg_start + len(data))
                if got.size != len(data):
                    # a short read-back: what was not read is not verified (no 0xFF filling in)
                    raise DfuError(f"verify failed in 0x{seg_start:X}-0x{seg_start + len(data) - 1:X}: "
                                   f"the device returned {got.size} of its {len(data)} bytes")
                if got.tobytes(seg_start, seg_start + len(data)) != data:
                    raise DfuError(f"verify failed in 0x{seg_start:X}-0x{seg_start + len(data) - 1:X}")
        verified = True
        d.steps.append("verified")
    if leave:
        if isinstance(d, DfuSe):
            d.leave(address)
        else:
            d.leave()
        observe_leave(d, before, image, leave_timeout, memory)
    return FlashResult(d.name, n, time.perf_counter() - t0, verified, d.steps)


def read(backend=None, *, vid=None, pid=None, serial=None, dialect=None, alt=None, chip=None,
         memory: str = "flash", start: int | None = None, length: int | None = None, progress=None,
         transfer_size: int | None = None) -> Image:
    d = open_dialect(backend, vid=vid, pid=pid, serial=serial, dialect=dialect, alt=alt, chip=chip,
                     progress=progress, transfer_size=transfer_size)
    return d.read(start, length, memory)
