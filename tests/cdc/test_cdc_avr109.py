"""The AVR109 engine as a byte stream: LUFA/Caterina behaviour, bad input, properties."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootkit.classes.cdc.avr109 import Avr109Engine
from bootkit.memory import SimulatedFlash, get_chip
from bootkit.memory.chips import EEPROM_BASE, LOCK_BASE

M32U4 = get_chip("atmega32u4")
M2560 = get_chip("atmega2560")


def engine(chip=M32U4, **kw):
    mem = SimulatedFlash(chip)
    return mem, Avr109Engine(mem, **kw)


def addr(word):
    return b"A" + word.to_bytes(2, "big")


def block(kind, data):
    return b"B" + len(data).to_bytes(2, "big") + kind + data


def test_identification_lufa_and_caterina():
    _, e = engine()
    assert e.feed(b"\x1bS") == b"LUFACDC"
    assert e.feed(b"V") == b"10"
    # two digits: avrdude's avr910.c reads two bytes (butterfly.c reads two unless the first is '?')
    assert e.feed(b"v") == b"10"
    assert e.feed(b"p") == b"S"
    assert e.feed(b"a") == b"Y"
    assert e.feed(b"b") == b"Y\x00\x80"  # 128-byte pages, big-endian
    # the part's AVR910 code (avrdude.conf's note for m32u4: the ATmega128's 0x43), LUFA's 0x44, end
    assert e.feed(b"t") == b"\x43\x44\x00"
    assert e.feed(b"TD") == b"\r"
    assert e.feed(b"PL") == b"\r\r"
    assert e.feed(b"x\x01y\x01") == b"\r\r"
    _, c = engine(dialect="caterina")
    assert c.feed(b"S") == b"CATERIN"
    _, o = engine(software_id="MYBOOT1")
    assert o.feed(b"S") == b"MYBOOT1"
    with pytest.raises(ValueError):
        engine(software_id="TOOLONG8")


def test_signature_is_sent_reversed_as_avrdude_expects():
    _, e = engine()
    # butterfly_read_sig_bytes swaps bytes 0 and 2 of the reply
    assert e.feed(b"s") == bytes((0x87, 0x95, 0x1E))


def test_fuses_and_lock():
    mem, e = engine()
    assert e.feed(b"F") == b"\x5e"
    assert e.feed(b"N") == b"\x99"
    assert e.feed(b"Q") == b"\xf3"
    assert e.feed(b"r") == b"\xff"
    # boot_lock_bits_set: bits given as 1 get programmed; only BLB bits via SPM
    assert e.feed(b"l\x0c") == b"\r"
    assert mem.read(LOCK_BASE, 1) == b"\xf3"
    assert e.feed(b"l\x03") == b"\r"  # LB bits cannot be reached by SPM
    assert e.feed(b"r") == b"\xf3"


def test_block_write_read_flash_word_addresses_and_auto_increment():
    mem, e = engine()
    page = bytes(range(128))
    assert e.feed(addr(0x40) + block(b"F", page) + block(b"F", page[::-1])) == b"\r\r\r"
    assert mem.read(0x80, 128) == page  # word 0x40 = byte 0x80
    assert mem.read(0x100, 128) == page[::-1]  # auto increment
    assert e.feed(addr(0x40) + b"g\x00\x80F") == b"\r" + page
    assert e.feed(b"g\x00\x80F") == page[::-1]
    assert e.feed(addr(0x40) + b"R") == b"\r" + bytes((page[1], page[0]))  # high byte first


def test_chip_erase_clears_the_application_not_the_bootloader():
    mem, e = engine()
    mem.poke(M32U4.boot_start, b"BOOT")
    e.feed(addr(0) + block(b"F", b"\x00" * 128))
    assert e.feed(b"e") == b"\r"
    assert mem.read(0, 128) == b"\xff" * 128
    assert mem.read(M32U4.boot_start, 4) == b"BOOT"


def test_h_command_reaches_past_128k():
    mem, e = engine(M2560)
    data = bytes(range(256))
    word = 0x18000  # byte 0x30000
    assert e.feed(b"H" + word.to_bytes(3, "big") + block(b"F", data)) == b"\r\r"
    assert mem.read(0x30000, 256) == data
    assert e.feed(b"H" + word.to_bytes(3, "big") + b"g\x01\x00F") == b"\r" + data


def test_eeprom_block_and_byte_commands_use_byte_addresses():
    mem, e = engine()
    assert e.feed(addr(0x10) + block(b"E", b"\x01\x02\x03")) == b"\r\r"
    assert mem.read(EEPROM_BASE + 0x10, 3) == b"\x01\x02\x03"
    assert e.feed(b"D\x04") == b"\r"  # continues at 0x13
    assert mem.read(EEPROM_BASE + 0x13, 1) == b"\x04"
    assert e.feed(addr(0x10) + b"d" + b"g\x00\x04E") == b"\r\x01" + b"\x02\x03\x04\xff"
    assert e.feed(addr(1023) + block(b"E", b"\x00\x00")) == b"\r?"  # past the end of EEPROM


def test_word_wise_fill_and_page_write():
    mem, e = engine()
    out = e.feed(addr(0x20) + b"C\x12c\x34C\x56c\x78" + addr(0x20) + b"m")
    assert out == b"\r" * 7
    assert mem.read(0x40, 4) == b"\x34\x12\x78\x56"
    assert mem.read(0x44, 124) == b"\xff" * 124


def test_block_past_the_end_or_into_the_bootloader_writes_nothing():
    mem, e = engine()
    before = mem.flash_bytes()
    boot_word = M32U4.boot_start // 2
    assert e.feed(addr(boot_word) + block(b"F", b"\x00" * 128)) == b"\r?"
    assert e.feed(addr(boot_word - 32) + block(b"F", b"\x00" * 128)) == b"\r?"  # straddles the boundary
    assert e.feed(b"H\x00\xff\xff" + block(b"F", b"\x00" * 128)) == b"\r?"  # past the end of flash
    assert mem.flash_bytes() == before
    # still in sync: the refused block's data were consumed, not run as commands
    assert e.feed(b"S") == b"LUFACDC"


def test_truncated_block_leaves_page_unwritten_and_application_invalid():
    mem, e = engine()
    e.feed(addr(0) + block(b"F", b"\x0c\x94" * 64))
    e.feed(b"E")
    assert mem.app_valid
    e.disconnect()  # the application ran; a new session finds the bootloader
    e.feed(addr(0) + block(b"F", b"\x11" * 128))  # a new update starts
    assert not mem.app_valid
    partial = block(b"F", b"\x22" * 128)[:70]
    assert e.feed(partial) == b""  # waiting for the rest
    e.disconnect()  # the host is gone
    assert mem.read(0x80, 128) == b"\xff" * 128
    assert not mem.app_valid
    assert e.feed(b"\x1bS") == b"LUFACDC"  # the next host syncs


def test_garbage_between_commands_is_answered_without_losing_sync():
    _, e = engine()
    assert e.feed(b"Z") == b"?"
    assert e.feed(b"\x00\x01Z") == b"???"
    assert e.feed(b"zS") == b"?LUFACDC"
    assert e.feed(b"\x1b\x1b") == b""
    assert e.feed(b"g\x00\x02X") == b"?"  # unknown memory type (LUFA answers '?')


def test_exit_manifests_and_signals_leave():
    mem, e = engine()
    seen = []
    e.signal = lambda kind, reason="", delay=0.0: seen.append(kind)
    assert e.feed(b"E") == b"\r"  # blank flash: nothing to start, still acknowledged
    assert not mem.app_valid
    e.feed(addr(0) + block(b"F", b"\x0c\x94" * 64) + b"E")
    assert mem.app_valid and seen == ["leave", "leave"]


def test_commands_split_across_feeds():
    mem, e = engine()
    stream = addr(0) + block(b"F", bytes(range(128)))
    out = b"".join(e.feed(stream[i:i + 1]) for i in range(len(stream)))
    assert out == b"\r\r"
    assert mem.read(0, 128) == bytes(range(128))


# ---------------------------------------------------------------------------
# properties

_tokens = st.one_of(
    st.binary(min_size=1, max_size=8),
    st.sampled_from([b"e", b"E", b"S", b"s", b"b", b"P", b"L", b"r", b"F", b"m", b"R", b"\x1b"]),
    st.builds(lambda w: b"A" + w.to_bytes(2, "big"), st.integers(0, 0xFFFF)),
    st.builds(lambda w: b"H" + w.to_bytes(3, "big"), st.integers(0, 0xFFFFFF)),
    st.builds(lambda k, d: b"B" + len(d).to_bytes(2, "big") + k + d, st.sampled_from([b"F", b"E", b"X"]),
              st.binary(max_size=300)),
    st.builds(lambda k, n: b"g" + n.to_bytes(2, "big") + k, st.sampled_from([b"F", b"E", b"U"]),
              st.integers(0, 600)),
    st.builds(lambda c, v: c + bytes([v]), st.sampled_from([b"c", b"C", b"D", b"l", b"T", b"x"]),
              st.integers(0, 255)),
)


@pytest.mark.parametrize("chip", [M32U4, M2560], ids=lambda c: c.name)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=st.lists(_tokens, max_size=40), cuts=st.lists(st.integers(0, 4000), max_size=5))
def test_random_streams_never_crash_nor_touch_the_bootloader(chip, stream, cuts):
    mem = SimulatedFlash(chip)
    marker = bytes((i * 7 + 3) & 0xFF for i in range(chip.boot_size))
    mem.poke(chip.boot_start, marker)
    fuses_before = mem.region_bytes("fuses")
    sig_before = mem.region_bytes("signature")
    e = Avr109Engine(mem)
    data = b"".join(stream)
    points = sorted({0, len(data), *[c for c in cuts if c < len(data)]})
    for a, b in zip(points, points[1:]):
        reply = e.feed(data[a:b])
        assert isinstance(reply, bytes)
    e.disconnect()
    assert mem.read(chip.boot_start, chip.boot_size) == marker
    assert mem.region_bytes("fuses") == fuses_before
    assert mem.region_bytes("signature") == sig_before
    # and it still answers in sync afterwards
    assert e.feed(b"\x1bS") == b"LUFACDC"


# --------------------------------------------------------------------------
# AVR910 (avrdude -c avr910): universal commands, hardware version, device codes


def universal(b1, b2, b3=0, b4=0):
    return b"." + bytes((b1, b2, b3, b4))


def test_universal_command_reads_fuses_lock_and_signature():
    mem, e = engine()
    # avrdude.conf m32u4: lfuse read 0x50 0x00, hfuse 0x58 0x08, efuse 0x50 0x08, lock 0x58 0x00
    assert e.feed(universal(0x50, 0x00)) == b"\x5e\r"
    assert e.feed(universal(0x58, 0x08)) == b"\x99\r"
    assert e.feed(universal(0x50, 0x08)) == b"\xf3\r"
    assert e.feed(universal(0x58, 0x00)) == b"\xff\r"
    assert b"".join(e.feed(universal(0x30, 0, i)) for i in range(3)) == b"\x1e\r\x95\r\x87\r"
    # the old 3-byte form ':'
    assert e.feed(b":\x50\x00\x00") == b"\x5e\r"
    # the stream stays in step: the next command is answered as itself
    assert e.feed(universal(0x50, 0x00) + b"S") == b"\x5e\rLUFACDC"


def test_universal_lock_write_reaches_only_the_boot_lock_bits_and_fuse_writes_change_nothing():
    mem, e = engine()
    assert e.feed(universal(0xAC, 0xE0, 0, 0xF3)) == b"\x00\r"  # program BLB11/BLB12 (bits 3..2)
    assert mem.read(LOCK_BASE, 1) == b"\xf3"
    assert e.feed(universal(0xAC, 0xE0, 0, 0xC0)) == b"\x00\r"  # LB1/LB2 too: SPM cannot
    assert e.feed(universal(0x58, 0x00)) == b"\xc3\r"
    assert e.feed(universal(0xAC, 0xA0, 0, 0xFF)) == b"\x00\r"
    assert e.feed(universal(0x50, 0x00)) == b"\x5e\r"  # the low fuse is unchanged: the host's verify sees it


def test_unknown_universal_instruction_answers_question_mark_and_stays_in_step():
    _, e = engine()
    assert e.feed(universal(0x38, 0, 0, 0) + b"p") == b"?\rS"  # calibration byte: not kept


def test_device_codes_follow_the_signature():
    _, e = engine(get_chip("atmega328p"))  # no AVR910 code: LUFA's only
    assert e.feed(b"t") == b"\x44\x00"
    _, e = engine(get_chip("at90usb1286"))
    assert e.feed(b"t") == b"\x43\x44\x00"


@pytest.mark.parametrize("name", ["stm32f411", "rp2040", "stm32f103c8"])
def test_an_avr109_engine_refuses_a_chip_whose_flash_it_cannot_address(name):
    with pytest.raises(ValueError, match="out of AVR109's reach"):
        engine(get_chip(name))


def test_after_e_with_a_valid_application_the_bare_engine_is_silent_until_the_port_closes():
    mem, e = engine()
    assert e.feed(addr(0) + block(b"F", b"\x0c\x94" * 64)) == b"\r\r"
    assert e.feed(b"E") == b"\r"
    assert mem.app_valid
    assert e.feed(b"\x1bS") == b""  # the application runs: no AVR109 answer
    e.disconnect()
    assert e.feed(b"S") == b"LUFACDC"


def test_after_e_on_blank_flash_the_bootloader_keeps_answering():
    mem, e = engine()
    assert e.feed(b"E") == b"\r"
    assert not mem.app_valid
    assert e.feed(b"\x1bS") == b"LUFACDC"
