"""What a file dropped on the drive does: UF2 blocks and raw .BIN/.HEX files to flash.

UF2 (microsoft/uf2 README "Handling of files"): every written sector is
checked for the three magics wherever it lands, because hosts write a
file's data in any order and before or after its directory entry.  A
block is programmed when it is ours (family, payload, target inside the
application) and counted once in a bitmap of blockNo; when numBlocks
blocks have arrived the application is manifested and the device leaves
after a delay, so the host's final FAT/directory writes and SYNCHRONIZE
CACHE still find it (macOS Finder reports error -36 and "the device
disappeared" when a UF2 bootloader resets too quickly: Adafruit nRF52
bootloader issue 330).  Blocks of another family are ignored entirely, so
one multi-family file serves several chips and a file for another chip,
copied with `cp`, programs nothing and never marks the application valid
(tinyuf2's uf2_write_block programs only ``familyID == BOARD_UF2_FAMILY_ID``
and returns before counting anything else).

Where uf2-samdx1 counts blocks it could not program "to reset properly"
(so a file that does not fit still resets into a half-written
application), we count only blocks we accept: an image with one bad block
never completes and is never manifested.  numBlocks changing mid-file
poisons nothing (uf2-samdx1 sets its count to 0xFFFFFFFF): the odd block
is ignored and the file that was being written can still complete.

Raw files (.BIN at the application start, Intel .HEX): the host writes
data, directory entry and FAT in whatever order it likes (Linux: data,
then FAT and directory at writeback; Windows: directory first, data, FAT;
macOS: data, FAT late), so nothing is programmed until the directory
entry, a FAT chain ending in EOC that covers its size, and every data
sector are all present; then the whole file is checked and programmed.
"""

from __future__ import annotations

import struct
from typing import Callable, Sequence

from ...formats.ihex import parse_hex
from ...formats.image import FormatError, Image
from ...formats.uf2 import (
    UF2_DATA_SIZE,
    UF2_FLAG_FAMILY_ID_PRESENT,
    UF2_FLAG_FILE_CONTAINER,
    UF2_FLAG_NOT_MAIN_FLASH,
    is_uf2_block,
)
from ...memory import MemoryFault
from ...memory.backends import BackendFault
from ...memory.writer import SessionWriter
from ...usb.device import SignalKind
from ..common import ImageRejected, check_ranges
from .ghostfat import ATTR_DIRECTORY, ATTR_VOLUME_ID, SECTOR, GhostFat

APPLE_DOUBLE_MAGIC = b"\x00\x05\x16\x07"  # macOS "._NAME" resource-fork files (RFC 1740)
RAW_FORMATS = {"BIN": "bin", "HEX": "hex"}
ACCEPTABLE = ("uf2", "bin", "hex")


class Uf2Session:
    """The blocks of one UF2 file (one family's numbering) received so far."""

    def __init__(self, family: int | None, num_blocks: int):
        self.family = family
        self.num_blocks = num_blocks
        self.bitmap = bytearray(-(-num_blocks // 8))
        self.count = 0

    def has(self, n: int) -> bool:
        return bool(self.bitmap[n >> 3] & (1 << (n & 7)))

    def mark(self, n: int) -> None:
        self.bitmap[n >> 3] |= 1 << (n & 7)
        self.count += 1

    @property
    def complete(self) -> bool:
        return self.count == self.num_blocks


class DropTarget:
    """The sink of a :class:`GhostFat`: turns dropped files into flash writes."""

    def __init__(self, memory, *, app_start: int, app_end: int, family: int | None,
                 accept: tuple[str, ...] = ("uf2",), accept_no_family: bool = False,
                 leave_delay: float = 1.0, signal: Callable[..., None] | None = None):
        unknown = set(accept) - set(ACCEPTABLE)
        if unknown:
            raise ValueError(f"unknown file kind(s) {sorted(unknown)} (accept from {', '.join(ACCEPTABLE)})")
        self.memory = memory
        self.app_start, self.app_end = app_start, app_end
        self.family = family
        self.accept = tuple(accept)
        # A chip with no UF2 family takes family-less blocks; a product may allow them anyway.
        self.accept_no_family = accept_no_family or family is None
        self.leave_delay = leave_delay
        self.signal = signal or (lambda kind, reason="", delay=0.0: None)
        # how long the memory is busy after a write: the MscFunction passes it on
        # (Function.busy), and the transport holds the drive's next transfer
        self.busy: Callable[[float], object] = lambda seconds: None
        self.writer = SessionWriter(memory)
        self.session: Uf2Session | None = None
        # Each block carries at least 4 bytes of the application (or is flagged
        # not-for-flash): more blocks than that is not a file for this chip.
        self.max_blocks = max(1, (app_end - app_start) // 4)
        self.done = False  # an update completed: the device is about to leave
        self.refusals: list[str] = []  # why blocks or files were not programmed
        self.other_families: set[int] = set()
        self.programmed_blocks = 0
        self.seen_files: set[tuple] = set()
        self.pending: dict[tuple, set[int]] = {}  # raw file -> data sectors still missing
        self.events: list[str] = []

    # ------------------------------------------------------------------
    # UF2
    def uf2_sector(self, lba: int, raw: bytes) -> bool:
        """A written data sector.  True when it is a UF2 block whose payload flash now holds, so the
        volume may keep only its header; False for anything the volume must keep as written."""
        if "uf2" not in self.accept or not is_uf2_block(raw):
            return False
        kept = self._uf2_block(lba, raw)
        if kept is None:
            return False
        target, size = kept
        # the drive's own check, which no host sees: peek() where the memory has it, so a
        # file-backed emulated flash is not written through once per block (#17)
        look = getattr(self.memory, "peek", self.memory.read)
        try:
            return look(target, size) == raw[32:32 + size]
        except BackendFault as exc:
            self._lost(lba, exc)
            raise

    def _uf2_block(self, lba: int, raw: bytes) -> tuple[int, int] | None:
        """Check, program and count one block: (target, size) when its payload went to flash."""
        flags, target, size, block_no, num_blocks, fam = struct.unpack_from("<6I", raw, 8)
        family = fam if flags & UF2_FLAG_FAMILY_ID_PRESENT else None
        if family is not None and family != self.family:
            self.other_families.add(family)  # another chip's part of a multi-family file
            return None
        if family is None and not self.accept_no_family:
            self._refuse(lba, "block without a family id (this product requires one)")
            return None
        if size > UF2_DATA_SIZE or size % 4 or not size:
            self._refuse(lba, f"payloadSize {size} (must be 4..{UF2_DATA_SIZE}, a multiple of 4)")
            return None
        if not num_blocks or block_no >= num_blocks or num_blocks > self.max_blocks:
            self._refuse(lba, f"blockNo {block_no} of numBlocks {num_blocks}")
            return None
        to_flash = not flags & (UF2_FLAG_NOT_MAIN_FLASH | UF2_FLAG_FILE_CONTAINER)
        if to_flash and not (self.app_start <= target and target + size <= self.app_end):
            self._refuse(lba, f"target 0x{target:X}+{size} is outside the application "
                              f"0x{self.app_start:X}-0x{self.app_end - 1:X}")
            return None
        if self.done:
            return None  # an update just completed; the device is leaving
        session = self.session
        if session is None:
            session = self.session = Uf2Session(family, num_blocks)
            self.writer.reset()
            self.events.append(f"UF2 file of {num_blocks} blocks started")
        elif session.num_blocks != num_blocks or session.family != family:
            self._refuse(lba, f"numBlocks {num_blocks} differs from {session.num_blocks} of the file being written")
            return None
        if session.has(block_no):
            return (target, size) if to_flash else None  # a block written again counts once
        if to_flash:
            try:
                self.busy(self.writer.write(target, raw[32:32 + size]))
            except BackendFault as exc:
                self._lost(lba, exc)
                raise
            except MemoryFault as exc:
                self._refuse(lba, str(exc))
                return None
            self.programmed_blocks += 1
        session.mark(block_no)
        if session.complete:
            self._finish(f"UF2 file complete ({num_blocks} blocks)")
        return (target, size) if to_flash else None

    def _refuse(self, lba: int, why: str) -> None:
        self.refusals.append(f"LBA {lba}: {why}")

    def _lost(self, lba: int | None, exc: BackendFault) -> None:
        """The target behind the drive failed: the file being written is abandoned (a retry
        starts it again from its first block) and the fault goes on to the SCSI engine, which
        ends the WRITE(10) with MEDIUM ERROR / WRITE ERROR (device.py _Write); the drive never
        reports the update complete.  Not a refusal: the file itself was fine."""
        self.session = None
        self.events.append(f"{'LBA %d: ' % lba if lba is not None else ''}target failed: {exc}")

    def _finish(self, reason: str) -> None:
        try:
            self.busy(self.memory.manifest())
        except BackendFault as exc:
            self._lost(None, exc)
            raise
        except MemoryFault as exc:
            self.refusals.append(f"manifest: {exc}")
            self.session = None
            return
        self.done = True
        self.events.append(reason)
        self.signal(SignalKind.LEAVE, reason, self.leave_delay)

    # ------------------------------------------------------------------
    # raw files
    def volume_changed(self, volume: GhostFat, meta: bool, data_lbas: set[int]) -> None:
        raw_kinds = [k for k in ("bin", "hex") if k in self.accept]
        if not raw_kinds or self.done:
            return
        if meta:
            self._scan(volume, raw_kinds)
            return
        for key, missing in list(self.pending.items()):
            missing -= data_lbas
            if not missing:
                self._scan(volume, raw_kinds)
                return

    def _scan(self, volume: GhostFat, raw_kinds: Sequence[str]) -> None:
        self.pending.clear()
        for entry in volume.root_entries():
            kind = RAW_FORMATS.get(entry.ext.upper())
            if kind is None or kind not in raw_kinds or entry.attr & (ATTR_DIRECTORY | ATTR_VOLUME_ID):
                continue
            if entry.long_name.startswith("._"):
                continue  # macOS AppleDouble companion of the real file
            if entry.size == 0 or entry.cluster < volume.first_free_cluster:
                continue  # created, not written yet
            key = (entry.name, entry.cluster, entry.size)
            if key in self.seen_files:
                continue
            limit = self.app_end - self.app_start
            if kind == "hex":
                limit = limit * 3 + 4096  # ':10AAAA00' + 32 digits + 2 + CRLF per 16 bytes, 2.8x
            if entry.size > limit:
                self.seen_files.add(key)
                self.refusals.append(f"{entry.name}: {entry.size} bytes is larger than the application "
                                     f"({self.app_end - self.app_start} bytes)")
                continue
            chain = volume.chain(entry.cluster, -(-entry.size // volume.cluster_bytes))
            if chain is None:
                continue  # the FAT is not (fully) written yet
            lbas = [volume.cluster_lba(c) + i for c in chain for i in range(volume.sectors_per_cluster)]
            lbas = lbas[:-(-entry.size // SECTOR)]
            missing = {lba for lba in lbas if not volume.holds(lba)}
            if missing:
                self.pending[key] = missing
                continue
            data = b"".join(volume.read(lba) for lba in lbas)[:entry.size]
            self.seen_files.add(key)
            if data[:4] == APPLE_DOUBLE_MAGIC:
                continue
            if self._program_raw(entry.name, kind, data, key):
                return

    def _program_raw(self, name: str, kind: str, data: bytes, key: tuple = ()) -> bool:
        try:
            if kind == "bin":
                image = Image([(self.app_start, data)])
            else:
                image = parse_hex(data, source=name)
            check_ranges(image, [(self.app_start, self.app_end)], self.memory.layout.protected,
                         "the application region")
        except (FormatError, ImageRejected) as exc:
            self.refusals.append(f"{name}: {exc}")
            return False
        if not image:
            self.refusals.append(f"{name}: no data")
            return False
        self.writer.reset()
        self.session = None
        try:
            for address, chunk in image.segments:
                self.busy(self.writer.write(address, chunk))
        except BackendFault as exc:
            self.seen_files.discard(key)  # the same file written again is programmed again
            self._lost(None, exc)
            raise
        except MemoryFault as exc:
            self.refusals.append(f"{name}: {exc}")
            return False
        self._finish(f"{name} programmed ({image.size} bytes)")
        return True
