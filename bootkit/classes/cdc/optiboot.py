"""Optiboot: the STK500 v1 subset of the Arduino Uno's bootloader, as a byte-stream engine.

``feed(bytes) -> reply bytes``, like :class:`~.avr109.Avr109Engine`.  The
commands and answers follow Optiboot 8 (optiboot/bootloaders/optiboot/
optiboot.c, the Arduino Uno's bootloader since 2011) and the STK500 v1
protocol it borrows (Atmel AVR061; the constants as avrdude's
stk500_private.h names them); avrdude drives it as ``-c arduino``
(src/arduino.c, src/stk500.c):

- every command ends with CRC_EOP (0x20) and is answered STK_INSYNC,
  its data, STK_OK;
- STK_GET_PARAMETER answers Optiboot's version for STK_SW_MAJOR/MINOR
  (8.0) and 0x03 for anything else ("enough to keep avrdude happy");
- STK_SET_DEVICE (20 bytes) and STK_SET_DEVICE_EXT (5) are read and ignored;
- STK_LOAD_ADDRESS carries a *word* address, little-endian.  On parts with
  more than 64 KiB of flash (RAMPZ) its top bit goes to RAMPZ bit 0 and
  STK_UNIVERSAL's "load extended address" (0x4D 0x00 ext 0x00) sets RAMPZ's
  upper bits, as Optiboot 7+ does for the ATmega2560; an ELPM Z+ read
  carries RAMPZ across a 64 KiB line (avrdude's stk500_loadaddr says why it
  reloads the byte then);
- STK_PROG_PAGE erases the page holding the address and writes the block
  (``__boot_page_erase_short``, fill, write): bytes of the page the block
  does not cover read 0xFF afterwards.  'E' writes EEPROM bytes (Optiboot's
  SUPPORT_EEPROM / BIGBOOT builds; the stock 512-byte Uno build has none);
- STK_UNIVERSAL answers 0x00 (chip erase, fuse reads: Optiboot ignores
  them; avrdude reads 0x00 fuses through it);
- STK_LEAVE_PROGMODE shortens the watchdog to 16 ms: the chip resets and
  starts the application;
- the watchdog: 1 s after the last byte received (``watchdogReset`` in
  ``getch``) the chip resets into the application.  bootkit starts it only
  when the flash holds one (its first word is not erased); a port opened
  again (DTR pulls RESET through the Uno's capacitor) runs the bootloader.

Where bootkit is stricter than the C, it is to stay safe and in step:
a block reaching past its page, past the flash or into the bootloader
region, of odd or zero length, is consumed and answered STK_INSYNC
STK_FAILED with nothing written (the chip's SPM would silently ignore the
boot section, and wrap a block around its page buffer); a frame whose
last byte is not CRC_EOP is answered STK_NOSYNC (the STK500's answer,
AVR061) and dropped, where Optiboot lets its watchdog reset the chip.
"""

from __future__ import annotations

import time
from typing import Callable

from ...memory import MemoryFault
from ...memory.chips import EEPROM_BASE, SIGNATURE_BASE

# --- STK500 v1 (AVR061; avrdude src/stk500_private.h)
STK_OK = 0x10
STK_FAILED = 0x11
STK_UNKNOWN = 0x12
STK_NODEVICE = 0x13
STK_INSYNC = 0x14
STK_NOSYNC = 0x15
CRC_EOP = 0x20

STK_GET_SYNC = 0x30
STK_GET_SIGN_ON = 0x31
STK_SET_PARAMETER = 0x40
STK_GET_PARAMETER = 0x41
STK_SET_DEVICE = 0x42
STK_SET_DEVICE_EXT = 0x45
STK_ENTER_PROGMODE = 0x50
STK_LEAVE_PROGMODE = 0x51
STK_CHIP_ERASE = 0x52
STK_LOAD_ADDRESS = 0x55
STK_UNIVERSAL = 0x56
STK_PROG_PAGE = 0x64
STK_READ_PAGE = 0x74
STK_READ_SIGN = 0x75

STK_HW_VER = 0x80
STK_SW_MAJOR = 0x81
STK_SW_MINOR = 0x82

MEMORY_FLASH = ord("F")
MEMORY_EEPROM = ord("E")

# AVR serial programming instruction "Load Extended Address byte" (ATmega2560 §30.8, table 30-17)
LOAD_EXTENDED_ADDRESS = 0x4D

# Optiboot 8.0: OPTIBOOT_MAJVER / OPTIBOOT_MINVER (optiboot.c)
OPTIBOOT_VERSION = (8, 0)
GENERIC_PARAMETER = 0x03  # "GET PARAMETER returns a generic 0x03 reply for other parameters"
WATCHDOG_TIMEOUT = 1.0  # WDTPERIOD: WATCHDOG_1S, the default of the Makefile

# bytes between the command and CRC_EOP, fixed per command (optiboot.c: getNch(20), getNch(5), ...);
# every command not listed has none.  STK_SET_PARAMETER takes two (AVR061), where Optiboot reads none.
FIXED = {
    STK_GET_PARAMETER: 1, STK_SET_PARAMETER: 2, STK_SET_DEVICE: 20, STK_SET_DEVICE_EXT: 5,
    STK_LOAD_ADDRESS: 2, STK_UNIVERSAL: 4, STK_READ_PAGE: 3,
}


def boot_size(chip) -> int:
    """Optiboot's size: 512 B (one 256-word boot section), 1 KiB on parts over 64 KiB
    (BIGBOOT: the smallest boot section of an ATmega1280/2560 is 512 words)."""
    return 512 if chip.flash_size <= 64 * 1024 else 1024


class OptibootEngine:
    """One Optiboot bootloader over a MemoryIO.

    ``timeout``: the watchdog (seconds without a byte before the chip resets into
    its application; None: never, for an engine nothing resets, e.g. on a bare pty).
    ``clock`` is injectable.  ``started(reason)`` is called when the application starts.
    """

    def __init__(self, memory, *, version: tuple[int, int] = OPTIBOOT_VERSION, timeout: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 started: Callable[[str], None] | None = None):
        self.memory = memory
        layout = memory.layout
        self.layout = layout
        self.flash = layout.flash
        self.page_size = self.flash.write_size
        self.eeprom = self._region("eeprom")
        self.signature = self._region("signature")
        self.rampz_part = self.flash.end - self.flash.start > 0x10000  # RAMPZ exists above 64 KiB
        self.version = version
        self.timeout = timeout
        self.clock = clock
        self.started = started or (lambda reason: None)
        # how long the memory is busy after an operation (Function.busy passes it on)
        self.busy: Callable[[float], object] = lambda seconds: None
        self.address = 0  # address.word * 2, a byte address (16 bits)
        self.rampz = 0
        self._buffer = bytearray()
        self.application_running = False
        self.commands = 0
        self.log: list[str] = []
        self._last = clock()

    def _region(self, kind):
        try:
            return self.memory.layout.region(kind)
        except KeyError:
            return None

    # ------------------------------------------------------------------
    # reset, watchdog, the port
    def reset(self, now: float | None = None) -> None:
        """An external reset (the DTR pulse on opening the port): the bootloader runs afresh."""
        self._buffer.clear()
        self.application_running = False
        self.address = self.rampz = 0
        self._last = self.clock() if now is None else now

    def disconnect(self) -> None:
        """The port closed: a partial command is dropped.  The next open pulls DTR, which
        resets the board into its bootloader (avrdude's arduino_open), so the engine is reset."""
        if self._buffer:
            self.log.append(f"host gone: {len(self._buffer)} byte(s) of an incomplete command dropped")
        self.reset()

    def tick(self, now: float) -> None:
        """The watchdog: no byte for ``timeout`` s resets the chip into a present application."""
        if self.application_running or self.timeout is None or now - self._last < self.timeout:
            return
        self._start_application(f"watchdog: no byte for {self.timeout:g} s")
        self._last = now

    def _start_application(self, reason: str) -> None:
        self._buffer.clear()
        if self.memory.is_blank():
            # erased flash: nothing to run, the bootloader keeps control (and its watchdog restarts)
            self.log.append(f"{reason}: flash is blank, the bootloader stays")
            return
        self.application_running = True
        self.log.append(f"{reason}: application started")
        self.started(reason)

    # ------------------------------------------------------------------
    # the stream
    def feed(self, data: bytes) -> bytes:
        now = self.clock()
        self.tick(now)
        if self.application_running:
            return b""  # the sketch has the UART now: nothing of this is for the bootloader
        if data:
            self._last = now  # watchdogReset() in getch()
        self._buffer += data
        out = bytearray()
        buf = self._buffer
        pos = 0
        while pos < len(buf):
            need = self._length(buf, pos)
            if need is None or pos + need > len(buf):
                break
            frame = bytes(buf[pos:pos + need])
            pos += need
            out += self._frame(frame)
            if self.application_running:  # STK_LEAVE_PROGMODE: the rest is the sketch's
                # mypy keeps the narrowing of the early return above across _frame(), which sets it
                pos = len(buf)  # type: ignore[unreachable]
                break
        del buf[:pos]
        return bytes(out)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @staticmethod
    def _length(buf: bytearray, pos: int) -> int | None:
        """Bytes of the whole frame starting at ``pos`` (command .. CRC_EOP), None: not known yet."""
        cmd = buf[pos]
        if cmd == STK_PROG_PAGE:
            if pos + 3 > len(buf):
                return None
            return 1 + 3 + (buf[pos + 1] << 8 | buf[pos + 2]) + 1
        return 1 + FIXED.get(cmd, 0) + 1

    def _frame(self, frame: bytes) -> bytes:
        self.commands += 1
        if frame[-1] != CRC_EOP:
            self.log.append(f"command 0x{frame[0]:02X}: no CRC_EOP (0x{frame[-1]:02X}): STK_NOSYNC")
            return bytes([STK_NOSYNC])
        cmd, args = frame[0], frame[1:-1]
        try:
            body = self._command(cmd, args)
        except MemoryFault as exc:
            self.log.append(f"command 0x{cmd:02X}: {exc}")
            return bytes([STK_INSYNC, STK_FAILED])
        if body is None:
            return bytes([STK_INSYNC, STK_FAILED])
        out = bytes([STK_INSYNC]) + body + bytes([STK_OK])
        if cmd == STK_LEAVE_PROGMODE:
            # watchdogConfig(WATCHDOG_16MS): the answer goes out, then the chip resets into the sketch
            try:
                self.busy(self.memory.manifest())
            except MemoryFault as exc:
                self.log.append(f"leave: {exc}")
            self._start_application("STK_LEAVE_PROGMODE")
        return out

    def _command(self, cmd: int, args: bytes) -> bytes | None:
        if cmd == STK_GET_PARAMETER:
            which = args[0]
            if which == STK_SW_MAJOR:
                return bytes([self.version[0]])
            if which == STK_SW_MINOR:
                return bytes([self.version[1]])
            return bytes([GENERIC_PARAMETER])
        if cmd == STK_LOAD_ADDRESS:
            word = args[0] | args[1] << 8
            if self.rampz_part:
                self.rampz = (self.rampz & 0xFE) | (1 if args[1] & 0x80 else 0)
            self.address = (word << 1) & 0xFFFF
            return b""
        if cmd == STK_UNIVERSAL:
            if self.rampz_part and args[0] == LOAD_EXTENDED_ADDRESS:
                self.rampz = (self.rampz & 0x01) | ((args[2] << 1) & 0xFF)
            return b"\x00"
        if cmd == STK_READ_SIGN:
            if self.signature is None:
                return b"\x00\x00\x00"
            return self.memory.read(SIGNATURE_BASE, 3)
        if cmd == STK_PROG_PAGE:
            return self._prog_page(args[2], args[3:])
        if cmd == STK_READ_PAGE:
            return self._read_page(args[2], args[0] << 8 | args[1])
        return b""  # STK_GET_SYNC, STK_ENTER_PROGMODE, STK_SET_DEVICE*, STK_LEAVE_PROGMODE, anything else

    # ------------------------------------------------------------------
    @property
    def flash_address(self) -> int:
        """The byte address the next flash access uses: RAMPZ:address."""
        return self.flash.start + (self.rampz << 16 | self.address)

    def _prog_page(self, kind: int, data: bytes) -> bytes | None:
        n = len(data)
        if kind == MEMORY_EEPROM:
            start = self.address
            if self.eeprom is None or n == 0 or start + n > self.eeprom.size:
                self.log.append(f"STK_PROG_PAGE EEPROM 0x{start:X}+{n} refused")
                return None
            self.busy(self.memory.program(EEPROM_BASE + start, data))
            return b""
        # Optiboot writes flash for any other memory type ("By making this the default ...")
        start = self.flash_address
        page = start - (start - self.flash.start) % self.page_size
        if (n == 0 or n % 2 or start + n > page + self.page_size or page + self.page_size > self.flash.end
                or self.layout.is_protected(page, page + self.page_size)):
            self.log.append(f"STK_PROG_PAGE flash 0x{start:X}+{n} refused (outside one application page)")
            return None
        busy = self.memory.erase(page)
        busy += self.memory.program(start, data)
        self.busy(busy)
        return b""

    def _read_page(self, kind: int, n: int) -> bytes | None:
        if kind == MEMORY_EEPROM:
            start = self.address
            if self.eeprom is None or n == 0 or start + n > self.eeprom.size:
                return None
            return self.memory.read(EEPROM_BASE + start, n)
        start = self.flash_address
        if n == 0 or start + n > self.flash.end:
            return None
        data = self.memory.read(start, n)
        if self.rampz_part:
            # ELPM Z+ increments RAMPZ:Z past a 64 KiB line (avrdude's stk500_loadaddr reloads it)
            self.rampz = ((start - self.flash.start + n) >> 16) & 0xFF
        return data


__all__ = ["OptibootEngine", "boot_size", "OPTIBOOT_VERSION", "WATCHDOG_TIMEOUT"]
