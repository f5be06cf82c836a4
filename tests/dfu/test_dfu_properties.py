"""Property tests for the DFU engines: random class requests never crash an
engine, never leave it in a state or status DFU 1.1 does not define, and
never touch the protected bootloader region.

The engines run straight over SimulatedFlash (no bus); the last property
goes through the whole USB Device (chapter 9 plus the DfuFunction).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootkit.classes.dfu import bootloader_device, functional_for
from bootkit.classes.dfu.device import DfuEngine, DfuSeEngine, FlipEngine, dfuse_interface_names, engine_for
from bootkit.classes.dfu.protocol import State, Status
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.usb.device import SetupPacket, Stall

# (dialect, chip): every chip here has a protected bootloader in flash
TARGETS = [
    ("dfu", "stm32f103c8"),  # 8 KiB at the bottom
    ("dfu", "atmega32u4"),  # 4 KiB at the top
    ("dfuse", "stm32f103c8"),
    ("flip", "atmega32u4"),
    ("flip", "at90usb1286"),  # 128 KiB: 64 KiB page select
]
IDS = [f"{d}-{c}" for d, c in TARGETS]

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def boot_pattern(chip) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(chip.boot_size))


def make_memory(chip, read_protected):
    memory = SimulatedFlash(chip, read_protected=read_protected)
    memory.poke(chip.boot_start, boot_pattern(chip))
    return memory


def make_engine(dialect, chip, memory) -> DfuEngine:
    kw = {"functional": functional_for(dialect)}
    if dialect == "dfuse":
        kw["regions"] = dfuse_interface_names(memory)[1]
    engine = engine_for(dialect, memory, **kw)
    assert isinstance(engine, {"dfu": DfuEngine, "dfuse": DfuSeEngine, "flip": FlipEngine}[dialect])
    return engine


def boot_bytes(memory, chip) -> bytes:
    off = chip.boot_start - chip.flash_start
    return memory.flash_bytes()[off:off + chip.boot_size]


# --------------------------------------------------------------------------
# strategies


def addresses(chip):
    """Addresses near every interesting edge: the bootloader, the flash ends, 64 KiB pages."""
    edges = [chip.flash_start, chip.boot_start, chip.boot_end, chip.flash_end, chip.flash_start + 0x10000,
             0x1FFFF800, 0, 0xFFFFFFFF]
    near = st.sampled_from(edges).flatmap(lambda a: st.integers(max(0, a - 2048), min(0xFFFFFFFF, a + 2048)))
    return st.one_of(st.sampled_from(edges), near, st.integers(0, 0xFFFFFFFF))


def dfuse_commands(chip):
    addr = addresses(chip)
    return st.one_of(
        addr.map(lambda a: struct.pack("<BI", 0x21, a)),  # Set Address Pointer
        addr.map(lambda a: struct.pack("<BI", 0x41, a)),  # page erase
        st.just(b"\x41"),  # mass erase
        st.just(b"\x92"),  # Read Unprotect
        st.just(b"\x00"),  # Get Commands
        st.binary(min_size=1, max_size=9),
    )


def u16(x):
    return bytes((x >> 8 & 0xFF, x & 0xFF))


def flip_commands(chip):
    off = st.one_of(st.sampled_from([0, 0x3F, 0x40, 0x6FFF, 0x7000, 0xDFFF, 0xE000, 0xFFFF]), st.integers(0, 0xFFFF))
    mem = st.sampled_from([0x00, 0x01, 0x02, 0x03])

    @st.composite
    def prog_start(draw):
        start = draw(off)
        end = draw(st.one_of(st.integers(start, min(0xFFFF, start + 300)), off))
        count = max(0, end - start + 1)
        body = draw(st.sampled_from([b"\x00", b"\x5a", b"\xff"])) * min(count, 400)
        return (bytes((0x01, draw(mem))) + u16(start) + u16(end) + bytes(26) + bytes(start % 64) + body
                + bytes(draw(st.sampled_from([0, 16]))))

    return st.one_of(
        prog_start(),
        st.tuples(st.sampled_from([0, 1, 2, 3]), off, off).map(lambda t: bytes((0x03, t[0])) + u16(t[1]) + u16(t[2])),
        st.sampled_from([b"\x04\x00\xff", b"\x04\x03\x00", b"\x04\x03\x01\x00\x00", b"\x04\x01\x00"]),
        st.tuples(st.sampled_from([0, 1, 2]), st.integers(0, 0xFF)).map(lambda t: bytes((0x05, t[0], t[1]))),
        st.integers(0, 0xFF).map(lambda p: bytes((0x06, 0x03, 0x00, p))),
        st.binary(min_size=1, max_size=40),
    )


def payloads(dialect, chip):
    big = st.tuples(st.integers(1, 4096), st.sampled_from([0x00, 0x5A, 0xFF])).map(lambda t: bytes([t[1]]) * t[0])
    options = [st.binary(max_size=64), big, st.just(b"")]
    if dialect == "dfuse":
        options.append(dfuse_commands(chip))
    if dialect == "flip":
        options.append(flip_commands(chip))
    return st.one_of(*options)


@st.composite
def single_request(draw, dialect, chip):
    """(bRequest, wValue, wLength, data) or the string 'reset' for a USB reset."""
    if draw(st.integers(0, 30)) == 0:
        return "reset"
    b = draw(st.one_of(st.integers(0, 6), st.integers(0, 6), st.integers(7, 255)))
    value = draw(st.one_of(st.integers(0, 4), st.integers(0, 300), st.integers(0, 0xFFFF)))
    data = draw(payloads(dialect, chip)) if b in (0, 1, 4, 6) or b > 6 else b""
    if draw(st.integers(0, 9)) == 0:
        length = draw(st.integers(0, 0xFFFF))  # a wLength that does not match the data
    elif b in (2, 3, 5):
        length = draw(st.one_of(st.sampled_from([0, 1, 2, 6, 64, 1024, 2048]), st.integers(0, 4096)))
    else:
        length = len(data)
    return b, value, length, data


GETSTATUS_REQ = (3, 0, 6, b"")


@st.composite
def exchange(draw, dialect, chip):
    """A DNLOAD as a host sends it: the request, then GETSTATUS until the device settles."""
    payload = draw(payloads(dialect, chip))
    if dialect == "dfuse":
        block = draw(st.one_of(st.just(0), st.just(2), st.integers(2, 70), st.integers(0, 0xFFFF)))
    else:
        block = draw(st.one_of(st.integers(0, 3), st.integers(0, 0xFFFF)))
    return [(1, block, len(payload), payload), GETSTATUS_REQ, GETSTATUS_REQ]


def requests(dialect, chip):
    """Random requests, and host-shaped exchanges that reach the memory."""
    return st.one_of(single_request(dialect, chip).map(lambda r: [r]), exchange(dialect, chip))


def flatten(steps):
    return [r for step in steps for r in step]


# --------------------------------------------------------------------------
# 1. the engines


@pytest.mark.parametrize("dialect,chip_name", TARGETS, ids=IDS)
@SETTINGS
@given(data=st.data(), read_protected=st.booleans())
def test_random_requests_keep_the_engine_sane(dialect, chip_name, data, read_protected):
    chip = get_chip(chip_name)
    memory = make_memory(chip, read_protected)
    engine = make_engine(dialect, chip, memory)
    boot = boot_pattern(chip)
    seq = flatten(data.draw(st.lists(requests(dialect, chip), min_size=1, max_size=30)))
    for req in seq:
        if req == "reset":
            engine.bus_reset()
        else:
            b, value, length, payload = req
            try:
                reply = engine.request(b, value, length, payload)
            except Stall:
                assert engine.state == State.dfuERROR, f"a STALL leaves dfuERROR, not {engine.state!r}"
                reply = None
            if reply is not None:
                assert isinstance(reply, (bytes, bytearray))
                if b == 3:
                    assert len(reply) == 6
        assert State(engine.state) in State
        assert Status(engine.status) in Status
        assert engine.state not in (State.appIDLE, State.appDETACH)
        if engine.state != State.dfuERROR:
            assert engine.status == Status.OK
        assert boot_bytes(memory, chip) == boot, f"bootloader changed after {req!r}"


@pytest.mark.parametrize("dialect,chip_name", TARGETS, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_getstatus_always_answers_a_defined_state(dialect, chip_name, data):
    """After any sequence, GETSTATUS answers 6 bytes naming a DFU-mode state and a defined status."""
    chip = get_chip(chip_name)
    memory = make_memory(chip, False)
    engine = make_engine(dialect, chip, memory)
    for req in flatten(data.draw(st.lists(requests(dialect, chip), max_size=20))):
        if req == "reset":
            engine.bus_reset()
            continue
        try:
            engine.request(*req)
        except Stall:
            pass
    try:
        raw = engine.request(3, 0, 6, b"")
    except Stall:
        # only while the device is busy (dfuDNBUSY / dfuMANIFEST), DFU 1.1 A.2.4
        pytest.fail(f"GETSTATUS stalled in {engine.state!r}")
    assert len(raw) == 6
    assert raw[4] in {s.value for s in State if s >= State.dfuIDLE}
    assert raw[0] in {s.value for s in Status}
    assert boot_bytes(memory, chip) == boot_pattern(chip)


# --------------------------------------------------------------------------
# 2. through the USB device (chapter 9 + DfuFunction)


@st.composite
def setup_packets(draw):
    rtype = draw(st.one_of(st.sampled_from([0x21, 0xA1, 0x00, 0x80, 0x01, 0x81, 0x02, 0x82, 0x22, 0xA2, 0x41, 0xC1,
                                            0x20, 0xA0, 0x23]),
                           st.integers(0, 255)))
    req = draw(st.one_of(st.integers(0, 12), st.integers(0, 255)))
    value = draw(st.one_of(st.integers(0, 3), st.sampled_from([0x0100, 0x0200, 0x0300, 0x0301, 0x0302, 0x0600,
                                                               0x2100, 0x0304]),
                           st.integers(0, 0xFFFF)))
    index = draw(st.one_of(st.integers(0, 2), st.sampled_from([0x80, 0x81, 0x01, 0x0409]), st.integers(0, 0xFFFF)))
    if rtype & 0x80:
        length = draw(st.one_of(st.sampled_from([0, 1, 2, 6, 9, 18, 64, 255, 1024]), st.integers(0, 0xFFFF)))
        data = b""
    else:
        data = draw(st.one_of(st.binary(max_size=64), st.sampled_from([b"\x21\x00\x00\x00\x08", b"\x41", b"\x92",
                                                                       b"\x04\x00\xff", b"\x03\x01\x00\x00\xff\xff"])))
        length = len(data)
    return SetupPacket(rtype, req, value, index, length), data


@pytest.mark.parametrize("dialect,chip_name", TARGETS, ids=IDS)
@SETTINGS
@given(data=st.data(), configure=st.booleans())
def test_random_setup_packets_through_the_device(dialect, chip_name, data, configure):
    chip = get_chip(chip_name)
    memory = make_memory(chip, False)
    device = bootloader_device(memory, chip, dialect=dialect)
    engine = device.functions[0].engine
    boot = boot_pattern(chip)
    if configure:
        device.control(SetupPacket(0x00, 9, 1, 0, 0))
    for req, payload in data.draw(st.lists(setup_packets(), min_size=1, max_size=40)):
        try:
            reply = device.control(req, payload)
        except Stall:
            reply = None
        if req.is_in and reply is not None:
            assert len(reply) <= req.wLength
        assert State(engine.state) in State
        assert Status(engine.status) in Status
        assert boot_bytes(memory, chip) == boot


@pytest.mark.parametrize("display", [b"\x03\x02\x00\x00\x6f\xff", b"\x03\x02\x6f\xff\x6f\xff"],
                         ids=["eeprom-past-its-end", "outside-every-region"])
def test_an_upload_of_an_address_no_memory_has_stalls_with_erraddress(display):
    """FLIP display-data of EEPROM 0x0000-0x6FFF (1 KiB EEPROM), then UPLOAD: a STALL and
    dfuERROR / errADDRESS, not an exception out of the device (hypothesis found both)."""
    chip = get_chip("atmega32u4")
    engine = make_engine("flip", chip, make_memory(chip, False))
    engine.request(1, 0, len(display), display)  # DNLOAD the command
    with pytest.raises(Stall):
        engine.request(2, 0, 6, b"")  # UPLOAD
    assert (engine.status, engine.state) == (Status.errADDRESS, State.dfuERROR)
