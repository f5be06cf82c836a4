"""The one-way file: what encode writes is what mido reads, and replaying it flashes the image."""

import io

import mido
import pytest

from bootkit.classes.common import ImageRejected
from bootkit.classes.midi import host, midifile
from bootkit.classes.midi import protocol as P
from bootkit.classes.midi.device import MidiBootEngine
from bootkit.formats.image import Image
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.samples import sample_image


def _image(chip):
    return sample_image(chip, 3 * 1024 + 5, 0x1800, 77)


def _engine(chip):
    mem = SimulatedFlash(chip)
    left = []
    return MidiBootEngine(mem, chip, signal=lambda kind, reason="", delay=0.0: left.append(kind)), mem, left


def _expected_flash(chip, image):
    first, count = midifile.span_pages(image, chip)
    return first, image.tobytes(first, first + count * chip.page_size)


def _parse(mid):
    buf = io.BytesIO()
    mid.save(file=buf)
    buf.seek(0)
    return mido.MidiFile(file=buf)


@pytest.mark.parametrize("encoding", ["sysex", "notes"])
@pytest.mark.parametrize("chip_name", ["atmega32u4", "rp2040"])
def test_mid_parses_into_exactly_the_intended_messages_and_times(encoding, chip_name):
    chip = get_chip(chip_name)
    image = _image(chip)
    events = midifile.file_events(image, chip, encoding=encoding)
    back = _parse(midifile.encode_midi(image, chip, encoding=encoding))
    assert back.ticks_per_beat == midifile.TICKS_PER_BEAT and back.type == 0
    tick, got, tempos = 0, [], []
    for msg in back.tracks[0]:
        tick += msg.time
        if msg.is_meta:
            if msg.type == "set_tempo":
                tempos.append(msg.tempo)
            continue
        got.append((tick, bytes(msg.bytes())))
    assert tempos == [midifile.TEMPO]
    assert got == [(e.tick, e.data) for e in events]
    assert events[0].tick > 0  # never at time 0 (Logic replays it)
    # seconds as a player computes them
    assert sum(m.time for m in back) == pytest.approx(events[-1].seconds, abs=1e-6)


def test_pacing_leaves_each_page_its_erase_and_program_time():
    chip = get_chip("rp2040")  # 256-byte pages in 4 KiB sectors: erase on every 16th page
    image = sample_image(chip, 10 * 1024, 0, 0)
    events = midifile.file_events(image, chip, margin=0.0, slack_ms=0.0)
    erased = set()
    for ev, nxt in zip(events, events[1:]):
        if ev.what.startswith("PAGE"):
            address = int(ev.what.split()[2], 16)
            need = midifile.wire_ms(len(ev.data)) + midifile.page_ms(chip, address, erased)
            assert (nxt.tick - ev.tick) * midifile.TICK_SECONDS * 1000 >= need - 1e-9
    gaps = [b.tick - a.tick for a, b in zip(events[1:], events[2:])]
    fresh = set()
    erase_ms = midifile.page_ms(chip, chip.flash_start, fresh) - midifile.page_ms(chip, chip.flash_start + 256, fresh)
    erase_ticks = erase_ms / 1000 / midifile.TICK_SECONDS
    assert erase_ticks > 0
    assert max(gaps) - min(gaps) >= erase_ticks - 1  # sector erases get the long gaps


# MIDI 1.0 DIN: 31250 baud, 10 bits a byte
DIN_MS_PER_BYTE = 10 / 31250 * 1000


@pytest.mark.parametrize("encoding", ["sysex", "notes"])
@pytest.mark.parametrize("chip_name", ["atmega32u4", "rp2040"])
def test_a_file_never_outruns_a_din_cable(encoding, chip_name):
    """Item 9 of issue 16: a player sends each event at its time; no event may start before the
    previous one has crossed a 31250-baud DIN cable, and a frame's device time comes after its
    last byte.  (aplaymidi of an unpaced notes file overran snd-usb-audio's buffer.)"""
    chip = get_chip(chip_name)
    image = Image([(chip.flash_start, bytes(range(256)) * 3 + b"\x01\x02\x03")])
    events = midifile.file_events(image, chip, encoding=encoding, margin=0.0, slack_ms=0.0)
    frame_end = {}
    for ev in events:
        frame_end[ev.what] = ev
    erased = set()
    for ev, nxt in zip(events, events[1:]):
        gap_ms = (nxt.tick - ev.tick) * midifile.TICK_SECONDS * 1000
        assert gap_ms >= len(ev.data) * DIN_MS_PER_BYTE - 1e-9, (ev.what, nxt.what)
        if nxt.what != ev.what and ev.what.startswith("PAGE"):
            device = midifile.page_ms(chip, int(ev.what.split()[2], 16), erased)
            assert gap_ms >= len(ev.data) * DIN_MS_PER_BYTE + device - 1e-9
    # the whole file is at least its bytes on DIN
    total = sum(len(e.data) for e in events[:-1]) * DIN_MS_PER_BYTE / 1000
    assert midifile.play_seconds(events) >= total


def test_syx_interval_covers_the_largest_frame_on_din_and_the_slowest_page():
    chip = get_chip("atmega32u4")
    image = sample_image(chip, 2048, 0x1000, 10)
    longest = max(len(e.data) for e in midifile.file_events(image, chip))
    need = longest * DIN_MS_PER_BYTE + chip.timing.erase_ms + chip.timing.program_ms
    assert midifile.syx_interval_ms(image, chip, margin=0, slack_ms=0) >= need


def test_encode_refuses_what_the_device_would_never_finish():
    """Item 7: an AVR image without the application's first word (the device erases the whole
    application and keeps control), and a UF2 for another family unless forced."""
    from bootkit.formats.image import FileOrigin

    chip = get_chip("atmega32u4")
    no_vector = Image([(0x100, b"\x00" * 300)])
    for call in (lambda **k: midifile.encode_midi(no_vector, chip, **k),
                 lambda **k: midifile.encode_syx(no_vector, chip, **k),
                 lambda **k: midifile.encode_midi(no_vector, chip, encoding="notes", **k)):
        with pytest.raises(ImageRejected, match="first word"):
            call()
        with pytest.raises(ImageRejected, match="first word"):
            call(force=True)
    rp = get_chip("rp2040")
    uf2 = Image([(rp.flash_start, b"\x00" * 300)])
    uf2.origin = FileOrigin(format="uf2", path="fw.uf2", uf2_families=(0x16573617,))  # ATmega32's family
    with pytest.raises(ImageRejected, match="family"):
        midifile.encode_midi(uf2, rp)
    assert midifile.encode_syx(uf2, rp, force=True)


@pytest.mark.parametrize("encoding", ["sysex", "notes"])
def test_replaying_the_file_into_the_engine_gives_the_image(encoding):
    chip = get_chip("atmega32u4")
    image = _image(chip)
    engine, mem, left = _engine(chip)
    mid = _parse(midifile.encode_midi(image, chip, encoding=encoding))
    result = host.play(mid, engine.receive, realtime=False)
    first, expected = _expected_flash(chip, image)
    assert mem.read(first, len(expected)) == expected
    assert mem.app_valid and left == ["leave"]
    assert result.seconds == pytest.approx(midifile.play_seconds(midifile.file_events(image, chip,
                                                                                     encoding=encoding)))


def test_play_honours_the_files_timing():
    chip = get_chip("atmega32u4")
    image = Image([(0, bytes(range(256)) * 2)])
    mid = midifile.encode_midi(image, chip)
    now = [0.0]
    sent = []
    result = host.play(mid, lambda m: sent.append((now[0], m)), clock=lambda: now[0],
                       sleep=lambda s: now.__setitem__(0, now[0] + s))
    events = midifile.file_events(image, chip)
    assert [m for _, m in sent] == [e.data for e in events]
    for (t, _), e in zip(sent, events):
        assert t == pytest.approx(e.seconds, abs=1e-6)
    assert result.messages == len(events)


def test_syx_is_the_same_frames_and_interval_covers_the_slowest_page():
    chip = get_chip("stm32f103c8")
    image = _image(chip)
    syx = midifile.encode_syx(image, chip)
    assert syx == b"".join(e.data for e in midifile.file_events(image, chip))
    engine, mem, _ = _engine(chip)
    engine.receive(syx)
    assert mem.app_valid
    assert midifile.syx_interval_ms(image, chip, margin=0, slack_ms=0) >= chip.timing.erase_ms + chip.timing.program_ms
    with pytest.raises(ValueError):
        midifile.encode_syx(image, chip, encoding="notes")


def test_encode_refuses_images_that_do_not_fit():
    chip = get_chip("atmega32u4")  # bootloader in the top 4 KiB
    with pytest.raises(ImageRejected):
        midifile.encode_midi(Image([(chip.boot_start - 16, b"\x00" * 32)]), chip)
    with pytest.raises(ImageRejected):
        midifile.encode_midi(Image(), chip)


def test_file_for_another_chip_is_refused_and_identify_says_so():
    image = _image(get_chip("atmega32u4"))
    engine, mem, left = _engine(get_chip("atmega32u4"))
    engine.receive(midifile.encode_syx(image, get_chip("atmega328p")))  # same pages, another chip
    assert mem.flash_bytes() == b"\xff" * len(mem.flash_bytes())
    assert not mem.app_valid and not left
    info = engine.info()
    assert info.flags & P.FLAG_REFUSED_FILE and not info.app_valid
