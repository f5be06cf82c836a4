"""A MIDI bootloader in front of an AVR109 bootloader on a pty (issue 23 item 4):
`bootkit flash --via midi` programs the AVR109 device (`serve cdc` on a pseudo-terminal)
through `--target serial:PTY,avr109`."""

from __future__ import annotations

import pytest

from bootkit.api import load_image
from bootkit.classes.cdc.memory import Avr109Memory
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.memory import get_chip
from bootkit.memory.backends import open_target

U4 = get_chip("atmega32u4")


def test_midi_in_front_of_avr109_on_a_pty(usbip_servers, served, tmp_path, capsys):
    fw = tmp_path / "fw.hex"
    assert main(["sample", "atmega32u4", "-o", str(fw)]) == 0
    image = load_image(fw)
    back_file = tmp_path / "back.bin"
    back = served("cdc", "--chip", "atmega32u4", "--image", str(back_file), "--transport", "pty")
    assert back.where.startswith("/dev/")
    memory = open_target(f"serial:{back.where},avr109", U4)
    assert isinstance(memory, Avr109Memory)
    assert memory.layout.protected == ((0x7000, 0x8000),)  # from the signature: LUFA's boot section
    front = Emulator(U4, "midi", backend=memory)
    s = usbip_servers([front.target])
    try:
        assert main(["flash", str(fw), "--via", "midi", "--usbip", f"127.0.0.1:{s.port}", "--no-progress"]) == 0
        assert "read back and CRC verified" in capsys.readouterr().out
        assert memory.app_valid  # 'L' and 'E' acknowledged
    finally:
        front.close()
    out = back.stop()
    assert "flash written back (application valid)" in out
    flash = back_file.read_bytes()
    expected = bytearray(b"\xff" * 0x7000)
    for a, d in image.segments:
        expected[a:a + len(d)] = d
    assert flash[:0x7000] == bytes(expected)


def test_serial_spec_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^--target serial:/dev/null,stk500: no serial memory adapter for dialect "
                                         r"'stk500' \(registered: avr109"):
        open_target("serial:/dev/null,stk500", U4)
    with pytest.raises(OSError, match=r"^cannot open /nonexistent"):
        open_target("serial:/nonexistent,avr109", U4)
