"""A UF2 drive in front of an AVR on an ISP link (issue 23 item 4: MSC in front of ISP,
an emulated ATtiny85): the drop programs the AVR through Chip Erase and page writes."""

from __future__ import annotations

import pytest

from bootkit.api import load_image
from bootkit.cli import main
from bootkit.emulator import Emulator
from bootkit.memory import EraseFault, get_chip
from bootkit.memory.backends import open_target
from bootkit.memory.backends.isp import IspMemory

T85 = get_chip("attiny85")


def test_msc_in_front_of_an_emulated_attiny85(usbip_servers, tmp_path, capsys):
    fw = tmp_path / "fw.hex"
    assert main(["sample", "attiny85", "-o", str(fw)]) == 0
    image = load_image(fw)
    back = tmp_path / "t85.bin"
    back.write_bytes(bytes(range(256)) * (T85.flash_size // 256))  # old contents: the chip erase must clear them
    memory = open_target(f"isp:emulated:attiny85,{back}", T85)
    assert isinstance(memory, IspMemory)
    assert memory.layout.flash.sectors == ((128, 64),)  # from the signature 1E 93 0B: 8 KiB of 64-byte pages
    # ISP reaches all of flash: the front describes the AVR without a boot region (serve does the same)
    assert memory.chip.layout().protected == () and memory.layout.protected == ()
    front = Emulator(memory.chip, "msc", backend=memory)
    s = usbip_servers([front.target])
    try:
        assert main(["flash", str(fw), "--via", "msc", "--usbip", f"127.0.0.1:{s.port}", "--no-progress"]) == 0
        assert "CURRENT.UF2 read back: 3373 bytes match" in capsys.readouterr().out
        assert memory.app_valid
    finally:
        front.close()  # closes the link: the emulated AVR writes its image back
    flash = back.read_bytes()
    expected = bytearray(b"\xff" * T85.flash_size)
    for a, d in image.segments:
        expected[a:a + len(d)] = d
    assert flash == bytes(expected)


def test_a_page_programmed_in_this_update_cannot_be_erased_again(tmp_path):
    memory = open_target("isp:emulated:attiny85", T85)
    assert isinstance(memory, IspMemory)
    try:
        memory.erase(0)  # Chip Erase
        memory.erase(64)  # known erased: nothing to do
        memory.program(0, b"\x12\x34" * 32)
        memory.flush()
        with pytest.raises(EraseFault, match="ISP erases the whole chip only: page 0x0 was programmed"):
            memory.erase(0)
        assert memory.read(0, 4) == b"\x12\x34\x12\x34"
    finally:
        memory.close()


@pytest.mark.parametrize("spec,message", [
    ("isp:emulated:", "--target isp:emulated:: expected isp:emulated:CHIP[,IMAGE]"),
    ("isp:emulated:nochip", "--target isp:emulated:nochip: unknown chip 'nochip'"),
    ("isp:emulated:stm32f411", "--target isp:emulated:stm32f411: stm32f411 is not a classic AVR"),
    ("isp:jtag", "--target isp:jtag: unknown ISP link 'jtag' (emulated:CHIP, usbasp, stk500v2:PORT)"),
])
def test_isp_spec_errors(spec, message):
    with pytest.raises(ValueError) as exc:
        open_target(spec, T85)
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_another_avr_on_the_link_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^the AVR on the link is attiny85 \(signature 1e 93 0b\), not atmega328p$"):
        open_target("isp:emulated:attiny85", get_chip("atmega328p"))


def test_serve_msc_target_isp_from_the_command_line(served, tmp_path, capsys):
    """`bootkit serve msc --chip attiny85 --target isp:emulated:attiny85,FILE --transport usbip`, then
    a drop through it: the AVR's image file holds the firmware once serve stops."""
    fw = tmp_path / "fw.hex"
    assert main(["sample", "attiny85", "-o", str(fw)]) == 0
    image = load_image(fw)
    back = tmp_path / "t85.bin"
    front = served("msc", "--chip", "attiny85", "--target", f"isp:emulated:attiny85,{back}", "--listen", "127.0.0.1:0")
    assert main(["flash", str(fw), "--via", "msc", "--usbip", f"127.0.0.1:{front.port}", "--no-progress"]) == 0
    front.stop()
    flash = back.read_bytes()
    assert all(flash[a:a + len(d)] == d for a, d in image.segments)
