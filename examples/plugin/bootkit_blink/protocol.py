"""The blink protocol: what both halves share (request codes, the info record, status codes).

A vendor-specific interface (bInterfaceClass 0xFF) with no endpoint of its
own: everything is a control transfer on endpoint 0, addressed to the
interface (bmRequestType 0x41 host-to-device, 0xC1 device-to-host; wIndex
is the interface number, as USB 2.0 9.3.4 has it for an interface
recipient, so the request reaches this function under every transport,
FunctionFS included).  The device keeps an address pointer, as DfuSe's
SET_ADDRESS_POINTER does (ST AN3156 section 6.1.1):

====================  ==========  ===================================================
request               data stage  what the device does
====================  ==========  ===================================================
GET_INFO   (IN)       INFO bytes  the info record below
SET_ADDRESS (OUT)     4 bytes LE  pointer := address
ERASE      (OUT)      none        erase the sector holding the pointer;
                                  pointer := the end of that sector
WRITE      (OUT)      1..max      program the bytes at the pointer; pointer += length
READ       (IN)       1..max      read wLength bytes at the pointer; pointer += length
GET_STATUS (IN)       6 bytes     status, app valid, pointer (the last request's outcome)
LEAVE      (OUT)      none        mark the application valid and start it
====================  ==========  ===================================================

The application enumerates with the same ids and a run-time interface of
subclass APP_SUBCLASS, which takes one request, DETACH (OUT, no data): reset
into the bootloader.

A request the memory refuses is answered with a STALL; GET_STATUS then says
why (one status code per memory fault, :data:`STATUS_TEXT`).  ERASE moves
the pointer past the sector it erased, so a host learns the sector layout
(uniform pages or an STM32's 16/64/128 KiB sectors) from the device instead
of from a table of its own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# pid.codes' test ids (https://pid.codes/1209/0001/): fine for an example, never for a product
BLINK_VID = 0x1209
BLINK_PID = 0x0001

DIALECT = "ep0"  # the one dialect: every request a control transfer on endpoint 0

INTERFACE_CLASS = 0xFF  # vendor specific
INTERFACE_SUBCLASS = 0x42  # 'B': the bootloader (what the host looks for, with the protocol)
APP_SUBCLASS = 0x41  # 'A': the application's run-time interface (same ids, so the host tells them apart)
INTERFACE_PROTOCOL = 0x01

REQUEST_OUT = 0x41  # vendor, interface recipient, host to device (USB 2.0 table 9-2)
REQUEST_IN = 0xC1  # vendor, interface recipient, device to host

GET_INFO = 0x01
SET_ADDRESS = 0x02
ERASE = 0x03
WRITE = 0x04
READ = 0x05
GET_STATUS = 0x06
LEAVE = 0x07
DETACH = 0x10  # to the application's interface: reset into the bootloader
IN_REQUESTS = frozenset({GET_INFO, READ, GET_STATUS})  # the others carry an OUT data stage (or none)

# status codes (GET_STATUS byte 0)
OK = 0x00
ERR_ADDRESS = 0x01  # outside every region
ERR_PROTECTED = 0x02  # the bootloader region, or a read-out protected memory
ERR_NOT_ERASED = 0x03  # programming bytes that were not erased
ERR_WRITE = 0x04  # the region cannot be written
ERR_ERASE = 0x05  # the region cannot be erased
ERR_VERIFY = 0x06  # programmed data does not read back
ERR_FIRMWARE = 0x07  # no valid application to start
ERR_REQUEST = 0x08  # a request this device does not know, or a bad length

STATUS_TEXT = {
    OK: "ok",
    ERR_ADDRESS: "address outside every region",
    ERR_PROTECTED: "protected (the bootloader region, or read-out protection)",
    ERR_NOT_ERASED: "not erased",
    ERR_WRITE: "region not writable",
    ERR_ERASE: "region not erasable",
    ERR_VERIFY: "programmed data does not read back",
    ERR_FIRMWARE: "no valid application",
    ERR_REQUEST: "bad request",
}

_INFO = struct.Struct("<4sBBHIIII")
MAGIC = b"BLNK"
VERSION = 1


@dataclass(frozen=True)
class Info:
    """The info record (GET_INFO): what the device will take, from the device itself."""

    max_transfer: int  # the longest WRITE / READ data stage
    flash_start: int
    flash_size: int
    app_start: int  # the application region (outside it: the bootloader's, never written)
    app_end: int
    version: int = VERSION

    SIZE = _INFO.size

    def pack(self) -> bytes:
        return _INFO.pack(MAGIC, self.version, 0, self.max_transfer, self.flash_start, self.flash_size,
                          self.app_start, self.app_end)

    @classmethod
    def unpack(cls, raw: bytes) -> "Info":
        if len(raw) != _INFO.size:
            raise ValueError(f"info record of {len(raw)} bytes, expected {_INFO.size}")
        magic, version, _, max_transfer, flash_start, flash_size, app_start, app_end = _INFO.unpack(raw)
        if magic != MAGIC:
            raise ValueError(f"info record starts {magic!r}, not {MAGIC!r}: not a blink device")
        return cls(max_transfer, flash_start, flash_size, app_start, app_end, version)


_STATUS = struct.Struct("<BBI")


@dataclass(frozen=True)
class Status:
    """The GET_STATUS record."""

    status: int
    app_valid: bool
    pointer: int

    SIZE = _STATUS.size

    def pack(self) -> bytes:
        return _STATUS.pack(self.status, int(self.app_valid), self.pointer)

    @classmethod
    def unpack(cls, raw: bytes) -> "Status":
        if len(raw) != _STATUS.size:
            raise ValueError(f"status record of {len(raw)} bytes, expected {_STATUS.size}")
        status, valid, pointer = _STATUS.unpack(raw)
        return cls(status, bool(valid), pointer)

    @property
    def text(self) -> str:
        return STATUS_TEXT.get(self.status, f"status 0x{self.status:02X}")
