"""Simulated NOR flash (plus EEPROM, fuses, lock and signature bytes).

Behaves as NOR flash does: erase sets a sector to 0xFF, programming can only
clear bits (programming a bit from 0 back to 1 is a not-erased error), and
the protected bootloader region refuses erase and program.  It counts erase
cycles per sector, can be backed by a file so an image survives the
process, and in real-time mode sleeps for the chip's datasheet times.
"""

from __future__ import annotations

import json
import os
import time
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


class SimulatedFlash:
    """A MemoryIO over RAM, optionally loaded from and saved to FILE.bin.

    ``image_path`` holds the whole flash from its first address (bootloader
    region included), created erased when absent and written back by
    :meth:`close`.  Its companion ``FILE.bin.state.json`` keeps what a real
    bootloader keeps in a reserved flash word: whether the application was
    manifested, plus the erase counters.
    """

    def __init__(self, chip: Chip, image_path: str | os.PathLike | None = None, *,
                 realtime: bool = False, read_protected: bool = False):
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
        self._mem: dict[str, bytearray] = {}
        for region in self.layout.regions:
            self._mem[region.name] = bytearray(b"\xff" * region.size)
        for address, data in chip.initial_contents().items():
            region = self.layout.find(address)
            off = address - region.start
            self._mem[region.name][off:off + len(data)] = data
        self._flash = self._mem[self.layout.flash.name]
        if self.image_path is not None:
            self._load()
        else:
            self.app_valid = False

    # ------------------------------------------------------------------
    # persistence

    @property
    def state_path(self) -> Path | None:
        return self.image_path.with_name(self.image_path.name + ".state.json") if self.image_path else None

    def _load(self) -> None:
        assert self.image_path is not None
        if self.image_path.exists():
            data = self.image_path.read_bytes()
            if len(data) != len(self._flash):
                raise ValueError(
                    f"{self.image_path}: image is {len(data)} bytes but {self.chip.name} has "
                    f"{len(self._flash)} bytes of flash")
            self._flash[:] = data
            state = {}
            if self.state_path.exists():
                try:
                    state = json.loads(self.state_path.read_text())
                except (OSError, ValueError):
                    state = {}
            self.app_valid = bool(state.get("app_valid", not self.is_blank()))
            self.read_protected = bool(state.get("read_protected", self.read_protected))
            self.erase_counters.counts = {int(k): v for k, v in state.get("erase_counts", {}).items()}
            eeprom = state.get("eeprom")
            if eeprom and "EEPROM" in self._mem:
                self._mem["EEPROM"][:] = bytes.fromhex(eeprom)
        else:
            self.save()

    def save(self) -> None:
        """Write the flash image (and the state companion) back to disk."""
        if self.image_path is None:
            return
        tmp = self.image_path.with_name(self.image_path.name + ".tmp")
        tmp.write_bytes(self._flash)
        os.replace(tmp, self.image_path)
        state = {
            "chip": self.chip.name,
            "app_valid": self.app_valid,
            "read_protected": self.read_protected,
            "erase_counts": {str(k): v for k, v in sorted(self.erase_counters.counts.items())},
        }
        if "EEPROM" in self._mem and any(b != 0xFF for b in self._mem["EEPROM"]):
            state["eeprom"] = self._mem["EEPROM"].hex()
        self.state_path.write_text(json.dumps(state, indent=1) + "\n")

    def close(self) -> None:
        self.save()

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

    def _sleep(self, ms: float) -> None:
        if self.realtime and ms > 0:
            time.sleep(ms / 1000.0)

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
        return bytes(self._mem[region.name][off:off + length])

    def erase(self, address: int) -> tuple[int, int]:
        region = self.layout.find(address)
        if not region.erasable:
            raise EraseFault(f"{region.name} cannot be erased", address)
        start, size = region.sector_at(address)
        if self.layout.is_protected(start, start + size):
            raise ProtectedFault(f"sector 0x{start:X} holds the bootloader", address)
        buf = self._mem[region.name]
        off = start - region.start
        buf[off:off + size] = b"\xff" * size
        if region.kind == "flash":
            self.erase_counters.bump(start)
            self.app_valid = False
        self._sleep(self.timing.erase_time(size, region.smallest_sector))
        return start, size

    def erase_all(self) -> None:
        """Erase the application flash (never the bootloader) and lift read-out protection."""
        for start, end in self.layout.application_ranges("flash"):
            region = self.layout.flash
            for s, size in region.sector_bounds():
                if s >= start and s + size <= end:
                    off = s - region.start
                    self._flash[off:off + size] = b"\xff" * size
                    self.erase_counters.bump(s)
        self.app_valid = False
        self.read_protected = False
        self._sleep(self.timing.full_erase_ms)

    def program(self, address: int, data: bytes) -> None:
        if not data:
            return
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
        buf[off:off + len(data)] = data
        if region.kind == "flash":
            self.app_valid = False
        pages = max(1, -(-len(data) // max(region.write_size, 1)))  # ceiling
        self._sleep(self.timing.program_ms * pages)

    def manifest(self) -> None:
        """Mark the application valid: only after a complete image."""
        if self.is_blank():
            raise FirmwareFault("no application: the first word of flash is erased")
        self.app_valid = True
        self._sleep(self.timing.manifest_ms)

    # ------------------------------------------------------------------
    # conveniences for host-free callers and tests

    def flash_bytes(self) -> bytes:
        return bytes(self._flash)

    def region_bytes(self, kind: str) -> bytes:
        return bytes(self._mem[self.layout.region(kind).name])

    def poke(self, address: int, data: bytes) -> None:
        """Set bytes directly, bypassing protection (a test fixture's or an ISP programmer's view)."""
        region, off = self._locate(address, len(data))
        self._mem[region.name][off:off + len(data)] = data
