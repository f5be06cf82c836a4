"""The MIDI bootloader's requests: bootkit's native command set (classes/native.py) in SysEx.

Constants and codecs both halves share.  The layers below live beside
this module, one concern each:

- descriptors.py: the USB-MIDI class descriptors (USB-MIDI 1.0 section 6);
- packets.py: USB-MIDI Event Packets and their Code Index Numbers (section 4);
- stream.py: the MIDI 1.0 byte-stream parser;
- sysex.py: the SysEx framing (signature, tag, check, 7-bit packing);
- notes.py: the same frames carried in Note On events.

Two forms of one protocol (docs/personalities/midi.md): two-way requests,
each answered with an ACK or a NAK carrying a :class:`~bootkit.classes.native.Refusal`;
one-way BEGIN, PAGE..., END, as a .mid file plays them, never answered.
Nothing here does I/O.
"""

from __future__ import annotations

from enum import IntEnum

from ..native import NativeInfo, Op, Refusal
from .sysex import Reader, frame, pack7, text7, u7

PROTOCOL_VERSION = 1


class Cmd(IntEnum):
    # two-way: each is answered with ACK or NAK
    IDENTIFY = 0x01
    ERASE = 0x02
    WRITE = 0x03
    READ = 0x04
    CRC = 0x05
    BOOT = 0x06
    # one-way (the .mid file): never answered
    BEGIN = 0x10
    PAGE = 0x11
    END = 0x12
    # replies
    ACK = 0x20
    NAK = 0x21


# the native command set's codes in this framing
OPS: dict[int, Op] = {Cmd.IDENTIFY: Op.IDENTIFY, Cmd.ERASE: Op.ERASE, Cmd.WRITE: Op.WRITE, Cmd.READ: Op.READ,
       Cmd.CRC: Op.CRC, Cmd.BOOT: Op.BOOT}

# --------------------------------------------------------------------------
# Identify: NativeInfo.flags holds FLAG_APP_VALID (native.py) and the file session's

FLAG_SESSION = 0x02  # a one-way (file) session is open
FLAG_SESSION_FAILED = 0x04  # it cannot complete: a conflicting repeat, a bad END
FLAG_REFUSED_FILE = 0x08  # the last BEGIN was for another chip or page size


def pack_info(info: NativeInfo) -> bytes:
    """IDENTIFY's answer: version (the major), chip, seven u5 numbers, flags, u3 pages missing,
    u3 damaged frames, status text."""
    return (bytes((info.version[0],)) + text7(info.chip)
            + b"".join(u7(v, 5) for v in (info.flash_start, info.flash_size, info.app_start, info.app_size,
                                           info.page_size, info.program_us, info.erase_us))
            + bytes((info.flags & 0x7F,)) + u7(info.pages_missing, 3)
            + u7(min(info.damaged, (1 << 21) - 1), 3) + text7(info.status))


def unpack_info(payload: bytes) -> NativeInfo:
    """The inverse of :func:`pack_info`; the last two fields are optional on the wire (a device
    that omits them reports 0 and "").  ValueError when the payload runs short."""
    r = Reader(payload)
    version = r.take(1)[0]
    chip = r.text()
    flash_start, flash_size, app_start, app_size, page_size, program_us, erase_us = (r.u(5) for _ in range(7))
    flags = r.take(1)[0]
    missing = r.u(3)
    damaged, status = 0, ""
    if r.pos < len(payload):
        damaged, status = r.u(3), r.text()
    return NativeInfo((version, 0), chip, flash_start, flash_size, app_start, app_size, page_size,
                      program_us, erase_us, flags, missing, damaged, status)


# --------------------------------------------------------------------------
# Message builders for both halves: (cmd, payload)

def identify() -> tuple[int, bytes]:
    return Cmd.IDENTIFY, b""


def erase(start: int, length: int) -> tuple[int, bytes]:
    return Cmd.ERASE, u7(start, 5) + u7(length, 5)


def write(address: int, data: bytes) -> tuple[int, bytes]:
    return Cmd.WRITE, u7(address, 5) + pack7(data)


def read(address: int, length: int) -> tuple[int, bytes]:
    return Cmd.READ, u7(address, 5) + u7(length, 5)


def crc(start: int, length: int) -> tuple[int, bytes]:
    return Cmd.CRC, u7(start, 5) + u7(length, 5)


def boot() -> tuple[int, bytes]:
    return Cmd.BOOT, b""


def begin(chip: str, start: int, page_size: int, pages: int, image_crc: int) -> tuple[int, bytes]:
    return Cmd.BEGIN, (bytes((PROTOCOL_VERSION,)) + text7(chip) + u7(start, 5) + u7(page_size, 5)
                       + u7(pages, 3) + u7(image_crc, 5))


def page(seq: int, address: int, data: bytes) -> tuple[int, bytes]:
    return Cmd.PAGE, u7(seq, 3) + u7(address, 5) + pack7(data)


def end(pages: int, image_crc: int) -> tuple[int, bytes]:
    return Cmd.END, u7(pages, 3) + u7(image_crc, 5)


def ack(cmd: int, tag: int, payload: bytes = b"") -> bytes:
    return frame(Cmd.ACK, tag, bytes((cmd & 0x7F,)) + payload)


def nak(cmd: int, tag: int, reason: Refusal, text: str = "") -> bytes:
    return frame(Cmd.NAK, tag, bytes((cmd & 0x7F, int(reason))) + text7(text))


__all__ = ["PROTOCOL_VERSION", "Cmd", "OPS", "FLAG_SESSION", "FLAG_SESSION_FAILED",
           "FLAG_REFUSED_FILE", "pack_info", "unpack_info", "identify", "erase", "write", "read", "crc", "boot",
           "begin", "page", "end", "ack", "nak"]
