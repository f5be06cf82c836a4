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


__all__ = [name for name in dir() if name.isupper()] + [
    "checksum", "encode_frame", "FrameParser", "sign_on", "get_parameter", "set_parameter", "load_address",
    "enter_progmode_isp", "leave_progmode_isp", "chip_erase_isp", "program_isp", "read_isp", "read_isp_byte",
    "program_isp_byte", "spi_multi"]
