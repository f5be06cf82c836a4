"""The printer personality: print an Intel HEX file to flash the device (LUFA's printer bootloader).

The device enumerates as a plain text printer (interface 07/01/02); any
host prints to it without a driver of ours (Windows "Generic / Text Only",
CUPS ``lp -o raw``, ``cat fw.hex > /dev/usb/lp0``).  See
docs/personalities/printer.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .protocol import DEFAULT_DEVICE_ID, LUFA_PRINTER_PID, LUFA_VID, PROTOCOL_BIDIRECTIONAL

# The device side is imported when a device is built, so a host client
# (bootkit flash) does not pay for it at start-up.
if TYPE_CHECKING:
    from ...memory import Chip
    from ...usb.device import Device

NAME = "printer"
DIALECTS = ("lufa",)
# bootkit demo: (dialect, sample image in examples/firmware)
DEMO = (("lufa", "sample-atmega32u4"),)


def default_dialect(chip: Chip) -> str:
    return "lufa"


def bootloader_device(memory, chip: Chip, *, dialect: str | None = None, device_id: str | None = None,
                      protocol: int = PROTOCOL_BIDIRECTIONAL, vid: int | None = None, pid: int | None = None,
                      serial: str | None = None, manufacturer: str | None = None, product: str | None = None,
                      bcd_device: int | None = None, job_timeout: float | None = 5.0, leave: bool = True,
                      leave_delay: float = 0.5, clock=None) -> Device:
    """The printer bootloader as it enumerates: LUFA's ids and strings by default.

    ``device_id`` is the IEEE 1284 string GET_DEVICE_ID returns (default
    ``MFG:Generic;MDL:Generic_/_Text_Only;CMD:1284.4;CLS:PRINTER;``, which
    Windows matches to its Generic / Text Only driver); ``protocol`` 2 is
    bidirectional (a host can read the status line), 1 unidirectional.
    ``job_timeout``: seconds without data after which an open job counts
    as cut off (None: never).
    """
    from ...usb.descriptors import DeviceInfo
    from ...usb.device import Device
    from .device import PrinterEngine, PrinterFunction

    dialect = dialect or default_dialect(chip)
    if dialect not in DIALECTS:
        raise ValueError(f"unknown printer dialect {dialect!r} (choose from {', '.join(DIALECTS)})")
    kw = {"clock": clock} if clock is not None else {}
    engine = PrinterEngine(memory, job_timeout=job_timeout, leave=leave, leave_delay=leave_delay, **kw)
    function = PrinterFunction(engine, device_id=device_id or DEFAULT_DEVICE_ID, protocol=protocol)
    info = DeviceInfo(vid if vid is not None else LUFA_VID, pid if pid is not None else LUFA_PRINTER_PID,
                      bcd_device if bcd_device is not None else 0x0001, manufacturer=manufacturer or "Dean Camera",
                      product=product or "LUFA Printer Bootloader", serial=serial, bcdUSB=0x0110)
    return Device(info, [function])
