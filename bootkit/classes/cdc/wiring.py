"""The wiring bootloader: STK500 v2 framing as the Arduino Mega 2560's bootloader speaks it.

``feed(bytes) -> reply bytes``, like :class:`~.avr109.Avr109Engine`.  Messages
are AVR068's (start 0x1B, sequence number, size, token 0x0E, body, XOR
checksum: :mod:`bootkit.isp.stk500v2`); the commands are the subset that
ArduinoCore-avr's bootloaders/stk500v2/stk500boot.c (Peter Fleury's
STK500v2 bootloader, the Mega 2560's) carries out itself, with SPM and
LPM rather than on an ISP header.  avrdude drives it as ``-c wiring``
(src/wiring.c: DTR/RTS released 50 ms then asserted, then
stk500v2_getsync's CMD_SIGN_ON):

- the sequence number of each answer is the question's (issue 505's fix);
  a message with a bad checksum is dropped without an answer;
- CMD_SIGN_ON answers "AVRISP_2"; CMD_GET_PARAMETER answers the build
  number, hardware and software versions (2.10) and 0 for anything else;
  CMD_SET_PARAMETER and CMD_ENTER_PROGMODE_ISP answer OK and do nothing;
- CMD_LOAD_ADDRESS: a word address (bit 31, avrdude's "send Load
  Extended Address", is shifted out: ``address = value << 1`` in 32 bits);
- CMD_PROGRAM_FLASH_ISP: the bootloader erases the page at its own erase
  pointer, which starts at 0 and moves one page per write (it is reset by
  CMD_CHIP_ERASE_ISP), then fills and writes the page at the address: a
  host must write every page from the start, in order, as avrdude does for
  a whole image; CMD_READ_FLASH_ISP reads words; both move the address on;
- CMD_PROGRAM/READ_EEPROM_ISP: EEPROM bytes at the byte address loaded;
- CMD_READ_SIGNATURE_ISP, CMD_READ_FUSE_ISP (0x50 0x00 low, 0x50 0x08
  extended, anything else high), CMD_READ_LOCK_ISP: read with LPM
  (``boot_lock_fuse_bits_get``), so the answers are the chip's own;
- CMD_PROGRAM_LOCK_ISP programs the boot lock bits only (``~value & 0x3C``);
- CMD_SPI_MULTI answers four bytes: 0, the instruction's first byte, 0 and
  the signature byte (0x30), the low fuse (0x50), the high fuse (0x58), or 0;
- CMD_CHIP_ERASE_ISP erases nothing, resets the erase pointer and answers
  STATUS_CMD_FAILED (issue 543);
- CMD_LEAVE_PROGMODE_ISP answers OK and jumps to the application (erased
  flash slides back into the bootloader);
- without a byte for ``timeout`` seconds a bootloader with an application
  (first word not 0xFFFF) starts it (``recchar_timeout``).

Where bootkit differs from the C: a write reaching past its page, past the
flash or into the bootloader region (BOOTSZ; the SPM of the real chip is
held back by the boot lock bits) or of odd length is refused with
STATUS_CMD_FAILED and nothing written (an unknown command answers
STATUS_CMD_FAILED, as in the C); EEPROM reads use the byte address written (the stock build reads at twice
the address, "issue 543, this should work, it has not been tested").
"""

from __future__ import annotations

import time
from typing import Callable

from ...isp.stk500v2 import (
    CMD_CHIP_ERASE_ISP,
    CMD_ENTER_PROGMODE_ISP,
    CMD_GET_PARAMETER,
    CMD_LEAVE_PROGMODE_ISP,
    CMD_LOAD_ADDRESS,
    CMD_PROGRAM_EEPROM_ISP,
    CMD_PROGRAM_FLASH_ISP,
    CMD_PROGRAM_LOCK_ISP,
    CMD_READ_EEPROM_ISP,
    CMD_READ_FLASH_ISP,
    CMD_READ_FUSE_ISP,
    CMD_READ_LOCK_ISP,
    CMD_READ_SIGNATURE_ISP,
    CMD_SET_PARAMETER,
    CMD_SIGN_ON,
    CMD_SPI_MULTI,
    CKSUM_ERROR_BODY,
    PARAM_BUILD_NUMBER_HIGH,
    PARAM_BUILD_NUMBER_LOW,
    PARAM_HW_VER,
    PARAM_SW_MAJOR,
    PARAM_SW_MINOR,
    STATUS_CMD_FAILED,
    STATUS_CMD_OK,
    FrameParser,
    encode_frame,
)
from ...memory import MemoryFault
from ...memory.chips import EEPROM_BASE, FUSE_BASE, LOCK_BASE, SIGNATURE_BASE

SIGN_ON = b"AVRISP_2"
# stk500boot.c CONFIG_PARAM_*: hardware 0x0F, software 2.10, build 0
PARAMETERS = {PARAM_BUILD_NUMBER_LOW: 0, PARAM_BUILD_NUMBER_HIGH: 0, PARAM_HW_VER: 0x0F, PARAM_SW_MAJOR: 2,
              PARAM_SW_MINOR: 0x0A}
BOOT_TIMEOUT = 1.0  # the Mega build's wait for a first byte ("should be about 1 second")
# AVR serial programming instructions the bootloader recognises in CMD_SPI_MULTI / CMD_READ_FUSE_ISP
_READ_SIGNATURE, _READ_LOW_FUSE, _READ_HIGH_FUSE = 0x30, 0x50, 0x58


class WiringEngine:
    """One STK500 v2 (wiring) bootloader over a MemoryIO.

    ``timeout``: seconds without a byte before a present application starts
    (None: never).  ``clock`` injectable; ``started(reason)`` called when the
    application starts.
    """

    def __init__(self, memory, *, timeout: float | None = None, clock: Callable[[], float] = time.monotonic,
                 started: Callable[[str], None] | None = None):
        self.memory = memory
        layout = memory.layout
        self.layout = layout
        self.flash = layout.flash
        self.page_size = self.flash.write_size
        app = layout.application_ranges("flash")
        self.app_end = app[0][1] if app else self.flash.start
        self.eeprom = self._region("eeprom")
        self.fuses = self._region("fuses")
        self.lock = self._region("lock")
        self.signature = self._region("signature")
        self.timeout = timeout
        self.clock = clock
        self.started = started or (lambda reason: None)
        self.busy: Callable[[float], object] = lambda seconds: None
        self.parser = FrameParser()
        self.address = 0  # a byte address (LOAD_ADDRESS << 1)
        self.erase_address = self.flash.start  # eraseAddress: the next page the bootloader erases
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
    def reset(self, now: float | None = None) -> None:
        """An external reset (DTR): the bootloader runs afresh."""
        self.parser.reset()
        self.application_running = False
        self.address = 0
        self.erase_address = self.flash.start
        self._last = self.clock() if now is None else now

    def disconnect(self) -> None:
        """The port closed: a half-received message is dropped, and the next open resets
        the board (avrdude's wiring_open toggles DTR/RTS)."""
        if not self.parser.idle:
            self.log.append("host gone: a half-received message dropped")
        self.reset()

    def tick(self, now: float) -> None:
        if self.application_running or self.timeout is None or now - self._last < self.timeout:
            return
        self._start_application(f"no byte for {self.timeout:g} s")
        self._last = now

    def _start_application(self, reason: str) -> None:
        self.parser.reset()
        if self.memory.is_blank():  # "make sure its valid before jumping to it"
            self.log.append(f"{reason}: flash is blank, the bootloader stays")
            return
        self.application_running = True
        self.log.append(f"{reason}: application started")
        self.started(reason)

    @property
    def pending(self) -> int:
        return 0 if self.parser.idle else 1

    def feed(self, data: bytes) -> bytes:
        now = self.clock()
        self.tick(now)
        if self.application_running:
            return b""
        if data:
            self._last = now
        out = bytearray()
        for seq, body in self.parser.feed(data):
            if self.application_running:  # set by a CMD_LEAVE_PROGMODE_ISP before: the rest is the sketch's
                # mypy keeps the narrowing of the early return above across the loop, whose commands set it
                break  # type: ignore[unreachable]
            self.commands += 1
            if body == CKSUM_ERROR_BODY and self.parser.errors:
                # stk500boot.c: a bad checksum sends the parser back to ST_START, no answer
                self.log.append(f"message {seq}: bad checksum, dropped")
                continue
            if not body:
                continue
            try:
                answer = self._command(body)
            except MemoryFault as exc:
                self.log.append(f"command 0x{body[0]:02X}: {exc}")
                answer = bytes((body[0], STATUS_CMD_FAILED))
            out += encode_frame(seq, answer)
            if body[0] == CMD_LEAVE_PROGMODE_ISP:
                try:
                    self.busy(self.memory.manifest())
                except MemoryFault as exc:
                    self.log.append(f"leave: {exc}")
                self._start_application("CMD_LEAVE_PROGMODE_ISP")
        return bytes(out)

    # ------------------------------------------------------------------
    def _fuse(self, index: int) -> int:
        if self.fuses is None or index >= self.fuses.size:
            return 0xFF
        return self.memory.read(FUSE_BASE + index, 1)[0]

    def _sig(self, index: int) -> int:
        if self.signature is None:
            return 0
        return self.memory.read(SIGNATURE_BASE + min(index, 2), 1)[0]

    def _command(self, body: bytes) -> bytes:
        cmd = body[0]
        ok = bytes((cmd, STATUS_CMD_OK))
        failed = bytes((cmd, STATUS_CMD_FAILED))
        arg = body[1:] + bytes(10)  # the C reads its buffer whatever the size sent
        if cmd == CMD_SIGN_ON:
            return ok + bytes((len(SIGN_ON),)) + SIGN_ON
        if cmd == CMD_GET_PARAMETER:
            return ok + bytes((PARAMETERS.get(arg[0], 0),))
        if cmd in (CMD_SET_PARAMETER, CMD_ENTER_PROGMODE_ISP, CMD_LEAVE_PROGMODE_ISP):
            return ok
        if cmd == CMD_READ_SIGNATURE_ISP:
            return ok + bytes((self._sig(arg[3]), STATUS_CMD_OK))
        if cmd == CMD_READ_LOCK_ISP:
            lock = self.memory.read(LOCK_BASE, 1)[0] if self.lock is not None else 0xFF
            return ok + bytes((lock, STATUS_CMD_OK))
        if cmd == CMD_READ_FUSE_ISP:
            if arg[1] == _READ_LOW_FUSE:
                value = self._fuse(2) if arg[2] == 0x08 else self._fuse(0)
            else:
                value = self._fuse(1)
            return ok + bytes((value, STATUS_CMD_OK))
        if cmd == CMD_PROGRAM_LOCK_ISP:
            if self.lock is not None:
                bits = ~arg[3] & 0x3C  # BLBxx only: boot_lock_bits_set programs the bits given as 1
                old = self.memory.read(LOCK_BASE, 1)[0]
                self.busy(self.memory.program(LOCK_BASE, bytes((old & ~bits & 0xFF,))))
            return ok + bytes((STATUS_CMD_OK,))
        if cmd == CMD_SPI_MULTI:
            first = arg[3]
            if first == _READ_SIGNATURE:
                answer = self._sig(arg[5])
            elif first & 0x50:
                answer = self._fuse(0) if first == _READ_LOW_FUSE else self._fuse(1) if first == _READ_HIGH_FUSE \
                    else 0
            else:
                answer = 0  # "return dummy value for AVRDUDE happy"
            return ok + bytes((0, first, 0, answer, STATUS_CMD_OK))
        if cmd == CMD_CHIP_ERASE_ISP:
            self.erase_address = self.flash.start
            return failed  # issue 543: "return FAILED instead of OK"
        if cmd == CMD_LOAD_ADDRESS:
            value = int.from_bytes(arg[0:4], "big")
            self.address = (value << 1) & 0xFFFFFFFF
            return ok
        if cmd in (CMD_PROGRAM_FLASH_ISP, CMD_PROGRAM_EEPROM_ISP):
            size = arg[0] << 8 | arg[1]
            data = body[10:10 + size]
            if len(data) != size:
                self.log.append(f"command 0x{cmd:02X}: {size} bytes announced, {len(data)} sent")
                return failed
            return ok if (self._program_flash(data) if cmd == CMD_PROGRAM_FLASH_ISP
                          else self._program_eeprom(data)) else failed
        if cmd in (CMD_READ_FLASH_ISP, CMD_READ_EEPROM_ISP):
            size = arg[0] << 8 | arg[1]
            got = self._read_flash(size) if cmd == CMD_READ_FLASH_ISP else self._read_eeprom(size)
            return failed if got is None else ok + got + bytes((STATUS_CMD_OK,))
        return failed

    def _program_flash(self, data: bytes) -> bool:
        start, n = self.flash.start + self.address, len(data)
        page = start - (start - self.flash.start) % self.page_size
        if (n == 0 or n % 2 or start + n > page + self.page_size or page + self.page_size > self.flash.end
                or self.layout.is_protected(page, page + self.page_size)):
            self.log.append(f"CMD_PROGRAM_FLASH_ISP 0x{start:X}+{n} refused (outside one application page)")
            return False
        busy = 0.0
        if self.erase_address < self.app_end:  # "erase only main section (bootloader protection)"
            busy += self.memory.erase(self.erase_address)
            self.erase_address += self.page_size
        busy += self.memory.program(start, data)
        self.busy(busy)
        self.address += n
        return True

    def _program_eeprom(self, data: bytes) -> bool:
        start, n = self.address >> 1, len(data)
        if self.eeprom is None or start + n > self.eeprom.size:
            self.log.append(f"CMD_PROGRAM_EEPROM_ISP 0x{start:X}+{n} refused")
            return False
        if n:
            self.busy(self.memory.program(EEPROM_BASE + start, data))
        self.address += 2 * n
        return True

    def _read_flash(self, size: int) -> bytes | None:
        start = self.flash.start + self.address
        if size == 0 or size % 2 or start + size > self.flash.end:
            return None
        self.address += size
        return self.memory.read(start, size)

    def _read_eeprom(self, size: int) -> bytes | None:
        start = self.address >> 1
        if self.eeprom is None or size == 0 or start + size > self.eeprom.size:
            return None
        self.address += 2 * size
        return self.memory.read(EEPROM_BASE + start, size)


__all__ = ["WiringEngine", "SIGN_ON", "BOOT_TIMEOUT"]
