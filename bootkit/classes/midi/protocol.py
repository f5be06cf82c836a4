"""USB-MIDI constants and codecs shared by the device and host halves.

Three layers, bottom up:

- USB Device Class Definition for MIDI Devices 1.0 ("USB-MIDI"): the
  class-specific descriptors (section 6) and the 4-byte USB-MIDI Event
  Packets with their Code Index Numbers (section 4);
- a MIDI 1.0 byte-stream parser (running status, real-time bytes inside
  SysEx, a status byte ending an unfinished SysEx), the way a UART MIDI
  receiver reads its input;
- bootkit's SysEx protocol (manufacturer id 0x7D, documented byte by byte
  in docs/personalities/midi.md), and its ``notes`` form, which carries the
  same frames in Note On events for hosts that drop SysEx.

Nothing here does I/O.
"""

from __future__ import annotations

import binascii
import re
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

# --------------------------------------------------------------------------
# USB Audio 1.0 / USB-MIDI 1.0 class codes
AUDIO_CLASS = 0x01
AUDIOCONTROL = 0x01  # bInterfaceSubClass (Audio 1.0 appendix A.2)
MIDISTREAMING = 0x03
CS_INTERFACE = 0x24
CS_ENDPOINT = 0x25
# AudioControl class-specific interface descriptor subtype (Audio 1.0 A.5)
AC_HEADER = 0x01
# MIDIStreaming descriptor subtypes (USB-MIDI 1.0 appendix A.1, A.2)
MS_HEADER = 0x01
MIDI_IN_JACK = 0x02
MIDI_OUT_JACK = 0x03
MS_GENERAL = 0x01  # class-specific endpoint descriptor subtype
JACK_EMBEDDED = 0x01  # bJackType (A.3)
JACK_EXTERNAL = 0x02
BCD_ADC = 0x0100
BCD_MSC = 0x0100  # MIDIStreaming revision 1.0


def ac_header(ms_interface: int) -> bytes:
    """AudioControl class-specific header (Audio 1.0 section 4.3.2) naming one MIDIStreaming interface.

    ``baInterfaceNr`` is a device interface number; :class:`MidiFunction`
    gives its function-local number, which the Device renumbers for a
    composite device only through the IAD (see MidiFunction).
    """
    return struct.pack("<BBBHHBB", 9, CS_INTERFACE, AC_HEADER, BCD_ADC, 9, 1, ms_interface)


def ms_header(total_length: int) -> bytes:
    """MS interface header (USB-MIDI 1.0 section 6.1.2.1); wTotalLength covers the jacks that follow."""
    return struct.pack("<BBBHH", 7, CS_INTERFACE, MS_HEADER, BCD_MSC, total_length)


def in_jack(jack_type: int, jack_id: int, istring: int = 0) -> bytes:
    """MIDI IN jack descriptor (section 6.1.2.2)."""
    return struct.pack("<BBBBBB", 6, CS_INTERFACE, MIDI_IN_JACK, jack_type, jack_id, istring)


def out_jack(jack_type: int, jack_id: int, source_id: int, source_pin: int = 1, istring: int = 0) -> bytes:
    """MIDI OUT jack descriptor (section 6.1.2.3) with one input pin."""
    return struct.pack("<BBBBBBBBB", 9, CS_INTERFACE, MIDI_OUT_JACK, jack_type, jack_id, 1, source_id,
                       source_pin, istring)


def ms_endpoint(jack_ids: tuple[int, ...]) -> bytes:
    """Class-specific MS bulk data endpoint descriptor (section 6.2.2): the embedded jacks it carries."""
    return struct.pack("<BBBB", 4 + len(jack_ids), CS_ENDPOINT, MS_GENERAL, len(jack_ids)) + bytes(jack_ids)


# --------------------------------------------------------------------------
# USB-MIDI Event Packets (USB-MIDI 1.0 section 4): byte 0 is cable number
# (high nibble) and Code Index Number (low nibble), bytes 1-3 the MIDI bytes,
# zero padded.
CIN_MISC = 0x0  # reserved for future extension
CIN_CABLE_EVENT = 0x1  # reserved
CIN_SYSCOMMON_2 = 0x2  # two-byte System Common (MTC quarter frame, Song Select)
CIN_SYSCOMMON_3 = 0x3  # three-byte System Common (Song Position Pointer)
CIN_SYSEX_START = 0x4  # SysEx starts or continues (3 bytes)
CIN_SYSEX_END_1 = 0x5  # single-byte System Common, or SysEx ends with 1 byte
CIN_SYSEX_END_2 = 0x6  # SysEx ends with 2 bytes
CIN_SYSEX_END_3 = 0x7  # SysEx ends with 3 bytes
CIN_NOTE_OFF = 0x8
CIN_NOTE_ON = 0x9
CIN_POLY_KEYPRESS = 0xA
CIN_CONTROL_CHANGE = 0xB
CIN_PROGRAM_CHANGE = 0xC
CIN_CHANNEL_PRESSURE = 0xD
CIN_PITCH_BEND = 0xE
CIN_SINGLE_BYTE = 0xF

# MIDI bytes each CIN carries (Table 4-1); 0 for the reserved ones
CIN_LENGTH = (0, 0, 2, 3, 3, 1, 2, 3, 3, 3, 3, 3, 2, 2, 3, 1)
PACKET_SIZE = 4
# header byte -> MIDI bytes it carries, per cable (other cables carry none for us)
_LENGTHS = {c: bytes(CIN_LENGTH[h & 0x0F] if h >> 4 == c else 0 for h in range(256)) for c in range(16)}
_LENGTHS_ANY = bytes(CIN_LENGTH[h & 0x0F] for h in range(256))
_SHORT = re.compile(b"[^\x03]")
_STATUS = re.compile(b"[\x80-\xff]")
_DATA_BYTES = bytes(range(0x80))
_SYSEX_PAIR = b"\xf0\xf7"


def _channel_length(status: int) -> int:
    return 2 if status & 0xF0 in (0xC0, 0xD0) else 3


def message_packets(message: bytes, cable: int = 0) -> bytes:
    """One complete MIDI message as USB-MIDI event packets.

    Channel messages map to CIN = their status nibble; SysEx goes three
    bytes at a time (CIN 0x4) and ends with CIN 0x5, 0x6 or 0x7 holding the
    F7; real-time bytes use CIN 0xF; System Common uses 0x2, 0x3 or 0x5.
    """
    if not message:
        return b""
    cn = (cable & 0x0F) << 4
    status = message[0]
    if status == 0xF0:
        # k packets of CIN 0x4 with three bytes each, then one CIN 0x5/0x6/0x7
        # packet with the last 1-3 bytes (F7 included), built by slice assignment
        message = bytes(message)
        n = len(message)
        k = (n - 1) // 3
        rest = message[3 * k:]
        out = bytearray(4 * (k + 1))
        if k:
            out[0:4 * k:4] = bytes((cn | CIN_SYSEX_START,)) * k
            for j in range(3):
                out[1 + j:4 * k:4] = message[j:3 * k:3]
        out[4 * k:] = bytes((cn | (CIN_SYSEX_END_1 + len(rest) - 1),)) + rest.ljust(3, b"\x00")
        return bytes(out)
    if status >= 0xF8:
        return bytes((cn | CIN_SINGLE_BYTE, status, 0, 0))
    if status >= 0xF0:
        length = {0xF1: 2, 0xF2: 3, 0xF3: 2}.get(status, 1)
        cin = {1: CIN_SYSEX_END_1, 2: CIN_SYSCOMMON_2, 3: CIN_SYSCOMMON_3}[length]
        return bytes((cn | cin,)) + bytes(message[:length]).ljust(3, b"\x00")
    if status >= 0x80:
        length = _channel_length(status)
        return bytes((cn | (status >> 4),)) + bytes(message[:length]).ljust(3, b"\x00")
    # a stray data byte: CIN 0xF carries any single byte (section 4, Table 4-1)
    return b"".join(bytes((cn | CIN_SINGLE_BYTE, b, 0, 0)) for b in message)


_SYSEX_END_CIN = {1: CIN_SYSEX_END_1, 2: CIN_SYSEX_END_2, 0: CIN_SYSEX_END_3}
_PAD = (b"", b"\x00\x00", b"\x00")  # by len % 3: zeros that fill the last packet


def messages_packets(messages: list[bytes], cable: int = 0) -> bytes:
    """Several complete messages as one run of USB-MIDI event packets (what one bulk transfer carries).

    The same bytes as joining :func:`message_packets` of each; when all are
    SysEx, they are laid out at once: each message zero padded to whole
    packets, the three MIDI bytes of every packet placed by slice
    assignment, then the CIN bytes (0x4, and 0x5/0x6/0x7 for each last packet).
    """
    if not all(m[:1] == b"\xf0" and m[-1:] == b"\xf7" for m in messages):
        return b"".join(message_packets(m, cable) for m in messages)
    cn = (cable & 0x0F) << 4
    start = bytes((cn | CIN_SYSEX_START,))
    ends = [bytes((cn | _SYSEX_END_CIN[r],)) for r in range(3)]
    stream = []
    heads = []
    for m in messages:
        n = len(m)
        r = n % 3
        stream += (m, _PAD[r])
        heads += (start * ((n - 1) // 3), ends[r])
    data = b"".join(stream)
    out = bytearray(len(data) // 3 * 4)
    out[0::4] = b"".join(heads)
    out[1::4] = data[0::3]
    out[2::4] = data[1::3]
    out[3::4] = data[2::3]
    return bytes(out)


def decode_packets(data: bytes, cable: int | None = 0) -> bytes:
    """The MIDI byte stream carried by USB-MIDI event packets (of ``cable``; None: every cable).

    A trailing partial packet and packets with the reserved CINs 0x0 and
    0x1 are dropped, as a receiver must (section 4).
    """
    data = bytes(data[:len(data) - len(data) % PACKET_SIZE])
    count = len(data) // PACKET_SIZE
    if not count:
        return b""
    heads = data[0::4]
    lengths = heads.translate(_LENGTHS[cable] if cable is not None else _LENGTHS_ANY)
    # every packet's three bytes side by side, then the short packets trimmed
    full = bytearray(3 * count)
    for j in range(3):
        full[j::3] = data[1 + j::4]
    if lengths.count(3) == count:
        return bytes(full)
    out = bytearray()
    done = 0
    for m in _SHORT.finditer(lengths):
        i = m.start()
        out += full[3 * done:3 * i]
        out += full[3 * i:3 * i + lengths[i]]
        done = i + 1
    out += full[3 * done:]
    return bytes(out)


# --------------------------------------------------------------------------
# MIDI 1.0 byte-stream parsing

class MidiMessage(NamedTuple):
    """A complete message out of the stream: ``kind`` is sysex, channel, common or realtime;
    or ``cut``: a SysEx that a status byte ended before its F7, or that grew past the limit
    (``data``: F0 and what had arrived, for a receiver that counts its damaged frames).

    A named tuple rather than a frozen dataclass: as immutable, and made
    several times faster (one per frame on the flash path)."""

    kind: str
    data: bytes  # the whole message, status byte first (SysEx: F0 ... F7)

    @property
    def status(self) -> int:
        return self.data[0]


class StreamParser:
    """MIDI 1.0 bytes in, complete messages out.

    Real-time bytes (F8-FF) may appear anywhere, even inside a SysEx, and
    do not interrupt it (MIDI 1.0 spec, "Real-Time messages"); any other
    status byte ends an unfinished SysEx, which is dropped.  Channel
    messages may use running status.  ``max_sysex`` bounds the memory a
    SysEx can take: a longer one is dropped whole.
    """

    def __init__(self, max_sysex: int = 1 << 16):
        self.max_sysex = max_sysex
        self._sysex: bytearray | None = None
        self._overflow = False
        self._running = 0
        self._pending = bytearray()
        self._need = 0
        self.dropped = 0  # incomplete or oversized SysEx messages thrown away

    def feed(self, data: bytes) -> list[MidiMessage]:
        out: list[MidiMessage] = []
        data = bytes(data)
        i = 0
        n = len(data)
        while i < n:
            if self._sysex is not None:
                # inside a SysEx: take the run of data bytes up to the next status byte at once
                m = _STATUS.search(data, i)
                j = m.start() if m else n
                if j > i:
                    room = self.max_sysex - len(self._sysex)
                    if j - i > room:
                        self._overflow = True
                    self._sysex += data[i:i + max(0, min(room, j - i))]
                    i = j
                    if i >= n:
                        break
            b = data[i]
            i += 1
            if b >= 0xF8:
                out.append(MidiMessage("realtime", bytes((b,))))
                continue
            if self._sysex is not None:
                if b < 0x80:
                    if len(self._sysex) < self.max_sysex:
                        self._sysex.append(b)
                    else:
                        self._overflow = True
                    continue
                if b == 0xF7 and not self._overflow:
                    self._sysex.append(b)
                    out.append(MidiMessage("sysex", bytes(self._sysex)))
                else:
                    self.dropped += 1
                    out.append(MidiMessage("cut", bytes(self._sysex)))
                self._sysex = None
                self._overflow = False
                if b == 0xF7:
                    continue
            if b == 0xF0:
                self._sysex = bytearray((b,))
                self._running = 0
                self._pending.clear()
                continue
            if b >= 0x80:
                self._pending = bytearray((b,))
                if b >= 0xF0:
                    self._running = 0  # System Common cancels running status
                    self._need = {0xF1: 2, 0xF2: 3, 0xF3: 2}.get(b, 1)
                else:
                    self._running = b
                    self._need = _channel_length(b)
            elif self._pending:
                self._pending.append(b)
            elif self._running:
                self._pending = bytearray((self._running, b))
                self._need = _channel_length(self._running)
            else:
                continue  # a data byte with no status to belong to
            if len(self._pending) >= self._need:
                msg = bytes(self._pending)
                out.append(MidiMessage("common" if msg[0] >= 0xF0 else "channel", msg))
                self._pending = bytearray()
        return out

    def split_sysex(self, data: bytes) -> list[bytes] | None:
        """The fast path for what a bootloader mostly receives: ``data`` made only of whole SysEx
        messages (F0, 7-bit bytes, F7, repeated) while no message is half read.  Returns each
        message without its F7 (F0 first), with the parser in the state :meth:`feed` would
        leave; None (nothing consumed) when ``data`` is anything else: use :meth:`feed`."""
        if self._sysex is not None or self._pending or data[:1] != b"\xf0" or data[-1:] != b"\xf7":
            return None
        pieces = data.split(b"\xf7")
        del pieces[-1]
        # exactly one F0 then one F7 per message, and no other status byte anywhere
        if data.translate(None, _DATA_BYTES) != _SYSEX_PAIR * len(pieces):
            return None
        if len(max(pieces, key=len)) > self.max_sysex:
            return None  # feed drops the oversized one and counts it
        self._running = 0  # as F0 does in feed
        return pieces

    def reset(self) -> None:
        self._sysex = None
        self._overflow = False
        self._running = 0
        self._pending = bytearray()


# --------------------------------------------------------------------------
# bootkit's SysEx protocol
# F0 7D 42 4B <cmd> <tag> <payload...> <c2 c1 c0> F7
#   7D: MIDI 1.0's "non-commercial / educational" manufacturer id; "BK"
#   tells our frames from other 0x7D users.  The check is CRC-16/XMODEM
#   (binascii.crc_hqx, start 0) over cmd, tag and payload, as three 7-bit groups.
MANUFACTURER_ID = 0x7D
SIGNATURE = bytes((MANUFACTURER_ID, 0x42, 0x4B))
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


class Reason(IntEnum):
    """Why a NAK: the byte after the echoed command."""

    BAD_CHECKSUM = 0x01
    MALFORMED = 0x02
    UNKNOWN_COMMAND = 0x03
    OUT_OF_RANGE = 0x04  # outside the application region
    PROTECTED = 0x05  # reaches into the bootloader
    MISALIGNED = 0x06
    NOT_ERASED = 0x07
    NO_APPLICATION = 0x08  # BOOT with nothing valid to start
    MEMORY = 0x09  # any other memory-core fault
    WRONG_CHIP = 0x0A


# Reasons worth the same request again (a byte hit on the wire)
TRANSIENT = frozenset({Reason.BAD_CHECKSUM, Reason.MALFORMED})


class FrameError(ValueError):
    """A frame with our signature that cannot be read; ``reason`` says why, ``cmd``/``tag`` when known."""

    def __init__(self, why: str, reason: Reason, cmd: int | None = None, tag: int = 0):
        super().__init__(why)
        self.reason = reason
        self.cmd = cmd
        self.tag = tag


def checksum(body: bytes) -> bytes:
    crc = _crc_hqx(body, 0)
    return bytes((crc >> 14, (crc >> 7) & 0x7F, crc & 0x7F))


_crc_hqx = binascii.crc_hqx


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


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
    chunks = []
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
    chunks = []
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
        raise FrameError(f"frame of {len(body)} bytes is too short", Reason.MALFORMED)
    content = body[3:-3]  # cmd, tag, payload (3 == len(SIGNATURE))
    crc = _crc_hqx(content, 0)
    if body[-3:] != bytes((crc >> 14, (crc >> 7) & 0x7F, crc & 0x7F)):
        raise FrameError(f"bad checksum on command 0x{content[0]:02X}", Reason.BAD_CHECKSUM, content[0], content[1])
    return content[0], content[1], content[2:]


# --------------------------------------------------------------------------
# Identify

FLAG_APP_VALID = 0x01
FLAG_SESSION = 0x02  # a one-way (file) session is open
FLAG_SESSION_FAILED = 0x04  # it cannot complete: a conflicting repeat, a bad END
FLAG_REFUSED_FILE = 0x08  # the last BEGIN was for another chip or page size


@dataclass(frozen=True)
class DeviceInfo:
    """What IDENTIFY answers."""

    version: int
    chip: str
    flash_start: int
    flash_size: int
    app_start: int
    app_size: int
    page_size: int
    program_us: int  # time to program one page, per the chip's datasheet figures
    erase_us: int  # time to erase the largest sector
    flags: int
    pages_missing: int  # pages of the open file session not yet received (0 without one)
    # since the last BEGIN: frames of the file that arrived damaged (a bad check, a Note On
    # lost or out of place); and one line on how the last file ended ("" when none did).
    # Both optional on the wire: a device that omits them reports 0 and "".
    damaged: int = 0
    status: str = ""

    @property
    def app_end(self) -> int:
        return self.app_start + self.app_size

    @property
    def flash_end(self) -> int:
        return self.flash_start + self.flash_size

    @property
    def app_valid(self) -> bool:
        return bool(self.flags & FLAG_APP_VALID)

    def pack(self) -> bytes:
        return (bytes((self.version,)) + text7(self.chip)
                + b"".join(u7(v, 5) for v in (self.flash_start, self.flash_size, self.app_start, self.app_size,
                                               self.page_size, self.program_us, self.erase_us))
                + bytes((self.flags & 0x7F,)) + u7(self.pages_missing, 3)
                + u7(min(self.damaged, (1 << 21) - 1), 3) + text7(self.status))

    @classmethod
    def unpack(cls, payload: bytes) -> "DeviceInfo":
        r = Reader(payload)
        version = r.take(1)[0]
        chip = r.text()
        nums = [r.u(5) for _ in range(7)]
        flags = r.take(1)[0]
        missing = r.u(3)
        damaged, status = 0, ""
        if r.pos < len(payload):
            damaged, status = r.u(3), r.text()
        return cls(version, chip, *nums, flags, missing, damaged, status)


# --------------------------------------------------------------------------
# The notes encoding: the same frame bodies, one 7-bit byte per Note On on
# channel 16, the velocity marking where the byte sits.  Velocities are
# never 0, so no player or driver turns these into Note Offs.
NOTES_STATUS = 0x9F  # Note On, channel 16
VEL_FIRST = 0x7F
VEL_MIDDLE = 0x40
VEL_LAST = 0x20


def body_to_notes(body: bytes) -> list[bytes]:
    """A frame body as Note On messages (3 bytes each)."""
    out = []
    last = len(body) - 1
    for i, b in enumerate(body):
        vel = VEL_FIRST if i == 0 else VEL_LAST if i == last else VEL_MIDDLE
        out.append(bytes((NOTES_STATUS, b & 0x7F, vel)))
    return out


class NotesDecoder:
    """Note On events in, frame bodies out; anything else on channel 16 breaks the frame.

    ``broken`` counts frames it saw go wrong: a first byte while a frame was still open
    (its last Note On was lost), a middle or last byte with no frame open (its first was
    lost), a frame cut by a musical note or grown past ``max_length``.  A lost middle Note
    On, or two swapped, leave a frame of the right shape that the frame check refuses.
    """

    def __init__(self, max_length: int = 1 << 16):
        self.max_length = max_length
        self._buf: bytearray | None = None
        self._orphan = False  # inside a run of bytes whose first was lost (counted once)
        self.broken = 0

    def feed(self, message: bytes) -> bytes | None:
        if len(message) < 3 or message[0] != NOTES_STATUS:
            return None
        note, vel = message[1], message[2]
        if vel == VEL_FIRST:
            if self._buf is not None:
                self.broken += 1  # the open frame never got its last byte
            self._buf = bytearray((note,))
            self._orphan = False
            return None
        if self._buf is None:
            if vel in (VEL_MIDDLE, VEL_LAST) and not self._orphan:
                self.broken += 1  # the frame's first byte was lost
                self._orphan = vel == VEL_MIDDLE
            elif vel == VEL_LAST:
                self._orphan = False
            return None
        if vel == VEL_MIDDLE:
            if len(self._buf) >= self.max_length:
                self._buf = None
                self.broken += 1
                self._orphan = True
            else:
                self._buf.append(note)
            return None
        if vel == VEL_LAST:
            self._buf.append(note)
            body, self._buf = bytes(self._buf), None
            return body
        self._buf = None  # a musical note on channel 16 in the middle of a frame
        self.broken += 1
        self._orphan = True
        return None


# --------------------------------------------------------------------------
# Message builders for both halves

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


def nak(cmd: int, tag: int, reason: Reason, text: str = "") -> bytes:
    return frame(Cmd.NAK, tag, bytes((cmd & 0x7F, int(reason))) + text7(text))
