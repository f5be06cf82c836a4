"""The optiboot dialect: Optiboot 8's STK500 v1 subset as an engine, our host against it, FuseAccess."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootkit.classes.cdc import chip_for, default_dialect
from bootkit.classes.cdc.optiboot import (
    CRC_EOP,
    STK_FAILED,
    STK_INSYNC,
    STK_NOSYNC,
    STK_OK,
    OptibootEngine,
)
from bootkit.classes.common import HostError, ImageRejected
from bootkit.contracts import FuseAccess, Link
from bootkit.formats.image import Image
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.memory.chips import EEPROM_BASE

M328P = chip_for(get_chip("atmega328p"), "optiboot")
M2560 = chip_for(get_chip("atmega2560"), "optiboot")
OK = bytes((STK_INSYNC, STK_OK))
FAILED = bytes((STK_INSYNC, STK_FAILED))


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def engine(chip=M328P, **kw):
    mem = SimulatedFlash(chip)
    return mem, OptibootEngine(mem, **kw)


def cmd(*parts) -> bytes:
    return b"".join(bytes([p]) if isinstance(p, int) else bytes(p) for p in parts) + bytes([CRC_EOP])


def load(word):
    return cmd(0x55, word & 0xFF, word >> 8)


def prog(kind, data):
    return cmd(0x64, len(data) >> 8, len(data) & 0xFF, kind, data)


def read(kind, n):
    return cmd(0x74, n >> 8, n & 0xFF, kind)


def test_the_boot_region_is_optiboots_512_bytes_and_the_chips_get_their_dialects():
    assert (M328P.boot_start, M328P.boot_size) == (0x7E00, 512)
    assert M2560.boot_size == 1024  # BIGBOOT on parts over 64 KiB
    assert default_dialect(get_chip("atmega328p")) == "optiboot"
    assert default_dialect(get_chip("atmega2560")) == "wiring"
    assert default_dialect(get_chip("atmega32u4")) == "lufa"  # a USB AVR keeps its own USB bootloader


def test_sync_parameters_signature_and_the_ignored_commands():
    _, e = engine()
    assert e.feed(cmd(0x30)) == OK  # STK_GET_SYNC
    assert e.feed(cmd(0x41, 0x81)) == bytes((STK_INSYNC, 8, STK_OK))  # SW_MAJOR: Optiboot 8
    assert e.feed(cmd(0x41, 0x82)) == bytes((STK_INSYNC, 0, STK_OK))  # SW_MINOR 0
    assert e.feed(cmd(0x41, 0x80)) == bytes((STK_INSYNC, 3, STK_OK))  # "a generic 0x03 reply"
    assert e.feed(cmd(0x42, bytes(20))) == OK  # STK_SET_DEVICE: 20 bytes read and ignored
    assert e.feed(cmd(0x45, bytes(5))) == OK  # STK_SET_DEVICE_EXT: 5
    assert e.feed(cmd(0x50)) == OK  # STK_ENTER_PROGMODE
    assert e.feed(cmd(0x75)) == bytes((STK_INSYNC, 0x1E, 0x95, 0x0F, STK_OK))
    # STK_UNIVERSAL: chip erase, fuse reads: 0x00, nothing done
    assert e.feed(cmd(0x56, 0xAC, 0x80, 0, 0)) == bytes((STK_INSYNC, 0, STK_OK))
    assert e.feed(cmd(0x56, 0x50, 0x00, 0, 0)) == bytes((STK_INSYNC, 0, STK_OK))


def test_split_feeds_are_one_stream():
    _, e = engine()
    whole = cmd(0x30) + cmd(0x75)
    out = b"".join(e.feed(whole[i:i + 1]) for i in range(len(whole)))
    assert out == OK + bytes((STK_INSYNC, 0x1E, 0x95, 0x0F, STK_OK))


def test_page_write_erases_the_page_and_takes_a_word_address():
    mem, e = engine()
    mem.poke(0x100, b"\x00" * 128)  # old content: the page write erases it first
    data = bytes(range(64))
    assert e.feed(load(0x80) + prog(b"F", data)) == OK + OK  # word 0x80 = byte 0x100
    assert mem.read(0x100, 64) == data
    assert mem.read(0x140, 64) == b"\xff" * 64  # the rest of the page: erased
    assert e.feed(load(0x80) + read(b"F", 64)) == OK + bytes([STK_INSYNC]) + data + bytes([STK_OK])


def test_eeprom_write_and_read_use_the_doubled_word_address():
    mem, e = engine()
    data = bytes((i * 7) & 0xFF for i in range(10))
    assert e.feed(load(0x10) + prog(b"E", data)) == OK + OK  # word 0x10: EEPROM byte 0x20 (avrdude's a_div 2)
    assert mem.read(EEPROM_BASE + 0x20, 10) == data
    assert e.feed(load(0x10) + read(b"E", 10)) == OK + bytes([STK_INSYNC]) + data + bytes([STK_OK])


@pytest.mark.parametrize("address,data,why", [
    (0x7E00, b"\x00" * 128, "the bootloader's own page"),
    (0x7F80, b"\x00" * 2, "the last page"),
    (0x40, b"\x00" * 128, "a block running past its page"),
    (0x100, b"\x00" * 3, "an odd length (SPM fills words)"),
    (0x8000, b"\x00" * 2, "past the flash"),
])
def test_refused_blocks_write_nothing_and_answer_failed(address, data, why):
    mem, e = engine()
    before = mem.flash_bytes()
    assert e.feed(load(address // 2) + prog(b"F", data) + cmd(0x30)) == OK + FAILED + OK, why
    assert mem.flash_bytes() == before


def test_a_frame_without_crc_eop_is_answered_nosync_and_the_stream_goes_on():
    _, e = engine()
    assert e.feed(bytes((0x30, 0x21))) == bytes([STK_NOSYNC])
    assert e.feed(cmd(0x30)) == OK


def test_ramp_z_reaches_above_128k_on_the_atmega2560():
    mem, e = engine(M2560)
    data = bytes(range(256))
    # avrdude's stk500_loadaddr for bootloaders: universal 0x4D 0x00 ext 0x00, then the word address
    word = 0x3C000 // 2  # 0x1E000: ext byte 1, top bit of the 16-bit word set (RAMPZ bit 0)
    frames = cmd(0x56, 0x4D, 0x00, word >> 16, 0x00) + load(word & 0xFFFF) + prog(b"F", data)
    assert e.feed(frames) == bytes((STK_INSYNC, 0, STK_OK)) + OK + OK
    assert mem.read(0x3C000, 256) == data
    # a read ending on the 64 KiB line moves RAMPZ on (ELPM Z+), as avrdude expects
    mem.poke(0xFF00, data)
    e.feed(cmd(0x56, 0x4D, 0x00, 0, 0x00) + load(0xFF00 // 2) + read(b"F", 256))
    assert e.rampz == 1


def test_leave_progmode_starts_the_application_and_a_reset_brings_the_bootloader_back():
    mem, e = engine()
    e.feed(load(0) + prog(b"F", b"\x0c\x94" * 64))
    assert e.feed(cmd(0x51)) == OK  # STK_LEAVE_PROGMODE
    assert e.application_running and mem.app_valid
    assert e.feed(cmd(0x30)) == b""  # the sketch has the UART
    e.disconnect()  # the port closes; its next open pulses DTR
    assert e.feed(cmd(0x30)) == OK


def test_the_watchdog_starts_a_present_application_after_one_second():
    clock = Clock()
    mem, e = engine(timeout=1.0, clock=clock)
    clock.now += 5
    e.tick(clock.now)
    assert not e.application_running  # blank flash: nothing to start, the bootloader stays
    e.feed(load(0) + prog(b"F", b"\x0c\x94" * 64))
    clock.now += 0.9
    e.tick(clock.now)
    assert not e.application_running
    clock.now += 0.2
    assert e.feed(cmd(0x30)) == b""  # 1.1 s without a byte: the chip reset into the sketch
    assert e.application_running
    e.reset(clock.now)
    assert e.feed(cmd(0x30)) == OK


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.builds(lambda w, d: load(w) + prog(b"F", d), st.integers(0, 0xFFFF), st.binary(min_size=1, max_size=300)),
    st.builds(lambda w, d: load(w) + prog(b"E", d), st.integers(0, 0xFFFF), st.binary(min_size=1, max_size=64)),
    st.builds(lambda e, w: cmd(0x56, 0x4D, 0, e, 0) + load(w), st.integers(0, 255), st.integers(0, 0xFFFF)),
), max_size=12), st.sampled_from([M328P, M2560]))
def test_random_input_never_crashes_nor_writes_the_bootloader(chunks, chip):
    mem = SimulatedFlash(chip)
    pattern = bytes((i * 29 + 5) & 0xFF for i in range(chip.boot_size))
    mem.poke(chip.boot_start, pattern)
    e = OptibootEngine(mem)
    for chunk in chunks:
        out = e.feed(chunk)
        assert isinstance(out, bytes)
    e.disconnect()
    assert mem.read(chip.boot_start, chip.boot_size) == pattern


# --------------------------------------------------------------------------
# our host against our device: an emulated Uno on a pty


@pytest.fixture
def uno():
    from bootkit.emulator import Emulator
    from bootkit.transports.pty import pty_server

    # the watchdog is off here: the exchange below must not race a 1-s timer on a loaded machine
    with Emulator("atmega328p", "cdc", options={"dialect": "optiboot", "timeout": None}) as em, \
            pty_server(em) as srv:
        yield em, srv


def test_host_flashes_verifies_and_reads_back(uno):
    from bootkit.classes.cdc.personality import PERSONALITY

    em, srv = uno
    assert em.chip.boot_start == 0x7E00
    image = Image([(0, bytes(range(256)) * 4 + b"\x01"), (0x5001, b"odd start"), (0x7DFF, b"\x42")])
    host = PERSONALITY.host()
    result = host.flash(image, Link(port=srv.slave_path), dialect="optiboot", progress=False)
    assert result.verified and result.dialect == "optiboot"
    assert result.steps[0] == "Optiboot 8.0 atmega328p"
    assert result.steps[-1].startswith("application started")
    for s, d in image.segments:
        assert em.memory.read(s, len(d)) == d
    back = host.read(Link(port=srv.slave_path), chip=get_chip("atmega328p"), progress=False)  # dialect from chip
    assert back.tobytes(0, 0x7E00) == image.tobytes(0, 0x7E00, 0xFF)


def test_host_writes_eeprom_at_odd_addresses(uno):
    from bootkit.classes.cdc import host

    em, srv = uno
    em.memory.poke(EEPROM_BASE + 0x40, b"\x11\x22\x33")
    image = Image([(EEPROM_BASE + 0x41, b"\xaa")])  # its word neighbours are read and kept
    host.uart_flash(image, port=srv.slave_path, dialect="optiboot", memory="eeprom", progress=False)
    assert em.memory.read(EEPROM_BASE + 0x40, 3) == b"\x11\xaa\x33"


def test_host_refuses_the_bootloader_region_before_sending_anything(uno):
    from bootkit.classes.cdc import host

    em, srv = uno
    with pytest.raises(ImageRejected):
        host.uart_flash(Image([(0x7E00, b"\x00\x00")]), port=srv.slave_path, dialect="optiboot",
                        chip="atmega328p", progress=False)
    assert srv.sessions == 0
    assert em.memory.read(0x7E00, 2) == b"\xff\xff"


def test_fuse_access_signature_only(uno):
    from bootkit.classes.cdc.personality import PERSONALITY

    em, srv = uno
    host = PERSONALITY.host()
    assert isinstance(host, FuseAccess)
    link = Link(port=srv.slave_path)
    assert host.signature(link, dialect="optiboot") == bytes.fromhex("1e950f")
    assert host.signature(link) == bytes.fromhex("1e950f")  # the port's board is an Uno (2341:0043): optiboot
    with pytest.raises(HostError, match="optiboot bootloader cannot read fuses"):
        host.read_fuses(link, dialect="optiboot")
    with pytest.raises(HostError, match=r"cannot write fuses: use an ISP programmer \(bootkit serve isp\)"):
        host.write_fuses(link, {"lfuse": 0xFF}, dialect="optiboot")


def test_the_command_line_flashes_an_emulated_uno_and_refuses_optiboots_region(tmp_path, capsys):
    from bootkit.cli import main
    from bootkit.formats import save

    good, bad = tmp_path / "fw.hex", tmp_path / "boot.hex"
    save(Image([(0, b"\x0c\x94" * 100 + b"\x01")]), good)
    save(Image([(0, b"\x0c\x94"), (0x7E00, b"\x00\x00")]), bad)
    assert main(["flash", str(good), "--via", "cdc", "--emulate", "atmega328p"]) == 0  # optiboot: the chip's
    assert "via cdc/optiboot" in capsys.readouterr().out
    assert main(["flash", str(bad), "--via", "cdc", "--emulate", "atmega328p"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"bootkit: error: {bad}: image data at 0x7E00 reaches into the bootloader region 0x7E00-0x7FFF "
                   "of atmega328p (optiboot)")


def test_the_uno_bridge_resets_on_dtr_and_its_watchdog_starts_the_sketch():
    """The bridge as the USB host sees it: SET_CONTROL_LINE_STATE with DTR is the auto-reset, the
    1-s watchdog runs from the device's tick (Target.poll), the bridge never re-enumerates."""
    from bootkit.classes.cdc import bridge_device
    from bootkit.usb.device import SetupPacket

    clock = Clock()
    mem = SimulatedFlash(M328P)
    mem.poke(0, b"\x0c\x94" * 64)  # a sketch
    dev = bridge_device(mem, M328P, dialect="optiboot", timeout=1.0, running=True, clock=clock)
    assert (dev.info.idVendor, dev.info.idProduct) == (0x2341, 0x0043)
    fn = dev.functions[0]

    def dtr(on):
        dev.control(SetupPacket(0x21, 0x22, 1 if on else 0, 0, 0))

    def talk(data):
        fn.ep_out(fn.data_out, data)
        return fn.ep_in(fn.data_in, 64) or b""

    assert talk(cmd(0x30)) == b""  # the sketch runs: the bootloader does not answer
    dtr(True)  # the port opens: RESET pulled low, Optiboot starts
    assert talk(cmd(0x30)) == OK
    clock.now += 0.5
    dev.tick(clock.now)
    assert talk(cmd(0x75)) == bytes((STK_INSYNC, 0x1E, 0x95, 0x0F, STK_OK))  # within the second: still there
    clock.now += 1.0
    dev.tick(clock.now)
    assert fn.engine.application_running  # 1 s without a byte: the watchdog reset into the sketch
    assert talk(cmd(0x30)) == b""
    dtr(False)
    dtr(True)
    assert talk(cmd(0x30)) == OK


class LatePort:
    """A serial-like object in front of an engine whose first answer comes late (after the host
    already sent its next sync), as a board still flashing its LED at start-up answers."""

    def __init__(self, engine):
        self.engine, self.timeout, self.inbox, self.held, self.writes = engine, 1.0, bytearray(), b"", 0

    def write(self, data):
        self.writes += 1
        answer = self.engine.feed(bytes(data))
        if self.writes == 1:
            self.held = answer  # the first answer is still on the wire
        else:
            self.inbox += self.held + answer
            self.held = b""
        return len(data)

    def read(self, n=1):
        out = bytes(self.inbox[:n])
        del self.inbox[:n]
        return out

    def reset_input_buffer(self):
        self.inbox.clear()


def test_a_late_sync_answer_does_not_put_the_host_a_reply_behind():
    from bootkit.classes.cdc import host

    mem, e = engine()
    client, _ = host._uart_session(LatePort(e), None, "optiboot", None, False, host.UART_BAUD)
    assert client.signature == bytes.fromhex("1e950f")
    assert client.read_range(0, 4) == b"\xff" * 4
