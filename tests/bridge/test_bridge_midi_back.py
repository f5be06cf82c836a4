"""Two-way MIDI SysEx as a memory back-end (issue 23): `--target usbip://` to a MIDI
bootloader served over USB/IP goes through the ``usb.midi`` adapter."""

from __future__ import annotations

import pytest

from bootkit.api import load_image
from bootkit.classes.midi.memory import MidiMemory
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.memory import get_chip
from bootkit.memory.backends import BackendFault, open_target

OLD = bytes(range(256))


@pytest.mark.parametrize("chip_name,front", [("atmega32u4", "printer"), ("atmega32u4", "msc"),
                                             ("stm32f411", "msc")])
def test_a_front_in_front_of_midi_sysex(usbip_servers, tmp_path, capsys, chip_name, front):
    chip = get_chip(chip_name)
    fw = tmp_path / "fw.hex"
    assert main(["sample", chip_name, "-o", str(fw)]) == 0
    image = load_image(fw)
    back = Emulator(chip, "midi")
    s1 = usbip_servers([back.target])
    memory = open_target(f"usbip://127.0.0.1:{s1.port}", chip)
    assert isinstance(memory, MidiMemory)
    assert memory.layout.flash.sectors == chip.layout().flash.sectors  # IDENTIFY named the chip given
    assert memory.layout.protected == back.memory.layout.protected
    engine = Emulator(chip, front, backend=memory)
    s2 = usbip_servers([engine.target])
    try:
        assert main(["flash", str(fw), "--via", front, "--usbip", f"127.0.0.1:{s2.port}", "--no-progress"]) == 0
        assert "verified" in capsys.readouterr().out
        assert memory.app_valid  # BOOT ACKed
        flash = back.memory.flash_bytes()
        for a, d in image.segments:
            o = a - chip.flash_start
            assert flash[o:o + len(d)] == d
    finally:
        engine.close()
        back.close()


def test_a_page_written_twice_and_a_vanished_midi_target(usbip_servers):
    chip = get_chip("atmega32u4")
    back = Emulator(chip, "midi")
    s = usbip_servers([back.target])
    memory = open_target(f"usbip://127.0.0.1:{s.port}", chip)
    assert isinstance(memory, MidiMemory)
    page = memory.page_size
    memory.erase(0)
    memory.erase(page)
    memory.program(2, b"\x11" * (page - 2))
    memory.program(page, b"\x22" * page)  # the first page goes out
    memory.program(0, b"\x0c\x94")  # written again: its sector read, erased, written again
    assert memory.read(0, 4) == b"\x0c\x94\x11\x11"
    assert back.memory.flash_bytes()[:page + 2] == b"\x0c\x94" + b"\x11" * (page - 2) + b"\x22\x22"
    memory.program(2 * page, b"\x33" * page)
    s.close()
    with pytest.raises(BackendFault, match="^MIDI target"):
        memory.manifest()
    assert not memory.app_valid
    memory.close()
    back.close()
