"""EmulatedAvr: the AVR on the other end of the ISP wires, instruction by instruction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootkit.isp import protocol as P
from bootkit.isp.errors import IspInputError
from bootkit.isp.target import WAIT_DELAYS, EmulatedAvr
from bootkit.memory.chips import EEPROM_BASE


class Clock:
    """An injected monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def enabled(chip="attiny85", **kw) -> EmulatedAvr:
    t = EmulatedAvr(chip, **kw)
    t.reset(True)
    assert t.spi(P.programming_enable())[2] == 0x53
    return t


def data(t: EmulatedAvr, frame: bytes) -> int:
    return t.spi(frame)[3]


def load_and_write_page(t: EmulatedAvr, byte_address: int, page: bytes) -> None:
    for i in range(0, len(page), 2):
        word = (byte_address + i) // 2
        t.spi(P.load_program_page(word, False, page[i]))
        t.spi(P.load_program_page(word, True, page[i + 1]))
    word = byte_address // 2
    if word >> 16 or t.chip.flash_size > 128 * 1024:
        t.spi(P.load_extended_address(word >> 16))
    t.spi(P.write_program_page(word & 0xFFFF))


def read_flash(t: EmulatedAvr, byte_address: int, n: int) -> bytes:
    out = bytearray()
    for a in range(byte_address, byte_address + n):
        word = a // 2
        t.spi(P.load_extended_address(word >> 16))
        out.append(data(t, P.read_program(word & 0xFFFF, bool(a & 1))))
    return bytes(out)


# ---------------------------------------------------------------- programming mode


def test_a_running_chip_ignores_spi():
    t = EmulatedAvr("attiny85")
    assert t.spi(P.programming_enable()) == b"\xff\xff\xff\xff"
    assert t.spi(P.read_signature(0)) == b"\xff\xff\xff\xff"
    assert not t.programming


def test_reset_held_but_not_enabled_only_echoes():
    t = EmulatedAvr("attiny85")
    t.reset(True)
    answers = [data(t, P.read_signature(i)) for i in range(3)]
    assert answers != list(t.chip.signature)  # the shift register's echo, not the signature
    load_and_write_page(t, 0, bytes(64))
    assert t.memory.peek(0, 64) == b"\xff" * 64  # nothing written
    assert t.spi(P.programming_enable())[2] == 0x53
    assert [data(t, P.read_signature(i)) for i in range(3)] == [0x1E, 0x93, 0x0B]


def test_releasing_reset_leaves_programming_mode():
    t = enabled()
    t.reset(False)
    t.reset(True)
    assert data(t, P.read_signature(1)) != 0x93
    assert t.spi(P.programming_enable())[2] == 0x53 and t.programming


def test_a_non_avr_chip_is_refused():
    with pytest.raises(IspInputError, match="stm32f103c8 is not a classic AVR"):
        EmulatedAvr("stm32f103c8")
    with pytest.raises(IspInputError, match="4 bytes"):
        enabled().spi(b"\xac\x53\x00")


def test_a_memory_built_elsewhere_is_driven_if_isp_can_reach_all_of_it():
    from bootkit.memory import SimulatedFlash, get_chip

    chip = get_chip("atmega328p")
    memory = SimulatedFlash(chip.with_boot(0))
    t = EmulatedAvr(chip, memory=memory)
    t.reset(True)
    t.spi(P.programming_enable())
    load_and_write_page(t, 32768 - 128, b"\x01" * 128)  # the boot section's place
    assert memory.peek(32768 - 128, 2) == b"\x01\x01"
    with pytest.raises(IspInputError, match="no protected region"):
        EmulatedAvr(chip, memory=SimulatedFlash(chip))  # a 4 KiB boot section ISP would fail to write
    with pytest.raises(IspInputError, match="not both"):
        EmulatedAvr(chip, memory=memory, image="x.bin")


# ---------------------------------------------------------------- flash


def test_the_whole_flash_is_writable_and_the_page_buffer_commits():
    t = enabled()
    assert t.chip.boot_size == 0
    page = bytes(range(64))
    load_and_write_page(t, 8192 - 64, page)  # the top page: a bootloader's place, not protected over ISP
    assert t.memory.peek(8192 - 64, 64) == page
    assert read_flash(t, 8192 - 64, 64) == page
    # the buffer is cleared by the write: writing again without loading changes nothing
    t.spi(P.write_program_page((8192 - 64) // 2))
    assert t.memory.peek(8192 - 64, 64) == page


def test_writing_a_programmed_cell_ands_as_nor_flash():
    t = enabled()
    load_and_write_page(t, 0, b"\xf0" * 64)
    load_and_write_page(t, 0, b"\x3c" * 64)
    assert t.memory.peek(0, 64) == b"\x30" * 64


def test_write_page_commits_to_the_page_addressed_by_any_word_in_it():
    t = enabled("atmega328p")
    for w in range(64):
        t.spi(P.load_program_page(w, False, w))
        t.spi(P.load_program_page(w, True, 0x80 | w))
    t.spi(P.write_program_page(128 // 2 + 17))  # a word inside the second page
    assert t.memory.peek(128, 4) == bytes((0, 0x80, 1, 0x81))
    assert t.memory.peek(0, 128) == b"\xff" * 128


def test_above_128_kib_the_extended_address_selects_the_upper_half():
    t = enabled("atmega2560")
    page = bytes((i * 7) & 0xFF for i in range(256))
    load_and_write_page(t, 0x3FF00, page)
    assert t.memory.peek(0x3FF00, 256) == page
    assert t.memory.peek(0x1FF00, 256) == b"\xff" * 256
    assert read_flash(t, 0x3FF00, 256) == page
    t.spi(P.load_extended_address(0))
    assert data(t, P.read_program(0xFF80, False)) == 0xFF  # the lower half's word


# ---------------------------------------------------------------- EEPROM


def test_eeprom_byte_and_page_writes():
    t = enabled()
    t.spi(P.write_eeprom(0x101, 0x5A))
    assert data(t, P.read_eeprom(0x101)) == 0x5A
    t.spi(P.write_eeprom(0x101, 0xA5))  # a byte write erases first: no AND
    assert data(t, P.read_eeprom(0x101)) == 0xA5
    t.spi(P.load_eeprom_page(1, 0x11))
    t.spi(P.load_eeprom_page(3, 0x33))
    t.spi(P.write_eeprom_page(0x100))
    # only the loaded bytes change; 0x101 keeps the page write's 0x11, 0x100 and 0x102 stay
    assert t.memory.peek(EEPROM_BASE + 0x100, 4) == bytes((0xFF, 0x11, 0xFF, 0x33))


# ---------------------------------------------------------------- fuses and lock


def test_fuse_masks_unimplemented_bits_read_as_one():
    t = enabled()
    t.spi(P.write_fuse("efuse", 0x00))
    assert data(t, P.read_fuse("efuse")) == 0xFE  # the ATtiny85 has one extended fuse bit
    t.spi(P.write_fuse("lfuse", 0xE1))
    assert data(t, P.read_fuse("lfuse")) == 0xE1
    t.spi(P.write_lock(0x00))
    assert data(t, P.read_lock()) == 0xFC  # two lock bits


def test_spien_cannot_be_changed_over_isp():
    t = enabled()
    t.spi(P.write_fuse("hfuse", 0xFF))  # SPIEN (bit 5) unprogrammed: ISP would lock itself out
    assert data(t, P.read_fuse("hfuse")) == 0xDF


def test_lock_mode_2_refuses_writes_mode_3_reads_and_only_erase_clears():
    t = enabled("atmega328p")
    load_and_write_page(t, 0, b"\x12" * 128)
    t.spi(P.write_eeprom(0, 0x34))
    t.spi(P.write_lock(0xFE))  # LB1 programmed: mode 2
    load_and_write_page(t, 128, b"\x00" * 128)
    t.spi(P.write_eeprom(1, 0x00))
    t.spi(P.write_fuse("lfuse", 0x00))
    assert t.memory.peek(128, 128) == b"\xff" * 128
    assert data(t, P.read_eeprom(1)) == 0xFF and data(t, P.read_fuse("lfuse")) == 0x62
    assert data(t, P.read_program(0, False)) == 0x12  # mode 2 still reads
    t.spi(P.write_lock(0xFF))  # a write cannot unprogram a lock bit
    assert data(t, P.read_lock()) == 0xFE
    t.spi(P.write_lock(0xFC))  # mode 3: verification disabled
    assert data(t, P.read_program(0, False)) == 0xFF and data(t, P.read_eeprom(0)) == 0xFF
    assert [data(t, P.read_signature(i)) for i in range(3)] == [0x1E, 0x95, 0x0F]  # still readable
    t.spi(P.chip_erase())
    assert data(t, P.read_lock()) == 0xFF
    assert t.memory.peek(0, 128) == b"\xff" * 128 and data(t, P.read_eeprom(0)) == 0xFF


def test_chip_erase_keeps_eeprom_when_eesave_is_programmed():
    t = enabled()
    t.spi(P.write_eeprom(5, 0x55))
    t.spi(P.write_fuse("hfuse", 0xD7))  # EESAVE (bit 3) programmed
    t.spi(P.chip_erase())
    assert data(t, P.read_eeprom(5)) == 0x55
    t.spi(P.write_fuse("hfuse", 0xDF))
    t.spi(P.chip_erase())
    assert data(t, P.read_eeprom(5)) == 0xFF
    assert data(t, P.read_fuse("hfuse")) == 0xDF  # chip erase leaves fuses alone


# ---------------------------------------------------------------- real time


@pytest.mark.parametrize("chip", ["attiny85", "atmega328p", "atmega2560"])
def test_realtime_busy_for_the_datasheet_delays(chip):
    clock = Clock()
    t = enabled(chip, realtime=True, clock=clock)
    delays = WAIT_DELAYS[chip]
    page = t.chip.page_size
    assert data(t, P.poll_rdy()) & 1 == 0
    load_and_write_page(t, 0, b"\x00" * page)
    assert data(t, P.poll_rdy()) & 1 == 1 and not t.rdy()
    assert t.busy_until == pytest.approx(clock.now + delays.flash / 1000)
    # an instruction sent while busy is lost, as on the chip
    t.spi(P.write_eeprom(0, 0x00))
    clock.now += delays.flash / 1000 * 0.99
    assert data(t, P.poll_rdy()) & 1 == 1
    # data polling: the flash reads 0xFF until the page is written (the echo would say 0x00)
    assert data(t, P.read_program(0, False)) == 0xFF and data(t, P.read_eeprom(0)) == 0xFF
    clock.now += delays.flash / 1000 * 0.02
    assert data(t, P.poll_rdy()) & 1 == 0
    assert data(t, P.read_eeprom(0)) == 0xFF
    t.spi(P.chip_erase())
    clock.now += delays.erase / 1000 * 0.99
    assert data(t, P.poll_rdy()) & 1 == 1
    clock.now += delays.erase / 1000 * 0.02
    assert t.rdy()
    t.spi(P.write_fuse("lfuse", 0xE2))
    assert t.busy_until == pytest.approx(clock.now + delays.fuse / 1000)


def test_fast_mode_is_never_busy():
    t = enabled()
    t.spi(P.chip_erase())
    assert data(t, P.poll_rdy()) & 1 == 0 and t.rdy()


# ---------------------------------------------------------------- persistence


def test_image_eeprom_fuses_and_lock_survive_close(tmp_path):
    image = tmp_path / "t85.bin"
    t = enabled(image=image)
    load_and_write_page(t, 64, bytes(range(64)))
    t.spi(P.write_eeprom(7, 0x77))
    t.spi(P.write_fuse("lfuse", 0xE2))
    t.spi(P.write_lock(0xFE))
    t.close()
    assert image.read_bytes()[64:128] == bytes(range(64)) and len(image.read_bytes()) == 8192
    t2 = enabled(image=image)
    assert t2.memory.peek(64, 64) == bytes(range(64))
    assert data(t2, P.read_eeprom(7)) == 0x77
    assert t2.fuses() == {"lfuse": 0xE2, "hfuse": 0xDF, "efuse": 0xFF, "lock": 0xFE}
    t2.close()


def test_releasing_reset_saves_the_image(tmp_path):
    image = tmp_path / "t85.bin"
    t = enabled(image=image)
    load_and_write_page(t, 0, b"\x42" * 64)
    t.reset(False)  # the chip runs its program now: what was programmed is on disk
    assert image.read_bytes()[:64] == b"\x42" * 64
    t.close()


def test_the_application_is_valid_when_reset_releases_a_programmed_flash():
    # an AVR runs whatever its flash holds: the memory core's entry policy sees a valid image
    t = enabled()
    assert not t.memory.app_valid
    load_and_write_page(t, 0, b"\x0c\x94" * 32)
    assert not t.memory.app_valid  # not while the programmer holds RESET
    t.reset(False)
    assert t.memory.app_valid
    t.reset(True)
    t.spi(P.programming_enable())
    t.spi(P.chip_erase())
    t.reset(False)
    assert not t.memory.app_valid  # erased: nothing to run


# ---------------------------------------------------------------- robustness


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=4, max_size=4), max_size=40), st.sampled_from(["attiny85", "atmega2560"]))
def test_random_frames_never_crash(frames, chip):
    t = enabled(chip)
    for frame in frames:
        answer = t.spi(frame)
        assert len(answer) == 4
    # whatever came in, the signature is intact and programming still works
    t.spi(P.programming_enable())
    assert bytes(data(t, P.read_signature(i)) for i in range(3)) == t.chip.signature


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=4, max_size=4), max_size=30), st.booleans())
def test_without_programming_enable_random_frames_change_nothing(frames, reset_held):
    t = EmulatedAvr("atmega328p")
    t.reset(reset_held)
    before = (t.memory.flash_bytes(), t.memory.region_bytes("eeprom"), t.fuses())
    for frame in frames:
        if frame[:2] == b"\xac\x53":
            continue  # Programming Enable itself
        answer = t.spi(frame)
        if not reset_held:
            assert answer == b"\xff\xff\xff\xff"
    assert (t.memory.flash_bytes(), t.memory.region_bytes("eeprom"), t.fuses()) == before
    assert not t.programming
