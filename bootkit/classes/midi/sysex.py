"""bootkit's SysEx framing: how a native request travels in 7-bit MIDI System Exclusive.

    F0 7D 42 4B <cmd> <tag> <payload...> <c2 c1 c0> F7

7D is MIDI 1.0's "non-commercial / educational" manufacturer id; "BK" tells
our frames from other 0x7D users.  The check is CRC-16/XMODEM
(binascii.crc_hqx, start 0) over cmd, tag and payload, as three 7-bit
groups.  Numbers travel as 7-bit groups (:func:`u7`), 8-bit data packed
seven bytes into eight (:func:`pack7`).  Byte by byte in
docs/personalities/midi.md; the requests themselves are in protocol.py.
"""

from __future__ import annotations

import binascii

from ..native import Refusal

MANUFACTURER_ID = 0x7D
SIGNATURE = bytes((MANUFACTURER_ID, 0x42, 0x4B))


class FrameError(ValueError):
    """A frame with our signature that cannot be read; ``refusal`` says why, ``cmd``/``tag`` when known."""

    def __init__(self, why: str, refusal: Refusal, cmd: int | None = None, tag: int = 0):
        super().__init__(why)
        self.refusal = refusal
        self.cmd = cmd
        self.tag = tag


def checksum(body: bytes) -> bytes:
    crc = _crc_hqx(body, 0)
    return bytes((crc >> 14, (crc >> 7) & 0x7F, crc & 0x7F))


_crc_hqx = binascii.crc_hqx


def u7(value: int, width: int) -> bytes:
    """An unsigned number as ``width`` 7-bit groups, most significant first (5 groups hold 32 bits)."""
    if value < 0 or value >> (7 * width):
        raise ValueError(f"{value} does not fit {width} 7-bit bytes")
    if width == 5:  # addresses and lengths: every request has one or two
        return bytes((value >> 28, (value >> 21) & 0x7F, (value >> 14) & 0x7F, (value >> 7) & 0x7F, value & 0x7F))
    return bytes((value >> (7 * (width - 1 - i))) & 0x7F for i in range(width))


def from_u7(data: bytes) -> int:
    if len(data) == 5:
        a, b, c, d, e = data
        return (a & 0x7F) << 28 | (b & 0x7F) << 21 | (c & 0x7F) << 14 | (d & 0x7F) << 7 | (e & 0x7F)
    value = 0
    for b in data:
        value = value << 7 | (b & 0x7F)
    return value


_LOW7 = bytes(b & 0x7F for b in range(256))
_TOP_AS_BIT = [bytes((1 << j) if b & 0x80 else 0 for b in range(256)) for j in range(7)]
_TOP_AS_DIGIT = bytes(0x31 if b & 0x80 else 0x30 for b in range(256))  # top bit as ASCII "1"/"0"
_DIGIT_AS_TOP = bytes(0x80 if b == 0x31 else 0 for b in range(256))


def pack7(data: bytes) -> bytes:
    """8-bit data as 7-bit bytes: each group of up to 7 bytes becomes a byte of their top bits
    (bit i = top bit of byte i) followed by their low 7 bits; 7 bytes take 8.

    No loop per byte or per group.  The low bits: ``bytes.hex`` with a
    separator every 7 bytes, the separators turned into "00" and read back,
    puts a zero byte in front of every group; translate clears the top bits.
    The top-bits bytes: for a page-sized input, the top bits as ASCII binary
    digits, reversed (bit 0 of each group last), with a "0" (bit 7) between
    groups by the same separator trick, read by ``int(..., 2)``; for larger
    inputs OR-ing seven translated columns as big integers is faster.
    """
    n = len(data)
    if not n:
        return b""
    groups = -(-n // 7)
    pad = groups * 7 - n
    padded = bytes(data) + bytes(pad) if pad else bytes(data)
    out = bytearray.fromhex("00" + padded.hex("x", -7).replace("x", "00")).translate(_LOW7)
    if n <= 512:
        digits = bytes.fromhex(padded.translate(_TOP_AS_DIGIT)[::-1].hex("x", 7).replace("x", "30"))
        out[0::8] = int(digits, 2).to_bytes(groups, "little")
    else:
        heads = 0
        for j in range(7):
            heads |= int.from_bytes(padded[j::7].translate(_TOP_AS_BIT[j]), "big")
        out[0::8] = heads.to_bytes(groups, "big")
    if pad:
        del out[-pad:]
    return bytes(out)


def unpack7(data: bytes) -> bytes:
    """The inverse of :func:`pack7`; a lone top-bits byte at the end is malformed.

    The low bits: the top-bits bytes deleted by one extended-slice ``del``.
    The top bits: the top-bits bytes as one binary numeral (little-endian
    order), every 8th digit (bit 7) deleted, reversed, so digit k is the
    top bit of output byte k; translated to 0x80/0x00 and OR-ed in as big
    integers.
    """
    n = len(data)
    if not n:
        return b""
    if n % 8 == 1:
        raise ValueError("7-bit data ends in a lone top-bits byte")
    groups = -(-n // 8)
    low = bytearray(data)
    heads = low[0::8]
    del low[0::8]
    digits = bytearray(format(int.from_bytes(heads, "little"), "b").zfill(8 * groups).encode())
    del digits[0::8]
    m = n - groups
    tops = digits[:-m - 1:-1].translate(_DIGIT_AS_TOP)
    return (int.from_bytes(low, "big") | int.from_bytes(tops, "big")).to_bytes(m, "big")


def pack7_many(items: list[bytes]) -> list[bytes]:
    """:func:`pack7` of each item, in one call: each item zero padded to whole 7-byte groups
    (the padding packs to bytes that are then cut off), all packed at once, sliced apart."""
    chunks: list[bytes] = []
    spans = []
    pos = 0
    for d in items:
        n = len(d)
        g = -(-n // 7)
        chunks += (d, bytes(7 * g - n))
        spans.append((pos, pos + n + g))
        pos += 8 * g
    packed = pack7(b"".join(chunks))
    return [packed[a:b] for a, b in spans]


def unpack7_many(items: list[bytes]) -> list[bytes]:
    """:func:`unpack7` of each item, in one call (each zero padded to whole 8-byte groups);
    ValueError if any item is malformed."""
    chunks: list[bytes] = []
    spans = []
    pos = 0
    for d in items:
        n = len(d)
        if n % 8 == 1:
            raise ValueError("7-bit data ends in a lone top-bits byte")
        g = -(-n // 8)
        chunks += (d, bytes(8 * g - n))
        spans.append((pos, pos + n - g))
        pos += 7 * g
    data = unpack7(b"".join(chunks))
    return [data[a:b] for a, b in spans]


def packed_length(n: int) -> int:
    return n + -(-n // 7)


def text7(text: str) -> bytes:
    raw = text.encode("ascii", "replace")[:127]
    return bytes((len(raw),)) + bytes(b & 0x7F for b in raw)


class Reader:
    """Reads fields off a frame's payload; running short is a MALFORMED frame."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.payload):
            raise ValueError("frame too short")
        out = self.payload[self.pos:self.pos + n]
        self.pos += n
        return out

    def u(self, width: int) -> int:
        return from_u7(self.take(width))

    def text(self) -> str:
        n = self.take(1)[0]
        return self.take(n).decode("ascii", "replace")

    def rest(self) -> bytes:
        out = self.payload[self.pos:]
        self.pos = len(self.payload)
        return out


def frame_body(cmd: int, tag: int, payload: bytes = b"") -> bytes:
    """The 7-bit body between F0 and F7: signature, cmd, tag, payload, check."""
    inner = bytes((cmd & 0x7F, tag & 0x7F)) + bytes(payload)
    if not inner.isascii():  # a byte >= 0x80
        raise ValueError("SysEx payload bytes must be 7-bit")
    return SIGNATURE + inner + checksum(inner)


def frame(cmd: int, tag: int, payload: bytes = b"") -> bytes:
    """A whole SysEx message, F0 ... F7."""
    return b"\xf0" + frame_body(cmd, tag, payload) + b"\xf7"


def is_ours(body: bytes) -> bool:
    """Does a SysEx body (bytes between F0 and F7) carry our signature?"""
    return bytes(body[:len(SIGNATURE)]) == SIGNATURE


def parse_frame(body: bytes) -> tuple[int, int, bytes]:
    """(cmd, tag, payload) of a body that :func:`is_ours`; raises FrameError."""
    body = bytes(body)
    if len(body) < len(SIGNATURE) + 5:
        raise FrameError(f"frame of {len(body)} bytes is too short", Refusal.MALFORMED)
    content = body[3:-3]  # cmd, tag, payload (3 == len(SIGNATURE))
    crc = _crc_hqx(content, 0)
    if body[-3:] != bytes((crc >> 14, (crc >> 7) & 0x7F, crc & 0x7F)):
        raise FrameError(f"bad checksum on command 0x{content[0]:02X}", Refusal.BAD_CHECKSUM, content[0], content[1])
    return content[0], content[1], content[2:]
