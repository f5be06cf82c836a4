"""HID bootloader constants and codecs shared by the device and host halves.

Three dialects:

- HalfKay, PJRC's Teensy bootloader, as teensy_loader_cli speaks it
  (teensy_loader_cli.c: ``usb_control_msg(h, 0x21, 9, 0x0200, 0, buf, ...)``);
- LUFA's HID bootloader (Bootloaders/HID/BootloaderHID.c, Descriptors.c);
- bootkit's own raw-HID dialect, modelled on the xmega raw-HID bootloader:
  the native command set (classes/native.py) framed in 64-byte reports on
  interrupt endpoints, with read-back and CRCs.

HID class codes come from the Device Class Definition for HID 1.11
(sections 4, 6.2.1 and 7.2).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from enum import IntEnum

from ...memory import Chip, Timing, get_chip
from ..native import NativeInfo, Op, Refusal

# --------------------------------------------------------------------------
# HID 1.11
HID_CLASS = 0x03
HID_SUBCLASS_NONE = 0x00  # no boot interface (HID 1.11 section 4.2)
HID_PROTOCOL_NONE = 0x00
HID_DESCRIPTOR = 0x21  # class descriptor types (section 7.1)
REPORT_DESCRIPTOR = 0x22

# Class requests (section 7.2)
GET_REPORT = 0x01
GET_IDLE = 0x02
GET_PROTOCOL = 0x03
SET_REPORT = 0x09
SET_IDLE = 0x0A
SET_PROTOCOL = 0x0B
# Report types, the high byte of wValue in GET_REPORT/SET_REPORT (section 7.2.1)
REPORT_INPUT, REPORT_OUTPUT, REPORT_FEATURE = 1, 2, 3
SET_REPORT_OUTPUT = REPORT_OUTPUT << 8  # wValue 0x0200: output report, id 0 (teensy_loader_cli)
OUT_CLASS_INTF = 0x21  # bmRequestType of SET_REPORT: host-to-device, class, interface


def hid_descriptor(report_length: int, bcd_hid: int = 0x0111) -> bytes:
    """The 9-byte HID descriptor that follows the interface descriptor (HID 1.11 section 6.2.1)."""
    return struct.pack("<BBHBBBH", 9, HID_DESCRIPTOR, bcd_hid, 0, 1, REPORT_DESCRIPTOR, report_length)


def _item(tag: int, value: int, size: int) -> bytes:
    """A short item (HID 1.11 section 6.2.2.2): prefix byte with bSize, then the data."""
    code = {0: 0, 1: 1, 2: 2, 4: 3}[size]
    return bytes([tag | code]) + value.to_bytes(size, "little") if size else bytes([tag])


def _count(value: int) -> bytes:
    return _item(0x94, value, 1 if value < 256 else 2)


def vendor_report_descriptor(usage_page: int, usage: int, out_count: int, in_count: int = 0) -> bytes:
    """A vendor-defined application collection with byte-wide output (and input) reports."""
    out = _item(0x04, usage_page, 2)        # Usage Page (vendor, 0xFF00-0xFFFF)
    out += _item(0x08, usage, 1)            # Usage
    out += _item(0xA0, 0x01, 1)             # Collection (Application)
    out += _item(0x14, 0x00, 1)             # Logical Minimum (0)
    out += _item(0x24, 0xFF, 2)             # Logical Maximum (255)
    out += _item(0x74, 0x08, 1)             # Report Size (8)
    if in_count:
        out += _item(0x08, 0x01, 1) + _count(in_count) + _item(0x80, 0x02, 1)  # Input (Data,Var,Abs)
    out += _item(0x08, 0x02, 1) + _count(out_count) + _item(0x90, 0x02, 1)     # Output (Data,Var,Abs)
    out += _item(0xC0, 0, 0)                # End Collection
    return out


@dataclass(frozen=True)
class ReportInfo:
    """What a host learns from a vendor report descriptor."""

    usage_page: int = 0
    usage: int = 0
    output_length: int = 0
    input_length: int = 0


def parse_report_descriptor(raw: bytes) -> ReportInfo:
    """Usage page, top usage and output/input report lengths in bytes (short items only)."""
    page = 0
    size = count = 0
    out_bits = in_bits = 0
    top_usage = None
    i = 0
    while i < len(raw):
        prefix = raw[i]
        if prefix == 0xFE:  # long item (section 6.2.2.3): skip it
            if i + 1 >= len(raw):
                break
            i += 3 + raw[i + 1]
            continue
        n = (0, 1, 2, 4)[prefix & 3]
        value = int.from_bytes(raw[i + 1:i + 1 + n], "little")
        tag = prefix & 0xFC
        if tag == 0x04:
            page = value
        elif tag == 0x08:
            if top_usage is None:
                top_usage = value
        elif tag == 0x74:
            size = value
        elif tag == 0x94:
            count = value
        elif tag == 0x90:
            out_bits += size * count
        elif tag == 0x80:
            in_bits += size * count
        i += 1 + n
    return ReportInfo(page, top_usage or 0, out_bits // 8, in_bits // 8)


# --------------------------------------------------------------------------
# HalfKay (PJRC)
TEENSY_VID = 0x16C0
HALFKAY_PID = 0x0478
# HalfKay's report descriptor names the board in its usage on page 0xFF9C;
# the ids are the ones PJRC's own tools switch on (0x1B Teensy 2.0, 0x1C
# Teensy++ 2.0, 0x1D Teensy 3.0, 0x1E 3.1, 0x1F 3.5, 0x20 LC, 0x21 3.2, 0x22 3.6).
HALFKAY_USAGE_PAGE = 0xFF9C
HALFKAY_BOOT = "boot"  # decoded address of the boot command (address bytes 0xFF)


@dataclass(frozen=True)
class HalfKayMcu:
    """One row of teensy_loader_cli's MCU table, plus the board id and flash geometry."""

    name: str
    code_size: int
    block_size: int
    board_id: int
    board: str
    family: str = "avr"

    @property
    def header_size(self) -> int:
        """Bytes before the block's data: 2, or 64 for 512- and 1024-byte blocks."""
        return 64 if self.block_size in (512, 1024) else 2

    @property
    def report_size(self) -> int:
        return self.header_size + self.block_size

    @property
    def encoding(self) -> str:
        """The address encoding teensy_loader_cli picks (its main(), in order)."""
        if self.block_size <= 256 and self.code_size < 0x10000:
            return "addr16"  # addr & 255, addr >> 8
        if self.block_size == 256:
            return "page256"  # addr >> 8, addr >> 16
        if self.block_size in (512, 1024):
            return "addr24"  # addr, addr >> 8, addr >> 16, data at offset 64
        raise ValueError(f"{self.name}: no HalfKay encoding for {self.block_size}-byte blocks")


# teensy_loader_cli's MCUs[] table: name, code_size, block_size
HALFKAY_MCUS: dict[str, HalfKayMcu] = {m.name: m for m in (
    # Teensy 1.0 / Teensy++ 1.0 ids are not in PJRC's list above: bootkit's guess.
    HalfKayMcu("at90usb162", 15872, 128, 0x19, "Teensy 1.0"),
    HalfKayMcu("atmega32u4", 32256, 128, 0x1B, "Teensy 2.0"),
    HalfKayMcu("at90usb646", 64512, 256, 0x1A, "Teensy++ 1.0"),
    HalfKayMcu("at90usb1286", 130048, 256, 0x1C, "Teensy++ 2.0"),
    HalfKayMcu("mkl26z64", 63488, 512, 0x20, "Teensy LC", "kinetis"),
    HalfKayMcu("mk20dx128", 131072, 1024, 0x1D, "Teensy 3.0", "kinetis"),
    HalfKayMcu("mk20dx256", 262144, 1024, 0x21, "Teensy 3.1/3.2", "kinetis"),
    HalfKayMcu("mk64fx512", 524288, 1024, 0x1F, "Teensy 3.5", "kinetis"),
    HalfKayMcu("mk66fx1m0", 1048576, 1024, 0x22, "Teensy 3.6", "kinetis"),
)}
HALFKAY_BY_ID: dict[int, HalfKayMcu] = {}
for _m in HALFKAY_MCUS.values():
    HALFKAY_BY_ID.setdefault(_m.board_id, _m)


def halfkay_encode(mcu: HalfKayMcu, address: int | None, data: bytes = b"") -> bytes:
    """One HalfKay report; ``address=None`` is the boot command (address bytes 0xFF)."""
    header = bytearray(mcu.header_size)
    if address is None:
        header[0:3 if mcu.header_size > 2 else 2] = b"\xff" * (3 if mcu.header_size > 2 else 2)
        return bytes(header) + bytes(mcu.block_size)
    if len(data) != mcu.block_size:
        raise ValueError(f"a HalfKay block is {mcu.block_size} bytes, not {len(data)}")
    enc = mcu.encoding
    if enc == "addr16":
        header[0:2] = (address & 0xFF, (address >> 8) & 0xFF)
    elif enc == "page256":
        header[0:2] = ((address >> 8) & 0xFF, (address >> 16) & 0xFF)
    else:
        header[0:3] = (address & 0xFF, (address >> 8) & 0xFF, (address >> 16) & 0xFF)
    return bytes(header) + bytes(data)


def halfkay_decode(mcu: HalfKayMcu, report: bytes) -> tuple[int | str, bytes]:
    """(address or HALFKAY_BOOT, block data).  Raises ValueError on a report shorter than its header."""
    enc = mcu.encoding
    hs = mcu.header_size
    need = 3 if hs > 2 else 2
    if len(report) < need:
        raise ValueError(f"HalfKay report of {len(report)} bytes is shorter than its {need}-byte address")
    if all(b == 0xFF for b in report[:need]):
        return HALFKAY_BOOT, b""
    if enc == "addr16":
        address = report[0] | report[1] << 8
    elif enc == "page256":
        address = report[0] << 8 | report[1] << 16
    else:
        address = report[0] | report[1] << 8 | report[2] << 16
    return address, bytes(report[hs:hs + mcu.block_size])


# --------------------------------------------------------------------------
# LUFA HID bootloader
LUFA_VID = 0x03EB
LUFA_HID_PID = 0x2067
LUFA_USAGE_PAGE = 0xFFDC  # HID_RI_USAGE_PAGE(16, 0xFFDC), Descriptors.c
LUFA_USAGE = 0xFB
LUFA_START_APPLICATION = 0xFFFF  # COMMAND_STARTAPPLICATION, BootloaderHID.h


def lufa_page_addressing(flash_size: int) -> bool:
    """FLASHEND > 0xFFFF: the 16-bit address field carries address >> 8 (BootloaderHID.c)."""
    return flash_size - 1 > 0xFFFF


def lufa_encode(address: int | None, data: bytes, flash_size: int) -> bytes:
    if address is None:
        field = LUFA_START_APPLICATION
    else:
        field = address >> 8 if lufa_page_addressing(flash_size) else address
    return struct.pack("<H", field & 0xFFFF) + bytes(data)


# --------------------------------------------------------------------------
# bootkit raw HID (native): the native command set (classes/native.py) in 64-byte reports
BOOTKIT_VID = 0x1209  # pid.codes, as the DFU personality's own devices
NATIVE_HID_PID = 0xB00F
NATIVE_USAGE_PAGE = 0xFFB0
NATIVE_USAGE = 0x01
REPORT_SIZE = 64  # every native report, both directions
NATIVE_VERSION = (1, 0)
COMMAND_HEADER = 12  # command, 3 reserved, arg0 u32, arg1 u32
CHIP_NAME_OFFSET, CHIP_NAME_SIZE = 28, 32


class Command(IntEnum):
    """The native command set's codes in this framing (see :data:`OPS`)."""

    GET_INFO = 0x01
    ERASE = 0x02  # the application region
    WRITE = 0x03  # arg0 start, arg1 size; then data reports
    CRC = 0x04  # arg0 region: 0 application, 1 bootloader
    READ = 0x05  # arg0 start, arg1 size; then data reports IN
    RESET = 0x06


OPS: dict[int, Op] = {Command.GET_INFO: Op.IDENTIFY, Command.ERASE: Op.ERASE, Command.WRITE: Op.WRITE,
                      Command.CRC: Op.CRC, Command.READ: Op.READ, Command.RESET: Op.BOOT}


class NativeStatus(IntEnum):
    OK = 0x00
    ERROR = 0x01
    MISALIGNED = 0x02
    NOT_ERASED = 0x03


def status_for(refusal: Refusal) -> NativeStatus:
    """The status byte a refusal is reported as: this framing has four, the others are ERROR."""
    if refusal is Refusal.MISALIGNED:
        return NativeStatus.MISALIGNED
    if refusal is Refusal.NOT_ERASED:
        return NativeStatus.NOT_ERASED
    return NativeStatus.ERROR


CRC_APPLICATION, CRC_BOOTLOADER = 0, 1


def native_command(cmd: int, arg0: int = 0, arg1: int = 0) -> bytes:
    return struct.pack("<B3xII", cmd, arg0 & 0xFFFFFFFF, arg1 & 0xFFFFFFFF).ljust(REPORT_SIZE, b"\x00")


def native_reply(cmd: int, status: int, payload: bytes = b"") -> bytes:
    return (bytes((cmd & 0xFF, status, 0, 0)) + payload).ljust(REPORT_SIZE, b"\x00")[:REPORT_SIZE]


def pack_info(info: NativeInfo) -> bytes:
    """The GET_INFO payload (report bytes 4..63; docs/personalities/hid.md): version major and
    minor, page size, flash start and size, application start and size, chip name.  The
    timing and flags of the info record are not carried."""
    name = info.chip.encode("ascii", "replace")[:CHIP_NAME_SIZE - 1]
    body = struct.pack("<BBHIIII", info.version[0], info.version[1], info.page_size, info.flash_start,
                       info.flash_size, info.app_start, info.app_size)
    return body.ljust(CHIP_NAME_OFFSET - 4, b"\x00") + name.ljust(CHIP_NAME_SIZE, b"\x00")


def unpack_info(payload: bytes) -> NativeInfo:
    """The inverse of :func:`pack_info`; ValueError when the payload is too short."""
    if len(payload) < CHIP_NAME_OFFSET - 4 + CHIP_NAME_SIZE:
        raise ValueError("GET_INFO reply too short")
    major, minor, page, fstart, fsize, astart, asize = struct.unpack_from("<BBHIIII", payload)
    name = payload[CHIP_NAME_OFFSET - 4:CHIP_NAME_OFFSET - 4 + CHIP_NAME_SIZE].split(b"\x00")[0]
    return NativeInfo((major, minor), name.decode("ascii", "replace"), fstart, fsize, astart, asize, page)


# --------------------------------------------------------------------------
# Chips for the presets: taken from the chip database where it has them,
# built here where it does not (the HalfKay parts bootkit has no row for).
KiB = 1024

@dataclass(frozen=True)
class _ExtraChip:
    family: str
    flash: int
    page: int
    sig: tuple[int, ...]
    eeprom: int
    description: str


# Kinetis/ARM Teensy flash: the bootloader lives in a separate chip (the
# MKL02/Mini54 "bootloader chip"), so no flash is reserved.
_EXTRA_CHIPS = {
    "at90usb162": _ExtraChip("avr", 16 * KiB, 128, (0x1E, 0x94, 0x82), 512, "Teensy 1.0"),
    "at90usb646": _ExtraChip("avr", 64 * KiB, 256, (0x1E, 0x96, 0x82), 2048, "Teensy++ 1.0"),
    "mkl26z64": _ExtraChip("kinetis", 64 * KiB, 1 * KiB, (), 0, "Teensy LC"),
    "mk20dx128": _ExtraChip("kinetis", 128 * KiB, 1 * KiB, (), 0, "Teensy 3.0"),
    "mk20dx256": _ExtraChip("kinetis", 256 * KiB, 2 * KiB, (), 0, "Teensy 3.1/3.2"),
    "mk64fx512": _ExtraChip("kinetis", 512 * KiB, 4 * KiB, (), 0, "Teensy 3.5"),
    "mk66fx1m0": _ExtraChip("kinetis", 1024 * KiB, 4 * KiB, (), 0, "Teensy 3.6"),
}


def chip_named(name: str) -> Chip:
    """A chip from the database, or one of the HalfKay parts built here."""
    try:
        return get_chip(name)
    except KeyError:
        spec = _EXTRA_CHIPS.get(name.lower())
        if spec is None:
            raise
    if spec.family == "avr":
        base = get_chip("atmega32u4")
        flash, page = spec.flash, spec.page
        return replace(base, name=name.lower(), flash_sectors=((flash // page, page),), page_size=page,
                       boot_start=flash - 4 * KiB, boot_size=4 * KiB, eeprom_size=spec.eeprom,
                       signature=bytes(spec.sig), uf2_family=None, aliases=(),
                       description=spec.description, boot_note="")
    flash, sector = spec.flash, spec.page
    return Chip(name=name.lower(), family="kinetis", flash_start=0, flash_sectors=((flash // sector, sector),),
                page_size=sector, boot_start=0, boot_size=0,
                timing=Timing(program_ms=1.0, erase_ms=10.0, full_erase_ms=250.0),
                description=spec.description, boot_note="HalfKay runs on a separate bootloader chip")


def halfkay_chip(mcu: HalfKayMcu) -> Chip:
    """The chip as HalfKay leaves it: code below ``code_size``, the bootloader above.

    HalfKay on AVR is 512 B (Teensy 2.0, 1.0) or 1 KiB (Teensy++ 1.0, 2.0): the
    difference between the flash size and teensy_loader_cli's code size.
    """
    chip = chip_named(mcu.name)
    boot = chip.flash_size - mcu.code_size
    if boot <= 0:
        return replace(chip, boot_start=chip.flash_start, boot_size=0)
    return chip.with_boot(boot, "top")


def halfkay_mcu_for(chip: Chip | str) -> HalfKayMcu:
    name = chip if isinstance(chip, str) else chip.name
    try:
        return HALFKAY_MCUS[name.lower()]
    except KeyError:
        raise KeyError(f"HalfKay knows no MCU {name!r} (teensy_loader_cli's list: "
                       f"{', '.join(HALFKAY_MCUS)})") from None


# --------------------------------------------------------------------------
# xusb-boot (ahtn/xusb-boot), the xmega raw-HID bootloader, wire format 1.0:
# src/boot_protocol.h, src/descriptors.c, scripts/xusbboot/constants.py.
XUSB_VID, XUSB_PID = 0x1209, 0xBB01  # "Keyplus xusb-boot ID" (config.h)
XUSB_PROTOTYPE_VID, XUSB_PROTOTYPE_PID = 0x6666, 0xB007  # the prototype id config.h keeps commented out
XUSB_MANUFACTURER, XUSB_PRODUCT = "Xusb", "Xusb-boot"  # usb_string_desc_1, usb_string_desc_2
XUSB_USAGE_PAGE = 0xFF00  # HID_USAGE_PAGE_VENDOR_START
XUSB_USAGE = 0x80  # HID_USAGE_VENDOR_0
XUSB_VERSION = (1, 0)  # the wire format xusbboot 0.0.2 speaks (constants.py VERSION_MAJOR/MINOR)
XUSB_REPORT_SIZE = 64  # EP_SIZE_VENDOR: every report, both directions


class XusbCommand(IntEnum):
    """The first byte of an output report in STATE_WAIT (boot_protocol.h)."""

    GET_BOOT_INFO = 0x00
    WRITE = 0x01  # u32 start, u32 size: both multiples of the page size; then raw data reports
    CRC = 0x02
    RESET = 0x03  # no answer: usb_detach(), 50 ms, software reset
    ERASE = 0x04  # the application section


class XusbPacket(IntEnum):
    """The first byte of an input report that is not the boot info."""

    ERROR_STATUS = 0x00  # [0x00, status]
    CRC = 0x01  # [0x01, u32 application CRC, u32 boot CRC]


class XusbStatus(IntEnum):
    OKAY = 0x00
    ERROR = 0x01
    ERROR_MISALIGNED = 0x02
    ERROR_NOT_ERASED = 0x03


XUSB_BOOT_INFO = struct.Struct("<BB32sIH24x")  # boot_info_t, packed: 64 bytes


@dataclass(frozen=True)
class XusbBootInfo:
    """boot_info_t: version, the MCU string, the application section size, the page size."""

    version: tuple[int, int]
    mcu: str
    flash_size: int  # FLASH_SIZE = APP_SECTION_SIZE: what the host may write, from address 0
    page_size: int


def pack_boot_info(info: XusbBootInfo) -> bytes:
    return XUSB_BOOT_INFO.pack(info.version[0], info.version[1], info.mcu.encode("ascii", "replace")[:31],
                               info.flash_size, info.page_size)


def unpack_boot_info(report: bytes) -> XusbBootInfo:
    """ValueError when the report is shorter than boot_info_t's used fields."""
    if len(report) < XUSB_BOOT_INFO.size - 24:
        raise ValueError(f"boot info of {len(report)} bytes, boot_info_t needs {XUSB_BOOT_INFO.size - 24}")
    major, minor, mcu, flash_size, page_size = XUSB_BOOT_INFO.unpack(bytes(report[:XUSB_BOOT_INFO.size]).ljust(
        XUSB_BOOT_INFO.size, b"\x00"))
    return XusbBootInfo((major, minor), mcu.split(b"\x00")[0].decode("ascii", "replace"), flash_size, page_size)


def xusb_command(cmd: int, start: int | None = None, size: int | None = None) -> bytes:
    """A 64-byte command report; WRITE carries start and size (u32 each) from byte 1."""
    body = bytes([cmd])
    if start is not None:
        body += struct.pack("<II", start & 0xFFFFFFFF, (size or 0) & 0xFFFFFFFF)
    return body.ljust(XUSB_REPORT_SIZE, b"\x00")


# The xmega NVM controller's CRC of a flash section (XMEGA AU manual, NVM "APP_CRC"/"BOOT_CRC"
# commands; scripts/xusbboot/crc.py computes the same for the host): 24 bits, polynomial
# 0x80001B, initial value 0, one 16-bit little-endian flash word shifted in per step.
NVM_CRC_POLY = 0x80001B


def nvm_crc(data: bytes, crc: int = 0) -> int:
    """The 24-bit NVM CRC of ``data`` (an even number of bytes: flash words)."""
    if len(data) % 2:
        raise ValueError(f"the NVM CRC runs over 16-bit words: {len(data)} bytes is odd")
    for (word,) in struct.iter_unpack("<H", data):
        crc <<= 1
        if crc & 0x1000000:
            crc ^= NVM_CRC_POLY | 0x1000000
        crc ^= word
    return crc


def xusb_report_descriptor() -> bytes:
    """descriptors.c hid_desc_vendor: one 64-byte input and one 64-byte output report."""
    out = _item(0x04, XUSB_USAGE_PAGE, 2)            # Usage Page (0xFF00)
    out += _item(0x08, XUSB_USAGE, 1)                # Usage (0x80)
    out += _item(0xA0, 0x80, 1)                      # Collection (vendor 0x80)
    for usage, main in ((XUSB_USAGE + 1, 0x80), (XUSB_USAGE + 2, 0x90)):  # Input, then Output
        out += _item(0x14, 0x00, 1) + _item(0x24, 0x00FF, 2)  # Logical Minimum 0, Maximum 255
        out += _item(0x74, 8, 1) + _item(0x94, XUSB_REPORT_SIZE, 1)  # Report Size 8, Count 64
        out += _item(0x08, usage, 1) + _item(main, 0x02, 1)  # Usage, Input/Output (Data,Var,Abs)
    out += _item(0xC0, 0, 0)                         # End Collection
    return out
