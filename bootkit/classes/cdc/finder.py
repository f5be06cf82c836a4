"""Finding CDC bootloaders: serial ports by their USB ids (pyserial's list_ports, as the
Arduino IDE and avrdude's users pick a port), and, on a bus with no kernel driver in
between (bootkit's in-process bus, its USB/IP client), CDC-ACM interfaces of the same ids.

A port whose ids are not in :data:`PORT_IDS` is left out: a USB-serial adapter could be
anything, and an AVR109 or STK500 probe sent to a modem is not a harmless guess.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ...contracts import Found
from ..finding import port_found, real_usb, serial_ports, usb_found
from . import BRIDGE_IDS
from .protocol import ARDUINO_VID, IDS

NAME = "cdc"
GENUINO_VID = 0x2A03  # arduino.org's boards carry the same pids

# (VID, PID) -> (dialect, mode).  "bootloader": the port IS the bootloader;
# "application": a sketch's port, which the 1200-baud touch turns into the bootloader's
# (Arduino's boards.txt use_1200bps_touch); "bridge": the board's USB-serial chip, the same
# in both modes, whose DTR auto-reset starts the bootloader.
PORT_IDS: dict[tuple[int, int], tuple[str, str]] = {
    IDS["lufa"][0]: ("lufa", "bootloader"),  # LUFA Bootloaders/CDC/Descriptors.c
    IDS["caterina"][0]: ("caterina", "bootloader"),  # boards.txt leonardo.pid.0 0x0036
    IDS["caterina"][1]: ("caterina", "application"),  # leonardo.build.pid 0x8036
    (ARDUINO_VID, 0x0037): ("caterina", "bootloader"),  # boards.txt micro.pid.0
    (ARDUINO_VID, 0x8037): ("caterina", "application"),  # micro.build.pid
    BRIDGE_IDS["optiboot"]: ("optiboot", "bridge"),
    # boards.txt uno.vid/pid.0-3 (and ravedude's boards.toml): 2341:0043, 2341:0001, 2A03:0043, 2341:0243
    (ARDUINO_VID, 0x0001): ("optiboot", "bridge"),
    (GENUINO_VID, 0x0043): ("optiboot", "bridge"),
    (ARDUINO_VID, 0x0243): ("optiboot", "bridge"),
    BRIDGE_IDS["wiring"]: ("wiring", "bridge"),
    # boards.txt mega.vid/pid.0-5: 2341:0010, 2341:0042, 2A03:0010, 2A03:0042, 2341:0210, 2341:0242
    (ARDUINO_VID, 0x0010): ("wiring", "bridge"),
    (GENUINO_VID, 0x0010): ("wiring", "bridge"),
    (GENUINO_VID, 0x0042): ("wiring", "bridge"),
    (ARDUINO_VID, 0x0210): ("wiring", "bridge"),
    (ARDUINO_VID, 0x0242): ("wiring", "bridge"),
}

# CDC 1.2 table 4: class 0x02 Communications, subclass 0x02 Abstract Control Model
CDC_CLASS, ACM_SUBCLASS = 0x02, 0x02


def find(backend: Any = None, *, local: bool = True,
         comports: Callable[[], Iterable[Any]] | None = None) -> list[Found]:
    """CDC bootloaders: on ``backend``'s bus (not on real USB, where they are serial
    ports), then this machine's serial ports when ``local``."""
    found: list[Found] = []
    if backend is not None and not real_usb(backend):
        found += on_bus(backend)
    if local:
        found += on_ports(comports)
    return found


def on_ports(comports: Callable[[], Iterable[Any]] | None = None) -> list[Found]:
    out = []
    for port in serial_ports(comports):
        known = PORT_IDS.get((port.vid, port.pid)) if port.vid is not None and port.pid is not None else None
        if known is not None:
            out.append(port_found(NAME, known[0], port, mode=known[1]))
    return out


def on_bus(backend: Any) -> list[Found]:
    from ..usbhost import device_serial, matching_devices

    out = []
    for dev, cfg in matching_devices(backend):
        known = PORT_IDS.get((dev.idVendor, dev.idProduct))
        if known is None:
            continue
        acm = [i for i in cfg if (i.bInterfaceClass, i.bInterfaceSubClass) == (CDC_CLASS, ACM_SUBCLASS)]
        if acm:
            out.append(usb_found(NAME, known[0], dev, backend, serial=device_serial(dev), mode=known[1],
                                 interface=acm[0].bInterfaceNumber))
    return out
