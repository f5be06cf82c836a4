"""USB-MIDI Event Packets (USB-MIDI 1.0 section 4): MIDI messages to 4-byte packets and back.

Byte 0 of a packet is the cable number (high nibble) and the Code Index
Number (low nibble), bytes 1-3 the MIDI bytes, zero padded.
"""

from __future__ import annotations

import re

from .stream import channel_length

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
        length = channel_length(status)
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
    stream: list[bytes] = []
    heads: list[bytes] = []
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
