"""An AVR on the other end of the ISP wires, built on the memory core.

:class:`EmulatedAvr` answers 4-byte serial programming instructions
(:mod:`.protocol`) as the silicon does (ATtiny25/45/85 §20.6, ATmega328P
§28.8, ATmega2560 §30.8):

- RESET released: the chip runs its program and ignores SPI; MISO is not
  driven, so a programmer reads 0xFF.  RESET held low: the chip listens, but
  acts on nothing before Programming Enable.  Until then, and for
  instructions it does not know, it only shifts back what came in (the SPI
  shift register: byte k of the answer is byte k-1 of the instruction), the
  "echo of garbage" a programmer out of sync sees.
- Flash is programmed a page at a time through the page buffer: Load Program
  Memory Page fills the buffer (low byte, then high byte of a word), Write
  Program Memory Page commits it to the page addressed, and the buffer reads
  0xFF again.  A flash cell that was not erased ANDs with what is written,
  as NOR flash does (the host's verify finds it).  The whole flash is
  writable: ISP has no bootloader protection (``chip.with_boot(0)``).
- EEPROM: byte writes (erase + write in one), or page writes where only the
  loaded bytes change (ATmega328P §28.8.2).
- Fuses: unimplemented bits read as 1 (the chip database's masks); SPIEN
  (hfuse bit 5) cannot be changed in serial programming mode (§28.8, "The
  SPIEN Fuse is not accessible in serial programming mode").
- Lock bits LB1/LB2 (ATmega328P Table 27-2, ATtiny85 Table 20-2): mode 2
  (LB1 programmed) ignores flash, EEPROM and fuse writes; mode 3 (LB1 and
  LB2 programmed) also reads flash and EEPROM as 0xFF.  The reserved
  combination (LB2 programmed alone) is taken as mode 3.  Lock bits can
  only be programmed (a write ANDs); only Chip Erase sets them back.
- Chip Erase erases flash, the lock bits, and EEPROM unless EESAVE (hfuse
  bit 3 on every AVR in the database) is programmed.
- Real-time mode: after a write or erase the chip is busy for the datasheet's
  minimum wait delay (:data:`WAIT_DELAYS`): Poll RDY/BSY answers busy, and
  every other instruction is ignored, as a chip that is still programming
  does not take the next one (reads of flash and EEPROM answer 0xFF, the
  datasheets' "Data Polling").  Fast mode (the default) is never busy.

The image file (``image=``) is the flash, as ``SimulatedFlash`` keeps it;
EEPROM, fuses and lock bits live in its state companion (FILE.bin.state.json).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..memory.chips import EEPROM_BASE, FUSE_BASE, LOCK_BASE, Chip, get_chip
from ..memory.flash import SimulatedFlash
from . import protocol as P
from .errors import IspInputError


@dataclass(frozen=True)
class WaitDelays:
    """The datasheet's "Minimum Wait Delay Before Writing the Next Flash or EEPROM
    Location", in milliseconds."""

    fuse: float
    flash: float
    eeprom: float
    erase: float


#: tWD_FUSE, tWD_FLASH, tWD_EEPROM, tWD_ERASE per chip: ATtiny25/45/85 Table 20-11
#: (rev. 2586Q; older revisions gave tWD_ERASE 4.0 ms), ATmega328P Table 28-18,
#: ATmega2560 Table 30-16, ATmega32U4 Table 28-16, AT90USB1286 Table 28-16 (the
#: AT90USB64/128 datasheet's).
WAIT_DELAYS = {
    "attiny85": WaitDelays(fuse=4.5, flash=4.5, eeprom=4.0, erase=9.0),
    "atmega328p": WaitDelays(fuse=4.5, flash=4.5, eeprom=3.6, erase=9.0),
    "atmega2560": WaitDelays(fuse=4.5, flash=4.5, eeprom=9.0, erase=9.0),
    "atmega32u4": WaitDelays(fuse=4.5, flash=4.5, eeprom=9.0, erase=9.0),
    "at90usb1286": WaitDelays(fuse=4.5, flash=4.5, eeprom=9.0, erase=9.0),
}
#: a chip not in the table (a --chip-file part) gets the largest figures above
DEFAULT_WAIT_DELAYS = WaitDelays(fuse=4.5, flash=4.5, eeprom=9.0, erase=9.0)

#: hfuse bits: EESAVE (bit 3, 0 = programmed = keep EEPROM through chip erase) and SPIEN (bit 5)
EESAVE = 0x08
SPIEN = 0x20
#: lock bits LB1, LB2
LB1, LB2 = 0x01, 0x02
#: the oscillator calibration byte the emulated chip answers (a mid-range OSCCAL)
CALIBRATION = 0x80


class EmulatedAvr:
    """An AVR target: ``spi(frame)`` in, 4 bytes out; ``reset(True)`` holds RESET low."""

    def __init__(self, chip: Chip | str, *, image: str | os.PathLike | None = None, realtime: bool = False,
                 clock: Callable[[], float] = time.monotonic, memory: SimulatedFlash | None = None):
        """``memory``: a SimulatedFlash someone else built for this chip (an emulator's, with
        its own image file), used instead of one of our own; its flash must have no protected
        region, since ISP programs all of it (IspInputError otherwise)."""
        base = get_chip(chip) if isinstance(chip, str) else chip
        if base.family != "avr":
            raise IspInputError(f"{base.name} is not a classic AVR (family {base.family}): "
                                "the serial programming instructions are the AVR family's")
        # ISP reaches all of flash: no bootloader protection
        self.chip: Chip = base.with_boot(0)
        self.memory: SimulatedFlash
        if memory is not None:
            if image is not None:
                raise IspInputError("give an image file or a memory, not both")
            if memory.layout.protected or memory.layout.flash.size != self.chip.flash_size:
                raise IspInputError(f"the memory given for {self.chip.name} must be its whole flash with no "
                                    "protected region (chip.with_boot(0)): ISP programs all of it")
            self.memory = memory
        else:
            self.memory = SimulatedFlash(self.chip, Path(image) if image is not None else None)
        self.realtime = realtime
        self.clock = clock
        self.delays = WAIT_DELAYS.get(self.chip.name, DEFAULT_WAIT_DELAYS)
        #: monotonic seconds until which the chip is busy (real-time mode)
        self.busy_until = 0.0
        self._reset_low = False
        self._enabled = False
        self._shift = 0xFF  # the last byte shifted in: what goes out first
        self._extended = 0
        self._flash = self.chip.layout().flash
        self._words = self.chip.flash_size // 2
        self._page = bytearray(b"\xff" * self.chip.page_size)
        self._eeprom_page_size = max(self.chip.eeprom_page, 1)
        self._eeprom_page: dict[int, int] = {}
        self._fuse_index = {f.name: i for i, f in enumerate(self.chip.fuses)}
        self._changed = False  # flash written or erased since RESET was last released

    # ------------------------------------------------------------------ pins

    def reset(self, active: bool) -> None:
        """Drive RESET: True holds it low (the chip stops and listens for Programming Enable),
        False releases it (the chip runs: SPI is ignored).  Either edge leaves programming mode."""
        if active == self._reset_low:
            return
        self._reset_low = active
        self._enabled = False
        self._extended = 0
        self._page[:] = b"\xff" * len(self._page)
        self._eeprom_page.clear()
        if not active:
            # The chip starts its program.  An AVR has no "valid application" mark: it runs
            # what its flash holds, so the memory core's app_valid (the entry policy's valid
            # image) follows the flash after a session that changed it; manifest() also
            # saves the image file, and persist() does when nothing else is due.
            if self._changed:
                self._changed = False
                if not self.memory.is_blank():
                    self.memory.manifest()
            self.memory.persist()

    @property
    def programming(self) -> bool:
        """RESET is held and Programming Enable was accepted."""
        return self._reset_low and self._enabled

    def rdy(self) -> bool:
        """Ready for the next instruction (always, in fast mode)."""
        return not self.realtime or self.clock() >= self.busy_until

    def close(self) -> None:
        """Write the image file back (and release its lock)."""
        self.memory.close()

    def __enter__(self) -> "EmulatedAvr":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ SPI

    def spi(self, frame: bytes) -> bytes:
        """One instruction: 4 bytes in, the 4 bytes shifted out meanwhile."""
        frame = bytes(frame)
        if len(frame) != 4:
            raise IspInputError(f"an ISP instruction is 4 bytes, got {len(frame)}")
        if not self._reset_low:
            return b"\xff\xff\xff\xff"  # running: MISO not driven
        # the shift register: each byte goes out one byte later
        out = bytearray((self._shift, frame[0], frame[1], frame[2]))
        self._shift = frame[3]
        b0, b1, b2, b3 = frame
        if (b0, b1) == P.PROGRAMMING_ENABLE:
            self._enabled = True
            return bytes(out)
        if not self._enabled:
            return bytes(out)
        if b0 == P.POLL_RDY:
            out[3] = 0x00 if self.rdy() else P.BUSY_BIT
            return bytes(out)
        if not self.rdy():
            # still programming: the instruction is lost; a read of flash or EEPROM answers
            # 0xFF ("Data Polling", ATmega328P §28.8.2: the location being programmed reads
            # 0xFF until it is done), so a programmer polling by value waits
            if b0 in (P.READ_PROGRAM_LOW, P.READ_PROGRAM_HIGH, P.READ_EEPROM):
                out[3] = 0xFF
            return bytes(out)
        data = self._execute(b0, b1, b2, b3)
        if data is not None:
            out[3] = data
        return bytes(out)

    # ------------------------------------------------------------------ instructions

    def _busy(self, ms: float) -> None:
        if self.realtime:
            self.busy_until = self.clock() + ms / 1000.0

    @property
    def _lock(self) -> int:
        return self.memory.peek(LOCK_BASE, 1)[0] if self.chip.lock else 0xFF

    @property
    def _write_locked(self) -> bool:
        return self._lock & (LB1 | LB2) != (LB1 | LB2)

    @property
    def _read_locked(self) -> bool:
        return not self._lock & LB2

    def _fuse(self, name: str) -> int | None:
        i = self._fuse_index.get(name)
        return None if i is None else self.memory.peek(FUSE_BASE + i, 1)[0]

    def _execute(self, b0: int, b1: int, b2: int, b3: int) -> int | None:
        """Act on an instruction; the data byte it answers, or None (the echo stays)."""
        if b0 == P.READ_PROGRAM_LOW or b0 == P.READ_PROGRAM_HIGH:
            if self._read_locked:
                return 0xFF
            word = ((self._extended << 16) | (b1 << 8) | b2) % self._words
            return self.memory.read(self._flash.start + 2 * word + (b0 == P.READ_PROGRAM_HIGH), 1)[0]
        if b0 == P.LOAD_PROGRAM_PAGE_LOW or b0 == P.LOAD_PROGRAM_PAGE_HIGH:
            offset = (2 * b2 + (b0 == P.LOAD_PROGRAM_PAGE_HIGH)) % len(self._page)
            self._page[offset] = b3
            return None
        if b0 == P.LOAD_EXTENDED_ADDRESS:
            self._extended = b2
            return None
        if b0 == P.WRITE_PROGRAM_PAGE:
            self._write_flash_page(((self._extended << 16) | (b1 << 8) | b2) % self._words)
            return None
        if b0 == P.READ_EEPROM:
            if not self.chip.eeprom_size:
                return 0xFF
            if self._read_locked:
                return 0xFF
            return self.memory.read(EEPROM_BASE + ((b1 << 8) | b2) % self.chip.eeprom_size, 1)[0]
        if b0 == P.WRITE_EEPROM:
            if self.chip.eeprom_size and not self._write_locked:
                self.memory.program(EEPROM_BASE + ((b1 << 8) | b2) % self.chip.eeprom_size, bytes((b3,)))
                self._busy(self.delays.eeprom)
            return None
        if b0 == P.LOAD_EEPROM_PAGE:
            self._eeprom_page[b2 % self._eeprom_page_size] = b3
            return None
        if b0 == P.WRITE_EEPROM_PAGE:
            self._write_eeprom_page((b1 << 8) | b2)
            return None
        if b0 == P.READ_SIGNATURE:
            sig = self.chip.signature
            i = b2 & 0x03
            return sig[i] if i < len(sig) else 0xFF
        if b0 == P.READ_CALIBRATION:
            return CALIBRATION if b2 == 0 else 0xFF
        if (b0, b1) == P.READ_LOCK:
            return self._lock
        for name, (r0, r1) in P.READ_FUSE.items():
            if (b0, b1) == (r0, r1):
                value = self._fuse(name)
                return 0xFF if value is None else value
        if b0 == 0xAC:
            # the write instructions share $AC; byte 2 tells them apart (low bits don't care,
            # as avrdude.conf's "100x.xxxx" and "111x.xxxx" say)
            if b1 & 0xE0 == 0x80:
                self._chip_erase()
            elif b1 & 0xE0 == 0xE0:
                self._write_lock(b3)
            else:
                for name, (w0, w1) in P.WRITE_FUSE.items():
                    if b1 == w1:
                        self._write_fuse(name, b3)
            return None
        return None

    def _write_flash_page(self, word: int) -> None:
        if self._write_locked:
            return  # lock mode 2/3: "further programming of the Flash ... is disabled"
        size = len(self._page)
        start = self._flash.start + (2 * word) // size * size
        old = self.memory.peek(start, size)
        # a cell that was not erased can only lose bits: NOR flash ANDs
        merged = (int.from_bytes(old, "little") & int.from_bytes(self._page, "little")).to_bytes(size, "little")
        self.memory.program(start, merged)
        self._changed = True
        self._page[:] = b"\xff" * size  # the buffer is cleared after a page write
        self._busy(self.delays.flash)

    def _write_eeprom_page(self, addr: int) -> None:
        if not self.chip.eeprom_size:
            return
        loaded, self._eeprom_page = self._eeprom_page, {}
        if self._write_locked:
            return
        page = self._eeprom_page_size
        start = addr % self.chip.eeprom_size // page * page
        for offset, value in sorted(loaded.items()):
            if start + offset < self.chip.eeprom_size:
                # only the loaded bytes change (ATmega328P §28.8.2)
                self.memory.program(EEPROM_BASE + start + offset, bytes((value,)))
        self._busy(self.delays.eeprom)

    def _chip_erase(self) -> None:
        self.memory.erase_all()
        self._changed = True
        hfuse = self._fuse("hfuse")
        if self.chip.eeprom_size and not (hfuse is not None and not hfuse & EESAVE):
            self.memory.poke(EEPROM_BASE, b"\xff" * self.chip.eeprom_size)
        if self.chip.lock:
            self.memory.poke(LOCK_BASE, b"\xff")
        self._busy(self.delays.erase)

    def _write_lock(self, value: int) -> None:
        if not self.chip.lock:
            return
        # lock bits can only be programmed (to 0); unimplemented bits read as 1
        new = self._lock & (value | ~self.chip.lock.mask) & 0xFF
        self.memory.poke(LOCK_BASE, bytes((new,)))
        self._busy(self.delays.fuse)

    def _write_fuse(self, name: str, value: int) -> None:
        i = self._fuse_index.get(name)
        if i is None or self._write_locked:
            return  # no such fuse on this chip; or lock mode 2/3: "the Fuse bits are locked"
        fuse = self.chip.fuses[i]
        if name == "hfuse":
            old = self.memory.peek(FUSE_BASE + i, 1)[0]
            value = (value & ~SPIEN) | (old & SPIEN)  # SPIEN is not accessible over ISP
        self.memory.poke(FUSE_BASE + i, bytes(((value & fuse.mask) | (~fuse.mask & 0xFF),)))
        self._busy(self.delays.fuse)

    # ------------------------------------------------------------------ conveniences for tests

    def fuses(self) -> dict[str, int]:
        """The fuse bytes and the lock byte as the chip holds them (no SPI)."""
        out = {f.name: self.memory.peek(FUSE_BASE + i, 1)[0] for i, f in enumerate(self.chip.fuses)}
        if self.chip.lock:
            out["lock"] = self._lock
        return out
