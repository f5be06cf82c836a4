"""AVRprog over the programmers' links: bootkit as programmer AND target, no avrdude.

The same Adafruit-style calls drive an emulated AVR through our STK500 v2 programmer on a
pseudo-terminal (Stk500v2Link: its native CMD_PROGRAM_FLASH_ISP / CMD_READ_FLASH_ISP) and
through our USBasp on the in-process bus (UsbaspLink: FUNC_WRITEFLASH / FUNC_READFLASH), with
real-time programming delays, so the bulk operations those links override are the ones used.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from bootkit.formats import Image, save
from bootkit.isp import AVRprog
from bootkit.isp.errors import IspInputError
from bootkit.isp.target import EmulatedAvr
from bootkit.memory.chips import EEPROM_BASE
from bootkit.samples import sample_image


@contextmanager
def stk500v2(target: EmulatedAvr):
    from bootkit.classes.isp.device import Stk500v2Programmer
    from bootkit.isp.stk500v2 import Stk500v2Link
    from bootkit.transports.pty import pty_server

    with pty_server(Stk500v2Programmer(target)) as server:
        with Stk500v2Link(server.slave_path, chip=target.chip) as link:
            yield link


@contextmanager
def usbasp(target: EmulatedAvr):
    from bootkit.classes.isp.usbasp_device import usbasp_device
    from bootkit.isp.usbasp import UsbaspLink
    from bootkit.transports.virtual import VirtualBus, get_backend

    bus = VirtualBus()
    bus.attach(usbasp_device(target))
    try:
        with UsbaspLink(backend=get_backend(bus), settle=0) as link:
            yield link
    finally:
        bus.clear()


LINKS = {"stk500v2": stk500v2, "usbasp": usbasp}


@pytest.mark.parametrize("chip", ["attiny85", "atmega2560"])
@pytest.mark.parametrize("via", sorted(LINKS))
def test_avrprog_through_a_programmer(tmp_path, via, chip):
    target = EmulatedAvr(chip, realtime=True)
    # above 64 KiB on the ATmega2560: the links' extended addressing is exercised
    image = sample_image(chip, 3 * 1024 + 1, 0x3F000 if chip == "atmega2560" else 0x1800, 300)
    fw = tmp_path / "fw.hex"
    save(image, fw)
    ee = tmp_path / "ee.hex"
    save(Image([(5, b"eeprom!")]), ee)
    with LINKS[via](target) as link:
        prog = AVRprog(link, progress=False)
        assert prog.verify_sig(chip) is True
        prog.write_fuses(chip, low=0xE2)
        assert prog.verify_fuses(chip, low=0xE2) is True
        assert prog.program_file(chip, fw) is True
        assert prog.verify_file(chip, fw) is True
        assert prog.program_eeprom(chip, ee) is True
        back = prog.read_flash(chip, tmp_path / "back.bin")
        assert prog.read_eeprom(chip, tmp_path / "ee.bin")[5:12] == b"eeprom!"
        with pytest.raises(IspInputError, match="sets bits outside its mask"):
            prog.write_fuses(chip, ext=0x10)
    for start, data in image.segments:
        assert target.memory.peek(start, len(data)) == data
        assert back[start:start + len(data)] == data
    assert target.memory.peek(EEPROM_BASE + 5, 7) == b"eeprom!"
    assert target.fuses()["lfuse"] == 0xE2
    assert not target.programming
