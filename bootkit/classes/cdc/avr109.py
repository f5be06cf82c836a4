"""The AVR109 bootloader protocol as a pure byte-stream state machine.

``feed(bytes) -> reply bytes``: bytes in from any stream (a CDC-ACM bulk
OUT endpoint, a pseudo-terminal, a test), the bootloader's answers out.
Behaviour follows LUFA's CDC bootloader (Bootloaders/CDC/BootloaderCDC.c)
and Arduino's Caterina, which derives from it:

- the current address ``CurrAddress`` is kept as a *byte* address; 'A' and
  'H' carry *word* addresses for flash (LUFA: ``CurrAddress = addr << 1``);
  EEPROM uses ``CurrAddress >> 1``, so for EEPROM 'A' carries the byte
  address (avrdude's butterfly.c divides by ``wr_size`` 1 for EEPROM);
- a flash block write ('B' .. 'F') erases the page at the current address
  and programs the block (BootloaderAPI_ErasePage, FillWord, WritePage);
- every command without data to return answers '\\r'; an unknown command
  answers '?'; ESC (sync) answers nothing.

Where bootkit is stricter than the C it does so to stay safe and in sync:
a block that reaches past the flash or into the boot section is consumed
and answered '?' with nothing written (the AVR's SPM would refuse the boot
section too, silently), and a 'B' with an unknown memory type still
consumes its data bytes, so they are never run as commands.
"""

from __future__ import annotations

from typing import Callable

from ...memory import MemoryFault
from ...memory.chips import EEPROM_BASE, FUSE_BASE, LOCK_BASE, SIGNATURE_BASE
from ...memory.writer import SessionWriter
from ...usb.device import SignalKind
from .protocol import (
    CR,
    ESC,
    FIXED_LENGTH,
    HARDWARE_VERSION,
    ISP_READ_EXTENDED_FUSE,
    ISP_READ_HIGH_FUSE,
    ISP_READ_LOCK,
    ISP_READ_LOW_FUSE,
    ISP_READ_SIGNATURE,
    ISP_WRITE,
    ISP_WRITE_LOCK_MASK,
    MEMORY_EEPROM,
    MEMORY_FLASH,
    SOFTWARE_IDS,
    SOFTWARE_VERSIONS,
    UNKNOWN,
    UNIVERSAL_NEW,
    device_codes,
)

# AVR109 addresses flash in 16-bit words: 'A' carries 16 bits, 'H' 24
# (avrdude's butterfly_set_addr sends 'H' from word 0x10000 on), so a byte
# address must be below 2 * 2**24.
AVR109_FLASH_LIMIT = 2 << 24


def reachable(chip_or_layout) -> str | None:
    """None when AVR109 can address all of a chip's flash; else why not, in one line."""
    flash = getattr(chip_or_layout, "flash", None)
    if flash is not None and hasattr(flash, "end"):
        start, end, name = flash.start, flash.end, ""
    else:
        chip = chip_or_layout
        start, end, name = chip.flash_start, chip.flash_start + chip.flash_size, chip.name + "'s "
    if end <= AVR109_FLASH_LIMIT:
        return None
    return (f"{name}flash at 0x{start:X}-0x{end - 1:X} is out of AVR109's reach: its flash addresses are "
            f"16-bit word addresses ('A', below 0x20000) or 24-bit ('H', below 0x{AVR109_FLASH_LIMIT:X})")


class Avr109Engine:
    """One AVR109 bootloader over a MemoryIO (SimulatedFlash or a real target).

    ``signal(kind, reason)`` is called with ``"leave"`` after 'E' (LUFA
    leaves the bootloader at once; Caterina after 500 ms).  ``activity()``
    hooks let a Function restart its idle timeout.
    """

    def __init__(self, memory, *, dialect: str = "lufa", software_id: bytes | str | None = None,
                 version: bytes | str | None = None, block_size: int | None = None,
                 signal: Callable[..., None] | None = None):
        if dialect not in SOFTWARE_IDS:
            raise ValueError(f"unknown AVR109 dialect {dialect!r} (choose from {', '.join(SOFTWARE_IDS)})")
        self.memory = memory
        self.dialect = dialect
        sid = software_id if software_id is not None else SOFTWARE_IDS[dialect]
        sid = sid.encode("ascii") if isinstance(sid, str) else bytes(sid)
        if len(sid) != 7:
            raise ValueError(f"the AVR109 software identifier is exactly 7 bytes, got {sid!r}")
        self.software_id = sid
        ver = version if version is not None else SOFTWARE_VERSIONS[dialect]
        self.version = (ver.encode("ascii") if isinstance(ver, str) else bytes(ver))[:2].ljust(2, b"0")
        layout = memory.layout
        self.flash = layout.flash
        why = reachable(layout)
        if why is not None:  # a 32-bit part (STM32, RP2040): no AVR109 address reaches its flash
            chip = getattr(memory, "chip", None)
            raise ValueError(f"an AVR109 bootloader cannot serve {chip.name if chip else 'this chip'}: {why}")
        self.page_size = block_size or self.flash.write_size
        app = layout.application_ranges("flash")
        self.app_start, self.app_end = app[0] if app else (self.flash.start, self.flash.start)
        self.eeprom = self._region("eeprom")
        self.fuses = self._region("fuses")
        self.lock = self._region("lock")
        self.signature = self._region("signature")
        self.signal = signal or (lambda kind, reason="", delay=0.0: None)
        # how long the memory is busy after an operation: the Function holding this
        # engine passes it on (Function.busy), and the transport holds the next transfer
        self.busy: Callable[[float], object] = lambda seconds: None
        self.writer = SessionWriter(memory)
        self.address = 0  # CurrAddress: a byte address
        self.page_buffer: dict[int, int] = {}  # 'c'/'C' fills: byte offset -> value
        self._buffer = bytearray()
        self.exited = False
        # 'E' with a valid application: the application runs and no longer
        # speaks AVR109, so a bare engine (on a pty, without the USB device
        # model that would re-enumerate) answers nothing until the port closes;
        # the next session finds the bootloader again, as after a reset with
        # the boot button held.
        self.application_running = False
        self.commands = 0  # complete commands handled (activity counter)
        self.log: list[str] = []

    def _region(self, kind):
        try:
            return self.memory.layout.region(kind)
        except KeyError:
            return None

    # ------------------------------------------------------------------
    # the stream
    def feed(self, data: bytes) -> bytes:
        """Bytes from the host in, the bootloader's answers out."""
        if self.application_running:
            return b""
        self._buffer += data
        out = bytearray()
        buf = self._buffer
        pos = 0
        while pos < len(buf):
            need = self._length(buf, pos)
            if need is None or pos + need > len(buf):
                break  # wait for the rest of the command
            frame = bytes(buf[pos:pos + need])
            pos += need
            out += self._command(frame)
            if self.application_running:  # 'E' left for the application: the rest is not ours
                # mypy keeps the narrowing of the early return above across _command(), which sets it
                pos = len(buf)  # type: ignore[unreachable]
                break
        del buf[:pos]
        return bytes(out)

    @property
    def pending(self) -> int:
        """Bytes of an incomplete command waiting for the rest."""
        return len(self._buffer)

    def reset(self) -> None:
        """The board is reset into its bootloader (boot button held): a running
        application stops, a partial command is dropped."""
        self.disconnect()

    def disconnect(self) -> None:
        """The host went away (port closed, DTR dropped, USB reset): a partial
        command is abandoned, so a truncated block writes nothing.  A bare engine
        (no USB device model to re-enumerate) serves the next session as its
        bootloader again, so avrdude can run one session after another."""
        if self._buffer:
            self.log.append(f"host gone: {len(self._buffer)} byte(s) of an incomplete command dropped")
        self._buffer.clear()
        self.application_running = False

    def _length(self, buf: bytearray, pos: int) -> int | None:
        letter = chr(buf[pos])
        if letter == "B":
            if pos + 3 > len(buf):
                return None
            return 4 + (buf[pos + 1] << 8 | buf[pos + 2])
        return FIXED_LENGTH.get(letter, 1)

    # ------------------------------------------------------------------
    def _command(self, frame: bytes) -> bytes:
        c = chr(frame[0])
        self.commands += 1
        if frame[0] == ESC:
            return b""
        name = _NAMES.get(c)
        if name is None:
            return UNKNOWN
        handler = getattr(self, "_cmd_" + name)
        try:
            return handler(frame)
        except MemoryFault as exc:
            self.log.append(f"'{c}': {exc}")
            return UNKNOWN

    # identification -----------------------------------------------------
    def _cmd_software_id(self, f):
        return self.software_id

    def _cmd_software_version(self, f):
        return self.version

    def _cmd_programmer_type(self, f):
        return b"S"  # serial programmer

    def _cmd_auto_increment(self, f):
        return b"Y"

    def _cmd_block_support(self, f):
        return b"Y" + self.page_size.to_bytes(2, "big")

    def _cmd_hardware_version(self, f):
        return HARDWARE_VERSION

    def _cmd_device_codes(self, f):
        sig = self.memory.read(SIGNATURE_BASE, 3) if self.signature is not None else None
        return device_codes(sig)

    # AVR910 universal commands ('.', ':') -----------------------------------
    def _cmd_universal(self, f):
        """One serial-programming instruction, as the bootloader can carry it out itself:
        fuse, lock and signature reads (LPM with BLBSET/SIGRD), lock writes of the boot lock
        bits (SPM).  Fuses cannot be written from a bootloader: the write is ignored, so the
        host's read-back shows the fuse unchanged (avrdude reports the mismatch).  Anything
        else answers '?' for its output byte.  The answer is always two bytes, output and
        '\\r', so the stream stays in step."""
        op = tuple(f[1:4]) if f[0] == UNIVERSAL_NEW else tuple(f[1:3]) + (0,)
        out = self._isp(op[0], op[1], op[2], f[4] if f[0] == UNIVERSAL_NEW else f[3])
        return (out if out is not None else UNKNOWN) + CR

    def _isp(self, b1: int, b2: int, b3: int, b4: int) -> bytes | None:
        if (b1, b2) == ISP_READ_LOW_FUSE:
            return self._fuse_or_none(0)
        if (b1, b2) == ISP_READ_HIGH_FUSE:
            return self._fuse_or_none(1)
        if (b1, b2) == ISP_READ_EXTENDED_FUSE:
            return self._fuse_or_none(2)
        if (b1, b2) == ISP_READ_LOCK:
            return self.memory.read(LOCK_BASE, 1) if self.lock is not None else None
        if b1 == ISP_READ_SIGNATURE and self.signature is not None and (b3 & 3) < 3:
            return self.memory.read(SIGNATURE_BASE + (b3 & 3), 1)
        if b1 == ISP_WRITE and b2 & ISP_WRITE_LOCK_MASK == ISP_WRITE_LOCK_MASK and self.lock is not None:
            # the new lock byte, 0 = programmed; SPM reaches only BLB0x/BLB1x (bits 5..2)
            old = self.memory.read(LOCK_BASE, 1)[0]
            self.busy(self.memory.program(LOCK_BASE, bytes([old & (b4 | ~0x3C) & 0xFF])))
            return b"\x00"
        if b1 == ISP_WRITE and b2 in (0xA0, 0xA8, 0xA4):
            self.log.append(f"universal: fuse write 0x{b2:02X} ignored (a bootloader cannot write fuses)")
            return b"\x00"
        return None

    def _fuse_or_none(self, index: int) -> bytes | None:
        if self.fuses is None or index >= self.fuses.size:
            return None
        return self.memory.read(FUSE_BASE + index, 1)

    def _cmd_ack_with_byte(self, f):  # T (select device), x/y (LEDs)
        return CR

    def _cmd_ack(self, f):  # P, L
        return CR

    def _cmd_signature(self, f):
        # LUFA sends AVR_SIGNATURE_3, _2, _1; avrdude's butterfly_read_sig_bytes
        # swaps bytes 0 and 2 back ("Returned signature has wrong order").
        if self.signature is None:
            return b"\x00\x00\x00"
        sig = self.memory.read(SIGNATURE_BASE, 3)
        return bytes((sig[2], sig[1], sig[0]))

    # fuses and lock -----------------------------------------------------
    def _fuse(self, index: int) -> bytes:
        if self.fuses is None or index >= self.fuses.size:
            return UNKNOWN
        return self.memory.read(FUSE_BASE + index, 1)

    def _cmd_lock_read(self, f):
        return self.memory.read(LOCK_BASE, 1) if self.lock is not None else UNKNOWN

    def _cmd_low_fuse(self, f):
        return self._fuse(0)

    def _cmd_high_fuse(self, f):
        return self._fuse(1)

    def _cmd_extended_fuse(self, f):
        return self._fuse(2)

    def _cmd_lock_write(self, f):
        # boot_lock_bits_set(bits) writes ~bits with SPM: bits given as 1 get
        # programmed (0); SPM reaches only the boot lock bits BLB0x/BLB1x
        # (bits 5..2, ATmega32U4 datasheet 28.7.1), and lock bits never go back to 1.
        if self.lock is None:
            return UNKNOWN
        old = self.memory.read(LOCK_BASE, 1)[0]
        self.busy(self.memory.program(LOCK_BASE, bytes([old & ~(f[1] & 0x3C) & 0xFF])))
        return CR

    # addressing ---------------------------------------------------------
    def _cmd_set_address(self, f):
        self.address = (f[1] << 8 | f[2]) << 1
        return CR

    def _cmd_set_ext_address(self, f):
        # 'H': 24-bit word address, avrdude's butterfly_set_extaddr for parts
        # with a LOAD_EXT_ADDR op (over 64 K words: ATmega2560).
        self.address = (f[1] << 16 | f[2] << 8 | f[3]) << 1
        return CR

    # erase ---------------------------------------------------------------
    def _cmd_chip_erase(self, f):
        # "Clear the application section of flash": pages below BOOT_START_ADDR.
        self.busy(self.memory.erase_all())
        self.writer.reset()
        self.page_buffer.clear()
        return CR

    def _cmd_exit(self, f):
        try:
            self.busy(self.memory.manifest())
            started = True
        except MemoryFault as exc:  # blank flash: the board stays in its bootloader
            self.log.append(f"'E': {exc}")
            started = False
        self.exited = True
        self.application_running = started
        self.signal(SignalKind.LEAVE, "AVR109 'E' (exit bootloader)", 0.5 if self.dialect == "caterina" else 0.0)
        return CR

    # block commands -------------------------------------------------------
    def _flash_span_ok(self, start: int, length: int) -> bool:
        return self.app_start <= start and start + length <= self.app_end

    def _cmd_block_write(self, f):
        size = f[1] << 8 | f[2]
        kind = f[3]
        data = f[4:4 + size]
        if kind == MEMORY_FLASH:
            start = self.address
            if size % 2 or not self._flash_span_ok(start, size):
                self.log.append(f"'B' flash 0x{start:X}+{size} refused (outside the application section)")
                return UNKNOWN
            # LUFA erases the page at PageStartAddress before filling it; the
            # session writer erases each touched page (reset: every block is a
            # new erase, as on the chip).
            self.writer.reset()
            self.busy(self.writer.write(start, data))
            self.address += size
            return CR
        if kind == MEMORY_EEPROM:
            start = self.address >> 1
            if self.eeprom is None or start + size > self.eeprom.size:
                self.log.append(f"'B' EEPROM 0x{start:X}+{size} refused")
                return UNKNOWN
            self.busy(self.memory.program(EEPROM_BASE + start, data))  # eeprom_update_byte: written in place
            self.address += 2 * size
            return CR
        return UNKNOWN

    def _cmd_block_read(self, f):
        size = f[1] << 8 | f[2]
        kind = f[3]
        if kind == MEMORY_FLASH:
            start = self.address
            if start + size > self.flash.end or start < self.flash.start:
                return UNKNOWN
            data = self.memory.read(start, size)
            self.address += size + (size & 1)  # the counter moves per complete word
            return data
        if kind == MEMORY_EEPROM:
            start = self.address >> 1
            if self.eeprom is None or start + size > self.eeprom.size:
                return UNKNOWN
            data = self.memory.read(EEPROM_BASE + start, size)
            self.address += 2 * size
            return data
        return UNKNOWN

    # word-wise flash --------------------------------------------------------
    # LUFA/Caterina: 'C' fills the current word's high byte, 'c' its low byte
    # and then advances the address; 'm' writes the page buffer to the page
    # holding the current address (the host erased it first with 'e').
    def _cmd_fill_high(self, f):
        self.page_buffer[(self.address | 1) % self.page_size] = f[1]
        return CR

    def _cmd_fill_low(self, f):
        self.page_buffer[(self.address & ~1) % self.page_size] = f[1]
        self.address += 2
        return CR

    def _cmd_write_page(self, f):
        page = self.address - self.address % self.page_size
        if not self._flash_span_ok(page, self.page_size):
            self.page_buffer.clear()
            return UNKNOWN
        data = bytearray(b"\xff" * self.page_size)
        for off, value in self.page_buffer.items():
            data[off] = value
        self.page_buffer.clear()
        self.busy(self.memory.program(page, bytes(data)))
        return CR

    def _cmd_read_word(self, f):
        start = self.address & ~1
        if start + 2 > self.flash.end:
            return UNKNOWN
        word = self.memory.read(start, 2)
        return bytes((word[1], word[0]))  # high byte first

    # EEPROM bytes ---------------------------------------------------------
    def _cmd_eeprom_write(self, f):
        start = self.address >> 1
        if self.eeprom is None or start >= self.eeprom.size:
            return UNKNOWN
        self.busy(self.memory.program(EEPROM_BASE + start, f[1:2]))
        self.address += 2
        return CR

    def _cmd_eeprom_read(self, f):
        start = self.address >> 1
        if self.eeprom is None or start >= self.eeprom.size:
            return UNKNOWN
        self.address += 2
        return self.memory.read(EEPROM_BASE + start, 1)


_NAMES = {
    "S": "software_id", "V": "software_version", "p": "programmer_type", "a": "auto_increment",
    "b": "block_support", "t": "device_codes", "T": "ack_with_byte", "x": "ack_with_byte",
    "y": "ack_with_byte", "P": "ack", "L": "ack", "s": "signature", "r": "lock_read", "F": "low_fuse",
    "N": "high_fuse", "Q": "extended_fuse", "l": "lock_write", "A": "set_address", "H": "set_ext_address",
    "e": "chip_erase", "E": "exit", "B": "block_write", "g": "block_read", "C": "fill_high", "c": "fill_low",
    "m": "write_page", "R": "read_word", "D": "eeprom_write", "d": "eeprom_read", "v": "hardware_version",
    ".": "universal", ":": "universal",
}


def engine_for(dialect: str, memory, **kw) -> Avr109Engine:
    return Avr109Engine(memory, dialect=dialect, **kw)


__all__ = ["Avr109Engine", "engine_for", "reachable", "AVR109_FLASH_LIMIT"]
