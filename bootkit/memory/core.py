"""The memory core: the one trait every personality drives.

Modelled on usbd-dfu's ``DFUMemIO``, generalised: a layout of regions, and
``read``, ``erase`` (the page or sector holding an address), ``erase_all``,
``program`` and ``manifest``, with timing figures a protocol can report as
poll timeouts, and typed errors each protocol maps to its own status codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator, Protocol, Sequence, runtime_checkable

# --------------------------------------------------------------------------
# Typed errors.  Each protocol maps these to its own status codes (DFU
# errADDRESS / errWRITE / errERASE / errCHECK_ERASED / errVERIFY / errTARGET,
# AVR109 '?', HID STALL, ...).


class MemoryFault(Exception):
    """Base class of every memory-core error."""

    kind = "memory"

    def __init__(self, message: str, address: int | None = None):
        super().__init__(message)
        self.address = address


class AddressFault(MemoryFault):
    """The address is outside every region (DFU errADDRESS)."""

    kind = "address"


class WriteFault(MemoryFault):
    """The region cannot be written (read-only, signature, ...) (DFU errWRITE)."""

    kind = "write"


class EraseFault(MemoryFault):
    """The region cannot be erased (DFU errERASE)."""

    kind = "erase"


class NotErasedFault(MemoryFault):
    """Programming a byte that was not erased first (DFU errCHECK_ERASED)."""

    kind = "not-erased"


class VerifyFault(MemoryFault):
    """Programmed data does not read back (DFU errVERIFY)."""

    kind = "verify"


class ProtectedFault(MemoryFault):
    """The bootloader region or a read-out protected memory (DFU errTARGET)."""

    kind = "protected"


class FirmwareFault(MemoryFault):
    """The image is not valid for this device (DFU errFIRMWARE)."""

    kind = "firmware"


# --------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class Region:
    """A contiguous memory region.

    ``sectors`` is a tuple of (count, size) runs, as a DfuSe layout string
    gives them (``04*016Kg``); uniform pages are one run.  ``write_size`` is
    the programming granularity (a flash page on AVR, 1 on EEPROM).
    """

    name: str
    start: int
    sectors: tuple[tuple[int, int], ...]
    kind: str = "flash"  # flash, eeprom, fuses, lock, signature, option
    readable: bool = True
    erasable: bool = True
    writable: bool = True
    write_size: int = 1
    # Erase before write? EEPROM and fuse bytes are written in place.
    needs_erase: bool = True

    # Cached: read/program/erase ask for these on every call.  (cached_property
    # stores into __dict__ directly, which a frozen dataclass allows.)
    @cached_property
    def size(self) -> int:
        return sum(n * s for n, s in self.sectors)

    @cached_property
    def end(self) -> int:
        return self.start + self.size

    @cached_property
    def page_size(self) -> int:
        """The largest sector size (the page size for uniform regions)."""
        return max(s for _, s in self.sectors)

    @cached_property
    def smallest_sector(self) -> int:
        return min(s for _, s in self.sectors)

    @property
    def uniform(self) -> bool:
        return len(self.sectors) == 1

    def __contains__(self, address: int) -> bool:
        return self.start <= address < self.end

    def sector_bounds(self) -> Iterator[tuple[int, int]]:
        """Yield (start, size) of every sector in address order."""
        addr = self.start
        for count, size in self.sectors:
            for _ in range(count):
                yield addr, size
                addr += size

    def sector_at(self, address: int) -> tuple[int, int]:
        """(start, size) of the sector that holds ``address``."""
        if address not in self:
            raise AddressFault(f"address 0x{address:X} is outside {self.name}", address)
        addr = self.start
        for count, size in self.sectors:
            span = count * size
            if address < addr + span:
                return addr + (address - addr) // size * size, size
            addr += span
        raise AssertionError("unreachable")

    def dfuse_flags(self) -> str:
        # AN3156: 'a' readable, 'b' erasable, 'c' readable+erasable,
        # 'd' writable, 'e' readable+writable, 'f' erasable+writable,
        # 'g' readable+erasable+writable: a bit field added to 'a' - 1.
        bits = (1 if self.readable else 0) | (2 if self.erasable else 0) | (4 if self.writable else 0)
        return chr(ord("a") - 1 + bits) if bits else "a"


_DFUSE_RUN = re.compile(r"^\s*(\d+)\*\s*(\d+)\s*([ BKM ])([a-g])\s*$")


def dfuse_layout(name: str, regions: Sequence[Region]) -> str:
    """The DfuSe interface string for a memory (ST AN3156, UM0424).

    ``@Internal Flash /0x08000000/04*016Kg,01*064Kg,03*128Kg``; several
    regions appear as several ``/address/runs`` groups.
    """
    groups = []
    for region in regions:
        runs = []
        flag = region.dfuse_flags()
        for count, size in region.sectors:
            if size % (1024 * 1024) == 0:
                unit, n = "M", size // (1024 * 1024)
            elif size % 1024 == 0:
                unit, n = "K", size // 1024
            else:
                unit, n = " ", size
            runs.append(f"{count:02d}*{n:03d}{unit}{flag}")
        groups.append(f"/0x{region.start:08X}/" + ",".join(runs))
    return f"@{name} " + "".join(groups)


def parse_dfuse_layout(text: str) -> tuple[str, list[Region]]:
    """Parse a DfuSe layout string into (memory name, regions).

    Accepts what dfu-util's dfuse_mem.c accepts: ``@name/addr/runs/addr/runs``,
    unit ' ' (bytes), 'B', 'K' or 'M', flag letters a-g.
    """
    if not text.startswith("@"):
        raise ValueError(f"DfuSe layout must start with '@': {text!r}")
    parts = text[1:].split("/")
    if len(parts) < 3 or len(parts) % 2 == 0:
        raise ValueError(f"DfuSe layout needs /address/sectors groups: {text!r}")
    name = parts[0].strip()
    regions = []
    for i in range(1, len(parts), 2):
        start = int(parts[i].strip(), 16)
        runs = []
        readable = erasable = writable = False
        for run in parts[i + 1].split(","):
            if not run.strip():
                continue
            m = _DFUSE_RUN.match(run)
            if not m:
                raise ValueError(f"bad DfuSe sector run {run!r} in {text!r}")
            count, n, unit, flag = int(m[1]), int(m[2]), m[3], m[4]
            mult = {" ": 1, "B": 1, "K": 1024, "M": 1024 * 1024}[unit]
            runs.append((count, n * mult))
            bits = ord(flag) - ord("a") + 1
            readable |= bool(bits & 1)
            erasable |= bool(bits & 2)
            writable |= bool(bits & 4)
        regions.append(
            Region(
                name=f"{name} {i // 2}" if len(parts) > 3 else name,
                start=start,
                sectors=tuple(runs),
                readable=readable,
                erasable=erasable,
                writable=writable,
            )
        )
    return name, regions


@dataclass(frozen=True)
class Layout:
    """All regions of a target, and the protected (bootloader) ranges."""

    regions: tuple[Region, ...]
    # (start, end) ranges no host request may erase or program.
    protected: tuple[tuple[int, int], ...] = ()

    def region(self, name_or_kind: str) -> Region:
        for r in self.regions:
            if r.name == name_or_kind:
                return r
        for r in self.regions:
            if r.kind == name_or_kind:
                return r
        raise KeyError(name_or_kind)

    def find(self, address: int, kind: str | None = None) -> Region:
        for r in self.regions:
            if address in r and (kind is None or r.kind == kind):
                return r
        raise AddressFault(f"address 0x{address:X} is outside every memory region", address)

    @property
    def flash(self) -> Region:
        return self.region("flash")

    def is_protected(self, start: int, end: int) -> bool:
        return any(start < pe and ps < end for ps, pe in self.protected)

    def application_ranges(self, kind: str = "flash") -> list[tuple[int, int]]:
        """The parts of the ``kind`` region outside every protected range."""
        r = self.region(kind)
        ranges = [(r.start, r.end)]
        for ps, pe in self.protected:
            out = []
            for s, e in ranges:
                if pe <= s or ps >= e:
                    out.append((s, e))
                    continue
                if s < ps:
                    out.append((s, ps))
                if pe < e:
                    out.append((pe, e))
            ranges = out
        return ranges


@dataclass(frozen=True)
class Timing:
    """Typical operation times in milliseconds (datasheet figures)."""

    program_ms: float = 0.0  # one write_size page
    erase_ms: float = 0.0  # one page (largest sector)
    full_erase_ms: float = 0.0
    manifest_ms: float = 0.0

    def erase_time(self, sector_size: int, page_size: int) -> float:
        return self.erase_ms * max(1, sector_size // max(page_size, 1))


@runtime_checkable
class MemoryIO(Protocol):
    """What every personality's device side drives; anything with these members can
    stand behind a personality (a simulated flash, a host client, an AVR on an ISP link).

    Addresses are absolute (the layout's).  Errors are the typed faults above, raised
    before anything is modified where the memory can tell.  ``erase``, ``erase_all``,
    ``program`` and ``manifest`` return the seconds the memory stays busy after the call
    (the datasheet time in real-time emulation, 0.0 when the work is already done:
    fast mode, or a real memory that waited itself).  The memory never sleeps: the
    engine reports the time (DFU's bwPollTimeout) or hands it to its transport
    (``Function.busy``), which holds that device's next transfer until it is over.
    """

    layout: Layout
    timing: Timing
    #: the application was completely written and manifested (the entry policy's
    #: "valid image"); any erase or program clears it
    app_valid: bool
    #: read-out protection is set: reading flash or EEPROM raises ProtectedFault until
    #: erase_all() lifts it
    read_protected: bool

    def read(self, address: int, length: int) -> bytes: ...

    def erase(self, address: int) -> float:
        """Erase the page or sector holding ``address``; returns the busy seconds."""
        ...

    def erase_all(self) -> float:
        """Erase the application flash (never the bootloader) and lift read-out
        protection; returns the busy seconds (the chip's full-erase time)."""
        ...

    def program(self, address: int, data: bytes) -> float:
        """Program erased bytes; returns the busy seconds."""
        ...

    def manifest(self) -> float:
        """Mark the application valid after a complete image (FirmwareFault when there is
        none); returns the busy seconds."""
        ...

    def is_blank(self) -> bool:
        """The first application word is erased: nothing to start (the entry policy)."""
        ...


@dataclass
class EraseCounters:
    """Erase cycles per sector start address (flash endurance bookkeeping)."""

    counts: dict[int, int] = field(default_factory=dict)

    def bump(self, address: int) -> None:
        self.counts[address] = self.counts.get(address, 0) + 1

    def __getitem__(self, address: int) -> int:
        return self.counts.get(address, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
