"""UsbaspLink (bootkit.isp.usbasp, the host side) against our USBasp device: on the in-process
bus and over USB/IP (the userspace client backend), the requests it sends checked against
avrdude's usbasp.c, and bad input refused before anything is written."""

from __future__ import annotations

import random

import pytest

from bootkit.classes.isp.usbasp_device import UsbaspFunction, usbasp_device
from bootkit.isp.errors import IspError, IspInputError
from bootkit.isp.target import EmulatedAvr
from bootkit.isp.usbasp import (
    USBASP_FUNC_CONNECT,
    USBASP_FUNC_DISCONNECT,
    USBASP_FUNC_ENABLEPROG,
    USBASP_FUNC_GETCAPABILITIES,
    USBASP_FUNC_READFLASH,
    USBASP_FUNC_SETISPSCK,
    USBASP_FUNC_SETLONGADDRESS,
    USBASP_FUNC_WRITEEEPROM,
    USBASP_FUNC_WRITEFLASH,
    USBASP_ISP_SCK_8,
    USBASP_ISP_SCK_375,
    USBASP_ISP_SCK_1500,
    USBASP_ISP_SCK_AUTO,
    UsbaspLink,
    parse_write_index,
    sck_option,
)
from bootkit.memory.chips import EEPROM_BASE
from bootkit.transports import usbip_client
from bootkit.transports.usbip import UsbipServer
from bootkit.transports.virtual import VirtualBus, get_backend
from bootkit.usb.device import Device, SetupPacket


class Recorder:
    """The control requests the device sees: (bRequest, wValue, wIndex, wLength or data length)."""

    def __init__(self, device: Device):
        self.requests: list[tuple[int, int, int, int]] = []
        inner = device.control

        def control(req: SetupPacket, data: bytes = b""):
            if req.type != 0:
                self.requests.append((req.bRequest, req.wValue, req.wIndex, req.wLength))
            return inner(req, data)

        device.control = control  # type: ignore[method-assign]

    def funcs(self) -> list[int]:
        return [r[0] for r in self.requests]


@pytest.fixture
def usbasp():
    """usbasp(chip, **link_kw) -> (UsbaspLink, EmulatedAvr, Recorder) on a bus of its own."""
    bus = VirtualBus()
    made = []

    def make(chip: str = "atmega328p", *, target: EmulatedAvr | None = None, **kw):
        target = target or EmulatedAvr(chip)
        device = usbasp_device(target)
        rec = Recorder(device)
        bus.attach(device)
        link = UsbaspLink(backend=get_backend(bus), settle=0, **kw)
        made.append(link)
        return link, target, rec

    yield make
    for link in made:
        link.close()
    bus.clear()


def flash_pages(link: UsbaspLink, image: dict[int, bytes], page: int) -> None:
    """Write each page that holds data, as avrdude does (whole pages, 0xFF filled)."""
    pages: dict[int, bytearray] = {}
    for address, chunk in image.items():
        for i, b in enumerate(chunk):
            a = address + i
            pages.setdefault(a // page * page, bytearray(b"\xff" * page))[a % page] = b
    for start, data in sorted(pages.items()):
        link.write_page("flash", start, bytes(data), page_size=page)


def on_ff(image: dict[int, bytes], size: int) -> bytes:
    out = bytearray(b"\xff" * size)
    for address, chunk in image.items():
        out[address:address + len(chunk)] = chunk
    return bytes(out)


# --------------------------------------------------------------------------
# connect as avrdude's usbasp_initialize


def test_connect_sends_what_avrdude_sends(usbasp):
    link, target, rec = usbasp()
    link.connect()
    assert rec.funcs() == [USBASP_FUNC_GETCAPABILITIES, USBASP_FUNC_SETISPSCK, USBASP_FUNC_CONNECT,
                           USBASP_FUNC_ENABLEPROG]
    assert rec.requests[1][1] == USBASP_ISP_SCK_AUTO
    assert target.programming and link.connected
    link.disconnect()
    assert rec.funcs()[-1] == USBASP_FUNC_DISCONNECT and not target.programming


@pytest.mark.parametrize("hz,option,actual", [
    (None, USBASP_ISP_SCK_AUTO, 0), (2_000_000, USBASP_ISP_SCK_1500, 1_500_000),
    (400_000, USBASP_ISP_SCK_375, 375_000), (375_000, USBASP_ISP_SCK_375, 375_000),
    (8_000, USBASP_ISP_SCK_8, 8_000), (100, 1, 500),
])
def test_sck_as_avrdude_picks_it(hz, option, actual):
    assert sck_option(hz) == (option, actual)


def test_3mhz_only_when_the_programmer_says_it_can():
    assert sck_option(5_000_000) == (USBASP_ISP_SCK_1500, 1_500_000)
    assert sck_option(5_000_000, three_mhz=True) == (13, 3_000_000)


def test_slow_sck_reads_in_20_byte_blocks(usbasp):
    """avrdude: below 10 kHz SCK, blocks are USBASP_READBLOCKSIZE / 10."""
    link, _target, rec = usbasp()
    link.connect(sck_hz=8_000)
    assert link.sck_hz == 8_000 and rec.requests[1][1] == USBASP_ISP_SCK_8
    link.read_memory("flash", 0, 50)
    reads = [r for r in rec.requests if r[0] == USBASP_FUNC_READFLASH]
    assert [r[3] for r in reads] == [20, 20, 10]


def test_no_programmer_found_is_one_line():
    with pytest.raises(IspError) as e:
        UsbaspLink(backend=get_backend(VirtualBus()))
    assert str(e.value) == 'no USBasp 16c0:05dc "www.fischl.de" "USBasp" found: check that it is plugged in'


def test_another_device_on_the_shared_id_is_not_taken():
    """16c0:05dc is obdev's shared PID: avrdude also checks both names."""
    bus = VirtualBus()
    other = usbasp_device(EmulatedAvr("attiny85"))
    other.info.manufacturer = "someone.else"
    bus.attach(Device(other.info, other.functions))
    with pytest.raises(IspError, match="no USBasp"):
        UsbaspLink(backend=get_backend(bus))


def test_a_target_that_does_not_answer(usbasp):
    target = EmulatedAvr("atmega328p")
    target.spi = lambda frame: b"\xff\xff\xff\xff"  # type: ignore[method-assign]  # no target on the header
    link, _t, _rec = usbasp(target=target)
    with pytest.raises(IspError) as e:
        link.connect()
    msg = str(e.value)
    assert msg.startswith("programming enable: the target does not answer (USBasp ENABLEPROG gave 01)")
    assert "\n" not in msg


def test_serial_selects_among_two_usbasps():
    bus = VirtualBus()
    bus.attach(usbasp_device(EmulatedAvr("attiny85"), serial="A"))
    bus.attach(usbasp_device(EmulatedAvr("atmega328p"), serial="B"))
    with UsbaspLink(backend=get_backend(bus), serial="B", settle=0) as link:
        link.connect()
        assert link.read_signature() == b"\x1e\x95\x0f"


# --------------------------------------------------------------------------
# the whole set, through the link


def test_signature_fuses_lock_and_erase(usbasp):
    link, target, _rec = usbasp("attiny85")
    link.connect()
    assert link.read_signature() == b"\x1e\x93\x0b"
    assert link.read_fuses() == {"lfuse": 0x62, "hfuse": 0xDF, "efuse": 0xFF, "lock": 0xFF}
    link.write_fuse("lfuse", 0xE2)
    link.write_fuse("efuse", 0xFE)
    assert link.read_fuses()["lfuse"] == 0xE2 and target.fuses()["efuse"] == 0xFE
    link.write_page("flash", 0, b"\x0c\x94" * 32, page_size=64)
    link.write_fuse("lock", 0xFC)  # LB1+LB2: mode 3, reads give 0xFF
    assert link.read_fuses()["lock"] == 0xFC
    assert link.read_memory("flash", 0, 4) == b"\xff" * 4
    link.chip_erase()
    assert link.read_fuses()["lock"] == 0xFF
    assert target.memory.peek(0, 64) == b"\xff" * 64


def test_an_image_with_gaps_and_odd_lengths(usbasp):
    link, target, _rec = usbasp()
    rng = random.Random(5)
    image = {0x0000: rng.randbytes(301), 0x0400: rng.randbytes(1), 0x1233: rng.randbytes(77),
             0x7F80: rng.randbytes(128)}  # the last page of the ATmega328P
    link.connect()
    flash_pages(link, image, 128)
    assert target.memory.peek(0, 32 * 1024) == on_ff(image, 32 * 1024)
    assert link.read_memory("flash", 0, 32 * 1024) == on_ff(image, 32 * 1024)


def test_a_256_byte_page_goes_as_200_first_then_56_last(usbasp):
    link, target, rec = usbasp("atmega2560")
    link.connect()
    data = random.Random(6).randbytes(256)
    link.write_page("flash", 0x1FF00, data, page_size=256)
    writes = [r for r in rec.requests if r[0] == USBASP_FUNC_WRITEFLASH]
    assert [(r[1], parse_write_index(r[2]), r[3]) for r in writes] == [
        (0xFF00, (256, 1), 200), (0xFFC8, (256, 2), 56)]
    # each block after SETLONGADDRESS with the full address
    longs = [(r[2] << 16) | r[1] for r in rec.requests if r[0] == USBASP_FUNC_SETLONGADDRESS]
    assert longs == [0x1FF00, 0x1FFC8]
    assert target.memory.peek(0x1FF00, 256) == data


def test_above_64k_on_atmega2560(usbasp):
    link, target, _rec = usbasp("atmega2560")
    rng = random.Random(7)
    image = {0x00000: rng.randbytes(1000), 0x0FFF0: rng.randbytes(600), 0x2FF11: rng.randbytes(333),
             0x3DF00: rng.randbytes(256)}
    size = 256 * 1024
    link.connect()
    flash_pages(link, image, 256)
    assert target.memory.peek(0, size) == on_ff(image, size)
    for address, chunk in image.items():
        assert link.read_memory("flash", address, len(chunk)) == chunk


def test_eeprom_write_and_read(usbasp):
    link, target, rec = usbasp("atmega2560")
    link.connect()
    data = random.Random(8).randbytes(8)
    link.write_page("eeprom", 0xFF8, data, page_size=8)
    assert target.memory.peek(EEPROM_BASE + 0xFF8, 8) == data
    assert link.read_memory("eeprom", 0xFF0, 16) == b"\xff" * 8 + data
    assert USBASP_FUNC_WRITEEEPROM in rec.funcs()


def test_bad_input_writes_nothing(usbasp):
    link, target, rec = usbasp()
    link.connect()
    before = len(rec.requests)
    with pytest.raises(IspInputError, match="crosses a 128-byte page boundary"):
        link.write_page("flash", 0x70, b"\x00" * 32, page_size=128)
    with pytest.raises(IspInputError, match="flash or eeprom"):
        link.write_page("fuses", 0, b"\x00", page_size=1)
    with pytest.raises(IspInputError, match="flash or eeprom"):
        link.read_memory("lock", 0, 1)
    with pytest.raises(IspInputError, match="4 bytes"):
        link.transact(b"\x30\x00")
    assert len(rec.requests) == before
    assert target.memory.peek(0, 256) == b"\xff" * 256


def test_a_device_gone_is_an_isp_error():
    bus = VirtualBus()
    plugged = bus.attach(usbasp_device(EmulatedAvr("atmega328p")))
    link = UsbaspLink(backend=get_backend(bus), settle=0)
    link.connect()
    plugged.device = None  # unplugged: what the virtual bus reports as libusb's NO_DEVICE
    plugged.generation += 1
    with pytest.raises(IspError) as e:
        link.read_signature()
    assert str(e.value) == "USBasp TRANSMIT failed: No such device (it may have been disconnected)"
    link.close()  # closing a link whose device is gone does not raise either


# --------------------------------------------------------------------------
# over USB/IP: the userspace client backend in front of a USB/IP server


def test_over_usbip():
    target = EmulatedAvr("atmega2560")
    server = UsbipServer([usbasp_device(target)], ("127.0.0.1", 0), log=None).start()
    backend = usbip_client.UsbipBackend(port=server.port)
    try:
        rng = random.Random(9)
        image = {0x1000: rng.randbytes(513), 0x21000: rng.randbytes(257)}
        with UsbaspLink(backend=backend, settle=0) as link:
            link.connect()
            assert link.read_signature() == b"\x1e\x98\x01"
            flash_pages(link, image, 256)
            for address, chunk in image.items():
                assert link.read_memory("flash", address, len(chunk)) == chunk
            link.write_fuse("hfuse", 0xD8)
            assert link.read_fuses()["hfuse"] == 0xD8
        assert target.memory.peek(0, 256 * 1024) == on_ff(image, 256 * 1024)
        assert not target.programming  # the context manager disconnected
    finally:
        backend.close()
        server.close()


def test_function_is_a_usbasp_function():
    assert isinstance(usbasp_device(EmulatedAvr("attiny85")).functions[0], UsbaspFunction)
