"""The HID personality: PJRC HalfKay, LUFA's HID bootloader, bootkit's
own raw-HID dialect and xusb-boot (the xmega raw-HID bootloader); device
and host side.

Every OS binds its own HID driver to these devices, so none needs a driver
installed (see docs/personalities/hid.md for what each dialect can do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# The protocol (its chip tables import the memory core) and the device side are
# imported when needed, so listing the personalities or a host client of another
# one (bootkit flash --via X) does not pay for them at start-up.
if TYPE_CHECKING:
    from ...memory import Chip
    from ...usb.device import Device

NAME = "hid"
DIALECTS = ("halfkay", "lufa", "native", "xusb")
# bootkit demo: (dialect, sample image in examples/firmware)
DEMO = (("halfkay", "sample-atmega32u4"), ("lufa", "sample-atmega32u4"), ("native", "sample-atmega32u4"))


def default_ids(dialect: str) -> tuple[int, int]:
    """The (idVendor, idProduct) a dialect's bootloader enumerates with."""
    from .protocol import (BOOTKIT_VID, HALFKAY_PID, LUFA_HID_PID, LUFA_VID, NATIVE_HID_PID, TEENSY_VID,
                           XUSB_PID, XUSB_VID)

    return {"halfkay": (TEENSY_VID, HALFKAY_PID), "lufa": (LUFA_VID, LUFA_HID_PID),
            "native": (BOOTKIT_VID, NATIVE_HID_PID), "xusb": (XUSB_VID, XUSB_PID)}[dialect]


def default_dialect(chip: Chip) -> str:
    """Teensy parts -> HalfKay; xmega -> xusb-boot; other USB AVRs -> LUFA's HID bootloader; the rest -> native."""
    from .protocol import HALFKAY_MCUS

    if chip.name.lower() in HALFKAY_MCUS:
        return "halfkay"
    if chip.family == "xmega":
        return "xusb"
    if chip.family == "avr" and chip.usb:
        return "lufa"
    return "native"


def chip_for(chip: Chip | str, dialect: str | None = None) -> Chip:
    """The chip with the bootloader region its dialect's bootloader occupies.

    HalfKay keeps the top 512 B (Teensy 2.0) or 1 KiB (Teensy++ 2.0) of an
    AVR, nothing on the ARM Teensys; LUFA and native keep the chip
    database's boot section.  Whoever builds the SimulatedFlash for a
    HalfKay device should build it from this chip.
    """
    from .protocol import chip_named, halfkay_chip, halfkay_mcu_for

    chip = chip_named(chip) if isinstance(chip, str) else chip
    dialect = dialect or default_dialect(chip)
    if dialect == "halfkay":
        return halfkay_chip(halfkay_mcu_for(chip))
    return chip


def bootloader_device(memory, chip: Chip, *, dialect: str | None = None, vid: int | None = None,
                      pid: int | None = None, serial: str | None = None, mcu: str | None = None,
                      interrupt_out: bool = False, manufacturer: str | None = None,
                      product: str | None = None, bcd_device: int | None = None,
                      prototype_ids: bool = False, watchdog: float | None = 2.0) -> Device:
    """The bootloader as it enumerates.  ``interrupt_out`` adds an OUT endpoint to LUFA's interface;
    ``prototype_ids`` gives xusb-boot the prototype's 6666:B007, ``watchdog`` its period (None: off)."""
    from ...usb.descriptors import DeviceInfo
    from ...usb.device import Device
    from .device import HalfKayEngine, HidEngine, HidFunction, LufaEngine, NativeEngine, XusbEngine
    from .protocol import XUSB_MANUFACTURER, XUSB_PRODUCT, XUSB_PROTOTYPE_PID, XUSB_PROTOTYPE_VID, halfkay_mcu_for

    dialect = dialect or default_dialect(chip)
    if dialect not in DIALECTS:
        raise ValueError(f"unknown HID dialect {dialect!r} (choose from {', '.join(DIALECTS)})")
    dvid, dpid = default_ids(dialect)
    engine: HidEngine
    if dialect == "halfkay":
        engine = HalfKayEngine(memory, chip, halfkay_mcu_for(mcu or chip))
        # HalfKay has no strings; bcdDevice as a Teensy 2.0's
        info = DeviceInfo(vid if vid is not None else dvid, pid if pid is not None else dpid,
                          bcd_device if bcd_device is not None else 0x0100,
                          manufacturer=manufacturer, product=product, serial=serial)
        name = None
    elif dialect == "lufa":
        engine = LufaEngine(memory, chip, interrupt_out=interrupt_out)
        # LUFA Descriptors.c: USB 1.1, 8-byte control endpoint, release 0.01, no strings
        info = DeviceInfo(vid if vid is not None else dvid, pid if pid is not None else dpid,
                          bcd_device if bcd_device is not None else 0x0001, manufacturer=manufacturer,
                          product=product, serial=serial, bcdUSB=0x0110, bMaxPacketSize0=8)
        name = None
    elif dialect == "xusb":
        if prototype_ids:
            dvid, dpid = XUSB_PROTOTYPE_VID, XUSB_PROTOTYPE_PID
        engine = XusbEngine(memory, chip, mcu=mcu, watchdog=watchdog)
        # descriptors.c: USB 1.1, 64-byte control endpoint, bcdDevice 0x0000, 500 mA, and a serial
        # made of the production signature row's lot, wafer and position ("LLLLL-WW-XXXXYYYY")
        info = DeviceInfo(vid if vid is not None else dvid, pid if pid is not None else dpid,
                          bcd_device if bcd_device is not None else 0x0000,
                          manufacturer=manufacturer or XUSB_MANUFACTURER, product=product or XUSB_PRODUCT,
                          serial=serial or "BKEMU-01-00070011", bcdUSB=0x0110, bMaxPower=250)
        name = None
    else:
        engine = NativeEngine(memory, chip)
        info = DeviceInfo(vid if vid is not None else dvid, pid if pid is not None else dpid,
                          bcd_device if bcd_device is not None else 0x0100,
                          manufacturer=manufacturer or "bootkit",
                          product=product or f"{chip.name} HID bootloader", serial=serial)
        name = "bootkit raw HID"
    return Device(info, [HidFunction(engine, name)])


__all__ = ["NAME", "DIALECTS", "DEMO", "default_dialect", "chip_for", "bootloader_device"]
