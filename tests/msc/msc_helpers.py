"""Shared by the mass-storage tests: an emulated UF2 drive driven by raw CBWs on the Device."""

from __future__ import annotations

import os
import shutil
import struct

import pytest

from bootkit.classes.msc.protocol import CBW, CBW_FLAG_IN, CSW, cdb_read10, cdb_write10
from bootkit.emulator import Emulator
from bootkit.usb.device import Stall

CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def need_tool(name: str) -> str:
    """The tool's path; skip when it is absent, unless CI is set (then fail)."""
    path = shutil.which(name)
    if path is None:
        if CI:
            pytest.fail(f"{name} is required under CI (apt-get install mtools dosfstools)")
        pytest.skip(f"{name} not installed")
    return path


class Drive:
    """An emulated drive, driven through the sans-I/O Device with CBW/CSW, halts honoured."""

    def __init__(self, chip="stm32f411", **options):
        options.setdefault("leave_delay", 0.0)
        self.em = Emulator(chip, "msc", options=options)
        self.chip = self.em.chip
        self.memory = self.em.memory
        self.device = self.em.target.device
        self.device.set_configuration(1)
        self.fn = self.device.functions[0]
        self.volume = self.fn.volume
        self.sink = self.fn.sink
        self.ep_in = self.fn.ep_in_.address
        self.ep_out = self.fn.ep_out_.address
        self.tag = 0

    # raw phases -------------------------------------------------------
    def out(self, data: bytes) -> bool:
        """Bulk OUT; False if the endpoint STALLed."""
        try:
            self.device.ep_out(self.ep_out, data)
            return True
        except Stall:
            return False

    def inp(self, n: int):
        """Bulk IN; None for a NAK, "STALL" for a STALL."""
        try:
            return self.device.ep_in(self.ep_in, n)
        except Stall:
            return "STALL"

    def clear_halt(self, address: int) -> None:
        from bootkit.usb.device import SetupPacket

        self.device.control(SetupPacket(0x02, 1, 0, address, 0))

    def halted(self, address: int) -> bool:
        return address in self.device.halted

    def reset_recovery(self) -> None:
        from bootkit.usb.device import SetupPacket

        self.device.control(SetupPacket(0x21, 0xFF, 0, 0, 0))
        self.clear_halt(self.ep_in)
        self.clear_halt(self.ep_out)

    def csw(self) -> CSW:
        raw = self.inp(13)
        if raw == "STALL":
            self.clear_halt(self.ep_in)
            raw = self.inp(13)
        return CSW.unpack(raw)

    # whole commands ---------------------------------------------------
    def command(self, cb: bytes, *, data_out: bytes | None = None, in_length: int = 0, host_length=None,
                host_in=None):
        """(CSW, data).  ``host_length``/``host_in`` make the host's expectation differ from the data."""
        self.tag += 1
        length = host_length if host_length is not None else (len(data_out) if data_out else in_length)
        is_in = host_in if host_in is not None else bool(in_length)
        assert self.out(CBW(self.tag, length, CBW_FLAG_IN if is_in else 0, 0, cb).pack())
        data = b""
        if length and not is_in:
            if not self.out(data_out if data_out is not None else bytes(length)):
                self.clear_halt(self.ep_out)
        elif length and is_in:
            got = self.inp(length)
            if got == "STALL":
                self.clear_halt(self.ep_in)
            else:
                data = bytes(got or b"")
        csw = self.csw()
        assert csw.tag == self.tag
        return csw, data

    def write(self, lba: int, data: bytes):
        csw, _ = self.command(cdb_write10(lba, len(data) // 512), data_out=data)
        return csw

    def read(self, lba: int, count: int = 1) -> bytes:
        csw, data = self.command(cdb_read10(lba, count), in_length=count * 512)
        assert csw.status == 0
        return data

    def volume_image(self) -> bytes:
        return b"".join(self.read(lba, 128) for lba in range(0, self.volume.total_sectors, 128))

    def close(self):
        self.em.close()


def uf2_block(target, data, block_no, num_blocks, family=None, *, flags=None, magic0=0x0A324655, size=None):
    flags = (0x2000 if family is not None else 0) if flags is None else flags
    size = len(data) if size is None else size
    head = struct.pack("<8I", magic0, 0x9E5D5157, flags, target, size, block_no, num_blocks, family or 0)
    return head + bytes(data).ljust(476, b"\0")[:476] + struct.pack("<I", 0x0AB16F30)
