"""Reading CURRENT.UF2 back after a drop: what the drive now holds, compared with what
was dropped, and why a drive that kept its bootloader did."""

from __future__ import annotations

import os
from pathlib import Path

import usb.core

from ...formats.image import Image
from ...formats.uf2 import UF2_BLOCK_SIZE, UF2_FLAG_FILE_CONTAINER, UF2_FLAG_NOT_MAIN_FLASH, UF2Block, is_uf2_block
from ...memory import Chip
from ..common import app_first_address
from .bot import MscError
from .plan import Drop
from .protocol import BLOCK_SIZE
from .scsi import MAX_SECTORS, ScsiDisk


def drop_page_cache(fd: int) -> None:
    # Linux keeps a file's pages cached: CURRENT.UF2 read twice would show the old flash.
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass


class NotReadBack(Exception):
    """CURRENT.UF2 could not be read back (the drive left, or it is not a flash image)."""


class Current:
    """CURRENT.UF2 as a view of the flash: block k holds ``step`` bytes at ``base + k * step``
    (tinyuf2 and uf2-samdx1 generate it from flash on every read, as our ghost FAT does)."""

    def __init__(self, first_block: bytes, read_sectors):
        b = UF2Block.unpack(first_block[:UF2_BLOCK_SIZE])
        self.base, self.step, self.count = b.target_addr, b.payload_size, b.num_blocks
        self.read_sectors = read_sectors  # (first sector of the file, count) -> bytes

    def read(self, start: int, end: int) -> bytes:
        if self.step == 0 or start < self.base or end > self.base + self.count * self.step:
            raise NotReadBack(f"0x{start:X}-0x{end - 1:X} is outside CURRENT.UF2")
        k0, k1 = (start - self.base) // self.step, (end - 1 - self.base) // self.step + 1
        out = bytearray()
        for k in range(k0, k1, MAX_SECTORS):
            n = min(MAX_SECTORS, k1 - k)
            chunk = self.read_sectors(k, n)
            for j in range(n):
                raw = chunk[j * UF2_BLOCK_SIZE:(j + 1) * UF2_BLOCK_SIZE]
                want = self.base + (k + j) * self.step
                if not is_uf2_block(raw) or UF2Block.unpack(raw).target_addr != want:
                    raise NotReadBack(f"CURRENT.UF2 block {k + j} is not the flash at 0x{want:X}")
                out += UF2Block.unpack(raw).data
        off = start - (self.base + k0 * self.step)
        return bytes(out[off:off + end - start])

    def differs(self, image: Image) -> str:
        """'' when the flash holds ``image``; else where it does not (one line)."""
        return self.compare(image)[0]

    def compare(self, image: Image) -> tuple[str, list[tuple[int, int]]]:
        """('' , []) when the flash holds ``image``; else the first difference (one line) and
        the spans of CURRENT.UF2 blocks that differ."""
        first, count = "", 0
        spans: list[tuple[int, int]] = []
        for start, data in image.segments:
            got = self.read(start, start + len(data))
            if got == data:
                continue
            for i in range(len(data)):
                if got[i] == data[i]:
                    continue
                count += 1
                a = start + i
                if not first:
                    first = f"0x{got[i]:02X} at 0x{a:X} where the file has 0x{data[i]:02X}"
                lo = a - (a - self.base) % self.step
                if spans and spans[-1][1] >= lo:
                    spans[-1] = (spans[-1][0], max(spans[-1][1], lo + self.step))
                else:
                    spans.append((lo, lo + self.step))
        if not first:
            return "", []
        return f"CURRENT.UF2 reads {first} ({count} byte(s) differ)", spans


def scsi_current(disk: ScsiDisk, volume, first_block: bytes) -> Current | None:
    """CURRENT.UF2 read sector by sector with READ(10), its clusters found once (the file
    is the device's: it does not move while we write ours)."""
    try:
        entry = volume._get_dir_entry("/CURRENT.UF2")
        fat = volume.fs
        chain = list(fat.get_cluster_chain(entry.get_cluster()))
        per_cluster = fat.bytes_per_cluster // BLOCK_SIZE
    except Exception:  # pyfatfs: a FAT it cannot follow; then nothing is read back
        return None

    def lba(k: int) -> int:
        return fat.get_data_cluster_address(chain[k // per_cluster]) // BLOCK_SIZE + k % per_cluster

    def read_sectors(k: int, n: int) -> bytes:
        if (k + n - 1) // per_cluster >= len(chain):
            raise NotReadBack("CURRENT.UF2 is shorter than its first block says")
        out = b""
        i = k
        while i < k + n:  # runs of consecutive LBAs, one READ(10) each
            j = i + 1
            while j < k + n and lba(j) == lba(j - 1) + 1:
                j += 1
            out += disk.read(lba(i), j - i)
            i = j
        return out

    return Current(first_block, read_sectors)


def file_current(path: Path, first_block: bytes) -> Current | None:
    """CURRENT.UF2 on a mounted drive, its cached pages dropped before every read (Linux keeps
    them: a second read would show the flash as it was).  None where that cannot be done."""
    if not hasattr(os, "posix_fadvise"):
        return None

    def read_sectors(k: int, n: int) -> bytes:
        try:
            with open(path, "rb", buffering=0) as f:
                drop_page_cache(f.fileno())
                f.seek(k * UF2_BLOCK_SIZE)
                data = f.read(n * UF2_BLOCK_SIZE)
        except OSError as exc:
            raise NotReadBack(str(exc)) from None
        if len(data) != n * UF2_BLOCK_SIZE:
            raise NotReadBack("CURRENT.UF2 is shorter than its first block says")
        return data

    return Current(first_block, read_sectors)


def hold_back(drop: Drop, current: Current | None, verify: bool) -> tuple[Current, int] | None:
    """(CURRENT.UF2 to read back from, the byte offset in the payload of the block held back) when
    the drop's last block waits until the others were read back; None when nothing is held back
    (no verify, nothing to read back from, or a file the drive takes none of)."""
    if not verify or drop.held is None or current is None or drop.foreign:
        return None
    return current, drop.held * UF2_BLOCK_SIZE


def _held_range(drop: Drop) -> tuple[int, int] | None:
    if drop.held is None:
        return None
    raw = drop.payload[drop.held * UF2_BLOCK_SIZE:(drop.held + 1) * UF2_BLOCK_SIZE]
    b = UF2Block.unpack(raw)
    if b.flags & (UF2_FLAG_NOT_MAIN_FLASH | UF2_FLAG_FILE_CONTAINER):
        return None
    return b.target_addr, b.target_addr + b.payload_size


def _without(image: Image, span: tuple[int, int] | None) -> Image:
    if span is None:
        return image
    out = Image()
    for start, data in image.segments:
        end = start + len(data)
        if start < span[0]:
            out.add(start, data[:min(end, span[0]) - start])
        if end > span[1]:
            lo = max(start, span[1])
            out.add(lo, data[lo - start:])
    return out


def _only(image: Image, spans) -> Image:
    out = Image()
    for lo, hi in spans:
        for start, data in image.crop(lo, hi).segments:
            out.add(start, data, overwrite=True)
    return out


def placeholder(block: bytes) -> bytes:
    """The held block with magicStart0 cleared: not a UF2 block to any drive (tinyuf2 and
    uf2-samdx1 check the magics first), so the file is laid out whole and complete later."""
    return bytes(4) + block[4:]


def verify_before_last(current: Current, drop: Drop) -> tuple[str, list]:
    """Every block but the held one is on the drive: read them back before the last goes.

    Returns ('', spans to read again after the last block) or ("not verified: ...", []) when
    CURRENT.UF2 cannot be read.  A difference now is not yet a failure: tinyuf2 keeps the
    flash sector it is filling in RAM until the next one or the file's end (its
    board_flash_write caches, board_flash_flush writes), so those bytes are read again."""
    try:
        _, spans = current.compare(_without(drop.expected, _held_range(drop)))
    except NotReadBack as exc:
        return f"not verified: {exc}", []
    return "", spans


def verify_last(current: Current, drop: Drop, again: list) -> str:
    """The held block's data, and what differed before it, read back right after it was sent
    (the drive leaves about a second later).  Returns the step; raises when the flash holds
    something else."""
    held = _held_range(drop)
    part = _only(drop.expected, list(again) + ([held] if held else []))
    try:
        wrong = current.differs(part)
    except (NotReadBack, usb.core.USBError, MscError, OSError):
        return "not verified: the drive left before its last block was read back"
    if wrong:
        raise MscError(f"verify failed: {wrong}")
    return f"CURRENT.UF2 read back: {drop.expected.size} bytes match"


def verify_all(current: Current | None, drop: Drop) -> str:
    """A BIN/HEX file is programmed whole once its last sector arrives: read back at once."""
    if current is None:
        return "not verified: CURRENT.UF2 cannot be read back here"
    try:
        wrong = current.differs(drop.expected)
    except (NotReadBack, usb.core.USBError, MscError, OSError):
        return "not verified: the drive left before CURRENT.UF2 was read back"
    if wrong:
        raise MscError(f"verify failed: {wrong}")
    return f"CURRENT.UF2 read back: {drop.expected.size} bytes match"


def why_stayed(drop: Drop, current: Current | None, chip: Chip | None, waited: float) -> str:
    """The drive is still there after the copy: what CURRENT.UF2 says about why."""
    if drop.foreign:
        return f"it ignored the file: {drop.foreign}"
    if current is not None:
        try:
            first = app_first_address(chip) if chip is not None else current.base
            if current.read(first, first + 2) == b"\xff\xff":
                return "first word of flash is erased: the bootloader kept control"
            wrong = current.differs(drop.expected)
            if wrong:
                return f"the flash does not hold the file: {wrong}"
            return f"the flash holds the file, but the drive did not restart within {waited:g} s"
        except (NotReadBack, usb.core.USBError, MscError, OSError):
            pass
    return f"the drive did not restart within {waited:g} s after the copy"


def read_back(current, drop, verify: bool) -> str:
    """The verify step of a drop whose last block was not held back: the whole file read
    back from CURRENT.UF2 (or why it was not)."""
    if drop.foreign:
        return "not verified: the drive takes none of the file's blocks"
    if not verify:
        return "not verified (--no-verify)"
    return verify_all(current, drop)
