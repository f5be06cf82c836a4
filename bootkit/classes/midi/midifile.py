"""The one-way update: a Standard MIDI File (or a .syx) that any player plays into the device.

As Mutable Instruments' MIDI bootloader does it (hex2sysex.py: one SysEx
page per event, a fixed delay, the first event not at time 0 because
Logic replays the first SysEx on every stop/play), but paced for the
slowest path a player may use, a DIN MIDI cable (MIDI 1.0: 31250 baud,
10 bits a byte, so 0.32 ms a byte), and per page from the chip's datasheet
figures.  After a frame, the next one waits for the frame's bytes to cross
a DIN cable, plus the page's program time and the sector erase when the
page is the first the update touches in its sector, times (1 + ``margin``),
plus ``slack_ms``.  In the notes encoding each Note On of a frame gets its
own 1 ms (three bytes on DIN): a player must never hand a driver a burst
it has to buffer (snd-usb-audio through the ALSA sequencer drops events
with "seq_midi: MIDI output buffer overrun" when it cannot keep up).

The file holds BEGIN (chip, span, page count, CRC-32 of the span), one
PAGE per page of the span from the image's first page to its last (gaps
as 0xFF, so the device's CRC of the span is the image placed on erased
flash), and END (page count and CRC again).  The device manifests only
when every page arrived and the CRC matches.

``encoding="notes"`` carries the same frames in Note On events on channel
16 (one 7-bit byte per event, velocity 0x7F/0x40/0x20 for first/middle/
last byte, never 0), for apps and OSes that drop SysEx.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...formats.image import Image
from ...memory import Chip
from ..common import ImageRejected, check_ranges, preflight
from ..native import crc32
from . import protocol as P
from .notes import body_to_notes
from .sysex import frame_body

# One tick = 100 us: 10000 ticks per beat at 60 bpm (tempo 1 000 000 us per beat).
TICKS_PER_BEAT = 10000
TEMPO = 1_000_000
TICK_SECONDS = TEMPO / 1e6 / TICKS_PER_BEAT
LEAD_TICKS = 10  # 1 ms: the first event is not at time 0 (hex2sysex.py's note on Logic)
ENCODINGS = ("sysex", "notes")
# MIDI 1.0 DIN: 31250 baud, a start bit, 8 data bits and a stop bit per byte
DIN_BYTES_PER_SECOND = 3125
WIRE_MS_PER_BYTE = 1000 / DIN_BYTES_PER_SECOND  # 0.32 ms
NOTE_BYTES = 3  # a Note On without running status (a player may or may not use it)
NOTE_TICKS = math.ceil(NOTE_BYTES * WIRE_MS_PER_BYTE / (TICK_SECONDS * 1000) - 1e-9)  # 10 ticks, 1 ms


@dataclass(frozen=True)
class Event:
    """One message of the file at an absolute time in ticks; ``what`` names it for people and tests."""

    tick: int
    data: bytes  # the complete MIDI message (F0 ... F7, or a Note On)
    what: str

    @property
    def seconds(self) -> float:
        return self.tick * TICK_SECONDS


def span_pages(image: Image, chip: Chip) -> tuple[int, int]:
    """(first page address, page count) of the pages from the image's first to its last."""
    ps = chip.page_size
    base = chip.flash_start
    first = base + (image.start - base) // ps * ps
    last = base + -(-(image.end - base) // ps) * ps
    return first, (last - first) // ps


def validate(image: Image, chip: Chip, *, force: bool = False) -> None:
    """The checks a host does before anything goes out: data, fit, bootloader region, then
    common.preflight (a UF2 of another family, which ``force`` lifts; on AVR/XMEGA an image
    without the application's first word, which it does not: that device would never finish)."""
    _check_fit(image, chip)
    preflight(image, chip, force=force, memory="flash")


def _check_fit(image: Image, chip: Chip) -> None:
    if not image:
        raise ImageRejected("the image is empty")
    layout = chip.layout()
    check_ranges(image, layout.application_ranges("flash"), layout.protected, chip.name)
    first, count = span_pages(image, chip)
    check_ranges(Image([(first, b"\xff" * (count * chip.page_size))]), layout.application_ranges("flash"),
                 layout.protected, f"{chip.name} (the image's pages)")


def page_ms(chip: Chip, address: int, erased: set[int]) -> float:
    """Datasheet time the device spends on the page at ``address``: its program time, plus the
    erase of its sector when the update has not touched that sector yet (``erased`` is updated)."""
    region = chip.layout().flash
    start, size = region.sector_at(address)
    ms = chip.timing.program_ms
    if start not in erased:
        erased.add(start)
        ms += chip.timing.erase_time(size, min(s for _, s in region.sectors))
    return ms


def frames(image: Image, chip: Chip, *, force: bool = False) -> list[tuple[bytes, str, float]]:
    """(frame body, name, device ms) of the update in order: BEGIN, PAGE..., END."""
    validate(image, chip, force=force)
    return _frames(image, chip)


def _frames(image: Image, chip: Chip) -> list[tuple[bytes, str, float]]:
    first, count = span_pages(image, chip)
    ps = chip.page_size
    span = image.tobytes(first, first + count * ps)
    image_crc = crc32(span)
    cmd, payload = P.begin(chip.name, first, ps, count, image_crc)
    out = [(frame_body(cmd, 0, payload), "BEGIN", 0.0)]
    erased: set[int] = set()
    for seq in range(count):
        address = first + seq * ps
        cmd, payload = P.page(seq, address, span[seq * ps:(seq + 1) * ps])
        out.append((frame_body(cmd, seq & 0x7F, payload), f"PAGE {seq} 0x{address:X}",
                    page_ms(chip, address, erased)))
    cmd, payload = P.end(count, image_crc)
    out.append((frame_body(cmd, 0, payload), "END", chip.timing.manifest_ms))
    return out


def _ticks(ms: float) -> int:
    return max(1, math.ceil(ms / (TICK_SECONDS * 1000) - 1e-9))


def wire_ms(message_bytes: int) -> float:
    """Time ``message_bytes`` take on a DIN MIDI cable (the slowest path a player may use)."""
    return message_bytes * WIRE_MS_PER_BYTE


def gap_ms(last_message_bytes: int, device_ms: float, margin: float, slack_ms: float) -> float:
    """From a frame's last message to the next frame: its bytes on DIN, then the device's time."""
    return wire_ms(last_message_bytes) + device_ms * (1 + margin) + slack_ms


def file_events(image: Image, chip: Chip, *, encoding: str = "sysex", margin: float = 0.25,
                slack_ms: float = 0.5, force: bool = False) -> list[Event]:
    """Every message of the file with its absolute tick: what :func:`encode_midi` writes.

    Refuses (ImageRejected) what the device would refuse or never finish, before anything
    is encoded: see :func:`validate`."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r} (choose from {', '.join(ENCODINGS)})")
    if margin < 0 or slack_ms < 0:
        raise ValueError("margin and slack_ms cannot be negative")
    return _events(frames(image, chip, force=force), encoding, margin, slack_ms)


def _events(framed, encoding: str, margin: float, slack_ms: float) -> list[Event]:
    events = []
    tick = LEAD_TICKS
    for body, what, ms in framed:
        if encoding == "sysex":
            data = b"\xf0" + body + b"\xf7"
            events.append(Event(tick, data, what))
            last = len(data)
        else:
            notes = body_to_notes(body)
            for i, note in enumerate(notes):
                if i:
                    tick += NOTE_TICKS  # the previous Note On has crossed a DIN cable
                events.append(Event(tick, note, what))
            last = NOTE_BYTES
        tick += _ticks(gap_ms(last, ms, margin, slack_ms))
    return events


def play_seconds(events: list[Event]) -> float:
    """How long a player takes: the time of the last event."""
    return events[-1].seconds if events else 0.0


def encode_midi(image: Image, chip: Chip, *, encoding: str = "sysex", margin: float = 0.25,
                slack_ms: float = 0.5, name: str | None = None, force: bool = False):
    """The update as a type-0 Standard MIDI File (a ``mido.MidiFile``; ``.save(path)`` writes it)."""
    import mido

    events = file_events(image, chip, encoding=encoding, margin=margin, slack_ms=slack_ms, force=force)
    mid = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    first, count = span_pages(image, chip)
    title = name or f"bootkit firmware update for {chip.name}"
    track.append(mido.MetaMessage("track_name", name=title, time=0))
    track.append(mido.MetaMessage("text", text=(
        f"{count} pages of {chip.page_size} bytes from 0x{first:X}; {encoding}; play at normal speed "
        f"into the device's MIDI port (aplaymidi -p PORT, any DAW); {play_seconds(events):.1f} s"), time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=TEMPO, time=0))
    now = 0
    for ev in events:
        msg = mido.Message.from_bytes(list(ev.data))
        track.append(msg.copy(time=ev.tick - now))
        now = ev.tick
    return mid


def encode_syx(image: Image, chip: Chip, *, encoding: str = "sysex", margin: float = 0.25,
               slack_ms: float = 0.5, force: bool = False) -> bytes:
    """The same frames as a raw .syx (no timing: send with a delay of at least
    :func:`syx_interval_ms` between messages, e.g. ``amidi -s fw.syx -i MS``)."""
    if encoding != "sysex":
        raise ValueError("a .syx file holds SysEx only: use a .mid for the notes encoding")
    return b"".join(ev.data for ev in file_events(image, chip, margin=margin, slack_ms=slack_ms, force=force))


def syx_interval_ms(image: Image, chip: Chip, *, margin: float = 0.25, slack_ms: float = 0.5,
                    force: bool = False) -> int:
    """The one delay between .syx messages that is long enough for every frame (the slowest one).

    It counts the frame's bytes on a DIN cable too: amidi drains each message before its
    interval (alsa-utils amidi.c), but a drain on a USB-MIDI interface returns when the bytes
    have left the host, not when the interface's DIN output has sent them.  A measurement
    only: it does not refuse the image (:func:`encode_syx` did; ``force`` is accepted alike)."""
    _check_fit(image, chip)
    worst = max(gap_ms(len(body) + 2, ms, margin, slack_ms) for body, _, ms in _frames(image, chip))
    return math.ceil(worst - 1e-9)


def flash_ms(image: Image, chip: Chip) -> float:
    """The sum of the datasheet program (+ first-touch erase) times of the file's pages."""
    _check_fit(image, chip)
    return sum(ms for _, what, ms in _frames(image, chip) if what.startswith("PAGE"))


__all__ = ["Event", "ENCODINGS", "TICKS_PER_BEAT", "TEMPO", "TICK_SECONDS", "DIN_BYTES_PER_SECOND",
           "WIRE_MS_PER_BYTE", "NOTE_TICKS", "span_pages", "validate", "wire_ms", "gap_ms",
           "frames", "file_events", "play_seconds", "encode_midi", "encode_syx", "syx_interval_ms", "flash_ms"]
