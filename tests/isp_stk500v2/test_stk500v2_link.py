"""Stk500v2Link (the host's STK500 v2 programmer link) against bootkit's own programmer
engine and EmulatedAvr: bootkit as programmer AND target, over a pty and in process."""

from __future__ import annotations

import random

import pytest

from bootkit.classes.isp.device import Stk500v2Programmer
from bootkit.isp import stk500v2 as S
from bootkit.isp.errors import IspError, IspInputError
from bootkit.isp.stk500v2 import Stk500v2Link, sck_duration
from bootkit.isp.target import EmulatedAvr
from bootkit.transports.pty import pty_server

from conftest import LoopStream


@pytest.mark.parametrize("chip", ["attiny85", "atmega2560"])
def test_link_over_a_pty(chip):
    target = EmulatedAvr(chip)
    rng = random.Random(chip)
    with pty_server(Stk500v2Programmer(target)) as server:
        with Stk500v2Link(server.slave_path, chip=target.chip) as link:
            assert link.programmer == "STK500_2"
            link.connect()
            assert link.read_signature() == target.chip.signature
            link.chip_erase()
            page = target.chip.page_size
            # pages at the start and the end of flash (the ATmega2560's top needs the extended address)
            spots = [0, target.chip.flash_size - 2 * page]
            pages = {a: bytes(rng.getrandbits(8) for _ in range(page)) for a in spots}
            for a, data in pages.items():
                link.write_page("flash", a, data, page_size=page)
            for a, data in pages.items():
                assert link.read_memory("flash", a, page) == data
            # an odd start and length, across a page boundary
            assert link.read_memory("flash", page - 3, 7) == pages[0][page - 3:] + b"\xff" * 4
            link.write_page("eeprom", 4, b"\x01\x02\x03", page_size=target.chip.eeprom_page)
            assert link.read_memory("eeprom", 3, 5) == b"\xff\x01\x02\x03\xff"
            link.write_fuse("lfuse", 0xE2)
            link.write_fuse("lock", 0xFC)
            fuses = link.read_fuses()
            assert fuses["lfuse"] == 0xE2 and fuses["lock"] == 0xFC and set(fuses) == {"lfuse", "hfuse", "efuse",
                                                                                       "lock"}
            assert link.transact(b"\x30\x00\x01\x00")[3] == target.chip.signature[1]  # CMD_SPI_MULTI
        assert not target.programming  # close() left programming mode: RESET released
    assert target.memory.peek(0, page) == pages[0]


def test_reads_across_the_64k_word_boundary_of_an_atmega2560():
    target = EmulatedAvr("atmega2560")
    data = bytes(random.Random(3).getrandbits(8) for _ in range(512))
    target.memory.program(0x1FF00, data)
    link = Stk500v2Link(stream=LoopStream(Stk500v2Programmer(target)), chip=target.chip)
    link.connect()
    assert link.read_memory("flash", 0x1FF00, 512) == data
    # without knowing the chip the link still asks for the extended address above 128 KiB
    link.chip = None
    assert link.read_memory("flash", 0x20000, 256) == data[256:]


def test_a_damaged_answer_is_asked_again():
    stream = LoopStream(Stk500v2Programmer(EmulatedAvr("attiny85")))
    link = Stk500v2Link(stream=stream)
    stream.damage = 1
    before = stream.writes
    link.connect()
    assert stream.writes == before + 2


def test_no_answer_is_one_line_naming_the_port():
    class Silent(LoopStream):
        def write(self, data):
            return len(data)

    with pytest.raises(IspError, match=r"^no answer from the STK500 v2 programmer on None to CMD_SIGN_ON "
                                       r"\(5 tries, 0.01 s each\): check the port and the baud rate$"):
        Stk500v2Link(stream=Silent(None), timeout=0.01)


def test_a_target_that_does_not_answer():
    target = EmulatedAvr("attiny85")
    target.spi = lambda frame: b"\xff\xff\xff\xff"  # nothing on the header
    link = Stk500v2Link(stream=LoopStream(Stk500v2Programmer(target)))
    with pytest.raises(IspError, match="target does not answer programming enable through the STK500 v2 "
                                       "programmer on None: check wiring, power, clock"):
        link.connect()


def test_bad_input():
    link = Stk500v2Link(stream=LoopStream(Stk500v2Programmer(EmulatedAvr("attiny85"))))
    with pytest.raises(IspInputError, match="crosses a 64-byte page boundary"):
        link.write_page("flash", 60, b"\x00" * 8, page_size=64)
    with pytest.raises(IspInputError, match="unknown fuse"):
        link.write_fuse("hfuse2", 0)
    with pytest.raises(IspInputError, match="needs a serial port"):
        Stk500v2Link()
    with pytest.raises(IspError, match="cannot open serial port /nonexistent/tty"):
        Stk500v2Link("/nonexistent/tty")


def test_sck_duration_is_avrdudes():
    # avrdude's stk500v2_set_sck_period(): -B 1 (1 MHz) -> 1, -B 10 (100 kHz) -> 3, 8 kHz -> ceil(38.4 - 10/12) = 38
    assert [sck_duration(f) for f in (2_000_000, 1_000_000, 200_000, 100_000, 8_000, 100)] == [0, 1, 2, 3, 38, 254]
    link = Stk500v2Link(stream=LoopStream(Stk500v2Programmer(EmulatedAvr("attiny85"))))
    link.connect(sck_hz=100_000)
    assert link.get_parameter(S.PARAM_SCK_DURATION) == 3


def test_without_a_chip_the_extended_address_is_loaded_again_below_128k():
    target = EmulatedAvr("atmega2560")
    target.memory.program(0x100, b"\x11\x22")
    target.memory.program(0x20100, b"\x33\x44")
    link = Stk500v2Link(stream=LoopStream(Stk500v2Programmer(target)))  # chip unknown
    link.connect()
    assert link.read_memory("flash", 0x20100, 2) == b"\x33\x44"
    assert link.read_memory("flash", 0x100, 2) == b"\x11\x22"  # not 0x20100 again
    link.write_page("flash", 0x200, b"\x55\x66", page_size=256)
    assert target.memory.peek(0x200, 2) == b"\x55\x66" and target.memory.peek(0x20200, 2) == b"\xff\xff"
