"""The STK500 v2 ISP programmer, device side: a sans-I/O engine (byte stream in, byte
stream out) in front of an AVR on its ISP header, and the CDC-ACM Function that
carries it over USB.

The engine is what an STK500 / AVRISP runs (Atmel AVR068, "STK500 Communication
Protocol", §5.3 "ISP Programming Commands"): every *_ISP command carries the raw
4-byte serial-programming instructions (the target's datasheet, "Serial Programming
Instruction Set") and the engine clocks them into the target's ``spi()``.  The
programmer keeps the address counter (CMD_LOAD_ADDRESS; bit 31: send Load Extended
Address 0x4D before flash accesses and when a 64 K-word boundary is crossed), loads
page buffers with cmd1 (the high byte of a flash word with cmd1 | 0x08, as the
datasheets' "H" bit), writes the page with cmd2, and waits the way the command's mode
byte asks: a timed delay, polling the written location until it reads back (value
polling, cmd3), or polling RDY/BSY (0xF0).

What the target does with an instruction is the target's business (a target held out of
programming mode ignores it, as the silicon does): the programmer does not check
addresses or lock bits, exactly like the real one; the host verifies by reading back.
Where bootkit is stricter: a CMD_SPI_MULTI that would clock a partial 4-byte
instruction is refused (STATUS_CMD_FAILED), since the emulated target takes whole
instructions only (avrdude always sends 4 in, 4 out).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ...isp import stk500v2 as S
from ..cdc.device import CdcAcmFunction
from .protocol import DEFAULT_PARAMETERS, SIGN_ON_NAMES

# AVR serial programming: Poll RDY/BSY (datasheets: $F0 $00 $00 $00, bit 0 of the last
# byte is 1 while busy) and Load Extended Address byte ($4D $00 ext $00).
POLL_RDY_BSY = b"\xF0\x00\x00\x00"
LOAD_EXTENDED = 0x4D
# The H bit of the flash instructions (load page / read / write): the word's high byte.
HIGH_BYTE = 0x08

# The shortest body of each command (AVR068 §5): the fields before any data.
MIN_BODY = {
    S.CMD_SET_PARAMETER: 3, S.CMD_GET_PARAMETER: 2, S.CMD_LOAD_ADDRESS: 5, S.CMD_ENTER_PROGMODE_ISP: 12,
    S.CMD_LEAVE_PROGMODE_ISP: 1, S.CMD_CHIP_ERASE_ISP: 7, S.CMD_PROGRAM_FLASH_ISP: 10,
    S.CMD_PROGRAM_EEPROM_ISP: 10, S.CMD_READ_FLASH_ISP: 4, S.CMD_READ_EEPROM_ISP: 4, S.CMD_PROGRAM_FUSE_ISP: 5,
    S.CMD_PROGRAM_LOCK_ISP: 5, S.CMD_READ_FUSE_ISP: 6, S.CMD_READ_LOCK_ISP: 6, S.CMD_READ_SIGNATURE_ISP: 6,
    S.CMD_READ_OSCCAL_ISP: 6, S.CMD_SPI_MULTI: 4,
}


class Stk500v2Programmer:
    """An STK500 v2 ISP programmer with ``target`` on its header.

    ``target``: an AVR on the ISP wires (bootkit.isp.target.EmulatedAvr or anything with
    ``reset(active)`` and ``spi(4 bytes) -> 4 bytes``).  ``sign_on``: the name CMD_SIGN_ON
    answers ("STK500_2": avrdude -c stk500v2 treats it as an STK500; "AVRISP_2": an AVRISP).
    ``clock``/``sleep``: the programmer's own delays (stabDelay, timed-delay polling) are
    only waited when the target runs in real time (``target.realtime``); in fast mode the
    target is never busy, so waiting would only slow the tests down.
    """

    def __init__(self, target: Any, *, sign_on: str = "STK500_2", clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if sign_on not in SIGN_ON_NAMES:
            raise ValueError(f"unknown STK500 v2 sign-on name {sign_on!r} (choose from {', '.join(SIGN_ON_NAMES)})")
        self.target = target
        self.sign_on = sign_on.encode()
        self.clock = clock
        self.sleep = sleep
        self.parser = S.FrameParser()
        self.parameters = dict(DEFAULT_PARAMETERS)
        self.address = 0  # the address counter: words for flash, bytes for EEPROM
        self.extended = False  # CMD_LOAD_ADDRESS bit 31
        self._ext_sent: int | None = None  # the extended address byte last sent (None: send before next use)
        self.timeout_ms = 200  # ENTER_PROGMODE's timeout: the RDY/BSY and value polls give up after it
        self.in_progmode = False
        self.commands = 0
        self._handlers: dict[int, Callable[[bytes], bytes]] = {
            S.CMD_SIGN_ON: self._sign_on,
            S.CMD_SET_PARAMETER: self._set_parameter,
            S.CMD_GET_PARAMETER: self._get_parameter,
            S.CMD_LOAD_ADDRESS: self._load_address,
            S.CMD_ENTER_PROGMODE_ISP: self._enter_progmode,
            S.CMD_LEAVE_PROGMODE_ISP: self._leave_progmode,
            S.CMD_CHIP_ERASE_ISP: self._chip_erase,
            S.CMD_PROGRAM_FLASH_ISP: self._program,
            S.CMD_PROGRAM_EEPROM_ISP: self._program,
            S.CMD_READ_FLASH_ISP: self._read,
            S.CMD_READ_EEPROM_ISP: self._read,
            S.CMD_PROGRAM_FUSE_ISP: self._program_byte,
            S.CMD_PROGRAM_LOCK_ISP: self._program_byte,
            S.CMD_READ_FUSE_ISP: self._read_byte,
            S.CMD_READ_LOCK_ISP: self._read_byte,
            S.CMD_READ_SIGNATURE_ISP: self._read_byte,
            S.CMD_READ_OSCCAL_ISP: self._read_byte,
            S.CMD_SPI_MULTI: self._spi_multi,
        }

    # -- the byte stream (bootkit.usb.device.ByteStream)

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for seq, body in self.parser.feed(data):
            out += S.encode_frame(seq, self.execute(body))
        return bytes(out)

    def disconnect(self) -> None:
        """The port closed: a half-received message is dropped (the target stays as it is)."""
        self.parser.reset()

    # -- one command

    def execute(self, body: bytes) -> bytes:
        """The answer body to one command body."""
        if body == S.CKSUM_ERROR_BODY:  # FrameParser's event for a bad checksum: answered as it is
            return body
        if not body:
            return bytes((0, S.STATUS_CMD_UNKNOWN))
        self.commands += 1
        handler = self._handlers.get(body[0])
        if handler is None:
            return bytes((body[0], S.STATUS_CMD_UNKNOWN))
        if len(body) < MIN_BODY.get(body[0], 1):  # a body too short for its command
            return bytes((body[0], S.STATUS_CMD_FAILED))
        return handler(body)

    # -- general commands

    def _sign_on(self, body: bytes) -> bytes:
        return bytes((S.CMD_SIGN_ON, S.STATUS_CMD_OK, len(self.sign_on))) + self.sign_on

    def _set_parameter(self, body: bytes) -> bytes:
        param, value = body[1], body[2]
        if param not in self.parameters:
            return bytes((body[0], S.STATUS_CMD_FAILED))
        self.parameters[param] = value
        return bytes((body[0], S.STATUS_CMD_OK))

    def _get_parameter(self, body: bytes) -> bytes:
        value = self.parameters.get(body[1])
        if value is None:
            return bytes((body[0], S.STATUS_CMD_FAILED))
        return bytes((body[0], S.STATUS_CMD_OK, value))

    def _load_address(self, body: bytes) -> bytes:
        value = int.from_bytes(body[1:5], "big")
        self.extended = bool(value & S.LOAD_EXTENDED_ADDRESS)
        self.address = value & 0x7FFFFFFF
        self._ext_sent = None
        return bytes((body[0], S.STATUS_CMD_OK))

    # -- entering and leaving programming mode

    def _enter_progmode(self, body: bytes) -> bytes:
        timeout, stab_delay, _cmdexe, synch_loops, _byte_delay, poll_value, poll_index = body[1:8]
        cmd = body[8:12]
        self.timeout_ms = timeout or 200
        self.target.reset(True)
        self._wait_ms(stab_delay)
        # AVR068: try up to synchLoops times; pollIndex 0 means "do not check the answer".
        # The real programmer pulses SCK between tries to shift the bit alignment; the
        # emulated target takes whole instructions, so a retry is the instruction again.
        for _ in range(max(synch_loops, 1)):
            answer = self._spi(cmd)
            if poll_index == 0 or (1 <= poll_index <= 4 and answer[poll_index - 1] == poll_value):
                self.in_progmode = True
                self.parameters[S.PARAM_STATUS] = 0x40  # hw_status bit 6: in programming mode
                return bytes((body[0], S.STATUS_CMD_OK))
        self.in_progmode = False
        return bytes((body[0], S.STATUS_CMD_FAILED))

    def _leave_progmode(self, body: bytes) -> bytes:
        self.target.reset(False)
        self._runs()
        self.in_progmode = False
        self.parameters[S.PARAM_STATUS] = 0x00
        return bytes((body[0], S.STATUS_CMD_OK))

    def _chip_erase(self, body: bytes) -> bytes:
        erase_delay, poll_method, cmd = body[1], body[2], body[3:7]
        self._spi(cmd)
        if poll_method == 1:
            if not self._wait_ready():
                return bytes((body[0], S.STATUS_RDY_BSY_TOUT))
        else:
            self._wait_ms(erase_delay)
        return bytes((body[0], S.STATUS_CMD_OK))

    # -- flash and EEPROM

    def _program(self, body: bytes) -> bytes:
        flash = body[0] == S.CMD_PROGRAM_FLASH_ISP
        count = (body[1] << 8) | body[2]
        mode, delay, cmd1, cmd2, cmd3, poll1, poll2 = body[3:10]
        data = body[10:10 + count]
        if len(data) != count:
            return bytes((body[0], S.STATUS_CMD_FAILED))
        start = self.address
        ok = True
        if mode & S.MODE_PAGE:
            for i, value in enumerate(data):
                self._spi(self._instruction(flash, cmd1, i, value))
            if mode & S.MODE_WRITE_PAGE and count:
                if flash:
                    self._extended_address(start)
                self._spi(bytes((cmd2, (start >> 8) & 0xFF, start & 0xFF, 0x00)))
                # AVR068 mode bits 4..6: the page's polling; value polling reads the page's
                # last byte that differs from the poll value
                ok = self._poll(mode >> 4, delay, flash, cmd3, data, poll1, poll2)
        else:
            for i, value in enumerate(data):
                self._spi(self._instruction(flash, cmd1, i, value))
                ok = self._poll(mode >> 1, delay, flash, cmd3, data[:i + 1], poll1, poll2, only_last=True)
                if not ok:  # the programmer gives up on the command at the first timeout
                    break
        self.address = start + ((count + 1) // 2 if flash else count)
        if not ok:
            return bytes((body[0], S.STATUS_CMD_TOUT))
        return bytes((body[0], S.STATUS_CMD_OK))

    def _read(self, body: bytes) -> bytes:
        flash = body[0] == S.CMD_READ_FLASH_ISP
        count = (body[1] << 8) | body[2]
        cmd1 = body[3]
        if count > S.MAX_BODY - 3:  # the answer must fit the programmer's buffer
            return bytes((body[0], S.STATUS_CMD_FAILED))
        out = bytearray()
        for i in range(count):
            out.append(self._spi(self._instruction(flash, cmd1, i, 0x00))[3])
        self.address += (count + 1) // 2 if flash else count
        return bytes((body[0], S.STATUS_CMD_OK)) + bytes(out) + bytes((S.STATUS_CMD_OK,))

    def _instruction(self, flash: bool, cmd: int, index: int, value: int) -> bytes:
        """The 4-byte instruction for the ``index``-th byte of a flash or EEPROM transfer at
        the address counter (flash: word address + index // 2, the H bit on odd bytes)."""
        if flash:
            word = self.address + index // 2
            self._extended_address(word)
            if index & 1:
                cmd |= HIGH_BYTE
            address = word & 0xFFFF
        else:
            address = (self.address + index) & 0xFFFF
        return bytes((cmd, address >> 8, address & 0xFF, value))

    def _extended_address(self, word: int) -> None:
        """Load Extended Address before a flash access, once per 64 K-word block (AVR068:
        only when CMD_LOAD_ADDRESS had bit 31 set)."""
        if not self.extended:
            return
        ext = (word >> 16) & 0xFF
        if self._ext_sent != ext:
            self._spi(bytes((LOAD_EXTENDED, 0x00, ext, 0x00)))
            self._ext_sent = ext

    def _poll(self, how: int, delay: int, flash: bool, cmd3: int, data: bytes, poll1: int, poll2: int,
              *, only_last: bool = False) -> bool:
        """Wait for the target after a write: ``how`` bit 0 timed delay, bit 1 value polling,
        bit 2 RDY/BSY (AVR068 §5.3.3, the mode byte's fields shifted down).  False: timed out."""
        if how & 0x4:
            return self._wait_ready()
        if how & 0x2:
            # Value polling reads back a byte just written until it is no longer the poll
            # value the device returns while busy (flash: poll1; EEPROM: poll1 or poll2).
            # A byte equal to a poll value cannot be polled: pick another, else wait.
            busy = {poll1} if flash else {poll1, poll2}
            indexes = [len(data) - 1] if only_last else range(len(data) - 1, -1, -1)
            for i in indexes:
                if data[i] not in busy:
                    instruction = self._instruction(flash, cmd3, i, 0x00)
                    deadline = self.clock() + self.timeout_ms / 1000
                    while self._spi(instruction)[3] != data[i]:
                        if self.clock() > deadline:
                            return False
                        self._pause()
                    return True
        self._wait_ms(delay)
        return True

    # -- fuses, lock, signature, calibration

    def _program_byte(self, body: bytes) -> bytes:
        cmd = body[1:5]
        self._spi(cmd)
        # AVR068: answer status, then the status of the instruction (STATUS_CMD_OK)
        return bytes((body[0], S.STATUS_CMD_OK, S.STATUS_CMD_OK))

    def _read_byte(self, body: bytes) -> bytes:
        ret_addr, cmd = body[1], body[2:6]
        if not 1 <= ret_addr <= 4:
            return bytes((body[0], S.STATUS_CMD_FAILED))
        answer = self._spi(cmd)
        return bytes((body[0], S.STATUS_CMD_OK, answer[ret_addr - 1], S.STATUS_CMD_OK))

    def _spi_multi(self, body: bytes) -> bytes:
        num_tx, num_rx, rx_start = body[1], body[2], body[3]
        tx = body[4:4 + num_tx]
        if len(tx) != num_tx:
            return bytes((body[0], S.STATUS_CMD_FAILED))
        clocked = max(num_tx, rx_start + num_rx)
        if clocked % 4:
            return bytes((body[0], S.STATUS_CMD_FAILED))  # see the module docstring
        stream = tx + bytes(clocked - num_tx)  # bytes clocked after TxData shift out 0x00
        shifted = b"".join(self._spi(stream[i:i + 4]) for i in range(0, clocked, 4))
        return bytes((body[0], S.STATUS_CMD_OK)) + shifted[rx_start:rx_start + num_rx] + bytes((S.STATUS_CMD_OK,))

    def _runs(self) -> None:
        """RESET released: the chip runs what its flash holds.  The emulated board records
        that its flash holds an application (the memory core's manifest, refused for an
        erased first word), as a bootloader records a complete image."""
        memory = getattr(self.target, "memory", None)
        if memory is not None and not memory.is_blank():
            memory.manifest()

    # -- the wires and the waits

    def _spi(self, frame: bytes) -> bytes:
        return bytes(self.target.spi(bytes(frame)))

    @property
    def realtime(self) -> bool:
        return bool(getattr(self.target, "realtime", False))

    def _wait_ms(self, ms: int) -> None:
        if self.realtime and ms:
            self.sleep(ms / 1000)

    def _pause(self) -> None:
        self.sleep(0.0005 if self.realtime else 0)

    def _wait_ready(self) -> bool:
        deadline = self.clock() + self.timeout_ms / 1000
        while self._spi(POLL_RDY_BSY)[3] & 0x01:
            if self.clock() > deadline:
                return False
            self._pause()
        return True


class IspProgrammerFunction(CdcAcmFunction):
    """The programmer's USB side: a CDC-ACM serial port (the class function the CDC
    personality also uses, imported from bootkit.classes.cdc.device) whose bytes go to a
    :class:`Stk500v2Programmer`, as an STK500 v2 programmer with a USB-serial port."""

    name = "stk500v2-isp"

    def __init__(self, engine: Stk500v2Programmer, **kw: Any):
        super().__init__(interface_name="STK500 v2 ISP", **kw)
        self.engine = engine

    def byte_stream(self) -> Stk500v2Programmer:
        """STK500 v2 is a byte stream: a pty can carry the engine without USB."""
        return self.engine

    def received(self, data: bytes) -> None:
        reply = self.engine.feed(data)
        if reply:
            self.send(reply)

    def control_line_state_changed(self, old: int) -> None:
        if old & 0x01 and not self.dtr:  # the host closed the port (DTR dropped)
            self.engine.disconnect()

    def bus_reset(self) -> None:
        super().bus_reset()
        self.engine.disconnect()


__all__ = ["Stk500v2Programmer", "IspProgrammerFunction", "POLL_RDY_BSY"]
