"""The USBasp device (bootkit.classes.isp.usbasp_device) request by request, through pyusb on
the in-process bus, with the firmware's semantics (main.c / isp.c of USBasp) as the reference:
what a real USBasp answers, what it puts on the ISP wires, where data lands."""

from __future__ import annotations

import errno
import random

import pytest
import usb.core
from hypothesis import given, settings
from hypothesis import strategies as st
import usb.util

from bootkit.classes.isp.usbasp_device import UsbaspFunction, usbasp_device
from bootkit.isp import protocol as P
from bootkit.isp.target import EmulatedAvr
from bootkit.isp.usbasp import (
    REQUEST_IN,
    REQUEST_OUT,
    USBASP_BLOCKFLAG_FIRST,
    USBASP_BLOCKFLAG_LAST,
    USBASP_FUNC_CONNECT,
    USBASP_FUNC_DISCONNECT,
    USBASP_FUNC_ENABLEPROG,
    USBASP_FUNC_GETCAPABILITIES,
    USBASP_FUNC_READEEPROM,
    USBASP_FUNC_READFLASH,
    USBASP_FUNC_SETISPSCK,
    USBASP_FUNC_SETLONGADDRESS,
    USBASP_FUNC_TPI_RAWREAD,
    USBASP_FUNC_TRANSMIT,
    USBASP_FUNC_WRITEEEPROM,
    USBASP_FUNC_WRITEFLASH,
    parse_write_index,
    write_index,
)
from bootkit.memory.chips import EEPROM_BASE
from bootkit.transports.virtual import VirtualBus, get_backend
from bootkit.usb.device import SetupPacket, Stall


class Wire:
    """Records the instructions the programmer shifts into the target."""

    def __init__(self, target: EmulatedAvr):
        self.target = target
        self.frames: list[bytes] = []
        inner = target.spi

        def spi(frame: bytes) -> bytes:
            self.frames.append(bytes(frame))
            return inner(frame)

        target.spi = spi  # type: ignore[method-assign]

    def opcodes(self, first: int) -> list[bytes]:
        return [f for f in self.frames if f[0] == first]


@pytest.fixture
def plugged():
    """plugged(chip, **target_kw) -> (pyusb device, EmulatedAvr, UsbaspFunction, Wire)."""
    bus = VirtualBus()

    def plug(chip: str = "atmega328p", **kw):
        target = EmulatedAvr(chip, **kw)
        device = usbasp_device(target)
        bus.attach(device)
        dev = usb.core.find(backend=get_backend(bus), idVendor=0x16C0, idProduct=0x05DC)
        assert dev is not None
        fn = device.functions[0]
        assert isinstance(fn, UsbaspFunction)
        return dev, target, fn, Wire(target)

    yield plug
    bus.clear()


def call_in(dev, func: int, value: int = 0, index: int = 0, length: int = 4) -> bytes:
    return bytes(dev.ctrl_transfer(REQUEST_IN, func, value, index, length, 1000))


def call_out(dev, func: int, value: int, index: int, data: bytes) -> int:
    return dev.ctrl_transfer(REQUEST_OUT, func, value, index, data, 1000)


def connect(dev) -> None:
    assert call_in(dev, USBASP_FUNC_CONNECT) == b""
    assert call_in(dev, USBASP_FUNC_ENABLEPROG) == b"\x00"


def long_address(dev, address: int) -> None:
    assert call_in(dev, USBASP_FUNC_SETLONGADDRESS, address & 0xFFFF, address >> 16) == b""


# --------------------------------------------------------------------------
# enumeration


def test_it_enumerates_as_a_usbasp(plugged):
    dev, _target, _fn, _wire = plugged()
    assert (dev.idVendor, dev.idProduct, dev.bDeviceClass, dev.bMaxPacketSize0) == (0x16C0, 0x05DC, 0xFF, 8)
    # avrdude's usbOpenDevice compares both strings
    assert usb.util.get_string(dev, dev.iManufacturer) == "www.fischl.de"
    assert usb.util.get_string(dev, dev.iProduct) == "USBasp"
    cfg = dev[0]
    interfaces = list(cfg)
    assert len(interfaces) == 1 and interfaces[0].bNumEndpoints == 0


def test_a_serial_number_when_given():
    target = EmulatedAvr("attiny85")
    device = usbasp_device(target, serial="BK01", vid=0x16C0, pid=0x05DC)
    assert "BK01" in device.strings and device.info.serial == "BK01"


# --------------------------------------------------------------------------
# connect, programming enable, raw instructions


def test_enableprog_answers_0_after_connect_and_1_without(plugged):
    dev, target, _fn, wire = plugged()
    # no CONNECT: the ISP pins are inputs, nothing reaches the target; 32 tries, then 1
    assert call_in(dev, USBASP_FUNC_ENABLEPROG) == b"\x01"
    assert wire.frames == []
    assert not target.programming
    connect(dev)
    assert target.programming
    assert call_in(dev, USBASP_FUNC_DISCONNECT) == b""
    assert not target.programming


def test_transmit_carries_one_instruction_and_its_answer(plugged):
    dev, _target, _fn, wire = plugged("attiny85")
    connect(dev)
    sig = bytes(call_in(dev, USBASP_FUNC_TRANSMIT, 0x0030, 0x0001)[3] for _ in range(1))
    assert sig == b"\x93"
    # wValue/wIndex little-endian are the 4 bytes in order (avrdude's usbasp_transmit)
    assert wire.frames[-1] == bytes([0x30, 0x00, 0x01, 0x00])
    answers = [call_in(dev, USBASP_FUNC_TRANSMIT, 0x0030, i)[3] for i in range(3)]
    assert bytes(answers) == b"\x1e\x93\x0b"


def test_capabilities_and_sck(plugged):
    dev, _target, fn, _wire = plugged()
    assert call_in(dev, USBASP_FUNC_GETCAPABILITIES) == bytes(4)  # no TPI, no 3 MHz
    assert call_in(dev, USBASP_FUNC_SETISPSCK, 10) == b"\x00"
    assert fn.sck_option == 10


def test_unknown_and_tpi_requests_answer_nothing(plugged):
    dev, _target, _fn, _wire = plugged()
    assert call_in(dev, USBASP_FUNC_TPI_RAWREAD) == b""  # usbFunctionSetup's len = 0
    assert call_in(dev, 99) == b""
    assert call_out(dev, 98, 0, 0, b"") == 0


@pytest.mark.parametrize("bm,func", [(REQUEST_OUT, USBASP_FUNC_READFLASH), (REQUEST_IN, USBASP_FUNC_WRITEFLASH)])
def test_a_read_sent_out_or_a_write_sent_in_stalls(plugged, bm, func):
    dev, _target, _fn, _wire = plugged()
    connect(dev)
    with pytest.raises(usb.core.USBError) as e:
        if bm == REQUEST_OUT:
            dev.ctrl_transfer(bm, func, 0, 0, b"\x00" * 4, 1000)
        else:
            dev.ctrl_transfer(bm, func, 0, write_index(128, 3), 4, 1000)
    assert e.value.errno == errno.EPIPE


# --------------------------------------------------------------------------
# flash


def write_flash(dev, address: int, data: bytes, page: int, *, block: int = 200, long: bool = True,
                first: bool = True, last: bool = True) -> None:
    """As avrdude's usbasp_spi_paged_write: 200-byte blocks, FIRST then LAST."""
    flags = USBASP_BLOCKFLAG_FIRST if first else 0
    done = 0
    while done < len(data):
        n = min(block, len(data) - done)
        if done + n == len(data) and last:
            flags |= USBASP_BLOCKFLAG_LAST
        at = address + done
        if long:
            long_address(dev, at)
        assert call_out(dev, USBASP_FUNC_WRITEFLASH, at & 0xFFFF, write_index(page, flags),
                        data[done:done + n]) == n
        flags = 0
        done += n


def read_flash(dev, address: int, length: int, *, long: bool = True) -> bytes:
    out = b""
    while len(out) < length:
        n = min(200, length - len(out))
        at = address + len(out)
        if long:
            long_address(dev, at)
        out += call_in(dev, USBASP_FUNC_READFLASH, at & 0xFFFF, 0, n)
    return out


def test_the_page_size_and_flags_in_windex_round_trip():
    for page in (0, 32, 64, 128, 256, 512, 0xFFF):
        for flags in (0, 1, 2, 3):
            assert parse_write_index(write_index(page, flags)) == (page, flags)
    # avrdude 7.1 for a 256-byte page, first and last block: cmd[2] = 0x00, cmd[3] = 0x13
    assert write_index(256, 3) == 0x1300


def test_pages_written_and_read_back(plugged):
    dev, target, _fn, wire = plugged()
    connect(dev)
    data = random.Random(1).randbytes(3 * 128)
    for page in range(3):
        write_flash(dev, 0x1000 + page * 128, data[page * 128:(page + 1) * 128], 128)
    assert target.memory.peek(0x1000, len(data)) == data
    assert read_flash(dev, 0x1000, len(data)) == data
    # one Write Program Memory Page per page, each for its own page
    writes = wire.opcodes(P.WRITE_PROGRAM_PAGE)
    assert [(f[1] << 8 | f[2]) * 2 // 128 * 128 for f in writes] == [0x1000, 0x1080, 0x1100]


def test_one_block_holding_several_pages_writes_each_when_its_counter_runs_out(plugged):
    dev, target, _fn, wire = plugged("attiny85")  # 64-byte pages: a 200-byte block holds 3 1/8
    connect(dev)
    data = random.Random(2).randbytes(200)
    write_flash(dev, 0x400, data, 64)
    assert target.memory.peek(0x400, 200) == data
    assert len(wire.opcodes(P.WRITE_PROGRAM_PAGE)) == 4  # three full pages, then the LAST flush


def test_a_page_left_partly_loaded_without_last_is_not_written(plugged):
    """The firmware writes a partial page only on the LAST flag: without it the bytes stay in
    the target's page buffer, and the flash is unchanged."""
    dev, target, _fn, wire = plugged()
    connect(dev)
    write_flash(dev, 0x200, b"\x12" * 100, 128, last=False)
    assert wire.opcodes(P.WRITE_PROGRAM_PAGE) == []
    assert target.memory.peek(0x200, 128) == b"\xff" * 128
    # the rest of the page completes the counter: now the page is written whole
    write_flash(dev, 0x200 + 100, b"\x34" * 28, 128, first=False, last=False)
    assert target.memory.peek(0x200, 128) == b"\x12" * 100 + b"\x34" * 28


def test_odd_length_at_an_odd_address_in_compatibility_mode(plugged):
    """Firmware before SETLONGADDRESS (and any request after CONNECT without one) takes the
    address from wValue; an odd start loads the high byte of a word first."""
    dev, target, _fn, _wire = plugged()
    connect(dev)
    write_flash(dev, 0x301, b"\xa5\x5a\x01", 128, long=False)
    assert target.memory.peek(0x300, 5) == b"\xff\xa5\x5a\x01\xff"
    assert read_flash(dev, 0x300, 5, long=False) == b"\xff\xa5\x5a\x01\xff"


def test_setlongaddress_wins_until_the_next_connect(plugged):
    dev, target, fn, _wire = plugged()
    connect(dev)
    long_address(dev, 0x100)
    # newmode: the wValue address is ignored, the long address counts on from the last request
    assert call_out(dev, USBASP_FUNC_WRITEFLASH, 0x7000, write_index(128, 3), b"\x01\x02") == 2
    assert target.memory.peek(0x100, 2) == b"\x01\x02"
    assert fn.address == 0x102
    connect(dev)  # CONNECT: back to the address in each request
    assert call_out(dev, USBASP_FUNC_WRITEFLASH, 0x180, write_index(128, 3), b"\x03") == 1
    assert target.memory.peek(0x180, 1) == b"\x03"


def test_above_64k_on_atmega2560_through_the_extended_address(plugged):
    dev, target, _fn, wire = plugged("atmega2560")
    connect(dev)
    rng = random.Random(3)
    low, high = rng.randbytes(256), rng.randbytes(256 + 77)
    write_flash(dev, 0x0FF00, low, 256)
    write_flash(dev, 0x20000, high, 256)  # word address 0x10000: extended byte 1
    assert target.memory.peek(0x0FF00, 256) == low
    assert target.memory.peek(0x20000, len(high)) == high
    assert target.memory.peek(0x00000, 16) == b"\xff" * 16  # nothing wrapped around to 0
    assert read_flash(dev, 0x20000, len(high)) == high
    assert read_flash(dev, 0x0FF00, 256) == low
    # Load Extended Address only when bits 17 and up change: 0 at first use, then 1, then 0
    assert [f[2] for f in wire.opcodes(P.LOAD_EXTENDED_ADDRESS)] == [0, 1, 0]


# --------------------------------------------------------------------------
# EEPROM


def test_eeprom_bytes_written_and_read(plugged):
    dev, target, _fn, wire = plugged()
    connect(dev)
    data = bytes(range(7, 7 + 37))
    long_address(dev, 0x101)
    assert call_out(dev, USBASP_FUNC_WRITEEEPROM, 0x101, write_index(0, 3), data) == len(data)
    assert target.memory.peek(EEPROM_BASE + 0x101, len(data)) == data
    assert len(wire.opcodes(P.WRITE_EEPROM)) == len(data)  # a byte write each (isp.c ispWriteEEPROM)
    long_address(dev, 0x100)
    assert call_in(dev, USBASP_FUNC_READEEPROM, 0x100, 0, 39) == b"\xff" + data + b"\xff"


# --------------------------------------------------------------------------
# real-time mode: the programmer waits for the target as the firmware does


class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def test_realtime_target_pages_and_eeprom_wait_for_ready():
    """A real-time target ignores instructions while it programs: without the programmer's
    RDY polling, the page after the first and every EEPROM byte after the first would be lost."""
    t = FakeTime()
    target = EmulatedAvr("attiny85", realtime=True, clock=t.clock)
    device = usbasp_device(target)
    fn = device.functions[0]
    assert isinstance(fn, UsbaspFunction)
    fn.clock, fn.sleep = t.clock, t.sleep
    bus = VirtualBus()
    bus.attach(device)
    dev = usb.core.find(backend=get_backend(bus), idVendor=0x16C0)
    connect(dev)
    data = random.Random(4).randbytes(192)
    write_flash(dev, 0, data, 64)
    assert target.memory.peek(0, 192) == data
    long_address(dev, 0x10)
    assert call_out(dev, USBASP_FUNC_WRITEEEPROM, 0x10, 0, b"\x01\x02\x03") == 3
    assert target.memory.peek(EEPROM_BASE + 0x10, 3) == b"\x01\x02\x03"
    # three page writes (4.5 ms) and three EEPROM bytes (4.0 ms), each waited for
    assert t.slept == pytest.approx(3 * 0.0045 + 3 * 0.004, abs=1e-3)
    assert fn.gave_up_waiting == 0


# --------------------------------------------------------------------------
# any request sequence: answers or a STALL, never a crash

_requests = st.lists(st.tuples(
    st.sampled_from([REQUEST_IN, REQUEST_OUT, 0xC1, 0x41, 0xA0]),
    st.one_of(st.integers(0, 17), st.just(127), st.integers(0, 255)),
    st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 300), st.binary(max_size=300)),
    max_size=40)


@settings(max_examples=150, deadline=None)
@given(_requests, st.sampled_from(["attiny85", "atmega2560"]))
def test_random_requests_never_crash_the_programmer(requests, chip):
    target = EmulatedAvr(chip)
    device = usbasp_device(target)
    device.set_configuration(1)
    device.control(SetupPacket(REQUEST_IN, USBASP_FUNC_CONNECT, 0, 0, 4))
    for bm, func, value, index, length, data in requests:
        is_in = bool(bm & 0x80)
        req = SetupPacket(bm, func, value, index, length if is_in else len(data))
        try:
            reply = device.control(req, b"" if is_in else data)
        except Stall:
            continue
        if is_in:
            assert reply is not None and len(reply) <= length
        else:
            assert reply is None
    # the target still answers as an AVR: the programmer kept it in a sane state
    device.control(SetupPacket(REQUEST_IN, USBASP_FUNC_CONNECT, 0, 0, 4))
    assert device.control(SetupPacket(REQUEST_IN, USBASP_FUNC_ENABLEPROG, 0, 0, 4)) == b"\x00"
