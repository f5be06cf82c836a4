"""A SCSI disk over the Bulk-Only Transport: INQUIRY, READ CAPACITY, READ(10)/WRITE(10),
SYNCHRONIZE CACHE, with REQUEST SENSE on CHECK CONDITION (SPC-4, SBC-3)."""

from __future__ import annotations

import struct
import time

from .bot import BotClient, CheckCondition, MscError
from .protocol import (
    BLOCK_SIZE,
    CSW_GOOD,
    NOT_READY,
    UNIT_ATTENTION,
    cdb_inquiry,
    cdb_read10,
    cdb_read_capacity10,
    cdb_request_sense,
    cdb_synchronize_cache10,
    cdb_test_unit_ready,
    cdb_write10,
    decode_sense,
)


MAX_SECTORS = 128  # per READ(10)/WRITE(10): 64 KiB (Linux usb-storage uses up to 240)


class ScsiDisk:
    """The SCSI block commands a FAT volume needs, over a :class:`BotClient`."""

    def __init__(self, client: BotClient):
        self.client = client
        self.inquiry = self.command(cdb_inquiry(36), in_length=36, what="INQUIRY")
        for _ in range(5):  # a UNIT ATTENTION or NOT READY right after enumeration is normal
            try:
                self.command(cdb_test_unit_ready(), what="TEST UNIT READY")
                break
            except CheckCondition as exc:
                if exc.sense[0] not in (UNIT_ATTENTION, NOT_READY):
                    raise
                time.sleep(0.05)
        last, size = struct.unpack(">II", self.command(cdb_read_capacity10(), in_length=8,
                                                       what="READ CAPACITY(10)"))
        if size != BLOCK_SIZE:
            raise MscError(f"block size {size}, only {BLOCK_SIZE} is supported")
        self.blocks = last + 1

    def command(self, cb: bytes, *, data_out: bytes | None = None, in_length: int = 0, what: str = "") -> bytes:
        status, data, _residue = self.client.transport(cb, data_out=data_out, in_length=in_length)
        if status == CSW_GOOD:
            return data
        _, sense, _ = self.client.transport(cdb_request_sense(18), in_length=18)
        raise CheckCondition(what or f"opcode 0x{cb[0]:02X}", decode_sense(sense))

    def read(self, lba: int, count: int) -> bytes:
        return self.command(cdb_read10(lba, count), in_length=count * BLOCK_SIZE, what=f"READ(10) LBA {lba}")

    def write(self, lba: int, data: bytes) -> None:
        self.command(cdb_write10(lba, len(data) // BLOCK_SIZE), data_out=data, what=f"WRITE(10) LBA {lba}")

    def synchronize(self) -> None:
        self.command(cdb_synchronize_cache10(), what="SYNCHRONIZE CACHE(10)")
