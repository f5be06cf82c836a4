"""Finding printer-class bootloaders: /dev/usb/lpN nodes (Linux usblp) by their IEEE 1284
device ID and USB ids, and, on a bus with no kernel driver in between (bootkit's
in-process bus, its USB/IP client), printer interfaces (class 07, subclass 01).

A printer is ours when it has the ids of a printer bootloader (LUFA's 03eb:206b) or
the device ID LUFA's bootloader answers with (Generic / Text Only, which Windows
installs a driver for).  A real printer is left out: sending it a firmware image
would print pages.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Callable

from ...contracts import Found, Link
from ..finding import real_usb, release, usb_found
from .protocol import (
    DEFAULT_DEVICE_ID,
    LPIOC_GET_DEVICE_ID,
    LUFA_PRINTER_PID,
    LUFA_VID,
    PRINTER_CLASS,
    PRINTER_SUBCLASS,
    USBLP_DEVICE_ID_SIZE,
    decode_device_id,
    parse_device_id,
)

NAME = "printer"
KNOWN_IDS = {(LUFA_VID, LUFA_PRINTER_PID): "lufa"}
GET_DEVICE_ID = 0  # USB printer class 1.1 section 4.2.1 (bmRequestType 0xA1)


def ours(ids: tuple[int, int] | None, device_id: str | None) -> str | None:
    """The dialect of a printer with these USB ids and 1284 device ID, None: not a bootloader."""
    if ids is not None and ids in KNOWN_IDS:
        return KNOWN_IDS[ids]
    if device_id is not None:
        got, default = parse_device_id(device_id), parse_device_id(DEFAULT_DEVICE_ID)
        if all(got.get(k) == default[k] for k in ("MFG", "MDL")):
            return "lufa"
    return None


def find(backend: Any = None, *, local: bool = True) -> list[Found]:
    found: list[Found] = []
    if backend is not None and not real_usb(backend):
        found += on_bus(backend)
    if local:
        found += device_nodes()
    return found


def on_bus(backend: Any) -> list[Found]:
    from ..usbhost import device_serial, matching_devices

    out = []
    for dev, cfg in matching_devices(backend):
        intf = next((i for i in cfg if (i.bInterfaceClass, i.bInterfaceSubClass) == (PRINTER_CLASS,
                                                                                     PRINTER_SUBCLASS)), None)
        if intf is None:
            continue
        try:
            device_id = _usb_device_id(dev, intf.bInterfaceNumber, intf.bAlternateSetting)
        finally:
            release(dev)
        dialect = ours((dev.idVendor, dev.idProduct), device_id)
        if dialect is not None:
            out.append(usb_found(NAME, dialect, dev, backend, serial=device_serial(dev),
                                 interface=intf.bInterfaceNumber, device_id=device_id))
    return out


def _usb_device_id(dev: Any, interface: int, alternate: int) -> str | None:
    import usb.core

    try:
        # the interface in wIndex's HIGH byte, the alternate setting in the low one (class 1.1 4.2.1)
        raw = dev.ctrl_transfer(0xA1, GET_DEVICE_ID, 0, (interface << 8) | alternate, USBLP_DEVICE_ID_SIZE - 1,
                                1000)
        return decode_device_id(bytes(raw))
    except (usb.core.USBError, ValueError):
        return None


def ioctl_device_id(path: str) -> str | None:
    """The 1284 device ID usblp read at probe time (LPIOC_GET_DEVICE_ID, drivers/usb/class/usblp.c);
    None when ``path`` is not a usblp node.  Opened read-only and non-blocking: nothing is sent."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = bytearray(USBLP_DEVICE_ID_SIZE)
        fcntl.ioctl(fd, LPIOC_GET_DEVICE_ID(len(buf)), buf, True)
        return decode_device_id(bytes(buf))
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL):
            return None
        raise
    finally:
        os.close(fd)


def sysfs_ids(path: str, sysfs: Path = Path("/sys")) -> tuple[int, int] | None:
    """The USB ids of the device behind /dev/usb/lpN: /sys/class/usbmisc/lpN/device is the
    printer interface, its parent the device with idVendor and idProduct."""
    try:
        dev = (sysfs / "class" / "usbmisc" / Path(path).name / "device").resolve(strict=True).parent
        return int((dev / "idVendor").read_text().strip(), 16), int((dev / "idProduct").read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def device_nodes(dev_dir: Path = Path("/dev/usb"), *, sysfs: Path = Path("/sys"),
                 read_id: Callable[[str], str | None] = ioctl_device_id) -> list[Found]:
    """/dev/usb/lp* that are printer bootloaders.  A node busy elsewhere (usblp allows one
    opener: EBUSY) or not ours to open (EACCES) is listed when its USB ids say it is ours."""
    out = []
    try:
        nodes = sorted((p for p in dev_dir.iterdir() if p.name.startswith("lp")),
                       key=lambda p: (len(p.name), p.name))
    except OSError:
        return []
    for node in nodes:
        path = str(node)
        ids = sysfs_ids(path, sysfs)
        note = None
        try:
            device_id = read_id(path)
        except OSError as exc:
            device_id, note = None, f"device ID unreadable: {exc.strerror or exc}"
        dialect = ours(ids, device_id)
        if dialect is None:
            continue
        details: dict[str, Any] = {"device_id": device_id} if device_id is not None else {}
        if note:
            details["note"] = note
        where = path + (f" ({ids[0]:04x}:{ids[1]:04x})" if ids else "")
        out.append(Found(NAME, dialect, Link(path=path), where, vid=ids[0] if ids else None,
                         pid=ids[1] if ids else None, details=details))
    return out
