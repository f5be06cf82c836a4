"""The STK500 v2 programmer engine (device side) against AVR068 §5: what it answers and
which serial-programming instructions it clocks into the target."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bootkit.classes.isp.device import Stk500v2Programmer
from bootkit.isp import stk500v2 as S

from conftest import RecordingAvr


def run(engine, body, seq=1):
    """One command through the byte stream: the answer body (with the sequence number checked)."""
    answers = S.FrameParser().feed(engine.feed(S.encode_frame(seq, body)))
    assert len(answers) == 1 and answers[0][0] == seq
    return answers[0][1]


def enter(engine):
    assert run(engine, S.enter_progmode_isp()) == bytes((S.CMD_ENTER_PROGMODE_ISP, S.STATUS_CMD_OK))


def test_sign_on_names_as_avrdude_expects(avr):
    assert run(Stk500v2Programmer(avr), S.sign_on(), seq=0xFE) == b"\x01\x00\x08STK500_2"
    assert run(Stk500v2Programmer(avr, sign_on="AVRISP_2"), S.sign_on()) == b"\x01\x00\x08AVRISP_2"


def test_parameters(avr):
    e = Stk500v2Programmer(avr)
    assert run(e, S.get_parameter(S.PARAM_SW_MAJOR)) == b"\x03\x00\x02"
    assert run(e, S.set_parameter(S.PARAM_SCK_DURATION, 0x05)) == b"\x02\x00"
    assert run(e, S.get_parameter(S.PARAM_SCK_DURATION)) == b"\x03\x00\x05"
    assert run(e, S.get_parameter(0x42)) == bytes((S.CMD_GET_PARAMETER, S.STATUS_CMD_FAILED))


def test_enter_progmode_holds_reset_and_checks_the_echo(avr):
    e = Stk500v2Programmer(avr)
    enter(e)
    assert avr.resets == [True] and avr.frames == [b"\xac\x53\x00\x00"]
    assert run(e, S.get_parameter(S.PARAM_STATUS))[2] & 0x40
    assert run(e, S.leave_progmode_isp()) == b"\x11\x00" and avr.resets == [True, False]


def test_enter_progmode_fails_after_synch_loops_without_echo(avr):
    avr.spi = lambda frame: (avr.frames.append(frame), b"\xff\xff\xff\xff")[1]
    e = Stk500v2Programmer(avr)
    assert run(e, S.enter_progmode_isp(synch_loops=5)) == bytes((S.CMD_ENTER_PROGMODE_ISP, S.STATUS_CMD_FAILED))
    assert len(avr.frames) == 5


def test_program_flash_page_with_extended_address(avr):
    avr.flash = bytearray(b"\xff" * 256 * 1024)  # an ATmega2560
    avr.busy_polls = 2
    e = Stk500v2Programmer(avr)
    enter(e)
    word = 0x10000 + 0x80  # byte 0x20100: above 128 KiB, needs extended address 1
    assert run(e, S.load_address(word, extended=True)) == b"\x06\x00"
    data = bytes(range(256))
    avr.frames.clear()
    # avrdude.conf m2560 flash: mode 0x41 (page, RDY/BSY), loadpage 0x40, writepage 0x4C, read 0x20
    assert run(e, S.program_isp("flash", data, mode=0xC1, delay=10, cmd1=0x40, cmd2=0x4C, cmd3=0x20)) == b"\x13\x00"
    assert avr.frames[0] == b"\x4d\x00\x01\x00"
    assert avr.frames[1:3] == [b"\x40\x00\x80\x00", b"\x48\x00\x80\x01"]
    assert avr.frames[256] == b"\x48\x00\xff\xff"
    assert avr.frames[257] == b"\x4c\x00\x80\x00"  # the page written at its first word
    assert avr.frames[258:] == [b"\xf0\x00\x00\x00"] * 3  # busy, busy, ready
    assert avr.flash[0x20100:0x20200] == data
    # the address counter moved on one page: the next read continues there
    assert run(e, S.read_isp("flash", 4, 0x20)) == b"\x14\x00" + b"\xff" * 4 + b"\x00"
    run(e, S.load_address(word, extended=True))
    assert run(e, S.read_isp("flash", 256, 0x20)) == b"\x14\x00" + data + b"\x00"


def test_reading_across_a_64k_word_boundary_sends_a_new_extended_address(avr):
    avr.flash = bytearray(b"\xff" * 256 * 1024)
    avr.flash[0x1FFFE:0x20002] = b"\x01\x02\x03\x04"
    e = Stk500v2Programmer(avr)
    enter(e)
    run(e, S.load_address(0xFFFF, extended=True))
    avr.frames.clear()
    assert run(e, S.read_isp("flash", 4, 0x20))[2:6] == b"\x01\x02\x03\x04"
    assert [f for f in avr.frames if f[0] == 0x4D] == [b"\x4d\x00\x00\x00", b"\x4d\x00\x01\x00"]


def test_without_bit_31_no_extended_address_is_sent(avr):
    e = Stk500v2Programmer(avr)
    enter(e)
    run(e, S.load_address(0x40))
    avr.frames.clear()
    run(e, S.program_isp("flash", b"\x11\x22", mode=0xC1, delay=5, cmd1=0x40, cmd2=0x4C, cmd3=0x20))
    assert all(f[0] != 0x4D for f in avr.frames) and avr.flash[0x80:0x82] == b"\x11\x22"


def test_eeprom_page_and_byte_modes(avr):
    e = Stk500v2Programmer(avr)
    enter(e)
    run(e, S.load_address(0x10))
    # avrdude.conf m328p eeprom: mode 0x41, loadpage 0xC1, writepage 0xC2, read 0xA0
    assert run(e, S.program_isp("eeprom", b"\x01\x02\x03\x04", mode=0xC1, delay=20, cmd1=0xC1, cmd2=0xC2,
                                cmd3=0xA0)) == b"\x15\x00"
    assert avr.eeprom[0x10:0x14] == b"\x01\x02\x03\x04"
    # word (byte) mode with value polling: write 0xC0 per byte, read back with 0xA0
    avr.frames.clear()
    assert run(e, S.program_isp("eeprom", b"\x55\xff", mode=0x04, delay=20, cmd1=0xC0, cmd2=0x00,
                                cmd3=0xA0)) == b"\x15\x00"
    assert avr.frames[:2] == [b"\xc0\x00\x14\x55", b"\xa0\x00\x14\x00"]
    assert avr.eeprom[0x14:0x16] == b"\x55\xff"
    run(e, S.load_address(0x10))
    assert run(e, S.read_isp("eeprom", 6, 0xA0)) == b"\x16\x00\x01\x02\x03\x04\x55\xff\x00"


def test_fuses_lock_signature_calibration(avr):
    e = Stk500v2Programmer(avr)
    enter(e)
    assert run(e, S.program_isp_byte(S.CMD_PROGRAM_FUSE_ISP, b"\xac\xa8\x00\xde")) == b"\x17\x00\x00"
    assert run(e, S.read_isp_byte(S.CMD_READ_FUSE_ISP, b"\x58\x08\x00\x00")) == b"\x18\x00\xde\x00"
    assert run(e, S.program_isp_byte(S.CMD_PROGRAM_LOCK_ISP, b"\xac\xe0\x00\xfc")) == b"\x19\x00\x00"
    assert run(e, S.read_isp_byte(S.CMD_READ_LOCK_ISP, b"\x58\x00\x00\x00")) == b"\x1a\x00\xfc\x00"
    sig = [run(e, S.read_isp_byte(S.CMD_READ_SIGNATURE_ISP, bytes((0x30, 0, i, 0))))[2] for i in range(3)]
    assert bytes(sig) == b"\x1e\x95\x0f"
    assert run(e, S.read_isp_byte(S.CMD_READ_OSCCAL_ISP, b"\x38\x00\x00\x00")) == b"\x1c\x00\x9a\x00"
    # RetAddr is 1-based: 3 returns the byte shifted out while the third went in (the echo)
    assert run(e, S.read_isp_byte(S.CMD_READ_SIGNATURE_ISP, b"\x30\x00\x01\x00", ret_addr=3)) == b"\x1b\x00\x00\x00"
    assert run(e, S.read_isp_byte(S.CMD_READ_FUSE_ISP, b"\x50\x00\x00\x00", ret_addr=5))[1] == S.STATUS_CMD_FAILED


def test_chip_erase_polls_rdy_bsy_or_waits(avr):
    avr.busy_polls = 3
    e = Stk500v2Programmer(avr)
    enter(e)
    avr.flash[0:2] = b"\x00\x00"
    avr.frames.clear()
    assert run(e, S.chip_erase_isp(poll_method=1)) == b"\x12\x00"
    assert avr.frames == [b"\xac\x80\x00\x00"] + [b"\xf0\x00\x00\x00"] * 4
    assert avr.flash[0:2] == b"\xff\xff"
    avr.frames.clear()
    assert run(e, S.chip_erase_isp(poll_method=0)) == b"\x12\x00" and avr.frames == [b"\xac\x80\x00\x00"]


def test_rdy_bsy_timeout_is_reported():
    now = [0.0]
    avr = RecordingAvr(busy_polls=10**9)
    e = Stk500v2Programmer(avr, clock=lambda: now[0], sleep=lambda s: None)
    enter(e)
    real_spi = avr.spi

    def spi(frame):  # each poll takes 10 ms of the injected clock
        now[0] += 0.01
        return real_spi(frame)

    avr.spi = spi
    assert run(e, S.chip_erase_isp(poll_method=1)) == bytes((S.CMD_CHIP_ERASE_ISP, S.STATUS_RDY_BSY_TOUT))


def test_a_value_poll_that_never_matches_times_out_at_the_first_byte():
    ticks = iter(range(10**9))
    avr = RecordingAvr()
    e = Stk500v2Programmer(avr, clock=lambda: next(ticks) / 100, sleep=lambda s: None)
    enter(e)
    run(e, S.load_address(0))
    avr.frames.clear()
    # word mode with value polling, but cmd1 only loads the page buffer: nothing reads back
    answer = run(e, S.program_isp("flash", b"\x12\x34\x56", mode=0x04, delay=5, cmd1=0x40, cmd2=0, cmd3=0x20))
    assert answer == bytes((S.CMD_PROGRAM_FLASH_ISP, S.STATUS_CMD_TOUT))
    assert [f for f in avr.frames if f[0] in (0x40, 0x48)] == [b"\x40\x00\x00\x12"]  # then it gave up


def test_spi_multi(avr):
    e = Stk500v2Programmer(avr)
    enter(e)
    # avrdude's stk500v2_cmd(): NumTx 4, NumRx 4, RxStart 0 (the universal command)
    assert run(e, S.spi_multi(b"\x30\x00\x02\x00", 4)) == b"\x1d\x00\xff\x30\x00\x0f\x00"
    assert run(e, S.spi_multi(b"\x30\x00\x00\x00\x30\x00\x01\x00", 2, rx_start=3)) == b"\x1d\x00\x1e\xff\x00"
    assert run(e, S.spi_multi(b"\x30\x00\x00", 3))[1] == S.STATUS_CMD_FAILED  # a partial instruction


def test_unknown_short_and_corrupt_commands(avr):
    e = Stk500v2Programmer(avr)
    assert run(e, b"\x7f") == bytes((0x7F, S.STATUS_CMD_UNKNOWN))
    assert run(e, b"\x18\x04\x50") == bytes((0x18, S.STATUS_CMD_FAILED))
    frame = bytearray(S.encode_frame(9, S.sign_on()))
    frame[-1] ^= 0xFF
    assert S.FrameParser().feed(e.feed(bytes(frame))) == [(9, S.CKSUM_ERROR_BODY)]
    assert run(e, S.sign_on(), seq=10)[:2] == b"\x01\x00"  # in step again


def test_a_target_out_of_programming_mode_is_not_written(avr):
    e = Stk500v2Programmer(avr)
    run(e, S.load_address(0))
    run(e, S.program_isp("flash", b"\x00\x00", mode=0xC1, delay=5, cmd1=0x40, cmd2=0x4C, cmd3=0x20))
    assert avr.flash[:2] == b"\xff\xff"


@given(st.lists(st.binary(min_size=1, max_size=S.MAX_BODY), max_size=8))
def test_random_commands_never_crash(bodies):
    avr = RecordingAvr(flash_size=256 * 1024, eeprom_size=64 * 1024)
    e = Stk500v2Programmer(avr)
    enter(e)
    for i, body in enumerate(bodies):
        answer = run(e, body, seq=i & 0xFF)
        assert answer[0] == body[0] and len(answer) >= 2


def _command_bodies():
    """Well-formed commands with random fields, and noise."""
    addr = st.integers(0, 0x3FFFF)
    data = st.binary(min_size=0, max_size=256)
    instr = st.binary(min_size=4, max_size=4)
    return st.one_of(
        st.builds(lambda a, e: S.load_address(a, extended=e), addr, st.booleans()),
        st.builds(lambda d, m: S.program_isp("flash", d, mode=m, delay=1, cmd1=0x40, cmd2=0x4C, cmd3=0x20),
                  data, st.integers(0, 255)),
        st.builds(lambda d, m: S.program_isp("eeprom", d, mode=m, delay=1, cmd1=0xC1, cmd2=0xC2, cmd3=0xA0),
                  data, st.integers(0, 255)),
        st.builds(lambda n: S.read_isp("flash", n, 0x20), st.integers(0, 300)),
        st.builds(lambda n: S.read_isp("eeprom", n, 0xA0), st.integers(0, 300)),
        st.builds(lambda i, r: S.read_isp_byte(S.CMD_READ_FUSE_ISP, i, r), instr, st.integers(0, 6)),
        st.builds(lambda i: S.program_isp_byte(S.CMD_PROGRAM_FUSE_ISP, i), instr),
        st.builds(lambda t, n, s: S.spi_multi(t, n, s), st.binary(max_size=12), st.integers(0, 12),
                  st.integers(0, 12)),
        st.just(S.chip_erase_isp(poll_method=1)),
        st.just(S.leave_progmode_isp()),
        st.just(S.enter_progmode_isp()),
        st.binary(min_size=1, max_size=40),
    )


@given(st.sampled_from(["attiny85", "atmega2560"]), st.lists(_command_bodies(), max_size=12))
def test_random_commands_against_the_emulated_avr(chip, bodies):
    from bootkit.isp.target import EmulatedAvr

    target = EmulatedAvr(chip)
    ticks = iter(range(10**9))
    # the programmer's clock moves 10 ms per look: a poll that never succeeds (value polling
    # of a byte that was never written) times out after 20 looks, not 200 ms of real time
    e = Stk500v2Programmer(target, clock=lambda: next(ticks) / 100, sleep=lambda s: None)
    enter(e)
    for i, body in enumerate(bodies):
        answer = run(e, body, seq=i & 0xFF)
        assert answer[0] == body[0] and len(answer) >= 2
        assert len(S.encode_frame(0, answer)) <= S.MAX_BODY + 6  # every answer fits the STK500's buffer
