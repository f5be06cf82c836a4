"""bootkit's native command set, the one protocol behind two framings.

Six requests (identify, erase, write, read, crc, boot), one info record,
one checksum (CRC-32), one set of refusals, and the checks every request
makes before the memory is touched.  Transport-neutral: nothing here knows
how a request travels.  Two framings carry it:

- 64-byte HID reports (``hid/protocol.py``: little-endian fields, a status
  byte in every reply; docs/personalities/hid.md);
- 7-bit SysEx frames (``midi/sysex.py`` for the framing, ``midi/protocol.py``
  for the requests: tag-matched ACK/NAK; docs/personalities/midi.md).

Each framing keeps its own wire codes and field widths (both are published
and pinned by tests with real tools), so a framing maps :class:`Op` to its
command codes and :class:`Refusal` to what its replies can say.  What a
request means and what it checks is written once, here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Callable

from ..memory import MemoryFault
from ..memory.core import NotErasedFault, ProtectedFault

if TYPE_CHECKING:
    from ..memory import Chip


class Op(Enum):
    """The native requests.  A framing gives each one its own command code."""

    IDENTIFY = "identify"  # the info record
    ERASE = "erase"  # the application (or a span of it)
    WRITE = "write"  # program erased flash inside the application
    READ = "read"  # read back inside the application
    CRC = "crc"  # CRC-32 of a span, computed by the device
    BOOT = "boot"  # start the application


class Refusal(IntEnum):
    """Why a request is refused.  The values are the SysEx framing's NAK reason bytes,
    which carries them as they are; the HID framing folds them into its four statuses
    (hid/protocol.py NATIVE_STATUS_FOR)."""

    BAD_CHECKSUM = 0x01  # a byte hit on the wire (a framing's own check)
    MALFORMED = 0x02
    UNKNOWN_COMMAND = 0x03
    OUT_OF_RANGE = 0x04  # outside the application region
    PROTECTED = 0x05  # reaches into the bootloader
    MISALIGNED = 0x06
    NOT_ERASED = 0x07
    NO_APPLICATION = 0x08  # BOOT with nothing valid to start
    MEMORY = 0x09  # any other memory-core fault
    WRONG_CHIP = 0x0A


# Refusals worth the same request again (a byte hit on the wire)
TRANSIENT = frozenset({Refusal.BAD_CHECKSUM, Refusal.MALFORMED})


class NativeFault(Exception):
    """A request the device refuses: ``why`` (one line) and the :class:`Refusal`."""

    def __init__(self, why: str, refusal: Refusal):
        super().__init__(why)
        self.refusal = refusal


def refusal_for(exc: MemoryFault) -> Refusal:
    """The refusal a memory-core fault is reported as."""
    if isinstance(exc, NotErasedFault):
        return Refusal.NOT_ERASED
    if isinstance(exc, ProtectedFault):
        return Refusal.PROTECTED
    return Refusal.MEMORY


def crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3, zlib's): the checksum the CRC request answers and a file's END carries."""
    return zlib.crc32(data) & 0xFFFFFFFF


FLAG_APP_VALID = 0x01  # NativeInfo.flags: the application is marked valid


@dataclass(frozen=True)
class NativeInfo:
    """What IDENTIFY answers.  A framing that does not carry a field reads it as its default
    (the HID framing carries neither the timing nor the flags: ``app_valid`` is then False)."""

    version: tuple[int, int]  # (major, minor) of the framing's protocol
    chip: str
    flash_start: int
    flash_size: int
    app_start: int
    app_size: int
    page_size: int
    program_us: int = 0  # time to program one page, per the chip's datasheet figures
    erase_us: int = 0  # time to erase the largest sector
    flags: int = 0  # FLAG_APP_VALID, and a framing's own (midi/protocol.py: the file session)
    pages_missing: int = 0  # pages of an open file session not yet received (0 without one)
    # since the last file began: frames that arrived damaged, and one line on how the last
    # file ended ("" when none did)
    damaged: int = 0
    status: str = ""

    @property
    def app_end(self) -> int:
        return self.app_start + self.app_size

    @property
    def flash_end(self) -> int:
        return self.flash_start + self.flash_size

    @property
    def app_valid(self) -> bool:
        return bool(self.flags & FLAG_APP_VALID)

    @property
    def protected(self) -> tuple[tuple[int, int], ...]:
        """The flash outside the application (the bootloader's): a host refuses an image there."""
        out = []
        if self.flash_start < self.app_start:
            out.append((self.flash_start, self.app_start))
        if self.app_end < self.flash_end:
            out.append((self.app_end, self.flash_end))
        return tuple(out)

    def span(self, start: int | None = None, length: int | None = None) -> tuple[int, int]:
        """(start, length) of a read: by default the application, from ``start`` to its end."""
        start = self.app_start if start is None else start
        return start, self.app_end - start if length is None else length


def first_difference(address: int, wrote: bytes, read: bytes) -> str | None:
    """The line a host reports when read-back differs from what it wrote (None: equal)."""
    if read == wrote:
        return None
    bad = next((i for i in range(min(len(wrote), len(read))) if read[i] != wrote[i]), None)
    if bad is None:
        return f"verify failed at 0x{address + min(len(wrote), len(read)):X}: read {len(read)} bytes, wrote {len(wrote)}"
    return f"verify failed at 0x{address + bad:X}: wrote 0x{wrote[bad]:02X}, read 0x{read[bad]:02X}"


def application_span(memory) -> tuple[int, int]:
    """(start, end) of the application region of ``memory``'s flash."""
    app = memory.layout.application_ranges("flash")
    flash = memory.layout.flash
    return app[0] if app else (flash.start, flash.start)


class NativeCommands:
    """The native requests over a MemoryIO: what each does, and every check it makes before
    the memory is touched (the memory core refuses the bootloader region by itself as well).

    The framings' engines decode arguments, call these, and encode the answer or the
    :class:`NativeFault`'s refusal.  ``busy(seconds)`` is told how long each memory
    operation keeps the memory busy (usb.device.Function.busy: neither framing reports
    the wait itself, so the transport holds the device's next transfer meanwhile).  Where the two framings' requests differ (HID writes a
    span in data reports after one command, SysEx one page per frame) each engine keeps
    its own sequencing and calls the shared checks.
    """

    def __init__(self, memory, chip: Chip, *, busy: Callable[[float], object] | None = None):
        self.memory = memory
        self.chip = chip
        self.busy = busy or (lambda seconds: None)
        self.app_start, self.app_end = application_span(memory)
        self.page_size = chip.page_size

    def info(self, version: tuple[int, int], **extra) -> NativeInfo:
        flash = self.memory.layout.flash
        return NativeInfo(version, self.chip.name, flash.start, flash.size, self.app_start,
                          self.app_end - self.app_start, self.page_size, **extra)

    def check_span(self, address: int, length: int, what: str) -> None:
        """Refuse an empty span, or one outside the application, before anything is touched."""
        if length <= 0:
            raise NativeFault(f"{what} of {length} bytes", Refusal.MALFORMED)
        if address < self.app_start or address + length > self.app_end:
            if self.memory.layout.is_protected(address, address + length):
                raise NativeFault(f"{what} 0x{address:X}+{length} reaches into the bootloader", Refusal.PROTECTED)
            raise NativeFault(f"{what} 0x{address:X}+{length} is outside the application "
                              f"0x{self.app_start:X}-0x{self.app_end - 1:X}", Refusal.OUT_OF_RANGE)

    def application(self, start: int, length: int) -> tuple[int, int]:
        """A request's span, where length 0 means the whole application."""
        if length == 0:
            return self.app_start, self.app_end - self.app_start
        return start, length

    def erase(self, start: int, length: int) -> int:
        """ERASE a span of the application (length 0: all of it), sector by sector; the sectors
        erased.  A sector reaching out of the application is refused before any is erased."""
        start, length = self.application(start, length)
        self.check_span(start, length, "ERASE")
        region = self.memory.layout.flash
        # the span is inside the application, so only its first and last sectors can reach out of it
        for addr in (start, start + length - 1):
            s, size = region.sector_at(addr)
            if s < self.app_start or s + size > self.app_end:
                raise NativeFault(f"sector 0x{s:X}+{size} is not wholly in the application", Refusal.PROTECTED)
        count = 0
        addr = start
        while addr < start + length:
            s, size = region.sector_at(addr)
            self.busy(self.memory.erase(addr))
            count += 1
            addr = s + size
        return count

    def erase_application(self) -> None:
        """ERASE as a chip erase: the whole application (the memory core keeps the bootloader)."""
        self.busy(self.memory.erase_all())

    def check_erased(self, address: int, length: int) -> None:
        # NOR programming only clears bits, so flash would take 0x00 over anything:
        # refuse a span that is not erased rather than merge into it.
        if self.memory.read(address, length).count(0xFF) != length:
            raise NativeFault(f"0x{address:X}+{length} is not erased", Refusal.NOT_ERASED)

    def crc(self, start: int, length: int) -> tuple[int, int, int]:
        """(CRC-32, start, length) of a span of the application (length 0: all of it)."""
        start, length = self.application(start, length)
        self.check_span(start, length, "CRC")
        return self.crc_of(start, start + length), start, length

    def crc_of(self, start: int, end: int) -> int:
        """CRC-32 of a region the device names itself (the application, the bootloader): the
        device computes it, no byte of it leaves the device."""
        return crc32(self.memory.read(start, end - start) if end > start else b"")

    def boot(self) -> None:
        """Mark the application valid (it must be complete); NO_APPLICATION when it is not."""
        try:
            self.busy(self.memory.manifest())
        except MemoryFault as exc:
            raise NativeFault(f"BOOT: {exc}", Refusal.NO_APPLICATION) from None


__all__ = ["Op", "Refusal", "TRANSIENT", "NativeFault", "refusal_for", "crc32", "FLAG_APP_VALID", "NativeInfo",
           "first_difference", "application_span", "NativeCommands"]
