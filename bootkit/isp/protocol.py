"""The AVR serial programming instruction set: 4-byte SPI frames.

From the datasheets' "Serial Programming Instruction Set" tables, which agree
on the encoding for every part bootkit knows: ATtiny25/45/85 §20.5 (Table
20-12, rev. 2586Q), ATmega328P §28.8 (Table 28-19), ATmega2560 §30.8 (Table
30-17), ATmega32U4 §28.8.  Every instruction is four bytes; the target shifts one
byte out while it shifts one in, so byte k of the answer is what the target
sends during byte k of the instruction:

- while byte 3 of Programming Enable (0xAC 0x53 0x00 0x00) comes in, the
  target echoes byte 2 (0x53): a programmer knows it is in sync when
  ``answer[ECHO_INDEX] == 0x53`` (avrdude.conf: ``pollindex = 3``,
  ``pollvalue = 0x53``, 1-based);
- a read instruction's data comes out in the last byte (``answer[DATA_INDEX]``).

Addresses of program memory are WORD addresses (two bytes per word; "low"
and "high" select the byte).  Parts above 128 KiB (the ATmega2560's 256 KiB)
send the word address's bits 16 and up once with Load Extended Address Byte
(0x4D), which the target keeps until it is loaded again.

avrdude.conf writes the same instructions as bit patterns ("read_lo =
0010.0000--0000.aaaa--aaaa.aaaa--oooo.oooo"); tests/isp/test_protocol.py
checks these codecs against the patterns of t85, m328p and m2560.
"""

from __future__ import annotations

#: avrdude's names of the fuse bytes (``-U lfuse:w:0x62:m``)
FUSE_NAMES = ("lfuse", "hfuse", "efuse")

#: where Programming Enable's echo of 0x53 comes back (0-based)
ECHO_INDEX = 2
#: where a read instruction's data byte comes back
DATA_INDEX = 3
#: the byte Programming Enable echoes
ECHO = 0x53
#: Poll RDY/BSY: bit 0 of the data byte is 1 while the target is busy
BUSY_BIT = 0x01

# first bytes (and the second byte where the first is shared) of each instruction
PROGRAMMING_ENABLE = (0xAC, 0x53)
CHIP_ERASE = (0xAC, 0x80)
WRITE_LOCK = (0xAC, 0xE0)
WRITE_FUSE = {"lfuse": (0xAC, 0xA0), "hfuse": (0xAC, 0xA8), "efuse": (0xAC, 0xA4)}
READ_FUSE = {"lfuse": (0x50, 0x00), "hfuse": (0x58, 0x08), "efuse": (0x50, 0x08)}
READ_LOCK = (0x58, 0x00)
POLL_RDY = 0xF0
LOAD_EXTENDED_ADDRESS = 0x4D
LOAD_PROGRAM_PAGE_LOW = 0x40
LOAD_PROGRAM_PAGE_HIGH = 0x48
WRITE_PROGRAM_PAGE = 0x4C
READ_PROGRAM_LOW = 0x20
READ_PROGRAM_HIGH = 0x28
LOAD_EEPROM_PAGE = 0xC1
WRITE_EEPROM_PAGE = 0xC2
READ_EEPROM = 0xA0
WRITE_EEPROM = 0xC0
READ_SIGNATURE = 0x30
READ_CALIBRATION = 0x38


def _frame(b0: int, b1: int, b2: int, b3: int) -> bytes:
    return bytes((b0 & 0xFF, b1 & 0xFF, b2 & 0xFF, b3 & 0xFF))


def programming_enable() -> bytes:
    """$AC $53 $00 $00: enter serial programming (RESET held low); echoes $53 in byte 3."""
    return _frame(*PROGRAMMING_ENABLE, 0, 0)


def chip_erase() -> bytes:
    """$AC $80 $00 $00: erase flash and EEPROM (unless EESAVE is programmed) and the lock bits."""
    return _frame(*CHIP_ERASE, 0, 0)


def poll_rdy() -> bytes:
    """$F0 $00 $00 $00: the answer's last byte has bit 0 set while a write or erase runs."""
    return _frame(POLL_RDY, 0, 0, 0)


def load_extended_address(b: int) -> bytes:
    """$4D $00 ext $00: bits 16-23 of the word address, kept for later instructions."""
    return _frame(LOAD_EXTENDED_ADDRESS, 0, b, 0)


def load_program_page(word: int, byte_is_high: bool, value: int) -> bytes:
    """$40/$48 $00 adr-LSB data: one byte into the page buffer at ``word``'s offset in the page.

    The datasheets send only the word's offset in the page (its low bits, in
    byte 3) and ask for the low byte of a word before its high byte.
    """
    return _frame(LOAD_PROGRAM_PAGE_HIGH if byte_is_high else LOAD_PROGRAM_PAGE_LOW, 0, word, value)


def write_program_page(word: int) -> bytes:
    """$4C adr-MSB adr-LSB $00: commit the page buffer to the page holding ``word``."""
    return _frame(WRITE_PROGRAM_PAGE, word >> 8, word, 0)


def read_program(word: int, high: bool) -> bytes:
    """$20/$28 adr-MSB adr-LSB $00: the low or high byte of program memory word ``word``."""
    return _frame(READ_PROGRAM_HIGH if high else READ_PROGRAM_LOW, word >> 8, word, 0)


def load_eeprom_page(addr: int, value: int) -> bytes:
    """$C1 $00 adr data: one byte into the EEPROM page buffer (only the offset bits count)."""
    return _frame(LOAD_EEPROM_PAGE, 0, addr, value)


def write_eeprom_page(addr: int) -> bytes:
    """$C2 adr-MSB adr-LSB $00: write the loaded bytes of the EEPROM page at ``addr``."""
    return _frame(WRITE_EEPROM_PAGE, addr >> 8, addr, 0)


def read_eeprom(addr: int) -> bytes:
    """$A0 adr-MSB adr-LSB $00: one EEPROM byte."""
    return _frame(READ_EEPROM, addr >> 8, addr, 0)


def write_eeprom(addr: int, value: int) -> bytes:
    """$C0 adr-MSB adr-LSB data: write one EEPROM byte (erase and write in one go)."""
    return _frame(WRITE_EEPROM, addr >> 8, addr, value)


def read_lock() -> bytes:
    """$58 $00 $00 $00: the lock byte."""
    return _frame(*READ_LOCK, 0, 0)


def write_lock(v: int) -> bytes:
    """$AC $E0 $00 data: program lock bits (a 0 programs a bit; only chip erase sets them back).

    Bits 7 and 6 are sent as 1, as avrdude.conf's pattern ``11ii.iiii`` does:
    no AVR has lock bits there.
    """
    return _frame(*WRITE_LOCK, 0, v | 0xC0)


def read_signature(i: int) -> bytes:
    """$30 $00 index $00: signature byte ``i`` (0-2)."""
    return _frame(READ_SIGNATURE, 0, i & 0x03, 0)


def write_fuse(name: str, v: int) -> bytes:
    """$AC $A0/$A8/$A4 $00 data: write the low, high or extended fuse byte."""
    try:
        b0, b1 = WRITE_FUSE[name]
    except KeyError:
        raise ValueError(f"unknown fuse {name!r} (known: {', '.join(FUSE_NAMES)})") from None
    return _frame(b0, b1, 0, v)


def read_fuse(name: str) -> bytes:
    """$50 $00 / $58 $08 / $50 $08, then $00 $00: read the low, high or extended fuse byte."""
    try:
        b0, b1 = READ_FUSE[name]
    except KeyError:
        raise ValueError(f"unknown fuse {name!r} (known: {', '.join(FUSE_NAMES)})") from None
    return _frame(b0, b1, 0, 0)


def read_calibration(i: int) -> bytes:
    """$38 $00 index $00: oscillator calibration byte ``i``."""
    return _frame(READ_CALIBRATION, 0, i, 0)


def fuse_value_problem(name: str, value: int, mask: int) -> str | None:
    """Why ``value`` cannot be written to fuse ``name`` with implemented bits ``mask``, or None.

    Two spellings are accepted: the masked value (unimplemented bits 0, as
    Adafruit AVRprog's ``fuse_mask`` reads them) and the value as the chip reads
    it back (unimplemented bits 1, as avrdude shows it: ``efuse 0xFF`` on an
    ATtiny85).  Anything else sets a bit the chip does not have: a typo, or the
    value of another part.
    """
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFF:
        return f"{name} value {value!r} is not a byte (0x00-0xFF)"
    if value & ~mask & 0xFF and (value | mask) != 0xFF:
        return (f"{name} value 0x{value:02X} sets bits outside its mask 0x{mask:02X} "
                f"(use 0x{value & mask:02X} or 0x{(value | ~mask) & 0xFF:02X})")
    return None
