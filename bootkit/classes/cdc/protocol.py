"""CDC-ACM and AVR109 constants and codecs shared by the device and host halves.

CDC-ACM names follow the USB CDC 1.2 specification and its PSTN subclass
document (PSTN120); AVR109 command letters follow Atmel application note
AVR109 as LUFA's CDC bootloader (Bootloaders/CDC/BootloaderCDC.c) and
Arduino's Caterina (bootloaders/caterina/Caterina.c) implement it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# --------------------------------------------------------------------------
# USB CDC 1.2 (table 2, 4, 13) and PSTN120 (tables 3, 4, 13, 17, 30)

CDC_CLASS = 0x02  # Communications Interface Class
ACM_SUBCLASS = 0x02  # Abstract Control Model
AT_COMMANDS_V250 = 0x01  # bInterfaceProtocol: AT commands (Linux cdc_acm binds 0..6)
CDC_DATA_CLASS = 0x0A  # Data Interface Class

# bDescriptorSubtype of CS_INTERFACE functional descriptors (CDC 1.2 table 13)
HEADER = 0x00
CALL_MANAGEMENT = 0x01
ABSTRACT_CONTROL_MANAGEMENT = 0x02
UNION = 0x06
CDC_VERSION_1_10 = 0x0110

CS_INTERFACE = 0x24

# bmCapabilities of the ACM functional descriptor (PSTN120 table 4): bit 1 =
# the device supports Set/Get_Line_Coding, Set_Control_Line_State and the
# Serial_State notification.  LUFA declares 0x06 (bit 2: Send_Break too).
ACM_CAP_LINE_CODING = 0x02
ACM_CAP_SEND_BREAK = 0x04

# Class requests (PSTN120 table 13)
SEND_ENCAPSULATED_COMMAND = 0x00
GET_ENCAPSULATED_RESPONSE = 0x01
SET_LINE_CODING = 0x20
GET_LINE_CODING = 0x21
SET_CONTROL_LINE_STATE = 0x22
SEND_BREAK = 0x23

# SET_CONTROL_LINE_STATE wValue bits (PSTN120 table 18)
CONTROL_DTR = 0x01
CONTROL_RTS = 0x02

# Notifications (PSTN120 table 30)
SERIAL_STATE = 0x20
# SERIAL_STATE bitmap (PSTN120 table 31)
SERIAL_STATE_DCD = 0x01  # bRxCarrier
SERIAL_STATE_DSR = 0x02  # bTxCarrier

# The 1200-baud touch: the Arduino IDE opens the application's port at
# 1200 baud and closes it (DTR drops); the sketch's USB core then resets
# into Caterina (ArduinoCore-avr cores/arduino/CDC.cpp).
TOUCH_BAUD = 1200


@dataclass(frozen=True)
class LineCoding:
    """The 7-byte line coding structure (PSTN120 table 17)."""

    dwDTERate: int = 0
    bCharFormat: int = 0  # 0: 1 stop bit, 1: 1.5, 2: 2
    bParityType: int = 0  # 0 none, 1 odd, 2 even, 3 mark, 4 space
    bDataBits: int = 8

    def pack(self) -> bytes:
        return struct.pack("<IBBB", self.dwDTERate, self.bCharFormat, self.bParityType, self.bDataBits)

    @classmethod
    def unpack(cls, raw: bytes) -> "LineCoding":
        if len(raw) < 7:
            raise ValueError(f"line coding is 7 bytes, got {len(raw)}")
        return cls(*struct.unpack("<IBBB", bytes(raw[:7])))


def header_descriptor(bcd_cdc: int = CDC_VERSION_1_10) -> bytes:
    return struct.pack("<BBBH", 5, CS_INTERFACE, HEADER, bcd_cdc)


def call_management_descriptor(capabilities: int = 0, data_interface: int = 1) -> bytes:
    return struct.pack("<BBBBB", 5, CS_INTERFACE, CALL_MANAGEMENT, capabilities, data_interface)


def acm_descriptor(capabilities: int = ACM_CAP_LINE_CODING | ACM_CAP_SEND_BREAK) -> bytes:
    return struct.pack("<BBBB", 4, CS_INTERFACE, ABSTRACT_CONTROL_MANAGEMENT, capabilities)


def union_descriptor(control: int = 0, subordinate: int = 1) -> bytes:
    return struct.pack("<BBBBB", 5, CS_INTERFACE, UNION, control, subordinate)


def serial_state_notification(interface: int, bitmap: int) -> bytes:
    """SERIAL_STATE on the notification endpoint (PSTN120 section 6.5.4)."""
    return struct.pack("<BBHHHH", 0xA1, SERIAL_STATE, 0, interface, 2, bitmap)


# --------------------------------------------------------------------------
# USB IDs

LUFA_VID = 0x03EB  # Atmel
LUFA_CDC_PID = 0x204A  # LUFA CDC bootloader (Bootloaders/CDC/Descriptors.c)
ARDUINO_VID = 0x2341
LEONARDO_BOOTLOADER_PID = 0x0036  # Caterina on the Leonardo (boards.txt leonardo.vid/pid.0)
LEONARDO_APPLICATION_PID = 0x8036  # a Leonardo sketch

# dialect -> (bootloader VID, PID), (application VID, PID)
IDS = {
    "lufa": ((LUFA_VID, LUFA_CDC_PID), (LUFA_VID, 0x2044)),  # 0x2044: LUFA's USBtoSerial/VirtualSerial demo
    "caterina": ((ARDUINO_VID, LEONARDO_BOOTLOADER_PID), (ARDUINO_VID, LEONARDO_APPLICATION_PID)),
}

# --------------------------------------------------------------------------
# AVR109 (Atmel AVR109 appnote; LUFA BootloaderCDC.h names in comments)

ESC = 0x1B  # AVR109_COMMAND_Sync: no reply
CR = b"\r"  # the acknowledgement of every command without data to return
UNKNOWN = b"?"

SOFTWARE_IDS = {"lufa": b"LUFACDC", "caterina": b"CATERIN"}
# BOOTLOADER_VERSION_MAJOR/MINOR sent as ASCII digits ('V')
SOFTWARE_VERSIONS = {"lufa": b"10", "caterina": b"10"}
# 'v' (hardware version): two ASCII digits.  LUFA and Caterina answer '?',
# which avrdude's butterfly.c accepts ("no hardware version given": it reads
# one byte, and a second only when the first is not '?') but avr910.c reads
# two bytes whatever comes, so a lone '?' leaves it a byte behind.  Two
# digits suit both.
HARDWARE_VERSION = b"10"

# 't' lists device codes, ending with 0x00.  LUFA and Caterina answer only
# 0x44, the ATmega128's *boot* code of AVR109 (an AVR109 bootloader's
# DEVTYPE_BOOT is its part's AVR910 code + 1), "to allow AVRProg to use the
# bootloader".  avrdude's butterfly.c ignores the list; its avr910.c goes on
# only when the list holds the part's ``avr910_devcode`` from avrdude.conf.
LUFA_DEVICE_CODE = 0x44
# AVR910 device codes by signature.  avrdude.conf (7.1) gives none of these
# parts an avr910_devcode of its own; for the ATmega32U4, AT90USB1286 and
# ATmega2560 it notes the ATmega128's 0x43 in a comment ("#   avr910_devcode
# = 0x43;"), the code these bootloaders inherit.  The ATmega328P and ATtiny85
# have no AVR910 code at all (avrdude.conf: "0x??" / "?").
AVR910_DEVICE_CODES = {
    bytes.fromhex("1e9587"): 0x43,  # ATmega32U4
    bytes.fromhex("1e9782"): 0x43,  # AT90USB1286
    bytes.fromhex("1e9801"): 0x43,  # ATmega2560
    bytes.fromhex("1e9702"): 0x43,  # ATmega128 (AVR910 appnote)
}
# avrdude parts (-p) by signature, for :func:`avrdude_avr910_config`.
AVRDUDE_PARTS = {
    bytes.fromhex("1e9587"): "m32u4", bytes.fromhex("1e9782"): "usb1286", bytes.fromhex("1e9801"): "m2560",
}


def device_codes(signature: bytes | None) -> bytes:
    """The 't' answer: the part's AVR910 code (when it has one), LUFA's 0x44, then 0x00."""
    code = AVR910_DEVICE_CODES.get(bytes(signature or b""))
    return (bytes([code]) if code is not None else b"") + bytes([LUFA_DEVICE_CODE, 0x00])


def avrdude_avr910_config() -> str:
    """An avrdude configuration overlay (``avrdude -C +FILE``) that gives avrdude's parts the
    AVR910 device codes bootkit's bootloader lists, so ``avrdude -c avr910 -p m32u4`` is
    accepted without ``-x devcode=`` (avrdude.conf leaves these parts without one).  avrdude
    7.x copies the part (``part parent``) and the copy replaces it ("overwrites previous
    definition")."""
    lines = ["# bootkit: AVR910 device codes for avrdude -c avr910 (avrdude -C +THIS_FILE)"]
    for sig, part in AVRDUDE_PARTS.items():
        lines += [f'part parent "{part}"', f'    id                     = "{part}";',
                  f"    avr910_devcode         = 0x{AVR910_DEVICE_CODES[sig]:02x};", ";"]
    return "\n".join(lines) + "\n"


# AVR910's universal commands carry one instruction of the AVR serial
# programming instruction set (ATmega32U4 datasheet 28.8.3, table 28-17): '.'
# four bytes (avrdude's avr910_cmd), ':' three (the older form, no 4th byte);
# the answer is the instruction's output byte and '\r'.  avrdude -c avr910
# reads fuses, lock bits and the calibration byte this way.
UNIVERSAL_NEW = ord(".")
UNIVERSAL_OLD = ord(":")
ISP_READ_LOW_FUSE = (0x50, 0x00)
ISP_READ_HIGH_FUSE = (0x58, 0x08)
ISP_READ_EXTENDED_FUSE = (0x50, 0x08)
ISP_READ_LOCK = (0x58, 0x00)
ISP_READ_SIGNATURE = 0x30
ISP_WRITE = 0xAC  # second byte 0xE0-0xFF: write lock bits; 0xA0/0xA8/0xA4: write a fuse
ISP_WRITE_LOCK_MASK = 0xE0

MEMORY_FLASH = ord("F")
MEMORY_EEPROM = ord("E")

# command letter -> total length in bytes when fixed (the letter included).
# 'B' is 4 + block size.
FIXED_LENGTH = {
    "E": 1, "P": 1, "L": 1, "a": 1, "b": 1, "p": 1, "S": 1, "V": 1, "v": 1, "t": 1, "s": 1,
    "e": 1, "r": 1, "F": 1, "N": 1, "Q": 1, "R": 1, "d": 1, "m": 1,
    "T": 2, "x": 2, "y": 2, "l": 2, "C": 2, "c": 2, "D": 2,
    "A": 3, "H": 4, "g": 4, ":": 4, ".": 5,
}
