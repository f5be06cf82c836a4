"""STK500 v2 (Atmel application note AVR068, "STK500 Communication Protocol"):
the constants, the message framing, and :class:`Stk500v2Link`, an ISP link
through an STK500 v2 / AVRISP-class programmer on a serial port.

A message (AVR068 §2.3)::

    MESSAGE_START 0x1B | SEQUENCE_NUMBER | MESSAGE_SIZE (2, big endian) | TOKEN 0x0E | body | CHECKSUM

CHECKSUM is the XOR of every byte before it.  The answer carries the
command's sequence number and starts with the command id, then a status.
The names are the application note's (avrdude's stk500v2_private.h copies
its command.h).  The same framing carries the Mega 2560 "wiring" bootloader
(Arduino's stk500v2 bootloader), which is why the codec stands alone here.
"""

from __future__ import annotations

import time
from typing import Any

from ..memory.chips import Chip
from . import protocol as P
from .errors import IspError, IspInputError
from .link import MEMORIES, IspLink

# -- message constants (AVR068 §2.3)
MESSAGE_START = 0x1B  # ESC
TOKEN = 0x0E
HEADER_SIZE = 5  # start, sequence, size (2), token

# -- general commands
CMD_SIGN_ON = 0x01
CMD_SET_PARAMETER = 0x02
CMD_GET_PARAMETER = 0x03
CMD_SET_DEVICE_PARAMETERS = 0x04
CMD_OSCCAL = 0x05
CMD_LOAD_ADDRESS = 0x06
CMD_FIRMWARE_UPGRADE = 0x07
CMD_CHECK_TARGET_CONNECTION = 0x0D
CMD_LOAD_RC_ID_TABLE = 0x0E
CMD_LOAD_EC_ID_TABLE = 0x0F

# -- ISP commands
CMD_ENTER_PROGMODE_ISP = 0x10
CMD_LEAVE_PROGMODE_ISP = 0x11
CMD_CHIP_ERASE_ISP = 0x12
CMD_PROGRAM_FLASH_ISP = 0x13
CMD_READ_FLASH_ISP = 0x14
CMD_PROGRAM_EEPROM_ISP = 0x15
CMD_READ_EEPROM_ISP = 0x16
CMD_PROGRAM_FUSE_ISP = 0x17
CMD_READ_FUSE_ISP = 0x18
CMD_PROGRAM_LOCK_ISP = 0x19
CMD_READ_LOCK_ISP = 0x1A
CMD_READ_SIGNATURE_ISP = 0x1B
CMD_READ_OSCCAL_ISP = 0x1C
CMD_SPI_MULTI = 0x1D

# -- status codes (AVR068 §6)
STATUS_CMD_OK = 0x00
STATUS_CMD_TOUT = 0x80
STATUS_RDY_BSY_TOUT = 0x81
STATUS_SET_PARAM_MISSING = 0x82
STATUS_CMD_FAILED = 0xC0
STATUS_CKSUM_ERROR = 0xC1
STATUS_CMD_UNKNOWN = 0xC9
STATUS_CMD_ILLEGAL_PARAMETER = 0xCA
STATUS_PHY_ERROR = 0xCB
STATUS_CLOCK_ERROR = 0xCC
STATUS_BAUD_INVALID = 0xCD

# The answer to a message whose checksum does not match (AVR068 §2.3.1)
ANSWER_CKSUM_ERROR = 0xB0
CKSUM_ERROR_BODY = bytes((ANSWER_CKSUM_ERROR, STATUS_CKSUM_ERROR))

# -- parameters (AVR068 §7)
PARAM_BUILD_NUMBER_LOW = 0x80
PARAM_BUILD_NUMBER_HIGH = 0x81
PARAM_HW_VER = 0x90
PARAM_SW_MAJOR = 0x91
PARAM_SW_MINOR = 0x92
PARAM_VTARGET = 0x94
PARAM_VADJUST = 0x95
PARAM_OSC_PSCALE = 0x96
PARAM_OSC_CMATCH = 0x97
PARAM_SCK_DURATION = 0x98
PARAM_TOPCARD_DETECT = 0x9A
PARAM_STATUS = 0x9C
PARAM_DATA = 0x9D
PARAM_RESET_POLARITY = 0x9E
PARAM_CONTROLLER_INIT = 0x9F

# The sign-on answer's name: avrdude's stk500v2_getsync() accepts "STK500_2"
# (an STK500) and "AVRISP_2" (an AVRISP / -c avrisp2 over serial), among others.
SIGNATURE_STK500 = b"STK500_2"
SIGNATURE_AVRISP = b"AVRISP_2"

# Mode byte of CMD_PROGRAM_FLASH_ISP / CMD_PROGRAM_EEPROM_ISP (AVR068 §5.3.3): bit 0 word
# (0) or page (1) mode; bits 1..3 the word-mode polling (timed delay, value, RDY/BSY);
# bits 4..6 the page-mode polling (timed delay, value, RDY/BSY); bit 7 "write page"
# (issue the write-page instruction after loading).
MODE_PAGE = 0x01
MODE_WORD_TIMED = 0x02
MODE_WORD_VALUE = 0x04
MODE_WORD_RDYBSY = 0x08
MODE_PAGE_TIMED = 0x10
MODE_PAGE_VALUE = 0x20
MODE_PAGE_RDYBSY = 0x40
MODE_WRITE_PAGE = 0x80

# CMD_LOAD_ADDRESS (a word address for flash, a byte address for EEPROM, big endian):
# bit 31 set asks the programmer to send Load Extended Address (0x4D) before the next
# flash access and whenever the address crosses a 64 K-word boundary.  avrdude sets it
# for parts whose flash has a load_ext_addr instruction (ATmega2560/2561:
# stk500v2_paged_write / paged_load, "use_ext_addr = 1U << 31").
LOAD_EXTENDED_ADDRESS = 0x80000000

# The STK500's message buffer: avrdude never sends a body longer than a 256-byte page
# plus the 10-byte command header; a size field above this is line noise.
MAX_BODY = 275


def checksum(data: bytes) -> int:
    """XOR of every byte (AVR068 §2.3)."""
    c = 0
    for b in data:
        c ^= b
    return c


def encode_frame(seq: int, body: bytes) -> bytes:
    """One message: start, sequence number, size (big endian), token, body, checksum."""
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"STK500 v2 sequence number {seq} is not a byte")
    if len(body) > 0xFFFF:
        raise ValueError(f"STK500 v2 message body of {len(body)} bytes does not fit the 2-byte size")
    head = bytes((MESSAGE_START, seq, len(body) >> 8, len(body) & 0xFF, TOKEN)) + bytes(body)
    return head + bytes((checksum(head),))


class FrameParser:
    """Byte stream in, whole messages out: ``feed(data) -> [(seq, body), ...]``.

    The states are avrdude's stk500v2_recv() (and the STK500 firmware's): wait for
    MESSAGE_START, then the sequence number, the two size bytes, the TOKEN (anything
    else: back to waiting for a start), the body, the checksum.  A message whose
    checksum does not match yields ``(seq, CKSUM_ERROR_BODY)``: the body an STK500
    answers with (ANSWER_CKSUM_ERROR, STATUS_CKSUM_ERROR), so a device engine can send
    it back as it is, and a host knows to retry.  ``errors`` counts them.  A size above
    ``max_body`` is not a message: the parser goes back to waiting for a start.
    """

    _START, _SEQ, _SIZE1, _SIZE2, _TOKEN, _BODY, _CSUM = range(7)

    def __init__(self, *, max_body: int = MAX_BODY) -> None:
        self.max_body = max_body
        self.errors = 0
        self.reset()

    def reset(self) -> None:
        """Forget a message half received (a timeout, a new connection)."""
        self._state = self._START
        self._seq = 0
        self._size = 0
        self._body = bytearray()

    @property
    def idle(self) -> bool:
        """True when no message is half received."""
        return self._state == self._START

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for b in bytes(data):
            state = self._state
            if state == self._START:
                if b == MESSAGE_START:
                    self._state = self._SEQ
            elif state == self._SEQ:
                self._seq = b
                self._state = self._SIZE1
            elif state == self._SIZE1:
                self._size = b << 8
                self._state = self._SIZE2
            elif state == self._SIZE2:
                self._size |= b
                self._state = self._TOKEN if self._size <= self.max_body else self._START
            elif state == self._TOKEN:
                if b == TOKEN:
                    self._body = bytearray()
                    self._state = self._BODY if self._size else self._CSUM
                else:
                    self._state = self._START
            elif state == self._BODY:
                self._body.append(b)
                if len(self._body) == self._size:
                    self._state = self._CSUM
            else:  # checksum
                head = bytes((MESSAGE_START, self._seq, self._size >> 8, self._size & 0xFF, TOKEN))
                if checksum(head + self._body) ^ b == 0:
                    out.append((self._seq, bytes(self._body)))
                else:
                    self.errors += 1
                    out.append((self._seq, CKSUM_ERROR_BODY))
                self._state = self._START
        return out



# -- command bodies (AVR068 §5; the fields avrdude's stk500v2.c fills) --------------------------


def sign_on() -> bytes:
    return bytes((CMD_SIGN_ON,))


def get_parameter(param: int) -> bytes:
    return bytes((CMD_GET_PARAMETER, param))


def set_parameter(param: int, value: int) -> bytes:
    return bytes((CMD_SET_PARAMETER, param, value))


def load_address(address: int, *, extended: bool = False) -> bytes:
    """CMD_LOAD_ADDRESS: a word address for flash, a byte address for EEPROM; ``extended``
    sets bit 31 (the programmer sends Load Extended Address before flash accesses)."""
    value = (address & 0x7FFFFFFF) | (LOAD_EXTENDED_ADDRESS if extended else 0)
    return bytes((CMD_LOAD_ADDRESS,)) + value.to_bytes(4, "big")


def enter_progmode_isp(cmd: bytes = b"\xAC\x53\x00\x00", *, timeout: int = 200, stab_delay: int = 100,
                       cmdexe_delay: int = 25, synch_loops: int = 32, byte_delay: int = 0,
                       poll_value: int = 0x53, poll_index: int = 3) -> bytes:
    """CMD_ENTER_PROGMODE_ISP (AVR068 §5.3.1), avrdude.conf's ATmega328P values by default:
    pollIndex is 1-based (3: the third byte shifted out echoes 0x53)."""
    return bytes((CMD_ENTER_PROGMODE_ISP, timeout, stab_delay, cmdexe_delay, synch_loops, byte_delay,
                  poll_value, poll_index)) + bytes(cmd)


def leave_progmode_isp(pre_delay: int = 1, post_delay: int = 1) -> bytes:
    return bytes((CMD_LEAVE_PROGMODE_ISP, pre_delay, post_delay))


def chip_erase_isp(cmd: bytes = b"\xAC\x80\x00\x00", *, erase_delay: int = 9, poll_method: int = 0) -> bytes:
    """CMD_CHIP_ERASE_ISP: ``poll_method`` 0 waits ``erase_delay`` ms, 1 polls RDY/BSY."""
    return bytes((CMD_CHIP_ERASE_ISP, erase_delay, poll_method)) + bytes(cmd)


def program_isp(memory: str, data: bytes, *, mode: int, delay: int, cmd1: int, cmd2: int, cmd3: int,
                poll1: int = 0xFF, poll2: int = 0xFF) -> bytes:
    """CMD_PROGRAM_FLASH_ISP / CMD_PROGRAM_EEPROM_ISP (AVR068 §5.3.3/§5.3.5): NumBytes, mode,
    delay, cmd1 (load page / write), cmd2 (write page), cmd3 (read, for value polling),
    poll1, poll2, then the data."""
    cmd = CMD_PROGRAM_FLASH_ISP if memory == "flash" else CMD_PROGRAM_EEPROM_ISP
    return bytes((cmd, len(data) >> 8, len(data) & 0xFF, mode, delay, cmd1, cmd2, cmd3, poll1, poll2)) + bytes(data)


def read_isp(memory: str, length: int, cmd1: int) -> bytes:
    """CMD_READ_FLASH_ISP / CMD_READ_EEPROM_ISP: NumBytes and the read instruction."""
    cmd = CMD_READ_FLASH_ISP if memory == "flash" else CMD_READ_EEPROM_ISP
    return bytes((cmd, length >> 8, length & 0xFF, cmd1))


def read_isp_byte(command: int, instruction: bytes, ret_addr: int = 4) -> bytes:
    """CMD_READ_FUSE_ISP / LOCK / SIGNATURE / OSCCAL: RetAddr (1-based: which byte shifted out
    is the answer) and the 4-byte instruction."""
    return bytes((command, ret_addr)) + bytes(instruction)


def program_isp_byte(command: int, instruction: bytes) -> bytes:
    """CMD_PROGRAM_FUSE_ISP / CMD_PROGRAM_LOCK_ISP: the 4-byte instruction."""
    return bytes((command,)) + bytes(instruction)


def spi_multi(tx: bytes, rx_count: int, rx_start: int = 0) -> bytes:
    """CMD_SPI_MULTI (AVR068 §5.3.14): NumTx, NumRx, RxStartAddr, TxData."""
    return bytes((CMD_SPI_MULTI, len(tx), rx_count, rx_start)) + bytes(tx)



# -- the host's link ------------------------------------------------------------------------

#: avrdude's stk500v2.c: SERIAL_TIMEOUT (2 s for one answer) and RETRIES (5)
ANSWER_TIMEOUT = 2.0
RETRIES = 5
#: CMD_READ_FLASH_ISP / CMD_READ_EEPROM_ISP: avrdude reads 256 bytes per command
#: (avrdude.conf readsize), which keeps the answer inside the 275-byte buffer
READ_BLOCK = 256
#: the page-mode byte avrdude.conf gives every paged memory of these parts: page mode,
#: RDY/BSY polling of the page, write the page (bit 7)
PAGE_MODE_RDY_BSY = MODE_PAGE | MODE_PAGE_RDYBSY | MODE_WRITE_PAGE
#: byte-by-byte EEPROM (a part without an EEPROM page): word mode, RDY/BSY polling
WORD_MODE_RDY_BSY = MODE_WORD_RDYBSY | MODE_WRITE_PAGE


class Stk500v2Link(IspLink):
    """An STK500 v2 / AVRISP-class programmer on a serial port (pyserial): ``port`` (a
    device path, or anything ``serial.serial_for_url`` opens), ``baudrate`` (the STK500's
    115200).  ``chip``: the target, when known (it decides Load Extended Address and the
    fuse names).  ``stream``: an already open pyserial-like object instead of ``port``.

    The bulk operations use the programmer's native commands as avrdude's stk500v2.c
    does (CMD_LOAD_ADDRESS + CMD_PROGRAM_FLASH_ISP / CMD_READ_FLASH_ISP, the EEPROM ones,
    CMD_READ_SIGNATURE_ISP, CMD_READ_FUSE_ISP, CMD_PROGRAM_FUSE_ISP, the lock ones, chip
    erase with RDY/BSY polling); :meth:`transact` is CMD_SPI_MULTI (4 in, 4 out).
    ``programmer`` is the sign-on name ("STK500_2", "AVRISP_2", ...).
    """

    def __init__(self, port: str | None = None, baudrate: int = 115200, *, chip: Chip | None = None,
                 stream: Any = None, timeout: float = ANSWER_TIMEOUT):
        if stream is None:
            if not port:
                raise IspInputError("an STK500 v2 programmer needs a serial port (--port)")
            import serial  # pyserial: a host-side dependency, imported when a link opens

            try:
                stream = serial.serial_for_url(port, baudrate=baudrate, timeout=0.05)
            except (serial.SerialException, OSError, ValueError) as exc:
                raise IspError(f"cannot open serial port {port}: {exc}") from None
        self.port = port
        self.stream = stream
        self.chip = chip
        self.timeout = timeout
        self.seq = 1  # avrdude's stk500v2_setup(): the first message has sequence number 1
        self.parser = FrameParser()
        self.programmer = ""
        self._connected = False
        self._extended_seen = False
        try:
            self._drain()
            self.programmer = self.sign_on()
        except BaseException:
            self.stream.close()
            raise

    # -- the exchange

    def _drain(self) -> None:
        """Drop whatever the programmer sent before we asked (avrdude's stk500v2_drain)."""
        reset = getattr(self.stream, "reset_input_buffer", None)
        if reset is not None:
            reset()
        self.parser.reset()

    def _receive(self, seq: int) -> bytes | None:
        """The answer with sequence number ``seq``; None after :attr:`timeout` s of silence
        or when the programmer reports a checksum error (the caller resends)."""
        deadline = time.monotonic() + self.timeout
        while True:
            chunk = self.stream.read(max(1, getattr(self.stream, "in_waiting", 0) or 1))
            if chunk:
                for got_seq, body in self.parser.feed(chunk):
                    if body == CKSUM_ERROR_BODY:
                        return None  # ours arrived damaged, or theirs did: send again
                    if got_seq == seq:
                        return body
                deadline = time.monotonic() + self.timeout  # bytes flow: the programmer is there
            elif time.monotonic() > deadline:
                return None

    def command(self, body: bytes, *, what: str | None = None) -> bytes:
        """Send one command body, return the answer body (status checked: not OK raises
        :class:`IspError`); resends up to :data:`RETRIES` times on silence or a damaged
        message, as avrdude's stk500v2_command() does."""
        what = what or f"command 0x{body[0]:02X}"
        for _ in range(RETRIES):
            seq = self.seq
            self.seq = (self.seq + 1) & 0xFF
            self.parser.reset()
            try:
                self.stream.write(encode_frame(seq, body))
            except OSError as exc:
                raise IspError(f"STK500 v2 programmer on {self.port}: write failed ({exc})") from None
            answer = self._receive(seq)
            if answer is None:
                continue
            if len(answer) < 2 or answer[0] != body[0]:
                raise IspError(f"STK500 v2 programmer on {self.port}: {what} answered "
                               f"{answer[:4].hex(' ') or 'nothing'}")
            if answer[1] != STATUS_CMD_OK:
                raise IspError(f"STK500 v2 programmer on {self.port}: {what} failed "
                               f"({STATUS_NAMES.get(answer[1], f'status 0x{answer[1]:02X}')})")
            return answer
        raise IspError(f"no answer from the STK500 v2 programmer on {self.port} to {what} "
                       f"({RETRIES} tries, {self.timeout:g} s each): check the port and the baud rate")

    def sign_on(self) -> str:
        answer = self.command(sign_on(), what="CMD_SIGN_ON")
        if len(answer) < 3 or len(answer) < 3 + answer[2]:
            raise IspError(f"STK500 v2 programmer on {self.port}: a short sign-on answer")
        return answer[3:3 + answer[2]].decode("ascii", "replace")

    def get_parameter(self, param: int) -> int:
        answer = self.command(get_parameter(param), what=f"CMD_GET_PARAMETER 0x{param:02X}")
        if len(answer) < 3:
            raise IspError(f"STK500 v2 programmer on {self.port}: a short parameter answer")
        return answer[2]

    def set_parameter(self, param: int, value: int) -> None:
        self.command(set_parameter(param, value), what=f"CMD_SET_PARAMETER 0x{param:02X}")

    # -- IspLink

    def connect(self, *, sck_hz: int | None = None) -> None:
        """CMD_ENTER_PROGMODE_ISP with avrdude.conf's values (32 synch loops, echo 0x53 at
        byte 3): the programmer holds RESET and retries itself."""
        if sck_hz is not None:
            self.set_parameter(PARAM_SCK_DURATION, sck_duration(sck_hz))
        try:
            self.command(enter_progmode_isp(P.programming_enable()), what="CMD_ENTER_PROGMODE_ISP")
        except IspError:
            raise IspError(f"target does not answer programming enable through the STK500 v2 programmer "
                           f"on {self.port}: check wiring, power, clock") from None
        self._connected = True

    def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            self.command(leave_progmode_isp(), what="CMD_LEAVE_PROGMODE_ISP")

    def close(self) -> None:
        try:
            self.disconnect()
        finally:
            self.stream.close()

    def transact(self, cmd: bytes) -> bytes:
        if len(cmd) != 4:
            raise IspInputError(f"an ISP instruction is 4 bytes, got {len(cmd)}")
        answer = self.command(spi_multi(cmd, 4), what="CMD_SPI_MULTI")
        if len(answer) < 7:
            raise IspError(f"STK500 v2 programmer on {self.port}: a short CMD_SPI_MULTI answer")
        return answer[2:6]

    def _extended(self, address: int) -> bool:
        """Bit 31 of CMD_LOAD_ADDRESS: the part has a Load Extended Address instruction
        (more than 128 KiB of flash, as avrdude.conf's load_ext_addr).  Without a chip: from
        the first address that needs it on, since the target keeps the extended byte (a later
        access below 128 KiB must load 0 again)."""
        if self.chip is not None:
            return self.chip.flash_size > 128 * 1024
        if address >= 128 * 1024:
            self._extended_seen = True
        return self._extended_seen

    def read_memory(self, memory: str, address: int, length: int) -> bytes:
        if memory not in MEMORIES:
            raise IspInputError(f"unknown memory {memory!r} (known: {', '.join(MEMORIES)})")
        flash = memory == "flash"
        start = address & ~1 if flash else address
        end = address + length
        if flash and end & 1:
            end += 1
        out = bytearray()
        position = start
        while position < end:
            # one CMD_LOAD_ADDRESS per 64 KiB, as avrdude's stk500v2_paged_load(): the
            # programmer's counter moves on by itself, and it sends Load Extended Address
            # again when a 64 K-word boundary is crossed
            if position == start or (flash and position % 0x10000 == 0):
                self.command(load_address(position >> 1 if flash else position,
                                          extended=flash and self._extended(end - 1)),
                             what="CMD_LOAD_ADDRESS")
            n = min(READ_BLOCK, end - position, 0x10000 - position % 0x10000)
            answer = self.command(read_isp(memory, n, P.READ_PROGRAM_LOW if flash else P.READ_EEPROM),
                                  what=f"CMD_READ_{memory.upper()}_ISP")
            data = answer[2:2 + n]
            if len(data) != n:
                raise IspError(f"STK500 v2 programmer on {self.port}: {len(data)} of {n} bytes of {memory} "
                               f"at 0x{position:X}")
            out += data
            position += n
        return bytes(out[address - start:address - start + length])

    def write_page(self, memory: str, address: int, data: bytes, *, page_size: int) -> None:
        if memory not in MEMORIES:
            raise IspInputError(f"unknown memory {memory!r} (known: {', '.join(MEMORIES)})")
        if page_size <= 0 or address // page_size != (address + max(len(data), 1) - 1) // page_size:
            raise IspInputError(f"{memory} 0x{address:X}+{len(data)} crosses a {page_size}-byte page boundary")
        if not data:
            return
        if memory == "flash":
            start = address & ~1
            padded = b"\xff" * (address - start) + bytes(data)
            if len(padded) & 1:
                padded += b"\xff"
            self.command(load_address(start >> 1, extended=self._extended(start)), what="CMD_LOAD_ADDRESS")
            self.command(program_isp("flash", padded, mode=PAGE_MODE_RDY_BSY, delay=10,
                                     cmd1=P.LOAD_PROGRAM_PAGE_LOW, cmd2=P.WRITE_PROGRAM_PAGE,
                                     cmd3=P.READ_PROGRAM_LOW), what="CMD_PROGRAM_FLASH_ISP")
            return
        self.command(load_address(address), what="CMD_LOAD_ADDRESS")
        if page_size > 1:
            body = program_isp("eeprom", data, mode=PAGE_MODE_RDY_BSY, delay=10, cmd1=P.LOAD_EEPROM_PAGE,
                               cmd2=P.WRITE_EEPROM_PAGE, cmd3=P.READ_EEPROM)
        else:
            body = program_isp("eeprom", data, mode=WORD_MODE_RDY_BSY, delay=10, cmd1=P.WRITE_EEPROM,
                               cmd2=0, cmd3=P.READ_EEPROM)
        self.command(body, what="CMD_PROGRAM_EEPROM_ISP")

    def chip_erase(self) -> None:
        # poll method 1: RDY/BSY (avrdude sends 0 and the part's chip_erase_delay, then
        # sleeps that long itself; polling needs no figure per part)
        self.command(chip_erase_isp(P.chip_erase(), erase_delay=10, poll_method=1), what="CMD_CHIP_ERASE_ISP")

    def _read_byte(self, command: int, instruction: bytes, what: str) -> int:
        answer = self.command(read_isp_byte(command, instruction, P.DATA_INDEX + 1), what=what)
        if len(answer) < 3:
            raise IspError(f"STK500 v2 programmer on {self.port}: a short {what} answer")
        return answer[2]

    def read_signature(self) -> bytes:
        return bytes(self._read_byte(CMD_READ_SIGNATURE_ISP, P.read_signature(i), "CMD_READ_SIGNATURE_ISP")
                     for i in range(3))

    def read_fuses(self) -> dict[str, int]:
        out = {name: self._read_byte(CMD_READ_FUSE_ISP, P.read_fuse(name), "CMD_READ_FUSE_ISP")
               for name in self._fuse_names()}
        out["lock"] = self._read_byte(CMD_READ_LOCK_ISP, P.read_lock(), "CMD_READ_LOCK_ISP")
        return out

    def write_fuse(self, name: str, value: int) -> None:
        if not 0 <= value <= 0xFF:
            raise IspInputError(f"{name} value {value!r} is not a byte (0x00-0xFF)")
        if name == "lock":
            self.command(program_isp_byte(CMD_PROGRAM_LOCK_ISP, P.write_lock(value)), what="CMD_PROGRAM_LOCK_ISP")
        elif name in P.FUSE_NAMES:
            self.command(program_isp_byte(CMD_PROGRAM_FUSE_ISP, P.write_fuse(name, value)),
                         what="CMD_PROGRAM_FUSE_ISP")
        else:
            raise IspInputError(f"unknown fuse {name!r} (known: {', '.join(P.FUSE_NAMES)}, lock)")
        # the programmer does not poll after a fuse write (AVR068): RDY/BSY through SPI_MULTI
        self.wait_ready()


def sck_duration(sck_hz: int) -> int:
    """PARAM_SCK_DURATION for an SCK frequency, as avrdude's stk500v2_set_sck_period() for
    an STK500: 0 from 1.8432 MHz, 1 above 460.8 kHz, 2 above 115.2 kHz, 3 above 57.6 kHz,
    then 1 / (24 * f / XTAL) - 10 / 12 rounded up, at most 254."""
    if sck_hz <= 0:
        raise IspInputError(f"SCK frequency {sck_hz} Hz is not positive")
    f = float(sck_hz)
    if f >= 1.8432e6:
        return 0
    if f > 460.8e3:
        return 1
    if f > 115.2e3:
        return 2
    if f > 57.6e3:
        return 3
    d = -int(-(1 / (24 * f / STK500_XTAL) - 10.0 / 12.0) // 1)
    return min(max(d, 0), 254)


#: the STK500's crystal (avrdude's STK500V2_XTAL)
STK500_XTAL = 7372800

STATUS_NAMES = {
    STATUS_CMD_TOUT: "command timed out", STATUS_RDY_BSY_TOUT: "RDY/BSY timed out",
    STATUS_SET_PARAM_MISSING: "device parameters not set", STATUS_CMD_FAILED: "command failed",
    STATUS_CKSUM_ERROR: "checksum error", STATUS_CMD_UNKNOWN: "unknown command",
    STATUS_CMD_ILLEGAL_PARAMETER: "illegal parameter", STATUS_CLOCK_ERROR: "target clock speed error",
}

__all__ = [name for name in dir() if name.isupper()] + [
    "checksum", "encode_frame", "FrameParser", "sign_on", "get_parameter", "set_parameter", "load_address",
    "enter_progmode_isp", "leave_progmode_isp", "chip_erase_isp", "program_isp", "read_isp", "read_isp_byte",
    "program_isp_byte", "spi_multi", "Stk500v2Link", "sck_duration"]
