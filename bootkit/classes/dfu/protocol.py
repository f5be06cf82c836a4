"""DFU constants and codecs shared by the device and host halves.

USB Device Firmware Upgrade 1.1 (usb.org DFU_1.1.pdf); DfuSe extensions
from ST AN3156 / UM0424; Atmel FLIP commands as LUFA's DFU bootloader and
dfu-programmer speak them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

# Interface class codes (DFU 1.1 section 4.2.1 / 4.2.3)
DFU_CLASS = 0xFE
DFU_SUBCLASS = 0x01
PROTOCOL_RUNTIME = 0x01
PROTOCOL_DFU_MODE = 0x02

DFU_FUNCTIONAL = 0x21  # descriptor type of the DFU functional descriptor

# Class requests (DFU 1.1 table 3.2)
DETACH = 0
DNLOAD = 1
UPLOAD = 2
GETSTATUS = 3
CLRSTATUS = 4
GETSTATE = 5
ABORT = 6
REQUEST_NAMES = {DETACH: "DETACH", DNLOAD: "DNLOAD", UPLOAD: "UPLOAD", GETSTATUS: "GETSTATUS",
                 CLRSTATUS: "CLRSTATUS", GETSTATE: "GETSTATE", ABORT: "ABORT"}

# bmAttributes of the functional descriptor (DFU 1.1 table 4.2)
CAN_DNLOAD = 0x01
CAN_UPLOAD = 0x02
MANIFESTATION_TOLERANT = 0x04
WILL_DETACH = 0x08


class State(IntEnum):
    """bState values (DFU 1.1 section 6.1.2)."""

    appIDLE = 0
    appDETACH = 1
    dfuIDLE = 2
    dfuDNLOAD_SYNC = 3
    dfuDNBUSY = 4
    dfuDNLOAD_IDLE = 5
    dfuMANIFEST_SYNC = 6
    dfuMANIFEST = 7
    dfuMANIFEST_WAIT_RESET = 8
    dfuUPLOAD_IDLE = 9
    dfuERROR = 10

    @property
    def spec_name(self) -> str:
        return self.name.replace("_", "-")


class Status(IntEnum):
    """bStatus values (DFU 1.1 section 6.1.2)."""

    OK = 0x00
    errTARGET = 0x01
    errFILE = 0x02
    errWRITE = 0x03
    errERASE = 0x04
    errCHECK_ERASED = 0x05
    errPROG = 0x06
    errVERIFY = 0x07
    errADDRESS = 0x08
    errNOTDONE = 0x09
    errFIRMWARE = 0x0A
    errVENDOR = 0x0B
    errUSBR = 0x0C
    errPOR = 0x0D
    errUNKNOWN = 0x0E
    errSTALLEDPKT = 0x0F


STATUS_TEXT: dict[int, str] = {  # keyed by Status (an IntEnum), looked up by the raw byte
    Status.OK: "no error",
    Status.errTARGET: "file is not targeted for use by this device",
    Status.errFILE: "file fails a vendor-specific verification test",
    Status.errWRITE: "device is unable to write memory",
    Status.errERASE: "memory erase function failed",
    Status.errCHECK_ERASED: "memory erase check failed",
    Status.errPROG: "program memory function failed",
    Status.errVERIFY: "programmed memory failed verification",
    Status.errADDRESS: "cannot program memory due to received address that is out of range",
    Status.errNOTDONE: "received DFU_DNLOAD with wLength = 0, but device does not think it has all of the data yet",
    Status.errFIRMWARE: "device's firmware is corrupt; it cannot return to run-time operations",
    Status.errVENDOR: "iString indicates a vendor-specific error",
    Status.errUSBR: "device detected unexpected USB reset signaling",
    Status.errPOR: "device detected unexpected power on reset",
    Status.errUNKNOWN: "something went wrong, but the device does not know what it was",
    Status.errSTALLEDPKT: "device stalled an unexpected request",
}

# bcdDFUVersion
DFU_VERSION_1_1 = 0x0110
DFU_VERSION_1_0 = 0x0100
DFUSE_VERSION = 0x011A

# DfuSe commands, sent in DNLOAD block 0 (AN3156 section 6)
DFUSE_GET_COMMANDS = 0x00
DFUSE_SET_ADDRESS_POINTER = 0x21
DFUSE_ERASE = 0x41
DFUSE_READ_UNPROTECT = 0x92

# Atmel FLIP commands (the first byte of a DNLOAD; LUFA BootloaderDFU.h)
FLIP_PROG_START = 0x01
FLIP_DISPLAY_DATA = 0x03
FLIP_WRITE_COMMAND = 0x04
FLIP_READ_COMMAND = 0x05
FLIP_CHANGE_BASE_ADDR = 0x06
FLIP_HEADER_SIZE = 32  # command (6 bytes) + 26 filler bytes (LUFA DFU_FILLER_BYTES_SIZE)
FLIP_SUFFIX_SIZE = 16  # LUFA DFU_FILE_SUFFIX_SIZE
FLIP_CONTROL_SIZE = 32  # LUFA DFU bootloader: FIXED_CONTROL_ENDPOINT_SIZE (Config/LUFAConfig.h); the data starts StartAddr % 32 bytes after the header
# LUFA's bootloader id bytes (BootloaderDFU.h): version 0x10 (v1.0), 0xDC, 0xFB
FLIP_BOOTLOADER_INFO = bytes((0x10, 0xDC, 0xFB))

# LUFA/Atmel USB ids: VID 0x03EB with a product id per chip (LUFA DFU makefile,
# Atmel's FLIP "USB DFU Bootloader Datasheet" doc7618)
ATMEL_VID = 0x03EB
FLIP_PIDS = {
    "atmega32u4": 0x2FF4,
    "atmega16u4": 0x2FF3,
    "at90usb1286": 0x2FFB,
    "at90usb1287": 0x2FFB,
    "at90usb646": 0x2FF9,
    "at90usb162": 0x2FFA,
    "atmega32u2": 0x2FF0,
    "atmega16u2": 0x2FEF,
    "atxmega32a4u": 0x2FE4,
    # dfu-programmer's target table (src/arguments.c), as bootkit/memory/chips.py lists the parts
    "atmega8u2": 0x2FEE, "at90usb82": 0x2FF7, "at90usb647": 0x2FF9,
    "atxmega64a1u": 0x2FE8, "atxmega128a1u": 0x2FED, "atxmega64a3u": 0x2FE5, "atxmega128a3u": 0x2FE6,
    "atxmega192a3u": 0x2FE7, "atxmega256a3u": 0x2FEC, "atxmega16a4u": 0x2FE3, "atxmega64a4u": 0x2FDD,
    "atxmega128a4u": 0x2FDE, "atxmega256a3bu": 0x2FE2, "atxmega64b1": 0x2FE1, "atxmega128b1": 0x2FEA,
    "atxmega64b3": 0x2FDF, "atxmega128b3": 0x2FE0, "atxmega64c3": 0x2FD6, "atxmega128c3": 0x2FD7,
    "atxmega256c3": 0x2FDA, "atxmega384c3": 0x2FDB, "atxmega16c4": 0x2FD8,
}
ST_VID, DFUSE_PID = 0x0483, 0xDF11
# pid.codes test PID for bootkit's own plain-DFU devices
BOOTKIT_VID, BOOTKIT_DFU_PID, BOOTKIT_RUNTIME_PID = 0x1209, 0xB00D, 0xB00E


@dataclass(frozen=True)
class FunctionalDescriptor:
    """The 9-byte DFU functional descriptor (DFU 1.1 table 4.2)."""

    bmAttributes: int = CAN_DNLOAD | CAN_UPLOAD | MANIFESTATION_TOLERANT
    wDetachTimeOut: int = 1000
    wTransferSize: int = 1024
    bcdDFUVersion: int = DFU_VERSION_1_1

    def pack(self) -> bytes:
        return struct.pack("<BBBHHH", 9, DFU_FUNCTIONAL, self.bmAttributes, self.wDetachTimeOut,
                           self.wTransferSize, self.bcdDFUVersion)

    @classmethod
    def unpack(cls, raw: bytes) -> "FunctionalDescriptor":
        if len(raw) < 7 or raw[1] != DFU_FUNCTIONAL:
            raise ValueError("not a DFU functional descriptor")
        # DFU 1.0 devices may omit bcdDFUVersion (7 bytes)
        attrs, detach, size = struct.unpack_from("<BHH", raw, 2)
        version = struct.unpack_from("<H", raw, 7)[0] if len(raw) >= 9 else DFU_VERSION_1_0
        return cls(attrs, detach, size, version)

    @property
    def can_download(self) -> bool:
        return bool(self.bmAttributes & CAN_DNLOAD)

    @property
    def can_upload(self) -> bool:
        return bool(self.bmAttributes & CAN_UPLOAD)

    @property
    def manifestation_tolerant(self) -> bool:
        return bool(self.bmAttributes & MANIFESTATION_TOLERANT)

    @property
    def will_detach(self) -> bool:
        return bool(self.bmAttributes & WILL_DETACH)


@dataclass(frozen=True)
class StatusReply:
    """The 6-byte GETSTATUS payload."""

    bStatus: int
    bwPollTimeout: int
    bState: int
    iString: int = 0

    def pack(self) -> bytes:
        t = min(self.bwPollTimeout, 0xFFFFFF)
        return bytes((self.bStatus, t & 0xFF, (t >> 8) & 0xFF, (t >> 16) & 0xFF, self.bState, self.iString))

    @classmethod
    def unpack(cls, raw: bytes) -> "StatusReply":
        if len(raw) != 6:
            raise ValueError(f"GETSTATUS returned {len(raw)} bytes, expected 6")
        return cls(raw[0], raw[1] | raw[2] << 8 | raw[3] << 16, raw[4], raw[5])

    @property
    def state_name(self) -> str:
        try:
            return State(self.bState).spec_name
        except ValueError:
            return f"state {self.bState}"

    @property
    def status_name(self) -> str:
        try:
            return Status(self.bStatus).name
        except ValueError:
            return f"status {self.bStatus}"

    def describe(self) -> str:
        text = STATUS_TEXT.get(self.bStatus, "")
        return f"{self.status_name} in {self.state_name}" + (f" ({text})" if text and self.bStatus else "")
