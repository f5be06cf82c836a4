"""Simulated NOR flash (plus EEPROM, fuses, lock and signature bytes).

Behaves as NOR flash does: erase sets a sector to 0xFF, programming can only
clear bits (programming a bit from 0 back to 1 is a not-erased error), and
the protected bootloader region refuses erase and program.  It counts erase
cycles per sector, can be backed by a file so an image survives the
process.  It never sleeps: in real-time mode ``erase``, ``erase_all``,
``program`` and ``manifest`` return the chip's datasheet time as the seconds
the memory is busy (0.0 in fast mode), for the engine or its transport to wait.
"""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path

from .chips import Chip
from .core import (
    AddressFault,
    EraseCounters,
    EraseFault,
    FirmwareFault,
    Layout,
    NotErasedFault,
    ProtectedFault,
    Region,
    Timing,
    WriteFault,
)
from .faults import FaultPlan
from .store import ImageStore


class SimulatedFlash:
    """A MemoryIO over RAM, optionally loaded from and saved to FILE.bin.

    ``image_path`` holds the whole flash from its first address (bootloader
    region included), created erased when absent.  Its companion
    ``FILE.bin.state.json`` keeps what a real bootloader keeps in a reserved
    flash word: whether the application was manifested, plus the erase
    counters.  :mod:`.store` writes the pair crash-consistently and holds
    the one-writer lock (``readonly=True``: a shared lock, nothing written)
    from here until :meth:`close`.

    Write-through: the file follows the memory at every point where a host
    can see an update complete, so a killed process keeps what its host was
    told: :meth:`manifest`, a :meth:`read` of bytes changed since the last
    save (a read-back verify), the first operation after changes have been
    unsaved for :attr:`PERSIST_AFTER` seconds, :meth:`persist` (the emulator
    calls it on leave, reset, disconnect) and :meth:`close`.

    ``faults`` (a :class:`~.faults.FaultPlan`) is called before every
    program, erase and file step, so a campaign can cut the power there.
    """

    #: seconds changes may stay unsaved while operations go on
    PERSIST_AFTER = 1.0
    #: granularity, in bytes, of the record of what changed since the last save
    DIRTY_BLOCK = 16

    def __init__(self, chip: Chip, image_path: str | os.PathLike | None = None, *,
                 realtime: bool = False, read_protected: bool = False, readonly: bool = False,
                 faults: FaultPlan | None = None):
        self.chip = chip
        self.layout: Layout = chip.layout()
        # The timing a protocol reports (DFU bwPollTimeout, MIDI pacing): the
        # datasheet figures in real-time mode; zero in fast mode, where every
        # operation completes at once, so hosts never wait for nothing.
        self.realtime = realtime
        self.timing: Timing = chip.timing if realtime else Timing()
        self.read_protected = read_protected
        self.erase_counters = EraseCounters()
        self.app_valid = False
        self.image_path = Path(image_path) if image_path is not None else None
        self.readonly = readonly
        self.faults = faults
        #: the clock of the PERSIST_AFTER rule (tests replace it)
        self.clock = time.monotonic
        self._mem: dict[str, bytearray] = {}
        for region in self.layout.regions:
            self._mem[region.name] = bytearray(b"\xff" * region.size)
        for address, data in chip.initial_contents().items():
            region = self.layout.find(address)
            off = address - region.start
            self._mem[region.name][off:off + len(data)] = data
        self._flash = self._mem[self.layout.flash.name]
        # what changed since the last save: one flag per DIRTY_BLOCK of each saved region
        self._dirty_blocks: dict[str, bytearray] = {}
        self._dirty_since: float | None = None
        # a change that _dirty_blocks does not locate (save()): the next save hashes the whole image
        self._changed_anywhere = True
        self._store: ImageStore | None = None
        self._closed = False
        if self.image_path is not None:
            self._store = ImageStore(self.image_path, readonly=readonly, faults=faults)
            for region in self.layout.regions:
                if region is self.layout.flash or region.kind == "eeprom":
                    self._dirty_blocks[region.name] = bytearray(-(-region.size // self.DIRTY_BLOCK))
            self._store.lock()
            # a dropped flash (a test's stand-in for SIGKILL) releases its lock, and saves nothing
            self._release = weakref.finalize(self, self._store.unlock)
            try:
                self._load()
            except BaseException:
                self._store.unlock()
                raise

    # ------------------------------------------------------------------
    # persistence

    @property
    def state_path(self) -> Path | None:
        return self._store.state_path if self._store is not None else None

    @property
    def dirty(self) -> bool:
        """Changes not yet in the image file."""
        return self._dirty_since is not None

    def _load(self) -> None:
        assert self._store is not None
        image, state, consistent = self._store.load()
        if image is None:
            if not self.readonly:
                self._mark_dirty()
                self.persist()
            return
        if len(image) != len(self._flash):
            raise ValueError(
                f"{self.image_path}: image is {len(image)} bytes but {self.chip.name} has "
                f"{len(self._flash)} bytes of flash")
        self._flash[:] = image
        self._changed_anywhere = False  # the store has the digests of what the memory now holds
        # Only a state that names this image's hash may say the application is
        # valid: none, an empty or unparsable one, or another image's, says invalid.
        self.app_valid = consistent and state.get("app_valid") is True
        self.read_protected = bool(state.get("read_protected", False)) or self.read_protected
        try:
            self.erase_counters.counts = {int(k): int(v) for k, v in state.get("erase_counts", {}).items()}
        except (AttributeError, TypeError, ValueError):
            self.erase_counters.counts = {}
        eeprom = state.get("eeprom")
        if isinstance(eeprom, str) and "EEPROM" in self._mem:
            try:
                data = bytes.fromhex(eeprom)
            except ValueError:
                data = b""
            if len(data) == len(self._mem["EEPROM"]):
                self._mem["EEPROM"][:] = data
        # fuses and lock bits survive a power cycle on the chip (an ISP programmer writes them)
        for region in self.layout.regions:
            text = state.get(region.kind) if region.kind in ("fuses", "lock") else None
            try:
                data = bytes.fromhex(text) if isinstance(text, str) else b""
            except ValueError:
                data = b""
            if len(data) == region.size:
                self._mem[region.name][:] = data

    def _state(self) -> dict:
        state = {
            "chip": self.chip.name,
            "app_valid": self.app_valid,
            "read_protected": self.read_protected,
            "erase_counts": {str(k): v for k, v in sorted(self.erase_counters.counts.items())},
        }
        if "EEPROM" in self._mem and any(b != 0xFF for b in self._mem["EEPROM"]):
            state["eeprom"] = self._mem["EEPROM"].hex()
        initial = self.chip.initial_contents()
        for region in self.layout.regions:
            if region.kind in ("fuses", "lock") and bytes(self._mem[region.name]) != initial.get(region.start):
                state[region.kind] = self._mem[region.name].hex()
        return state

    def persist(self) -> None:
        """Write unsaved changes to the image file (crash-consistently); nothing when clean."""
        if self._store is None or self._dirty_since is None or self.readonly:
            return
        if self._closed:
            raise RuntimeError(f"{self.image_path}: changes after close() are not saved")
        # a view, not a copy (2 MiB on an RP2040): nothing changes the memory while it is saved;
        # the store hashes again only the blocks that changed since the last save
        changed = None if self._changed_anywhere else self._dirty_blocks.get(self.layout.flash.name)
        self._store.save(memoryview(self._flash), self._state(), changed, self.DIRTY_BLOCK)
        self._changed_anywhere = False
        self._dirty_since = None
        for flags in self._dirty_blocks.values():
            flags[:] = bytes(len(flags))

    def save(self) -> None:
        """Write the flash image (and the state companion) back to disk now."""
        self._mark_dirty()
        self._changed_anywhere = True
        self.persist()

    def close(self) -> None:
        """Persist and release the image's lock (also when the save fails)."""
        if self._closed:
            return
        try:
            self.persist()
        finally:
            self._closed = True
            if self._store is not None:
                self._store.unlock()

    def _mark_dirty(self, region: Region | None = None, off: int = 0, length: int = 0) -> None:
        if self._store is None:
            return
        if self._dirty_since is None:
            self._dirty_since = self.clock()
        flags = self._dirty_blocks.get(region.name) if region is not None else None
        if flags is not None and length > 0:
            first, last = off // self.DIRTY_BLOCK, (off + length - 1) // self.DIRTY_BLOCK
            flags[first:last + 1] = b"\x01" * (last - first + 1)

    def _persist_if_stale(self) -> None:
        if self._dirty_since is not None and self.clock() - self._dirty_since >= self.PERSIST_AFTER:
            self.persist()

    def _step(self, kind: str, tear) -> None:
        if self.faults is not None:
            self.faults.step(kind, tear)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------
    # helpers

    def _locate(self, address: int, length: int) -> tuple[Region, int]:
        region = self.layout.find(address)
        if address + length > region.end:
            raise AddressFault(
                f"0x{address:X}+{length} runs past the end of {region.name} (0x{region.end:X})", address)
        return region, address - region.start

    def is_blank(self) -> bool:
        """Blank flash: the first application word reads 0xFFFF (entry policy)."""
        start = self.layout.application_ranges()[0][0] if self.layout.application_ranges() else self.chip.flash_start
        region, off = self._locate(start, 2)
        return self._mem[region.name][off:off + 2] == b"\xff\xff"

    # ------------------------------------------------------------------
    # MemoryIO

    def read(self, address: int, length: int) -> bytes:
        if length == 0:
            return b""
        region, off = self._locate(address, length)
        if not region.readable:
            raise WriteFault(f"{region.name} is not readable", address)
        if self.read_protected and region.kind in ("flash", "eeprom"):
            raise ProtectedFault("read-out protection is set: erase the chip first", address)
        if self._dirty_since is not None:
            flags = self._dirty_blocks.get(region.name)
            # A host that reads back what it wrote (a verify) must never see
            # bytes that are not in the file yet: save before answering.
            if flags is not None and flags.find(1, off // self.DIRTY_BLOCK,
                                                (off + length - 1) // self.DIRTY_BLOCK + 1) >= 0:
                self.persist()
            else:
                self._persist_if_stale()
        return bytes(self._mem[region.name][off:off + length])

    def erase(self, address: int) -> float:
        region = self.layout.find(address)
        if not region.erasable:
            raise EraseFault(f"{region.name} cannot be erased", address)
        start, size = region.sector_at(address)
        if self.layout.is_protected(start, start + size):
            raise ProtectedFault(f"sector 0x{start:X} holds the bootloader", address)
        self._persist_if_stale()
        buf = self._mem[region.name]
        off = start - region.start

        def tear():  # the power went mid-erase: half the sector is erased
            if region.kind == "flash":
                self.app_valid = False
            buf[off:off + size // 2] = b"\xff" * (size // 2)

        self._step("erase", tear)
        buf[off:off + size] = b"\xff" * size
        if region.kind == "flash":
            self.erase_counters.bump(start)
            self.app_valid = False
        self._mark_dirty(region, off, size)
        return self.timing.erase_time(size, region.smallest_sector) / 1000.0

    def erase_all(self) -> float:
        """Erase the application flash (never the bootloader) and lift read-out protection."""
        self._persist_if_stale()
        region = self.layout.flash
        for start, end in self.layout.application_ranges("flash"):
            for s, size in region.sector_bounds():
                if s >= start and s + size <= end:
                    off = s - region.start

                    def tear(off=off, size=size):  # the power went mid-sector: half of it is erased
                        self.app_valid = False
                        self._flash[off:off + size // 2] = b"\xff" * (size // 2)

                    self._step("erase", tear)
                    # invalid from the first sector on: a cut between sectors leaves no valid mix
                    self.app_valid = False
                    self._flash[off:off + size] = b"\xff" * size
                    self.erase_counters.bump(s)
                    self._mark_dirty(region, off, size)
        self.app_valid = False
        self.read_protected = False
        self._mark_dirty()
        return self.timing.full_erase_ms / 1000.0

    def program(self, address: int, data: bytes) -> float:
        if not data:
            return 0.0
        region, off = self._locate(address, len(data))
        if not region.writable:
            raise WriteFault(f"{region.name} is read-only", address)
        if self.layout.is_protected(address, address + len(data)):
            raise ProtectedFault(f"0x{address:X}+{len(data)} reaches into the bootloader region", address)
        buf = self._mem[region.name]
        old = buf[off:off + len(data)]
        if region.needs_erase:
            # NOR: programming can only clear bits.  Compare as big integers:
            # one C-speed operation instead of a loop per byte.
            o = int.from_bytes(old, "little")
            n = int.from_bytes(data, "little")
            if o & n != n:
                diff = (o & n) ^ n
                first = (diff & -diff).bit_length() - 1
                bad = address + first // 8
                raise NotErasedFault(f"0x{bad:X} is not erased (reads 0x{old[first // 8]:02X})", bad)
        self._persist_if_stale()

        def tear():  # the power went mid-write: the first half of the data is programmed
            if region.kind == "flash":
                self.app_valid = False
            half = len(data) // 2
            buf[off:off + half] = data[:half]

        self._step("program", tear)
        buf[off:off + len(data)] = data
        if region.kind == "flash":
            self.app_valid = False
        self._mark_dirty(region, off, len(data))
        pages = max(1, -(-len(data) // max(region.write_size, 1)))  # ceiling
        return self.timing.program_ms * pages / 1000.0

    def manifest(self) -> float:
        """Mark the application valid: only after a complete image."""
        if self.is_blank():
            raise FirmwareFault("no application: the first word of flash is erased")
        self.app_valid = True
        self._mark_dirty()
        # the host is told the update completed: the file says so first
        self.persist()
        return self.timing.manifest_ms / 1000.0

    # ------------------------------------------------------------------
    # conveniences for host-free callers and tests

    def peek(self, address: int, length: int) -> bytes:
        """Read without the write-through of :meth:`read`, for a device's own checks that no
        host sees (mass storage comparing a UF2 block it just programmed): a save per block
        would rewrite the whole image file once per 256 bytes."""
        region, off = self._locate(address, length)
        return bytes(self._mem[region.name][off:off + length])

    def flash_bytes(self) -> bytes:
        return bytes(self._flash)

    def region_bytes(self, kind: str) -> bytes:
        return bytes(self._mem[self.layout.region(kind).name])

    def poke(self, address: int, data: bytes) -> None:
        """Set bytes directly, bypassing protection (a test fixture's or an ISP programmer's view)."""
        region, off = self._locate(address, len(data))
        self._mem[region.name][off:off + len(data)] = data
        self._mark_dirty(region, off, len(data))
