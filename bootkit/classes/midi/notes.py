"""The notes encoding: bootkit's SysEx frame bodies carried one 7-bit byte per Note On on
channel 16, for apps and OSes that drop SysEx; the velocity marks where the byte sits
(first, middle, last).  Velocities are never 0, so no player or driver turns these
into Note Offs."""

from __future__ import annotations

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
