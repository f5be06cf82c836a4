"""USB Mass Storage, Bulk-Only Transport and the SCSI commands a UF2 drive needs.

Shared by both halves: the CBW/CSW codecs (USB MSC BOT 1.0 section 5),
the class requests (section 3), the SCSI operation codes (SPC-4, SBC-3),
sense keys and additional sense codes, and builders for the fixed-format
replies (INQUIRY, REQUEST SENSE, READ CAPACITY, READ FORMAT CAPACITIES,
MODE SENSE) and for the CDBs the host sends.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Interface triple (MSC overview 1.4 tables 1 and 2): mass storage, SCSI
# transparent command set, Bulk-Only Transport.
MSC_CLASS = 0x08
MSC_SUBCLASS_SCSI = 0x06
MSC_PROTOCOL_BOT = 0x50

# Class requests (BOT 3.1, 3.2)
BULK_ONLY_RESET = 0xFF  # bmRequestType 0x21, wValue 0, wLength 0
GET_MAX_LUN = 0xFE  # bmRequestType 0xA1, wValue 0, wLength 1

# CBW / CSW (BOT 5.1, 5.2)
CBW_SIGNATURE = 0x43425355  # "USBC"
CSW_SIGNATURE = 0x53425355  # "USBS"
CBW_LENGTH = 31
CSW_LENGTH = 13
CBW_FLAG_IN = 0x80

# bCSWStatus (BOT table 5.3)
CSW_GOOD = 0x00
CSW_FAILED = 0x01
CSW_PHASE_ERROR = 0x02

_CBW = struct.Struct("<IIIBBB16s")
_CSW = struct.Struct("<IIIB")

# SCSI operation codes (SPC-4, SBC-3)
TEST_UNIT_READY = 0x00
REQUEST_SENSE = 0x03
INQUIRY = 0x12
MODE_SELECT_6 = 0x15
MODE_SENSE_6 = 0x1A
START_STOP_UNIT = 0x1B
PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
READ_FORMAT_CAPACITIES = 0x23  # from UFI/MMC; Windows sends it to every USB disk
READ_CAPACITY_10 = 0x25
READ_10 = 0x28
WRITE_10 = 0x2A
VERIFY_10 = 0x2F
SYNCHRONIZE_CACHE_10 = 0x35
MODE_SENSE_10 = 0x5A

OPCODE_NAMES = {
    TEST_UNIT_READY: "TEST UNIT READY", REQUEST_SENSE: "REQUEST SENSE", INQUIRY: "INQUIRY",
    MODE_SENSE_6: "MODE SENSE(6)", START_STOP_UNIT: "START STOP UNIT",
    PREVENT_ALLOW_MEDIUM_REMOVAL: "PREVENT ALLOW MEDIUM REMOVAL", READ_FORMAT_CAPACITIES: "READ FORMAT CAPACITIES",
    READ_CAPACITY_10: "READ CAPACITY(10)", READ_10: "READ(10)", WRITE_10: "WRITE(10)", VERIFY_10: "VERIFY(10)",
    SYNCHRONIZE_CACHE_10: "SYNCHRONIZE CACHE(10)", MODE_SENSE_10: "MODE SENSE(10)",
}

# Sense keys (SPC-4 table 27)
NO_SENSE = 0x0
NOT_READY = 0x2
MEDIUM_ERROR = 0x3
ILLEGAL_REQUEST = 0x5
UNIT_ATTENTION = 0x6
MISCOMPARE = 0xE

# (ASC, ASCQ) pairs (SPC-4 table D.1)
ASC_NONE = (0x00, 0x00)
ASC_MEDIUM_NOT_PRESENT = (0x3A, 0x00)
ASC_INVALID_COMMAND_OPERATION_CODE = (0x20, 0x00)
ASC_LBA_OUT_OF_RANGE = (0x21, 0x00)
ASC_INVALID_FIELD_IN_CDB = (0x24, 0x00)
ASC_MEDIUM_MAY_HAVE_CHANGED = (0x28, 0x00)
ASC_MISCOMPARE_DURING_VERIFY = (0x1D, 0x00)
ASC_WRITE_ERROR = (0x0C, 0x00)

# MODE SENSE pages (SBC-3 6.4)
PAGE_CACHING = 0x08
PAGE_ALL = 0x3F

BLOCK_SIZE = 512


class BotError(ValueError):
    """A CBW or CSW that is not valid or not meaningful (BOT 6.2)."""


@dataclass(frozen=True)
class CBW:
    """Command Block Wrapper (BOT 5.1)."""

    tag: int
    data_length: int  # dCBWDataTransferLength
    flags: int  # bmCBWFlags: bit 7 set = data-in
    lun: int
    cb: bytes  # CBWCB, the SCSI CDB (bCBWCBLength bytes)

    @property
    def is_in(self) -> bool:
        return bool(self.flags & CBW_FLAG_IN)

    def pack(self) -> bytes:
        return _CBW.pack(CBW_SIGNATURE, self.tag, self.data_length, self.flags, self.lun,
                         len(self.cb), self.cb.ljust(16, b"\0"))

    @classmethod
    def unpack(cls, raw: bytes) -> "CBW":
        """Parse a CBW; raise :class:`BotError` if it is not *valid* or not *meaningful* (BOT 6.2.1, 6.2.2)."""
        if len(raw) != CBW_LENGTH:
            raise BotError(f"CBW of {len(raw)} bytes, not {CBW_LENGTH}")
        sig, tag, length, flags, lun, cblen, cb = _CBW.unpack(raw)
        if sig != CBW_SIGNATURE:
            raise BotError(f"CBW signature 0x{sig:08X}, not 0x{CBW_SIGNATURE:08X}")
        # meaningful: reserved bits zero, LUN supported, 1 <= bCBWCBLength <= 16
        if flags & 0x7F or lun & 0xF0 or cblen & 0xE0 or not 1 <= cblen <= 16:
            raise BotError(f"CBW not meaningful (flags 0x{flags:02X}, LUN 0x{lun:02X}, CB length {cblen})")
        return cls(tag, length, flags, lun & 0x0F, bytes(cb[:cblen]))


@dataclass(frozen=True)
class CSW:
    """Command Status Wrapper (BOT 5.2)."""

    tag: int
    residue: int  # dCSWDataResidue
    status: int  # bCSWStatus

    def pack(self) -> bytes:
        return _CSW.pack(CSW_SIGNATURE, self.tag, self.residue, self.status)

    @classmethod
    def unpack(cls, raw: bytes) -> "CSW":
        if len(raw) != CSW_LENGTH:
            raise BotError(f"CSW of {len(raw)} bytes, not {CSW_LENGTH}")
        sig, tag, residue, status = _CSW.unpack(raw)
        if sig != CSW_SIGNATURE:
            raise BotError(f"CSW signature 0x{sig:08X}, not 0x{CSW_SIGNATURE:08X}")
        return cls(tag, residue, status)


# --------------------------------------------------------------------------
# Replies


def sense_data(key: int, asc: tuple[int, int]) -> bytes:
    """Fixed-format sense data, 18 bytes (SPC-4 4.5.3): response code 0x70, current error."""
    return bytes([0x70, 0, key & 0x0F, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc[0], asc[1], 0, 0, 0, 0])


def inquiry_data(vendor: str, product: str, revision: str) -> bytes:
    """Standard INQUIRY data, 36 bytes (SPC-4 6.4.2): removable direct-access block device."""
    def field(text: str, n: int) -> bytes:
        return text.encode("ascii", "replace")[:n].ljust(n, b" ")

    # byte 2 version 4 = SPC-2 (what f_mass_storage and most flash drives report),
    # byte 3 response data format 2, byte 4 additional length 31.
    return bytes([0x00, 0x80, 0x04, 0x02, 31, 0, 0, 0]) + field(vendor, 8) + field(product, 16) + field(revision, 4)


def read_capacity_data(blocks: int, block_size: int = BLOCK_SIZE) -> bytes:
    """READ CAPACITY(10) data (SBC-3 5.15): last LBA, block length."""
    return struct.pack(">II", blocks - 1, block_size)


def format_capacities_data(blocks: int, block_size: int = BLOCK_SIZE) -> bytes:
    """READ FORMAT CAPACITIES data (UFI 4.10): list header, one current/maximum descriptor (formatted media)."""
    return bytes([0, 0, 0, 8]) + struct.pack(">I", blocks) + bytes([0x02]) + block_size.to_bytes(3, "big")


def caching_page() -> bytes:
    """Caching mode page (SBC-3 6.4.5) with WCE=0 and RCD=0: writes are not cached by the device."""
    return bytes([PAGE_CACHING, 0x12]) + bytes(0x12)


# --------------------------------------------------------------------------
# CDBs (host side, and tests)


def cdb_read10(lba: int, count: int) -> bytes:
    return struct.pack(">BBIBHB", READ_10, 0, lba, 0, count, 0)


def cdb_write10(lba: int, count: int) -> bytes:
    return struct.pack(">BBIBHB", WRITE_10, 0, lba, 0, count, 0)


def cdb_verify10(lba: int, count: int, bytchk: bool = False) -> bytes:
    return struct.pack(">BBIBHB", VERIFY_10, 0x02 if bytchk else 0, lba, 0, count, 0)


def cdb_inquiry(length: int = 36) -> bytes:
    return struct.pack(">BBBHB", INQUIRY, 0, 0, length, 0)


def cdb_request_sense(length: int = 18) -> bytes:
    return bytes([REQUEST_SENSE, 0, 0, 0, length, 0])


def cdb_test_unit_ready() -> bytes:
    return bytes(6)


def cdb_read_capacity10() -> bytes:
    return bytes([READ_CAPACITY_10]) + bytes(9)


def cdb_start_stop(start: bool, load_eject: bool) -> bytes:
    return bytes([START_STOP_UNIT, 0, 0, 0, (2 if load_eject else 0) | (1 if start else 0), 0])


def cdb_prevent_allow(prevent: bool) -> bytes:
    return bytes([PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 1 if prevent else 0, 0])


def cdb_synchronize_cache10() -> bytes:
    return bytes([SYNCHRONIZE_CACHE_10]) + bytes(9)


def decode_sense(data: bytes) -> tuple[int, int, int]:
    """(sense key, ASC, ASCQ) of fixed-format sense data."""
    if len(data) < 14:
        return (data[2] & 0x0F if len(data) > 2 else 0, 0, 0)
    return data[2] & 0x0F, data[12], data[13]
