"""AVRprog (bootkit.isp.avrprog, Adafruit AVRprog's calls) driving our USBasp: bootkit as the
programmer's host and as the programmer with its target, no avrdude.  Generated images (gaps,
odd lengths, above 64 KiB on the ATmega2560) and bad input refused with nothing written."""

from __future__ import annotations

import random

import pytest

from bootkit.classes.isp.usbasp_device import usbasp_device
from bootkit.isp import AVRprog
from bootkit.isp.errors import IspError, IspInputError
from bootkit.isp.target import EmulatedAvr
from bootkit.isp.usbasp import USBASP_FUNC_WRITEEEPROM, USBASP_FUNC_WRITEFLASH, UsbaspLink
from bootkit.memory.chips import EEPROM_BASE
from bootkit.transports.virtual import VirtualBus, get_backend
from bootkit.usb.device import SetupPacket


def ihex(segments: list[tuple[int, bytes]]) -> str:
    """Intel HEX with extended linear address records, written here without bootkit's code."""
    lines = []

    def rec(kind: int, addr: int, payload: bytes) -> None:
        raw = bytes([len(payload), (addr >> 8) & 0xFF, addr & 0xFF, kind]) + payload
        lines.append(":" + raw.hex().upper() + "%02X" % (-sum(raw) & 0xFF))

    upper = None
    for base, data in segments:
        for off in range(0, len(data), 16):
            addr = base + off
            chunk = data[off:off + 16]
            if addr >> 16 != upper or (addr & 0xFFFF) + len(chunk) > 0x10000:
                upper = addr >> 16
                rec(4, 0, upper.to_bytes(2, "big"))
            if (addr & 0xFFFF) + len(chunk) > 0x10000:  # a record never wraps a 64 KiB boundary
                n = 0x10000 - (addr & 0xFFFF)
                rec(0, addr & 0xFFFF, chunk[:n])
                upper = (addr + n) >> 16
                rec(4, 0, upper.to_bytes(2, "big"))
                rec(0, 0, chunk[n:])
            else:
                rec(0, addr & 0xFFFF, chunk)
    rec(1, 0, b"")
    return "\n".join(lines) + "\n"


def on_ff(segments: list[tuple[int, bytes]], size: int) -> bytes:
    out = bytearray(b"\xff" * size)
    for base, data in segments:
        out[base:base + len(data)] = data
    return bytes(out)


class Programmer:
    """Our USBasp with ``chip`` on its header, on a bus of its own; counts the writes it gets."""

    def __init__(self, chip: str):
        self.target = EmulatedAvr(chip)
        device = usbasp_device(self.target)
        self.writes = 0
        inner = device.control

        def control(req: SetupPacket, data: bytes = b""):
            if req.bRequest in (USBASP_FUNC_WRITEFLASH, USBASP_FUNC_WRITEEEPROM) and req.type == 2:
                self.writes += 1
            return inner(req, data)

        device.control = control  # type: ignore[method-assign]
        self.bus = VirtualBus()
        self.bus.attach(device)
        self.link = UsbaspLink(backend=get_backend(self.bus), settle=0)

    def prog(self) -> AVRprog:
        return AVRprog(self.link, progress=False)


def test_an_avrprog_script_verbatim(tmp_path):
    """The calls of Adafruit's examples (avrprog_program_trinket85.py), by their names."""
    p = Programmer("attiny85")
    rng = random.Random(11)
    segments = [(0, rng.randbytes(1001)), (0x1201, rng.randbytes(77)), (0x1FC0, rng.randbytes(64))]
    (tmp_path / "trinket.hex").write_text(ihex(segments))
    avrprog = p.prog()
    attiny85 = AVRprog.Boards.ATtiny85
    assert avrprog.verify_sig(attiny85, verbose=False)
    avrprog.erase_chip()
    avrprog.write_fuses(attiny85, low=0xF1, high=0xD5, ext=0x06, lock=0x3F)
    assert avrprog.verify_fuses(attiny85, low=0xF1, high=0xD5, ext=0x06, lock=0x3F)
    assert avrprog.program_file(attiny85, str(tmp_path / "trinket.hex"), verbose=False, verify=True)
    assert avrprog.verify_file(attiny85, str(tmp_path / "trinket.hex"))
    assert p.target.memory.peek(0, 8192) == on_ff(segments, 8192)
    low, high, ext, lock = avrprog.read_fuses(attiny85)
    assert (low, high) == (0xF1, 0xD5)
    assert p.target.fuses()["lfuse"] == 0xF1
    assert not p.target.programming  # every call ends with the target running


def test_above_64k_on_atmega2560_and_read_back_to_a_file(tmp_path):
    p = Programmer("atmega2560")
    rng = random.Random(12)
    segments = [(0, rng.randbytes(513)), (0xFFF1, rng.randbytes(0x30)), (0x1FF03, rng.randbytes(0x2FF)),
                (0x3E000, rng.randbytes(1))]
    (tmp_path / "mega.hex").write_text(ihex(segments))
    avrprog = p.prog()
    assert avrprog.program_file("atmega2560", tmp_path / "mega.hex")
    flash = avrprog.read_flash("atmega2560", tmp_path / "back.bin")
    assert flash == on_ff(segments, 256 * 1024)
    assert (tmp_path / "back.bin").read_bytes() == flash.rstrip(b"\xff")


def test_eeprom_programmed_and_read(tmp_path):
    p = Programmer("atmega328p")
    rng = random.Random(13)
    segments = [(3, rng.randbytes(10)), (0x3FD, rng.randbytes(3))]
    (tmp_path / "ee.hex").write_text(ihex(segments))
    avrprog = p.prog()
    assert avrprog.program_eeprom("atmega328p", tmp_path / "ee.hex")
    assert p.target.memory.peek(EEPROM_BASE, 1024) == on_ff(segments, 1024)
    assert avrprog.read_eeprom("atmega328p", tmp_path / "ee-back.bin") == on_ff(segments, 1024)


# --------------------------------------------------------------------------
# bad input: one line, nothing written


def test_a_hex_bigger_than_the_target(tmp_path):
    p = Programmer("attiny85")
    (tmp_path / "big.hex").write_text(ihex([(0, bytes(8192 + 2))]))
    before = p.target.memory.peek(0, 8192)
    with pytest.raises(IspInputError) as e:
        p.prog().program_file("attiny85", tmp_path / "big.hex")
    assert "\n" not in str(e.value)
    assert p.writes == 0 and p.target.memory.peek(0, 8192) == before


def test_a_fuse_value_outside_its_mask(tmp_path):
    p = Programmer("attiny85")
    with pytest.raises(IspInputError) as e:
        p.prog().write_fuses("attiny85", low=0xE2, ext=0x10)
    assert "efuse" in str(e.value) and "\n" not in str(e.value)
    assert p.target.fuses()["lfuse"] == 0x62  # the valid one was not written either


def test_a_wrong_signature(tmp_path):
    p = Programmer("attiny85")
    (tmp_path / "fw.hex").write_text(ihex([(0, b"\x0c\x94" * 10)]))
    avrprog = p.prog()
    assert not avrprog.verify_sig(AVRprog.Boards.ATmega328p)
    with pytest.raises(IspError) as e:
        avrprog.program_file(AVRprog.Boards.ATmega328p, tmp_path / "fw.hex")
    assert "nothing was written" in str(e.value) and "\n" not in str(e.value)
    assert p.writes == 0


def test_a_locked_target_cannot_be_read(tmp_path):
    p = Programmer("atmega328p")
    avrprog = p.prog()
    avrprog.write_fuses("atmega328p", lock=0x3C)
    with pytest.raises(IspError, match="locked"):
        avrprog.read_flash("atmega328p", tmp_path / "out.hex")
    assert not (tmp_path / "out.hex").exists()
