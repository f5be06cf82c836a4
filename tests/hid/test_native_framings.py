"""One native command set, two framings: HID-native reports and MIDI SysEx say the same thing.

The wire formats differ (and are pinned by the other tests here and in
tests/midi); what a request means, the info record, the CRC and the
refusals come from bootkit.classes.native for both.
"""

import pytest

from bootkit.classes.hid import protocol as H
from bootkit.classes.hid.device import NativeEngine
from bootkit.classes.midi import protocol as M
from bootkit.classes.midi.device import MidiBootEngine
from bootkit.classes.midi.sysex import frame, from_u7, parse_frame
from bootkit.classes.native import NativeInfo, Op, Refusal, crc32
from bootkit.memory import SimulatedFlash, get_chip


def hid_ask(engine, cmd, arg0=0, arg1=0, data=()):
    engine.out_report(H.native_command(cmd, arg0, arg1))
    for chunk in data:
        engine.out_report(chunk)
    replies = []
    while (r := engine.in_report(64)) is not None:
        replies.append(r)
    return replies


def midi_ask(engine, cmd, payload):
    engine.receive(frame(cmd, 1, payload))
    (reply,) = engine.take_replies()
    return parse_frame(reply[1:-1])


def test_both_framings_frame_the_same_six_requests():
    assert set(H.OPS.values()) == set(Op) == set(M.OPS.values())
    assert len(H.OPS) == len(M.OPS) == len(Op)  # one code per request in each framing


@pytest.mark.parametrize("chip_name", ["atmega32u4", "stm32f103c8"])
def test_identify_is_one_info_record(chip_name):
    chip = get_chip(chip_name)
    hid_info = H.unpack_info(hid_ask(NativeEngine(SimulatedFlash(chip), chip), H.Command.GET_INFO)[0][4:])
    _, _, payload = midi_ask(MidiBootEngine(SimulatedFlash(chip), chip), *M.identify())
    midi_info = M.unpack_info(payload[1:])
    assert isinstance(hid_info, NativeInfo) and isinstance(midi_info, NativeInfo)

    def core(i):
        return i.chip, i.flash_start, i.flash_size, i.app_start, i.app_size, i.page_size, i.protected

    assert core(hid_info) == core(midi_info)
    # each framing reads back what it packs
    assert H.unpack_info(H.pack_info(hid_info)) == hid_info
    assert M.unpack_info(M.pack_info(midi_info)) == midi_info


def test_crc_of_the_application_is_the_same_crc32():
    chip = get_chip("atmega32u4")
    page = bytes(range(128))
    hid_mem, midi_mem = SimulatedFlash(chip), SimulatedFlash(chip)
    hid, midi = NativeEngine(hid_mem, chip), MidiBootEngine(midi_mem, chip)
    assert hid_ask(hid, H.Command.WRITE, 0x100, 128, [page[:64], page[64:]])[-1][1] == H.NativeStatus.OK
    assert midi_ask(midi, *M.write(0x100, page))[0] == M.Cmd.ACK
    expected = crc32(hid_mem.read(hid.app_start, hid.app_end - hid.app_start))
    hid_crc = int.from_bytes(hid_ask(hid, H.Command.CRC, H.CRC_APPLICATION)[0][4:8], "little")
    cmd, _, payload = midi_ask(midi, *M.crc(0, 0))
    assert cmd == M.Cmd.ACK
    assert hid_crc == from_u7(payload[1:6]) == expected


def test_a_write_into_the_bootloader_is_refused_with_one_line_in_both():
    chip = get_chip("atmega32u4")
    hid_mem, midi_mem = SimulatedFlash(chip), SimulatedFlash(chip)
    hid, midi = NativeEngine(hid_mem, chip), MidiBootEngine(midi_mem, chip)
    before = hid_mem.read(chip.boot_start, chip.boot_size)
    (reply,) = hid_ask(hid, H.Command.WRITE, chip.boot_start, 128)
    assert reply[1] == H.NativeStatus.ERROR  # the HID framing folds PROTECTED into ERROR
    cmd, _, payload = midi_ask(midi, *M.write(chip.boot_start, b"\x00" * 128))
    assert cmd == M.Cmd.NAK and payload[1] == Refusal.PROTECTED
    line = f"WRITE 0x{chip.boot_start:X}+128 reaches into the bootloader"
    assert hid.refusals[-1] == line
    assert midi.refusals[-1] == line
    assert hid_mem.read(chip.boot_start, chip.boot_size) == before == midi_mem.read(chip.boot_start, chip.boot_size)


@pytest.mark.parametrize("personality", ["hid", "midi"])
def test_real_time_busy_seconds_reach_the_function(personality):
    """In real-time mode the memory says how long it is busy and never sleeps; neither framing
    reports the wait itself, so each engine hands the seconds to Function.busy, and the
    transport holds the device's next transfer meanwhile (the chip's datasheet figures)."""
    chip = get_chip("atmega32u4")
    memory = SimulatedFlash(chip, realtime=True)
    if personality == "hid":
        from bootkit.classes.hid import bootloader_device

        (fn,) = bootloader_device(memory, chip, dialect="native").functions
        assert hid_ask(fn.engine, H.Command.ERASE)[0][1] == H.NativeStatus.OK
        assert fn.take_busy() == pytest.approx(chip.timing.full_erase_ms / 1000)
        hid_ask(fn.engine, H.Command.WRITE, 0, 64, [bytes(64)])
    else:
        from bootkit.classes.midi import bootloader_device

        (fn,) = bootloader_device(memory, chip).functions
        layout = memory.layout
        sector = layout.flash.sector_at(0)[1]
        assert midi_ask(fn.engine, *M.erase(0, 2 * sector))[0] == M.Cmd.ACK
        erase = chip.timing.erase_time(sector, layout.flash.smallest_sector) / 1000
        assert fn.take_busy() == pytest.approx(2 * erase)
        midi_ask(fn.engine, *M.write(0, bytes(64)))
    assert fn.take_busy() == pytest.approx(chip.timing.program_ms / 1000)


def test_real_time_busy_seconds_of_a_played_file_reach_the_function():
    """The one-way file's pages erase their sector on first touch (SessionWriter) and program:
    those seconds reach Function.busy too, and END's manifest."""
    from bootkit.classes.midi import bootloader_device, midifile
    from bootkit.formats.image import Image

    chip = get_chip("atmega32u4")
    memory = SimulatedFlash(chip, realtime=True)
    (fn,) = bootloader_device(memory, chip).functions
    image = Image([(0, bytes(range(256)))])
    for ev in midifile.file_events(image, chip):
        fn.engine.receive(ev.data)
    assert memory.app_valid
    flash = memory.layout.flash
    sectors = {flash.sector_at(a) for a in range(0, 256, chip.page_size)}
    erase_ms = sum(chip.timing.erase_time(size, flash.smallest_sector) for _, size in sectors)
    pages = 256 // chip.page_size
    expected = (erase_ms + pages * chip.timing.program_ms + chip.timing.manifest_ms) / 1000
    assert fn.take_busy() == pytest.approx(expected)
