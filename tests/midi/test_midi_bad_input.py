"""Bad input: damaged frames, pages out of order or repeated, unrelated traffic, wrong chip."""

import random

import pytest

from bootkit.classes.midi import midifile
from bootkit.classes.midi import protocol as P
from bootkit.classes.midi.notes import VEL_FIRST
from bootkit.classes.midi.sysex import frame, parse_frame
from bootkit.classes.native import Refusal
from bootkit.classes.midi.device import MidiBootEngine
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.samples import sample_image

CHIP = get_chip("atmega32u4")


def _engine(chip=CHIP):
    mem = SimulatedFlash(chip)
    boot = bytes(random.Random(1).getrandbits(8) for _ in range(chip.boot_size))
    mem.poke(chip.boot_start, boot)
    return MidiBootEngine(mem, chip), mem, boot


def _replies(engine):
    out = []
    for r in engine.take_replies():
        out.append(parse_frame(r[1:-1]))
    return out


def _events(image, chip=CHIP):
    return midifile.file_events(image, chip)


def _expected(image, chip=CHIP):
    first, count = midifile.span_pages(image, chip)
    return first, image.tobytes(first, first + count * chip.page_size)


IMAGE = sample_image(CHIP, 2 * 1024 + 7, 0x1000, 50)


def test_two_way_bad_checksum_gets_a_nak_and_writes_nothing():
    engine, mem, _ = _engine()
    msg = bytearray(frame(P.Cmd.WRITE, 9, P.write(0, bytes(128))[1]))
    msg[20] ^= 0x01
    engine.receive(bytes(msg))
    ((cmd, tag, payload),) = _replies(engine)
    assert (cmd, tag, payload[0], payload[1]) == (P.Cmd.NAK, 9, P.Cmd.WRITE, Refusal.BAD_CHECKSUM)
    assert mem.read(0, 128) == b"\xff" * 128


def test_one_way_bad_checksum_leaves_the_page_missing_and_the_app_invalid():
    engine, mem, _ = _engine()
    events = _events(IMAGE)
    for ev in events:
        data = ev.data
        if ev.what.startswith("PAGE 2 "):
            data = bytearray(data)
            data[30] ^= 0x04
            data = bytes(data)
        engine.receive(data)
    assert not mem.app_valid
    info = engine.info()
    assert info.pages_missing == 1 and not info.app_valid
    assert engine.session.bad == {2}
    assert not engine.take_replies()  # one-way: never answered


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pages_out_of_sequence_and_repeated_still_give_the_image(seed):
    engine, mem, boot = _engine()
    events = _events(IMAGE)
    begin, pages, end = events[0], events[1:-1], events[-1]
    rng = random.Random(seed)
    shuffled = pages + rng.sample(pages, 5)  # five pages twice
    rng.shuffle(shuffled)
    for ev in [begin, *shuffled, begin, end]:  # BEGIN again (a sequencer replaying it) keeps the session
        engine.receive(ev.data)
    first, expected = _expected(IMAGE)
    assert mem.app_valid and mem.read(first, len(expected)) == expected
    assert mem.read(CHIP.boot_start, CHIP.boot_size) == boot


def test_a_repeated_page_with_other_data_is_refused_without_touching_flash():
    engine, mem, _ = _engine()
    events = _events(IMAGE)
    for ev in events[:-1]:
        engine.receive(ev.data)
    # zeros would program over anything on NOR flash: it must not get there
    engine.receive(frame(P.Cmd.PAGE, 0, P.page(0, 0, b"\x00" * CHIP.page_size)[1]))
    assert "page 0 repeated with other data" in engine.refusals[-1]
    engine.receive(events[-1].data)
    first, expected = _expected(IMAGE)
    assert mem.read(first, len(expected)) == expected
    assert mem.app_valid  # END's CRC matches what is in flash


def test_end_with_a_wrong_crc_keeps_the_application_invalid():
    engine, mem, _ = _engine()
    events = _events(IMAGE)
    for ev in events[:-1]:
        engine.receive(ev.data)
    first, count = midifile.span_pages(IMAGE, CHIP)
    mem.poke(first + 5, b"\x00")  # a bit flipped in flash behind the protocol's back
    engine.receive(events[-1].data)
    assert not mem.app_valid and engine.info().flags & P.FLAG_SESSION_FAILED


def test_unrelated_traffic_is_ignored():
    engine, mem, _ = _engine()
    rng = random.Random(7)
    other = [b"\xf8", b"\xfe", b"\xfa", b"\x90\x3c\x64", b"\x80\x3c\x00", b"\xb0\x07\x64", b"\xe1\x00\x40",
             b"\x9e\x10\x7f", b"\xf0\x41\x10\x42\x12\x40\x00\x7f\x00\x41\xf7", b"\xf0\x7d\x01\x02\xf7",
             b"\xf0\x7e\x7f\x06\x01\xf7", b"\xf2\x00\x00", b"\xc5\x01"]
    stream = bytearray()
    for ev in _events(IMAGE):
        stream += rng.choice(other)
        data = ev.data
        cut = rng.randrange(1, len(data))
        stream += data[:cut] + b"\xf8" + data[cut:]  # clock in the middle of our SysEx
    for i in range(0, len(stream), 13):
        engine.receive(bytes(stream[i:i + 13]))
    first, expected = _expected(IMAGE)
    assert mem.app_valid and mem.read(first, len(expected)) == expected
    assert engine.ignored > 0


def test_notes_on_other_channels_and_musical_notes_on_16_do_not_corrupt_the_notes_encoding():
    engine, mem, _ = _engine()
    stream = []
    for i, ev in enumerate(midifile.file_events(IMAGE, CHIP, encoding="notes")):
        stream.append(ev.data)
        if i % 50 == 0:
            stream.append(bytes([0x90 | (i % 15), 60, 100]))  # channels 1-15
    for m in stream:
        engine.receive(m)
    first, expected = _expected(IMAGE)
    assert mem.app_valid and mem.read(first, len(expected)) == expected
    # a musical note on channel 16 in the middle of a frame drops that frame only
    engine2, mem2, _ = _engine()
    events = midifile.file_events(IMAGE, CHIP, encoding="notes")
    for i, ev in enumerate(events):
        engine2.receive(ev.data)
        if i == 40:
            engine2.receive(bytes([0x9F, 60, 100]))
    assert not mem2.app_valid and engine2.info().pages_missing == 1


def test_writes_into_the_bootloader_are_refused_and_it_stays_intact():
    engine, mem, boot = _engine()
    for cmd, payload in (P.write(CHIP.boot_start, b"\x00" * 128), P.erase(CHIP.boot_start - 128, 256),
                         P.erase(0, CHIP.flash_size), P.write(CHIP.flash_end, b"\x00"),
                         P.write(64, b"\x00" * 128)):
        engine.receive(frame(cmd, 1, payload))
    replies = _replies(engine)
    assert [r[0] for r in replies] == [P.Cmd.NAK] * 5
    assert [r[2][1] for r in replies] == [Refusal.PROTECTED, Refusal.PROTECTED, Refusal.PROTECTED,
                                          Refusal.OUT_OF_RANGE, Refusal.MISALIGNED]
    assert mem.read(CHIP.boot_start, CHIP.boot_size) == boot
    assert mem.read(0, CHIP.boot_start) == b"\xff" * CHIP.boot_start


def test_a_page_before_begin_or_not_belonging_to_the_file_is_ignored():
    engine, mem, _ = _engine()
    engine.receive(frame(P.Cmd.PAGE, 0, P.page(0, 0, b"\x00" * 128)[1]))
    assert mem.read(0, 128) == b"\xff" * 128
    events = _events(IMAGE)
    engine.receive(events[0].data)
    engine.receive(frame(P.Cmd.PAGE, 0, P.page(1, 0, b"\x00" * 128)[1]))  # seq/address disagree
    engine.receive(frame(P.Cmd.PAGE, 0, P.page(500, 500 * 128, b"\x00" * 128)[1]))
    assert mem.read(0, 256) == b"\xff" * 256
    assert len(engine.refusals) == 3


def test_write_twice_acknowledges_a_retry_and_refuses_other_data():
    engine, mem, _ = _engine()
    data = bytes(range(128))
    engine.receive(frame(P.Cmd.WRITE, 1, P.write(0, data)[1]))
    engine.receive(frame(P.Cmd.WRITE, 2, P.write(0, data)[1]))
    engine.receive(frame(P.Cmd.WRITE, 3, P.write(0, bytes(128))[1]))
    replies = _replies(engine)
    assert [r[0] for r in replies] == [P.Cmd.ACK, P.Cmd.ACK, P.Cmd.NAK]
    assert replies[2][2][1] == Refusal.NOT_ERASED
    assert mem.read(0, 128) == data


def _notes():
    return [ev.data for ev in midifile.file_events(IMAGE, CHIP, encoding="notes")]


def _first_middle_last(notes, frame_no):
    """Indexes of the first, a middle and the last Note On of the frame_no-th frame."""
    firsts = [i for i, n in enumerate(notes) if n[2] == VEL_FIRST]
    a = firsts[frame_no]
    b = firsts[frame_no + 1] - 1
    return a, (a + b) // 2, b


@pytest.mark.parametrize("damage", ["drop first", "drop middle", "drop last", "swap two middles",
                                    "repeat a middle", "drop last and next first"])
def test_a_lost_or_reordered_note_on_is_detected_and_identify_says_so(damage):
    """Item 9 of issue 16: Note On events lost or out of order on the way (a player's overrun)
    never give a valid application, and IDENTIFY counts the damage and says how the file ended."""
    engine, mem, _ = _engine()
    notes = _notes()
    a, m, z = _first_middle_last(notes, 5)  # a PAGE frame
    if damage == "drop first":
        del notes[a]
    elif damage == "drop middle":
        del notes[m]
    elif damage == "drop last":
        del notes[z]
    elif damage == "swap two middles":
        notes[m], notes[m + 1] = notes[m + 1], notes[m]
        assert notes[m] != notes[m + 1]
    elif damage == "repeat a middle":
        notes.insert(m, notes[m])
    else:
        del notes[z:z + 2]  # this frame's last and the next frame's first: two frames run together
    for n in notes:
        engine.receive(n)
    info = engine.info()
    assert not mem.app_valid and not info.app_valid
    assert info.damaged >= 1
    assert info.pages_missing >= 1
    assert info.status.startswith(f"the file ended with {info.pages_missing} of ")
    # what IDENTIFY carries on the wire
    assert P.unpack_info(P.pack_info(info)) == info


def test_identify_without_the_new_fields_still_reads():
    """A device that does not send the damaged count and status (the fields are optional)."""
    engine, _, _ = _engine()
    info = engine.info()
    old = P.pack_info(info)[:-(3 + 1 + len(info.status))]
    back = P.unpack_info(old)
    assert back.damaged == 0 and back.status == "" and back.chip == CHIP.name


@pytest.mark.parametrize("damage", ["lose a byte", "lose the F7", "swap two bytes"])
def test_a_damaged_sysex_frame_of_the_file_is_counted_and_named(damage):
    """The SysEx encoding gets the same check: a frame that lost a byte (its F7 too) or has two
    swapped never becomes data, and IDENTIFY counts it."""
    engine, mem, _ = _engine()
    frames = [ev.data for ev in _events(IMAGE)]
    f = bytearray(frames[4])
    if damage == "lose a byte":
        del f[20]
    elif damage == "lose the F7":
        del f[-1]
    else:
        f[20], f[21] = f[21], f[20]
        assert f[20] != f[21]
    frames[4] = bytes(f)
    engine.receive(b"".join(frames))
    info = engine.info()
    assert not mem.app_valid and info.damaged == 1 and info.pages_missing == 1
    assert info.status.startswith("the file ended with 1 of ")
