"""A LUFA printer bootloader in front of an Atmel FLIP device over USB/IP (issue 23 item 4):
`bootkit flash --via printer` programs the FLIP device's flash through the printer."""

from __future__ import annotations

from bootkit.api import load_image
from bootkit.classes.dfu.memory import FlipMemory
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.memory import get_chip
from bootkit.memory.backends import open_target

U4 = get_chip("atmega32u4")


def test_printer_in_front_of_flip(usbip_servers, tmp_path, capsys):
    fw = tmp_path / "fw.hex"
    assert main(["sample", "atmega32u4", "-o", str(fw)]) == 0
    image = load_image(fw)
    back = Emulator(U4, "dfu", options={"dialect": "flip"}, image=tmp_path / "back.bin")
    # old contents: FLIP's chip erase must clear them (the front erases before it programs)
    back.memory.poke(0, bytes(range(256)) * 16)
    s1 = usbip_servers([back.target])
    memory = open_target(f"usbip://127.0.0.1:{s1.port}", U4)
    assert isinstance(memory, FlipMemory)
    assert memory.layout.protected == ((0x7000, 0x8000),)  # LUFA's 4 KiB boot section stays out of reach
    front = Emulator(U4, "printer", backend=memory)
    s2 = usbip_servers([front.target])
    try:
        assert main(["flash", str(fw), "--via", "printer", "--usbip", f"127.0.0.1:{s2.port}", "--no-progress"]) == 0
        assert "verified" in capsys.readouterr().out
        assert back.events == ["leave: FLIP start application"]  # confirmed, and left running its application
        assert back.mode == "application" and memory.app_valid
        flash = back.memory.flash_bytes()
        expected = bytearray(b"\xff" * 0x7000)
        for a, d in image.segments:
            expected[a:a + len(d)] = d
        assert flash[:0x7000] == bytes(expected)
    finally:
        front.close()
        back.close()


def test_flip_memory_erases_a_page_it_wrote_by_writing_it_again(usbip_servers):
    back = Emulator(U4, "dfu", options={"dialect": "flip"})
    s1 = usbip_servers([back.target])
    memory = open_target(f"usbip://127.0.0.1:{s1.port}", U4)
    assert isinstance(memory, FlipMemory)
    try:
        memory.erase(0)  # FLIP's chip erase
        memory.program(0, b"\x00" * 128)
        memory.program(300, b"\x12\x34")  # another page: the first goes out whole
        memory.program(256, b"\x56")  # the same page again, before 300: gathered, not lost
        assert memory.read(0, 4) == b"\x00" * 4
        assert memory.read(256, 1) + memory.read(300, 2) == b"\x56\x12\x34"
        # FLIP has no page erase, but LUFA erases each page a program command reaches
        # (BootloaderDFU.c): a page of 0xFF written is the page erased
        memory.erase(0)
        assert memory.read(0, 128) == b"\xff" * 128
        assert memory.read(256, 1) == b"\x56"  # the other page untouched
    finally:
        memory.close()
        back.close()
