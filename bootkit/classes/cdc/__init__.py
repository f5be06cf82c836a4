"""The CDC personality: a CDC-ACM virtual serial port speaking AVR109.

Dialects: ``lufa`` (LUFA's CDC bootloader, 03EB:204A, "LUFACDC") and
``caterina`` (Arduino's Leonardo bootloader, 2341:0036, "CATERIN", which
leaves for the sketch after 8 s without host traffic).  The AVR109 engine
is a pure byte-stream state machine (:mod:`.avr109`): the same engine runs
behind the USB Function and on a pseudo-terminal for avrdude.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from .. import lazy_names

from .protocol import IDS, SOFTWARE_IDS

# The device side is imported when a device is built, so a host client
# (bootkit flash) does not pay for it at start-up.
if TYPE_CHECKING:
    from ...memory import Chip
    from ...usb.device import Device

NAME = "cdc"
DIALECTS = ("lufa", "caterina")
# bootkit demo: (dialect, sample image in examples/firmware)
DEMO = (("lufa", "sample-atmega32u4"),)

# Caterina's TIMEOUT_PERIOD (8000 ms)
CATERINA_TIMEOUT = 8.0

_STRINGS = {
    # LUFA Bootloaders/CDC/Descriptors.c; Caterina's Leonardo build (Makefile)
    "lufa": ("Dean Camera", "LUFA CDC", "Dean Camera", "LUFA USB-RS232 Adapter"),
    "caterina": ("Arduino LLC", "Arduino Leonardo", "Arduino LLC", "Arduino Leonardo"),
}


def default_dialect(chip: Chip) -> str:
    """LUFA for every AVR; Caterina is chosen explicitly (it is the Leonardo's)."""
    return "lufa"


def _check(dialect: str | None) -> str:
    dialect = dialect or "lufa"
    if dialect not in DIALECTS:
        raise ValueError(f"unknown CDC dialect {dialect!r} (choose from {', '.join(DIALECTS)})")
    return dialect


def default_ids(dialect: str, application: bool = False) -> tuple[int, int]:
    return IDS[dialect][1 if application else 0]


def bootloader_device(memory, chip: Chip, *, dialect: str | None = None, vid: int | None = None,
                      pid: int | None = None, serial: str | None = None, software_id: str | bytes | None = None,
                      timeout: float | None | Literal["default"] = "default", manufacturer: str | None = None,
                      product: str | None = None, bcd_device: int | None = None) -> Device:
    """The bootloader as it enumerates: one CDC-ACM function feeding an AVR109 engine.

    ``timeout`` (seconds without host traffic before leaving for a valid
    application): Caterina's 8 s by default for ``caterina``, never for ``lufa``.
    """
    from ...usb.descriptors import DeviceInfo
    from ...usb.device import Device
    from .avr109 import engine_for
    from .device import CdcBootloaderFunction

    dialect = _check(dialect or default_dialect(chip))
    leave_after = (CATERINA_TIMEOUT if dialect == "caterina" else None) if isinstance(timeout, str) else timeout
    engine = engine_for(dialect, memory, software_id=software_id)
    dvid, dpid = default_ids(dialect)
    man, prod, _, _ = _STRINGS[dialect]
    info = DeviceInfo(vid if vid is not None else dvid, pid if pid is not None else dpid,
                      bcd_device if bcd_device is not None else 0x0001, manufacturer=manufacturer or man, product=product or prod, serial=serial,
                      # LUFA's CDC bootloader declares the CDC class on the device (USB_CSCP_CDCClass)
                      bDeviceClass=0x02 if dialect == "lufa" else 0x00)
    return Device(info, [CdcBootloaderFunction(engine, timeout=leave_after)])


def application_device(memory, chip: Chip, *, dialect: str | None = None, vid: int | None = None,
                       pid: int | None = None, serial: str | None = None) -> Device:
    """The application as it enumerates: a serial port honouring the 1200-baud touch."""
    from ...usb.descriptors import DeviceInfo
    from ...usb.device import Device
    from .device import CdcApplicationFunction

    dialect = _check(dialect or default_dialect(chip))
    dvid, dpid = default_ids(dialect, application=True)
    _, _, man, prod = _STRINGS[dialect]
    info = DeviceInfo(vid if vid is not None else dvid, pid if pid is not None else dpid, 0x0100,
                      manufacturer=man, product=prod, serial=serial, bDeviceClass=0xEF, bDeviceSubClass=0x02,
                      bDeviceProtocol=0x01)
    return Device(info, [CdcApplicationFunction()])


def run_demo_row(dialect: str, chip: Chip, image) -> dict:
    """Flash ``image`` through the host client into an emulated board served on a pty."""
    from .host import run_demo_row as _run

    return _run(dialect, chip, image)


__getattr__ = lazy_names(__name__, {
    "Avr109Engine": ".avr109", "engine_for": ".avr109", "CdcAcmFunction": ".device",
    "CdcBootloaderFunction": ".device", "CdcApplicationFunction": ".device"})


__all__ = [
    "NAME", "DIALECTS", "DEMO", "default_dialect", "default_ids", "bootloader_device", "application_device",
    "run_demo_row", "Avr109Engine", "engine_for", "CdcAcmFunction", "CdcBootloaderFunction",
    "CdcApplicationFunction", "SOFTWARE_IDS",
]
