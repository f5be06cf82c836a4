"""A recording AVR for the programmer engine's conformance tests.

It answers the serial programming instructions the engine clocks in (ATmega328P
datasheet §28.8.3 table 28-19 encoding) just enough to check what the programmer
sends, in which order, and what it returns; the end-to-end tests use the real
emulated target (bootkit.isp.target.EmulatedAvr).
"""

from __future__ import annotations

import pytest


class RecordingAvr:
    def __init__(self, flash_size=32 * 1024, eeprom_size=1024, busy_polls=0, signature=b"\x1e\x95\x0f"):
        self.flash = bytearray(b"\xff" * flash_size)
        self.eeprom = bytearray(b"\xff" * eeprom_size)
        self.page: dict[int, int] = {}
        self.eepage: dict[int, int] = {}
        self.ext = 0
        self.frames: list[bytes] = []
        self.resets: list[bool] = []
        self.enabled = False
        self.reset_low = False
        self.busy_polls = busy_polls  # RDY/BSY answers busy this many times after each write
        self._busy = 0
        self.fuses = {"lfuse": 0x62, "hfuse": 0xD9, "efuse": 0xFF, "lock": 0xFF}
        self.signature = signature
        self.realtime = False

    def reset(self, active: bool) -> None:
        self.resets.append(active)
        self.reset_low = active
        self.enabled = False

    def spi(self, frame: bytes) -> bytes:
        assert len(frame) == 4
        self.frames.append(bytes(frame))
        a, b, c, d = frame
        out = bytearray((0xFF, a, b, 0x00))
        if not self.reset_low:
            return bytes((0xFF,) * 4)
        if (a, b) == (0xAC, 0x53):
            self.enabled = True
            out[2] = 0x53
            return bytes(out)
        if not self.enabled:
            return bytes((0xFF,) * 4)
        word = (self.ext << 16) | (b << 8) | c
        if a == 0xF0:
            out[3] = 1 if self._busy else 0
            self._busy = max(0, self._busy - 1)
        elif a == 0x4D:
            self.ext = c
        elif a in (0x40, 0x48):
            self.page[word * 2 + (a == 0x48)] = d
        elif a == 0x4C:
            for addr, v in self.page.items():
                self.flash[addr] &= v
            self.page.clear()
            self._busy = self.busy_polls
        elif a in (0x20, 0x28):
            out[3] = self.flash[word * 2 + (a == 0x28)]
        elif a == 0xC1:
            self.eepage[(b << 8) | c] = d
        elif a == 0xC2:
            for addr, v in self.eepage.items():
                self.eeprom[addr] = v
            self.eepage.clear()
            self._busy = self.busy_polls
        elif a == 0xC0:
            self.eeprom[(b << 8) | c] = d
            self._busy = self.busy_polls
        elif a == 0xA0:
            out[3] = self.eeprom[(b << 8) | c]
        elif (a, b) == (0xAC, 0x80):
            self.flash[:] = b"\xff" * len(self.flash)
            self.eeprom[:] = b"\xff" * len(self.eeprom)
            self.fuses["lock"] = 0xFF
            self._busy = self.busy_polls
        elif a == 0xAC:
            name = {0xA0: "lfuse", 0xA8: "hfuse", 0xA4: "efuse", 0xE0: "lock"}.get(b)
            if name:
                self.fuses[name] = d
        elif (a, b) == (0x50, 0x00):
            out[3] = self.fuses["lfuse"]
        elif (a, b) == (0x58, 0x08):
            out[3] = self.fuses["hfuse"]
        elif (a, b) == (0x50, 0x08):
            out[3] = self.fuses["efuse"]
        elif (a, b) == (0x58, 0x00):
            out[3] = self.fuses["lock"]
        elif a == 0x30:
            out[3] = self.signature[c & 3] if (c & 3) < 3 else 0xFF
        elif a == 0x38:
            out[3] = 0x9A
        return bytes(out)


@pytest.fixture
def avr():
    return RecordingAvr()


class LoopStream:
    """A pyserial-like stream wired straight to a device engine (feed -> answer bytes);
    ``damage`` flips a bit in that many of the next answers."""

    def __init__(self, engine, damage=0):
        self.engine = engine
        self.pending = bytearray()
        self.damage = damage
        self.closed = False
        self.writes = 0

    def write(self, data):
        self.writes += 1
        answer = bytearray(self.engine.feed(bytes(data)))
        if answer and self.damage:
            self.damage -= 1
            answer[-1] ^= 0x01
        self.pending += answer
        return len(data)

    def read(self, n=1):
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out

    @property
    def in_waiting(self):
        return len(self.pending)

    def reset_input_buffer(self):
        self.pending.clear()

    def close(self):
        self.closed = True
