"""A MIDI 1.0 byte-stream parser, the way a UART MIDI receiver reads its input: running
status, real-time bytes inside SysEx, a status byte ending an unfinished SysEx."""

from __future__ import annotations

import re
from typing import NamedTuple

_STATUS = re.compile(b"[\x80-\xff]")
_DATA_BYTES = bytes(range(0x80))
_SYSEX_PAIR = b"\xf0\xf7"


def channel_length(status: int) -> int:
    """Bytes in a channel message with this status (Program Change and Channel Pressure: 2)."""
    return 2 if status & 0xF0 in (0xC0, 0xD0) else 3


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
                    self._need = channel_length(b)
            elif self._pending:
                self._pending.append(b)
            elif self._running:
                self._pending = bytearray((self._running, b))
                self._need = channel_length(self._running)
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
