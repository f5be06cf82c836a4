"""ISP links: the programmer between the host and the AVR's ISP header.

:class:`IspLink` is the one small base class (as python-can's ``BusABC``):
a link carries raw 4-byte instructions with :meth:`IspLink.transact` and
enters programming mode with :meth:`IspLink.connect`.  The bulk operations
(read memory, write a page, chip erase, signature, fuses) have default
implementations built on ``transact()``, instruction by instruction as the
datasheet's programming algorithm goes; a programmer with native bulk
commands (STK500 v2 CMD_PROGRAM_FLASH_ISP, USBasp FUNC_WRITEFLASH) overrides
them.  :class:`EmulatedLink` wires a link straight to an
:class:`~.target.EmulatedAvr`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

from ..memory.chips import Chip, chips_by_signature
from . import protocol as P
from .errors import IspError, IspInputError
from .target import EmulatedAvr

#: Programming Enable attempts before giving up; avrdude's synchloops (avrdude.conf
#: "synchloops = 32") with a RESET pulse between tries (avrdude's avr.c, ISP init)
SYNC_TRIES = 32
#: how long a link polls RDY/BSY before it gives up.  The longest datasheet wait
#: (tWD_ERASE) is 9 ms; a second leaves room for a slow link and a loaded machine.
BUSY_TIMEOUT = 1.0

MEMORIES = ("flash", "eeprom")


class IspLink(ABC):
    """The programmer between the host and the AVR; a context manager (leaving it disconnects
    and closes).  ``chip`` (optional) is the target, when known: it names the fuses a
    :meth:`read_fuses` reads; without it the link identifies the chip by its signature."""

    chip: Chip | None = None

    # -- what every link provides

    def connect(self, *, sck_hz: int | None = None) -> None:
        """Hold RESET and send Programming Enable until the target echoes 0x53.

        The default (for links that drive RESET and SPI themselves) retries
        :data:`SYNC_TRIES` times with a RESET pulse between tries, as avrdude does.
        """
        self.set_reset(True)
        for _ in range(SYNC_TRIES):
            answer = self.transact(P.programming_enable())
            if answer[P.ECHO_INDEX] == P.ECHO:
                return
            # a positive RESET pulse, then try again (ATmega328P §28.8.2, step 2)
            self.set_reset(False)
            self.set_reset(True)
        self.set_reset(False)
        raise IspError("target does not answer programming enable (no 0x53 echo after "
                       f"{SYNC_TRIES} tries): check wiring, power, clock")

    def disconnect(self) -> None:
        """Leave programming mode: release RESET (the target starts its program)."""
        self.set_reset(False)

    def set_reset(self, active: bool) -> None:
        """Drive the target's RESET line (True: held low).  Links whose programmer
        handles RESET itself override :meth:`connect` instead."""
        raise NotImplementedError(f"{type(self).__name__} does not drive RESET itself")

    @abstractmethod
    def transact(self, cmd: bytes) -> bytes:
        """One raw 4-byte instruction; returns the 4 bytes shifted out meanwhile."""

    def close(self) -> None:
        """Release the programmer (the default: disconnect)."""
        self.disconnect()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- bulk operations, built on transact()

    def _data(self, cmd: bytes) -> int:
        answer = self.transact(cmd)
        if len(answer) != 4:
            raise IspError(f"the programmer answered {len(answer)} bytes to a 4-byte instruction")
        return answer[P.DATA_INDEX]

    def wait_ready(self) -> None:
        """Poll RDY/BSY until the target is ready (IspError after :data:`BUSY_TIMEOUT` s)."""
        deadline = None
        while self._data(P.poll_rdy()) & P.BUSY_BIT:
            now = time.monotonic()
            if deadline is None:
                deadline = now + BUSY_TIMEOUT
            elif now > deadline:
                raise IspError(f"target stays busy (RDY/BSY) for more than {BUSY_TIMEOUT:g} s: "
                               "check its power and clock")
            time.sleep(0.0005)

    def read_memory(self, memory: str, address: int, length: int) -> bytes:
        """``length`` bytes of ``memory`` ("flash" or "eeprom") from byte address ``address``."""
        _check_memory(memory)
        out = bytearray()
        if memory == "eeprom":
            for a in range(address, address + length):
                out.append(self._data(P.read_eeprom(a)))
            return bytes(out)
        # above 128 KiB the word address's bits 16+ go first (ATmega2560 §30.8); the target
        # keeps them, so a part that has them always gets them loaded once
        use_extended = self._needs_extended() or (address + length - 1) >> 17 > 0
        extended = None
        for a in range(address, address + length):
            word = a >> 1
            if use_extended and word >> 16 != extended:
                extended = word >> 16
                self.transact(P.load_extended_address(extended))
            out.append(self._data(P.read_program(word & 0xFFFF, bool(a & 1))))
        return bytes(out)

    def write_page(self, memory: str, address: int, data: bytes, *, page_size: int) -> None:
        """Program ``data`` at ``address``: for flash, one page (load the page buffer, write
        it, poll); for EEPROM, a page through the EEPROM page buffer (``page_size`` > 1) or
        byte by byte.  ``data`` must not cross a page boundary."""
        _check_memory(memory)
        if page_size <= 0 or address // page_size != (address + max(len(data), 1) - 1) // page_size:
            raise IspInputError(f"{memory} 0x{address:X}+{len(data)} crosses a {page_size}-byte page boundary")
        if not data:
            return
        if memory == "eeprom":
            if page_size > 1:
                # Load EEPROM Memory Page takes the offset in the page, Write EEPROM Memory
                # Page the page's address (avrdude.conf: "0000.00aa", "aaaa.aa00" on the t85)
                for i, value in enumerate(data):
                    self.transact(P.load_eeprom_page((address + i) % page_size, value))
                self.transact(P.write_eeprom_page(address - address % page_size))
                self.wait_ready()
            else:
                for i, value in enumerate(data):
                    self.transact(P.write_eeprom(address + i, value))
                    self.wait_ready()
            return
        # the datasheet loads a word's low byte before its high byte: pad odd edges with 0xFF
        start = address & ~1
        padded = b"\xff" * (address - start) + bytes(data)
        if len(padded) & 1:
            padded += b"\xff"
        for i in range(0, len(padded), 2):
            word = (start + i) >> 1
            self.transact(P.load_program_page(word, False, padded[i]))
            self.transact(P.load_program_page(word, True, padded[i + 1]))
        word = start >> 1
        if word >> 16 or self._needs_extended():
            self.transact(P.load_extended_address(word >> 16))
        self.transact(P.write_program_page(word & 0xFFFF))
        self.wait_ready()

    def _needs_extended(self) -> bool:
        return self.chip is not None and self.chip.flash_size > 128 * 1024

    def chip_erase(self) -> None:
        """Erase flash, EEPROM (unless EESAVE) and lock bits; waits until done."""
        self.transact(P.chip_erase())
        self.wait_ready()

    def read_signature(self) -> bytes:
        return bytes(self._data(P.read_signature(i)) for i in range(3))

    def _fuse_names(self) -> tuple[str, ...]:
        chip = self.chip
        if chip is None:
            found = chips_by_signature(self.read_signature())
            chip = found[0] if found else None
        if chip is None:
            return P.FUSE_NAMES
        return tuple(f.name for f in chip.fuses if f.name in P.FUSE_NAMES)

    def read_fuses(self) -> dict[str, int]:
        """The chip's fuse bytes (avrdude's names) and "lock"."""
        out = {name: self._data(P.read_fuse(name)) for name in self._fuse_names()}
        out["lock"] = self._data(P.read_lock())
        return out

    def write_fuse(self, name: str, value: int) -> None:
        """Write one fuse byte ("lfuse", "hfuse", "efuse") or "lock"; waits until done."""
        if not 0 <= value <= 0xFF:
            raise IspInputError(f"{name} value {value!r} is not a byte (0x00-0xFF)")
        if name == "lock":
            self.transact(P.write_lock(value))
        elif name in P.FUSE_NAMES:
            self.transact(P.write_fuse(name, value))
        else:
            raise IspInputError(f"unknown fuse {name!r} (known: {', '.join(P.FUSE_NAMES)}, lock)")
        self.wait_ready()


def _check_memory(memory: str) -> None:
    if memory not in MEMORIES:
        raise IspInputError(f"unknown memory {memory!r} (known: {', '.join(MEMORIES)})")


class EmulatedLink(IspLink):
    """A link wired straight to an :class:`EmulatedAvr` (no programmer in between)."""

    def __init__(self, target: EmulatedAvr):
        self.target = target
        self.chip = target.chip

    def set_reset(self, active: bool) -> None:
        self.target.reset(active)

    def transact(self, cmd: bytes) -> bytes:
        return self.target.spi(cmd)

    def close(self) -> None:
        """Disconnect and write the target's image file back."""
        self.disconnect()
        self.target.close()
