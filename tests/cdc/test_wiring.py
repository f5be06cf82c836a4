"""The wiring dialect: the Mega 2560's stk500v2 bootloader as an engine, our host against it, FuseAccess."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootkit.classes.cdc.wiring import WiringEngine
from bootkit.classes.common import HostError, ImageRejected
from bootkit.contracts import FuseAccess, Link
from bootkit.formats.image import Image
from bootkit.isp.stk500v2 import FrameParser, encode_frame
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.memory.chips import EEPROM_BASE, LOCK_BASE

M2560 = get_chip("atmega2560")
OK, FAILED = 0x00, 0xC0


class Clock:
    def __init__(self):
        self.now = 50.0

    def __call__(self):
        return self.now


def engine(chip=M2560, **kw):
    mem = SimulatedFlash(chip)
    return mem, WiringEngine(mem, **kw)


def ask(e, *bodies, seq=1):
    """Send the bodies as messages; the answers' bodies (checking each echoes its sequence number)."""
    out = []
    parser = FrameParser()
    for i, body in enumerate(bodies):
        answers = parser.feed(e.feed(encode_frame((seq + i) & 0xFF, bytes(body))))
        assert [s for s, _ in answers] == [(seq + i) & 0xFF] * len(answers)
        out += [b for _, b in answers]
    return out


def load(word, ext=True):
    return bytes((0x06,)) + (word | (0x80000000 if ext else 0)).to_bytes(4, "big")


def prog_flash(data):
    return bytes((0x13,)) + len(data).to_bytes(2, "big") + bytes((0xC1, 10, 0x40, 0x4C, 0x20, 0, 0)) + data


def read_flash(n):
    return bytes((0x14,)) + n.to_bytes(2, "big") + bytes((0x20,))


def test_sign_on_parameters_and_the_sequence_number_echoed():
    _, e = engine()
    assert ask(e, [0x01], seq=0x37) == [bytes((0x01, OK, 8)) + b"AVRISP_2"]
    assert ask(e, [0x03, 0x90], [0x03, 0x91], [0x03, 0x92], [0x03, 0x98]) == [
        bytes((0x03, OK, 0x0F)), bytes((0x03, OK, 2)), bytes((0x03, OK, 0x0A)), bytes((0x03, OK, 0))]
    assert ask(e, [0x02, 0x98, 5], [0x10] + [0] * 11) == [bytes((0x02, OK)), bytes((0x10, OK))]
    assert ask(e, [0x42]) == [bytes((0x42, FAILED))]  # unknown: STATUS_CMD_FAILED, as the C


def test_signature_fuses_and_lock_are_the_chips_own():
    mem, e = engine()
    sig = [ask(e, [0x1B, 4, 0x30, 0, i, 0])[0] for i in range(3)]
    assert [b[2] for b in sig] == [0x1E, 0x98, 0x01]
    low, high, ext = (ask(e, [0x18, 4, a, b, 0, 0])[0][2] for a, b in ((0x50, 0), (0x58, 8), (0x50, 8)))
    assert (low, high, ext) == tuple(f.default for f in M2560.fuses)
    assert ask(e, [0x1A, 4, 0x58, 0, 0, 0]) == [bytes((0x1A, OK, 0xFF, OK))]
    # CMD_PROGRAM_LOCK_ISP: only the boot lock bits (~value & 0x3C)
    assert ask(e, [0x19, 0xAC, 0xE0, 0, 0xC0]) == [bytes((0x19, OK, OK))]
    assert mem.read(LOCK_BASE, 1) == b"\xc3"
    # CMD_SPI_MULTI: the signature and the low/high fuse, 0 for anything else
    assert ask(e, [0x1D, 4, 4, 0, 0x30, 0, 1, 0]) == [bytes((0x1D, OK, 0, 0x30, 0, 0x98, OK))]
    assert ask(e, [0x1D, 4, 4, 0, 0x58, 8, 0, 0])[0][5] == high
    assert ask(e, [0x1D, 4, 4, 0, 0xAC, 0x80, 0, 0])[0][5] == 0  # chip erase through SPI: a dummy 0


def test_flash_pages_above_64k_and_the_sequential_erase_pointer():
    mem, e = engine()
    mem.poke(0, b"\x00" * 256)  # old content: the first write erases page 0 (the pointer, not the address)
    pages = [bytes(((i + p) * 7) & 0xFF for i in range(256)) for p in range(3)]
    assert ask(e, [0x12, 10, 0, 0xAC, 0x80, 0, 0]) == [bytes((0x12, FAILED))]  # issue 543: FAILED, pointer 0
    answers = ask(e, load(0), *(prog_flash(p) for p in pages))
    assert answers == [bytes((0x06, OK))] + [bytes((0x13, OK))] * 3
    assert mem.read(0, 768) == b"".join(pages)
    # above 64 KiB: bit 31 is shifted out, the word address reaches 0x10000 words and beyond
    high = bytes(range(256))
    assert ask(e, load(0x1E000), prog_flash(high)) == [bytes((0x06, OK)), bytes((0x13, OK))]
    assert mem.read(0x3C000, 256) == high
    assert ask(e, load(0x1E000), read_flash(256)) == [bytes((0x06, OK)), bytes((0x14, OK)) + high + bytes((OK,))]


def test_eeprom_bytes_at_the_byte_address():
    mem, e = engine()
    data = bytes(range(5, 25))
    body = bytes((0x15,)) + len(data).to_bytes(2, "big") + bytes((0xC1, 10, 0xC1, 0xC2, 0xA0, 0, 0)) + data
    assert ask(e, load(0x101, ext=False), body) == [bytes((0x06, OK)), bytes((0x15, OK))]
    assert mem.read(EEPROM_BASE + 0x101, 20) == data
    assert ask(e, load(0x101, ext=False), bytes((0x16, 0, 20, 0xA0)))[1] == bytes((0x16, OK)) + data + bytes((OK,))


@pytest.mark.parametrize("word,data,why", [
    (0x1F000, b"\x00" * 256, "the bootloader section (BOOTSZ: the top 8 KiB)"),
    (0x1FF80, b"\x00" * 2, "the last page"),
    (0x40, b"\x00" * 256, "a block running past its page"),
    (0x100, b"\x00" * 3, "an odd length"),
    (0x20000, b"\x00" * 2, "past the flash"),
])
def test_refused_writes_change_nothing(word, data, why):
    mem, e = engine()
    before = mem.flash_bytes()
    assert ask(e, load(word), prog_flash(data)) == [bytes((0x06, OK)), bytes((0x13, FAILED))], why
    assert mem.flash_bytes() == before


def test_a_bad_checksum_gets_no_answer_and_the_next_message_does():
    _, e = engine()
    frame = bytearray(encode_frame(3, b"\x01"))
    frame[-1] ^= 0xFF
    assert e.feed(bytes(frame)) == b""  # stk500boot.c: back to ST_START, silently
    assert ask(e, [0x01], seq=4)[0][:2] == bytes((0x01, OK))


def test_leave_starts_a_present_application_and_the_timeout_too():
    clock = Clock()
    mem, e = engine(timeout=1.0, clock=clock)
    assert ask(e, [0x11, 1, 1]) == [bytes((0x11, OK))]
    assert not e.application_running  # blank flash: it slides back into the bootloader
    ask(e, load(0), prog_flash(b"\x0c\x94" * 128))
    clock.now += 1.5
    assert e.feed(encode_frame(9, b"\x01")) == b""  # no byte for 1.5 s: recchar_timeout jumped to 0x0000
    e.reset(clock.now)
    assert ask(e, [0x11, 1, 1]) == [bytes((0x11, OK))]
    assert e.application_running and mem.app_valid


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.builds(lambda s, b: encode_frame(s, b), st.integers(0, 255), st.binary(min_size=1, max_size=40)),
    st.builds(lambda w, d: encode_frame(1, load(w)) + encode_frame(2, prog_flash(d)),
              st.integers(0, 0xFFFFFFFF), st.binary(min_size=1, max_size=256)),
    st.builds(lambda w, d: encode_frame(1, load(w, ext=False)) + encode_frame(
        2, bytes((0x15,)) + len(d).to_bytes(2, "big") + bytes(7) + d), st.integers(0, 0xFFFF),
        st.binary(max_size=64)),
), max_size=12))
def test_random_input_never_crashes_nor_writes_the_bootloader(chunks):
    mem = SimulatedFlash(M2560)
    pattern = bytes((i * 31 + 7) & 0xFF for i in range(M2560.boot_size))
    mem.poke(M2560.boot_start, pattern)
    e = WiringEngine(mem)
    for chunk in chunks:
        assert isinstance(e.feed(chunk), bytes)
    e.disconnect()
    assert mem.read(M2560.boot_start, M2560.boot_size) == pattern


# --------------------------------------------------------------------------
# our host against our device: an emulated Mega 2560 on a pty


@pytest.fixture
def mega():
    from bootkit.emulator import Emulator
    from bootkit.transports.pty import pty_server

    # the timeout is off: the exchange must not race a 1-s timer on a loaded machine
    with Emulator("atmega2560", "cdc", options={"timeout": None}) as em, pty_server(em) as srv:
        assert em.dialect == "wiring"  # the chip's usual bootloader
        yield em, srv


def test_host_flashes_an_image_above_64k_verifies_and_reads_back(mega):
    from bootkit.classes.cdc.personality import PERSONALITY

    em, srv = mega
    em.memory.poke(0x20000, b"\x00" * 16)  # old content in a page the image leaves out: the pointer erases it
    image = Image([(0, bytes(range(256)) * 3 + b"\x07"), (0x1FFF1, b"across the 128 KiB line" * 3),
                   (0x3DFFF, b"\x42")])
    host = PERSONALITY.host()
    result = host.flash(image, Link(port=srv.slave_path), chip=get_chip("atmega2560"), progress=False)
    assert result.verified and result.dialect == "wiring"
    assert result.steps[-1].startswith("application started")
    assert em.memory.flash_bytes()[:0x3E000] == image.tobytes(0, 0x3E000, 0xFF)
    back = host.read(Link(port=srv.slave_path), dialect="wiring", progress=False)
    assert back.tobytes(0, 0x3E000) == image.tobytes(0, 0x3E000, 0xFF)


def test_host_eeprom_and_the_bootloader_refused_before_anything_is_sent(mega):
    from bootkit.classes.cdc import host

    em, srv = mega
    with pytest.raises(ImageRejected):
        host.uart_flash(Image([(0x3E000, b"\x00\x00")]), port=srv.slave_path, dialect="wiring", chip="atmega2560",
                        progress=False)
    assert srv.sessions == 0
    host.uart_flash(Image([(EEPROM_BASE + 0xFFF, b"\x99")]), port=srv.slave_path, dialect="wiring",
                    memory="eeprom", progress=False)
    assert em.memory.read(EEPROM_BASE + 0xFFF, 1) == b"\x99"


def test_fuse_access_signature_and_fuses(mega):
    from bootkit.classes.cdc.personality import PERSONALITY

    em, srv = mega
    host = PERSONALITY.host()
    assert isinstance(host, FuseAccess)
    link = Link(port=srv.slave_path)
    assert host.signature(link, dialect="wiring") == bytes.fromhex("1e9801")
    assert host.signature(link) == bytes.fromhex("1e9801")  # the port's board is a Mega 2560 (2341:0042)
    fuses = host.read_fuses(link, dialect="wiring")
    assert fuses == {**{f.name: f.default for f in M2560.fuses}, "lock": 0xFF}
    with pytest.raises(HostError, match=r"the wiring bootloader cannot write fuses: use an ISP programmer"):
        host.write_fuses(link, {"lfuse": 0xFF}, dialect="wiring")


def test_fuse_access_on_avr109():
    """The CDC host reads an AVR109 bootloader's signature and fuses ('s', 'F', 'N', 'Q', 'r')."""
    from bootkit.classes.cdc.avr109 import Avr109Engine
    from bootkit.classes.cdc.personality import PERSONALITY
    from bootkit.transports.pty import pty_server

    chip = get_chip("atmega32u4")
    mem = SimulatedFlash(chip)
    with pty_server(Avr109Engine(mem)) as srv:
        host = PERSONALITY.host()
        link = Link(port=srv.slave_path)
        assert host.signature(link) == bytes.fromhex("1e9587")
        assert host.read_fuses(link) == {"lfuse": 0x5E, "hfuse": 0x99, "efuse": 0xF3, "lock": 0xFF}
        with pytest.raises(HostError, match="cannot write fuses"):
            host.write_fuses(link, {"lfuse": 0xFF})
