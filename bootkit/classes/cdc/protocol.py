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
# 't' answers the ATmega128 device code only "to allow AVRProg to use the
# bootloader" (LUFA and Caterina): the list ends with 0x00.
DEVICE_CODES = b"\x44"

MEMORY_FLASH = ord("F")
MEMORY_EEPROM = ord("E")

# command letter -> total length in bytes when fixed (the letter included).
# 'B' is 4 + block size.
FIXED_LENGTH = {
    "E": 1, "P": 1, "L": 1, "a": 1, "b": 1, "p": 1, "S": 1, "V": 1, "v": 1, "t": 1, "s": 1,
    "e": 1, "r": 1, "F": 1, "N": 1, "Q": 1, "R": 1, "d": 1, "m": 1,
    "T": 2, "x": 2, "y": 2, "l": 2, "C": 2, "c": 2, "D": 2,
    "A": 3, "H": 4, "g": 4,
}
