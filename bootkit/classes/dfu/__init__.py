"""The DFU personality: DFU 1.1, ST DfuSe and Atmel FLIP; device and host side."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .protocol import (
    ATMEL_VID,
    BOOTKIT_DFU_PID,
    BOOTKIT_RUNTIME_PID,
    BOOTKIT_VID,
    CAN_DNLOAD,
    CAN_UPLOAD,
    DFU_VERSION_1_1,
    DFUSE_PID,
    DFUSE_VERSION,
    FLIP_PIDS,
    MANIFESTATION_TOLERANT,
    ST_VID,
    WILL_DETACH,
    FunctionalDescriptor,
)

# The device side is imported when a device is built, so a host client
# (bootkit flash) does not pay for it at start-up.
if TYPE_CHECKING:
    from ...memory import Chip
    from ...usb.device import Device

NAME = "dfu"
DIALECTS = ("dfu", "dfuse", "flip")
# bootkit demo: (dialect, sample image in examples/firmware)
DEMO = (("flip", "sample-atmega32u4"), ("dfuse", "sample-stm32f411"), ("dfu", "sample-stm32f103c8"))


def default_dialect(chip: Chip) -> str:
    """The dialect a chip's usual bootloader speaks: ST ROM -> DfuSe, LUFA AVR -> FLIP."""
    if chip.family == "stm32":
        return "dfuse"
    if chip.name in FLIP_PIDS:
        return "flip"
    return "dfu"


def default_ids(chip: Chip, dialect: str) -> tuple[int, int]:
    if dialect == "flip":
        return ATMEL_VID, FLIP_PIDS.get(chip.name, 0x2FF4)
    if dialect == "dfuse":
        return ST_VID, DFUSE_PID
    return BOOTKIT_VID, BOOTKIT_DFU_PID


def functional_for(dialect: str, transfer_size: int | None = None, attributes: int | None = None,
                   detach_timeout: int = 1000) -> FunctionalDescriptor:
    if dialect == "dfuse":
        # ST's ROM bootloader: CanDnload|CanUpload|WillDetach, not manifestation
        # tolerant, wTransferSize 2048 (AN3156 / UM0424)
        return FunctionalDescriptor(attributes if attributes is not None else CAN_DNLOAD | CAN_UPLOAD | WILL_DETACH,
                                    255, transfer_size or 2048, DFUSE_VERSION)
    if dialect == "flip":
        # LUFA's DFU bootloader descriptor: CanUpload|CanDnload, 0x0C00 bytes, DFU 1.1
        return FunctionalDescriptor(attributes if attributes is not None else CAN_DNLOAD | CAN_UPLOAD,
                                    0, transfer_size or 0x0C00, DFU_VERSION_1_1)
    return FunctionalDescriptor(
        attributes if attributes is not None else CAN_DNLOAD | CAN_UPLOAD | MANIFESTATION_TOLERANT,
        detach_timeout, transfer_size or 1024, DFU_VERSION_1_1)


def bootloader_device(memory, chip: Chip, *, dialect: str | None = None, vid: int | None = None,
                      pid: int | None = None, serial: str | None = None, transfer_size: int | None = None,
                      attributes: int | None = None, manufacturer: str | None = None,
                      product: str | None = None, bcd_device: int | None = None, secure: bool = False) -> Device:
    from ...usb.descriptors import DeviceInfo
    from ...usb.device import Device
    from .device import DfuFunction, dfuse_interface_names, engine_for

    dialect = dialect or default_dialect(chip)
    if dialect not in DIALECTS:
        raise ValueError(f"unknown DFU dialect {dialect!r} (choose from {', '.join(DIALECTS)})")
    functional = functional_for(dialect, transfer_size, attributes)
    dvid, dpid = default_ids(chip, dialect)
    kw: dict[str, Any] = {}
    if dialect == "dfuse":
        names, regions = dfuse_interface_names(memory)
        kw["regions"] = regions
        manufacturer = manufacturer or "STMicroelectronics"
        product = product or "STM32  BOOTLOADER"
    elif dialect == "flip":
        names = ["FLIP DFU"]
        kw["secure"] = secure
        manufacturer = manufacturer or "Atmel Corp."
        product = product or "LUFA DFU"
    else:
        names = [f"bootkit DFU {chip.name}"]
        manufacturer = manufacturer or "bootkit"
        product = product or f"{chip.name} DFU bootloader"
    engine = engine_for(dialect, memory, functional=functional, **kw)
    info = DeviceInfo(vid if vid is not None else dvid, pid if pid is not None else dpid,
                      bcd_device if bcd_device is not None else 0x0000,
                      manufacturer=manufacturer, product=product, serial=serial)
    return Device(info, [DfuFunction(engine, names)])


def application_device(memory, chip: Chip, *, vid: int | None = None, pid: int | None = None,
                       serial: str | None = None, will_detach: bool = False, detach_timeout: int = 1000) -> Device:
    """The application as it enumerates: a device with a DFU run-time interface."""
    from ...usb.descriptors import DeviceInfo
    from ...usb.device import Device
    from .device import DfuRuntimeFunction

    functional = FunctionalDescriptor(CAN_DNLOAD | CAN_UPLOAD | MANIFESTATION_TOLERANT
                                      | (WILL_DETACH if will_detach else 0), detach_timeout, 1024, DFU_VERSION_1_1)
    info = DeviceInfo(vid if vid is not None else BOOTKIT_VID, pid if pid is not None else BOOTKIT_RUNTIME_PID,
                      0x0100, manufacturer="bootkit", product=f"{chip.name} application", serial=serial)
    return Device(info, [DfuRuntimeFunction(functional)])
