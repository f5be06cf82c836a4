"""SimulatedFlash: NOR semantics, protection, persistence, timing, manifest."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootkit.memory import (
    CHIPS,
    AddressFault,
    EraseFault,
    FirmwareFault,
    MemoryFault,
    MemoryIO,
    NotErasedFault,
    ProtectedFault,
    SimulatedFlash,
    WriteFault,
    get_chip,
)
from bootkit.memory.chips import BUILTIN, EEPROM_BASE, SIGNATURE_BASE

KiB = 1024
BOOT_CHIPS = [c.name for c in CHIPS if c.boot_size > 0]
ALL_CHIPS = [c.name for c in BUILTIN]


def app_start(flash: SimulatedFlash) -> int:
    return flash.layout.application_ranges()[0][0]


def pattern(n: int, seed: int = 0x5A) -> bytes:
    return bytes((i * 37 + seed) & 0xFF for i in range(n))


def test_builtin_chip_list_has_protected_bootloaders():
    # guard: the parametrised protection tests below really run
    assert {"atmega32u4", "at90usb1286", "atmega328p", "atmega2560", "attiny85",
            "stm32f103c8", "nrf52840"} <= set(BOOT_CHIPS)


def test_simulated_flash_is_a_memoryio():
    assert isinstance(SimulatedFlash(get_chip("atmega32u4")), MemoryIO)


# ---------------------------------------------------------------------------
# NOR semantics


def test_new_flash_is_erased():
    flash = SimulatedFlash(get_chip("atmega32u4"))
    assert flash.flash_bytes() == b"\xff" * 32 * KiB
    assert flash.read(0, 16) == b"\xff" * 16


def test_erase_sets_sector_to_ff():
    flash = SimulatedFlash(get_chip("atmega32u4"))
    flash.program(0x100, b"\x00" * 256)          # pages 0x100 and 0x180
    flash.program(0x200, b"\x12\x34")            # page 0x200
    assert flash.layout.flash.sector_at(0x1A0) == (0x180, 128)
    assert flash.erase(0x1A0) == 0.0             # any address in the page erases that page (fast: not busy)
    assert flash.read(0x180, 128) == b"\xff" * 128
    assert flash.read(0x100, 128) == b"\x00" * 128   # neighbours untouched
    assert flash.read(0x200, 2) == b"\x12\x34"


def test_program_over_set_bits_raises_not_erased_naming_the_address():
    flash = SimulatedFlash(get_chip("atmega32u4"))
    flash.program(0x203, b"\xf0")
    with pytest.raises(NotErasedFault) as exc:
        flash.program(0x200, b"\xff\xff\xff\x0f")
    assert exc.value.address == 0x203
    assert "0x203" in str(exc.value)
    assert exc.value.kind == "not-erased"
    # nothing was written by the refused program
    assert flash.read(0x200, 4) == b"\xff\xff\xff\xf0"


def test_not_erased_names_the_first_bad_byte():
    flash = SimulatedFlash(get_chip("stm32f411"))
    base = 0x08004000
    flash.program(base, bytes([0xFF, 0xFF, 0x00, 0xFF, 0x00]))
    with pytest.raises(NotErasedFault) as exc:
        flash.program(base, bytes([0xFF, 0xFF, 0x00, 0xFF, 0x01]))
    assert exc.value.address == base + 4


def test_programming_the_same_byte_twice_is_fine():
    flash = SimulatedFlash(get_chip("atmega32u4"))
    flash.program(0x10, b"\xa5\x5a")
    flash.program(0x10, b"\xa5\x5a")
    assert flash.read(0x10, 2) == b"\xa5\x5a"


def test_clearing_more_bits_over_a_programmed_byte_is_fine():
    flash = SimulatedFlash(get_chip("atmega32u4"))
    flash.program(0x10, b"\xf0")
    flash.program(0x10, b"\x30")
    flash.program(0x10, b"\x00")
    assert flash.read(0x10, 1) == b"\x00"


def test_erase_then_reprogram():
    flash = SimulatedFlash(get_chip("atmega32u4"))
    flash.program(0x0, b"\xf0")
    with pytest.raises(NotErasedFault):
        flash.program(0x0, b"\x0f")
    flash.erase(0x0)
    flash.program(0x0, b"\x0f")
    assert flash.read(0, 1) == b"\x0f"


# ---------------------------------------------------------------------------
# Protected bootloader region


@pytest.mark.parametrize("name", BOOT_CHIPS)
def test_protected_region_refuses_erase_and_program(name):
    chip = get_chip(name)
    flash = SimulatedFlash(chip)
    flash.poke(chip.boot_start, pattern(chip.boot_size))
    before = flash.flash_bytes()
    for address in (chip.boot_start, chip.boot_start + chip.boot_size // 2, chip.boot_end - 1):
        with pytest.raises(ProtectedFault):
            flash.erase(address)
        with pytest.raises(ProtectedFault):
            flash.program(address, b"\x00")
    with pytest.raises(ProtectedFault):
        flash.program(chip.boot_start, b"\x00" * min(chip.boot_size, 256))
    assert flash.flash_bytes() == before
    assert flash.erase_counters.total == 0


@pytest.mark.parametrize("name", BOOT_CHIPS)
def test_write_that_only_straddles_into_the_bootloader_is_refused(name):
    chip = get_chip(name)
    flash = SimulatedFlash(chip)
    flash.poke(chip.boot_start, pattern(chip.boot_size))
    before = flash.flash_bytes()
    straddles = []
    if chip.boot_start > chip.flash_start:     # boot at the top: write up into it
        straddles.append(chip.boot_start - 2)
    if chip.boot_end < chip.flash_end:         # boot at the bottom: write down into it
        straddles.append(chip.boot_end - 2)
    assert straddles
    for address in straddles:
        with pytest.raises(ProtectedFault):
            flash.program(address, b"\x00" * 4)
    assert flash.flash_bytes() == before
    # right next to the bootloader is fine
    if chip.boot_start > chip.flash_start:
        flash.program(chip.boot_start - 2, b"\x00\x00")
    if chip.boot_end < chip.flash_end:
        flash.program(chip.boot_end, b"\x00\x00")
    assert flash.read(chip.boot_start, chip.boot_size) == pattern(chip.boot_size)


def test_protected_fault_kind():
    chip = get_chip("atmega32u4")
    with pytest.raises(ProtectedFault) as exc:
        SimulatedFlash(chip).erase(chip.boot_start)
    assert exc.value.kind == "protected"
    assert exc.value.address == chip.boot_start


# ---------------------------------------------------------------------------
# Addresses


@pytest.mark.parametrize("name", ALL_CHIPS)
def test_reads_and_programs_past_the_end_raise_address_fault(name):
    chip = get_chip(name)
    flash = SimulatedFlash(chip)
    end = chip.flash_end
    assert len(flash.read(end - 4, 4)) == 4
    with pytest.raises(AddressFault):
        flash.read(end - 4, 8)
    with pytest.raises(AddressFault):
        flash.read(end, 1)
    with pytest.raises(AddressFault):
        flash.program(end - 4, b"\x00" * 8)
    with pytest.raises(AddressFault):
        flash.program(end, b"\x00")
    with pytest.raises(AddressFault):
        flash.erase(end)
    if chip.flash_start > 0:
        with pytest.raises(AddressFault):
            flash.read(chip.flash_start - 1, 1)


def test_eeprom_end_is_an_address_fault():
    chip = get_chip("atmega32u4")
    flash = SimulatedFlash(chip)
    with pytest.raises(AddressFault):
        flash.read(EEPROM_BASE + 1020, 8)
    with pytest.raises(AddressFault):
        flash.program(EEPROM_BASE + 1023, b"\x00\x00")
    flash.program(EEPROM_BASE + 1023, b"\x00")


def test_address_fault_is_a_memory_fault_with_address():
    flash = SimulatedFlash(get_chip("atmega32u4"))
    with pytest.raises(MemoryFault) as exc:
        flash.read(0x12345678, 1)
    assert isinstance(exc.value, AddressFault)
    assert exc.value.address == 0x12345678


# ---------------------------------------------------------------------------
# Erase counters, erase_all, read-out protection


def test_erase_counters_count_per_sector():
    flash = SimulatedFlash(get_chip("stm32f411"))
    flash.erase(0x08000000)
    flash.erase(0x08003FFF)
    flash.erase(0x08004000)
    flash.erase(0x08070000)
    c = flash.erase_counters
    assert c[0x08000000] == 2
    assert c[0x08004000] == 1
    assert c[0x08060000] == 1
    assert c[0x08008000] == 0
    assert c.total == 4


def test_eeprom_erase_does_not_count_flash_cycles():
    flash = SimulatedFlash(get_chip("atmega32u4"))
    flash.erase(EEPROM_BASE)
    assert flash.erase_counters.total == 0


@pytest.mark.parametrize("name", ALL_CHIPS)
def test_erase_all_erases_application_not_bootloader(name):
    chip = get_chip(name)
    flash = SimulatedFlash(chip, read_protected=True)
    flash.poke(chip.flash_start, b"\x00" * chip.flash_size)
    flash.app_valid = True
    flash.erase_all()
    assert flash.read_protected is False
    assert flash.app_valid is False
    data = flash.read(chip.flash_start, chip.flash_size)
    for start, end in chip.application_ranges:
        assert data[start - chip.flash_start:end - chip.flash_start] == b"\xff" * (end - start)
    if chip.boot_size:
        off = chip.boot_start - chip.flash_start
        assert data[off:off + chip.boot_size] == b"\x00" * chip.boot_size
    region = flash.layout.flash
    n_app_sectors = sum(1 for s, size in region.sector_bounds()
                        if not flash.layout.is_protected(s, s + size))
    assert flash.erase_counters.total == n_app_sectors
    assert flash.erase_counters[app_start(flash)] == 1


def test_read_out_protection_refuses_reads_of_flash_and_eeprom():
    chip = get_chip("atmega32u4")
    flash = SimulatedFlash(chip, read_protected=True)
    with pytest.raises(ProtectedFault):
        flash.read(0, 16)
    with pytest.raises(ProtectedFault):
        flash.read(EEPROM_BASE, 4)
    assert flash.read(SIGNATURE_BASE, 3) == chip.signature
    flash.erase_all()
    assert flash.read(0, 16) == b"\xff" * 16


# ---------------------------------------------------------------------------
# EEPROM and signature


def test_eeprom_is_written_in_place_without_erase():
    flash = SimulatedFlash(get_chip("atmega32u4"))
    flash.program(EEPROM_BASE + 10, b"\x00\xf0")
    flash.program(EEPROM_BASE + 10, b"\xff\x0f")      # sets bits: fine on EEPROM
    assert flash.read(EEPROM_BASE + 10, 2) == b"\xff\x0f"
    flash.program(EEPROM_BASE + 10, b"\x42\x24")
    assert flash.read(EEPROM_BASE + 10, 2) == b"\x42\x24"
    assert flash.erase_counters.total == 0


def test_eeprom_writes_do_not_touch_flash_validity():
    flash = SimulatedFlash(get_chip("atmega32u4"))
    flash.program(0, b"\x0c\x94")
    flash.manifest()
    flash.program(EEPROM_BASE, b"\x01")
    assert flash.app_valid is True


@pytest.mark.parametrize("name", [c.name for c in BUILTIN if c.signature])
def test_signature_is_read_only_and_holds_the_chip_signature(name):
    chip = get_chip(name)
    flash = SimulatedFlash(chip)
    assert flash.read(SIGNATURE_BASE, len(chip.signature)) == chip.signature
    assert flash.region_bytes("signature") == chip.signature
    with pytest.raises(WriteFault):
        flash.program(SIGNATURE_BASE, b"\x00")
    with pytest.raises(EraseFault):
        flash.erase(SIGNATURE_BASE)
    assert flash.read(SIGNATURE_BASE, len(chip.signature)) == chip.signature


# ---------------------------------------------------------------------------
# STM32F411 sectors

F411_SECTORS = [
    (0x08000000, 16 * KiB), (0x08004000, 16 * KiB), (0x08008000, 16 * KiB), (0x0800C000, 16 * KiB),
    (0x08010000, 64 * KiB), (0x08020000, 128 * KiB), (0x08040000, 128 * KiB), (0x08060000, 128 * KiB),
]


@pytest.mark.parametrize("start, size", F411_SECTORS)
def test_stm32f411_erase_hits_the_right_sector(start, size):
    flash = SimulatedFlash(get_chip("stm32f411"))
    flash.poke(0x08000000, b"\x00" * 512 * KiB)
    for address in (start, start + size // 2 + 3, start + size - 1):
        assert flash.layout.flash.sector_at(address) == (start, size)
        flash.erase(address)
    data = flash.flash_bytes()
    off = start - 0x08000000
    assert data[off:off + size] == b"\xff" * size
    assert data[:off] == b"\x00" * off
    assert data[off + size:] == b"\x00" * (512 * KiB - off - size)
    assert flash.erase_counters[start] == 3


# ---------------------------------------------------------------------------
# File backing


def test_new_image_file_is_created_erased_at_full_flash_size(tmp_path):
    path = tmp_path / "m32u4.bin"
    chip = get_chip("atmega32u4")
    SimulatedFlash(chip, path).close()
    assert path.read_bytes() == b"\xff" * chip.flash_size


def test_new_image_file_for_stm32(tmp_path):
    path = tmp_path / "f411.bin"
    SimulatedFlash(get_chip("stm32f411"), path)
    assert path.stat().st_size == 512 * KiB


def test_programs_survive_close_and_reopen(tmp_path):
    path = tmp_path / "img.bin"
    chip = get_chip("stm32f103c8")
    flash = SimulatedFlash(chip, path)
    flash.program(0x08002000, b"\x00\x50\x00\x20\x01\x23")
    flash.erase(0x08003000)
    flash.erase(0x08003000)
    flash.program(0x08004000, b"\xaa" * 16)
    flash.close()
    raw = path.read_bytes()
    assert raw[0x2000:0x2006] == b"\x00\x50\x00\x20\x01\x23"
    again = SimulatedFlash(chip, path)
    assert again.read(0x08002000, 6) == b"\x00\x50\x00\x20\x01\x23"
    assert again.read(0x08004000, 16) == b"\xaa" * 16
    assert again.erase_counters[0x08003000] == 2
    # NOR state survives too: the programmed bytes are not erased
    with pytest.raises(NotErasedFault):
        again.program(0x08002000, b"\xff")


def test_eeprom_survives_reopen(tmp_path):
    path = tmp_path / "img.bin"
    chip = get_chip("atmega32u4")
    with SimulatedFlash(chip, path) as flash:
        flash.program(EEPROM_BASE + 5, b"\x12\x34")
    assert SimulatedFlash(chip, path).read(EEPROM_BASE + 5, 2) == b"\x12\x34"


def test_app_valid_survives_via_state_file(tmp_path):
    path = tmp_path / "img.bin"
    chip = get_chip("atmega32u4")
    flash = SimulatedFlash(chip, path)
    flash.program(0, b"\x0c\x94\x5c\x00")
    flash.manifest()
    flash.close()
    state_path = tmp_path / "img.bin.state.json"
    assert flash.state_path == state_path
    assert json.loads(state_path.read_text())["app_valid"] is True
    assert SimulatedFlash(chip, path).app_valid is True


def test_unmanifested_image_stays_invalid_after_reopen(tmp_path):
    path = tmp_path / "img.bin"
    chip = get_chip("atmega32u4")
    flash = SimulatedFlash(chip, path)
    flash.program(0, b"\x0c\x94\x5c\x00")       # interrupted: never manifested
    flash.close()
    again = SimulatedFlash(chip, path)
    assert not again.is_blank()
    assert again.app_valid is False


def test_state_file_keeps_invalid_after_program_following_manifest(tmp_path):
    path = tmp_path / "img.bin"
    chip = get_chip("atmega32u4")
    flash = SimulatedFlash(chip, path)
    flash.program(0, b"\x0c\x94")
    flash.manifest()
    flash.close()
    flash = SimulatedFlash(chip, path)
    flash.program(0x100, b"\x00")
    flash.close()
    assert SimulatedFlash(chip, path).app_valid is False


@pytest.mark.parametrize("size_delta", [-1, 1, -16 * KiB])
def test_image_of_wrong_size_is_refused_naming_the_path(tmp_path, size_delta):
    chip = get_chip("atmega32u4")
    path = tmp_path / "wrong-size.bin"
    path.write_bytes(b"\xff" * (chip.flash_size + size_delta))
    with pytest.raises(ValueError) as exc:
        SimulatedFlash(chip, path)
    assert str(path) in str(exc.value)
    # and the file is left alone
    assert path.stat().st_size == chip.flash_size + size_delta


def test_image_loaded_from_existing_file(tmp_path):
    chip = get_chip("atmega328p")
    path = tmp_path / "given.bin"
    data = pattern(chip.flash_size)
    path.write_bytes(data)
    flash = SimulatedFlash(chip, path)
    assert flash.flash_bytes() == data
    # no state file: a foreign image is never trusted, the bootloader keeps control (#17)
    assert flash.app_valid is False


# ---------------------------------------------------------------------------
# Timing


@pytest.fixture
def sleeps(monkeypatch):
    calls = []
    monkeypatch.setattr(time, "sleep", lambda s: calls.append(s))
    return calls


@pytest.mark.parametrize("name", ALL_CHIPS)
def test_realtime_program_returns_the_chip_program_time_and_never_sleeps(name, sleeps):
    chip = get_chip(name)
    flash = SimulatedFlash(chip, realtime=True)
    start = app_start(flash)
    assert flash.program(start, b"\x00" * chip.page_size) == pytest.approx(chip.timing.program_ms / 1000.0)
    assert flash.program(start + chip.page_size, b"\x00" * (4 * chip.page_size)) == \
        pytest.approx(4 * chip.timing.program_ms / 1000.0)
    assert sleeps == []  # the memory reports the time; its engine or transport waits


@pytest.mark.parametrize("name", ALL_CHIPS)
def test_realtime_erase_of_one_smallest_sector_returns_the_chip_erase_time(name, sleeps):
    # The datasheet page/sector erase figure (chips.py: rp2040 "4 KiB sector
    # erase 45 ms typ", stm32f411 "sector erase 16 KiB 250 ms").
    chip = get_chip(name)
    flash = SimulatedFlash(chip, realtime=True)
    start = app_start(flash)
    _, size = flash.layout.flash.sector_at(start)
    assert size == min(s for _, s in chip.flash_sectors)
    assert flash.erase(start) == pytest.approx(chip.timing.erase_ms / 1000.0)
    assert sleeps == []


def test_realtime_erase_all_and_larger_sectors(sleeps):
    chip = get_chip("stm32f411")
    flash = SimulatedFlash(chip, realtime=True)
    assert flash.erase(0x08060000) > chip.timing.erase_ms / 1000.0  # a 128 KiB sector takes longer than 16 KiB
    assert flash.erase_all() == pytest.approx(chip.timing.full_erase_ms / 1000.0)
    flash.program(app_start(flash), b"\x00" * 16)
    assert flash.manifest() == pytest.approx(chip.timing.manifest_ms / 1000.0)
    assert sleeps == []


@pytest.mark.parametrize("name", ALL_CHIPS)
def test_fast_mode_is_never_busy(name, sleeps):
    chip = get_chip(name)
    flash = SimulatedFlash(chip)
    assert flash.realtime is False
    start = app_start(flash)
    assert flash.erase(start) == 0.0
    assert flash.program(start, b"\x00" * (2 * chip.page_size)) == 0.0
    assert flash.manifest() == 0.0
    assert flash.erase_all() == 0.0
    flash.read(start, 16)
    assert sleeps == []


def test_simulated_flash_is_a_complete_memory_io():
    # app_valid, is_blank and read_protected are part of the contract: callers use them
    # without getattr, so anything standing behind a personality must have them
    from bootkit.memory.core import MemoryIO

    assert {"app_valid", "read_protected"} <= set(MemoryIO.__annotations__)
    assert callable(getattr(MemoryIO, "is_blank", None))
    assert MemoryIO.erase.__annotations__["return"] in (float, "float")
    flash = SimulatedFlash(get_chip("atmega32u4"))
    assert isinstance(flash, MemoryIO)
    assert flash.is_blank() and not flash.app_valid and not flash.read_protected


# ---------------------------------------------------------------------------
# manifest


@pytest.mark.parametrize("name", ALL_CHIPS)
def test_manifest_on_blank_flash_raises_firmware_fault(name):
    flash = SimulatedFlash(get_chip(name))
    with pytest.raises(FirmwareFault) as exc:
        flash.manifest()
    assert exc.value.kind == "firmware"
    assert flash.app_valid is False


@pytest.mark.parametrize("name", ALL_CHIPS)
def test_manifest_after_programming_sets_app_valid(name):
    flash = SimulatedFlash(get_chip(name))
    assert flash.is_blank()
    flash.program(app_start(flash), b"\x00\x20\x00\x20")
    assert not flash.is_blank()
    assert flash.app_valid is False
    flash.manifest()
    assert flash.app_valid is True


def _manifested(name="stm32f103c8"):
    flash = SimulatedFlash(get_chip(name))
    flash.program(app_start(flash), b"\x00\x20\x00\x20")
    flash.manifest()
    assert flash.app_valid
    return flash


@pytest.mark.parametrize("op", ["program", "program-same", "erase", "erase-other", "erase_all"])
def test_any_program_or_erase_after_manifest_clears_app_valid(op):
    flash = _manifested()
    start = app_start(flash)
    if op == "program":
        flash.program(start + 0x1000, b"\x12")
    elif op == "program-same":
        flash.program(start, b"\x00\x20")         # even rewriting the same bytes
    elif op == "erase":
        flash.erase(start)
    elif op == "erase-other":
        flash.erase(start + 0x4000)
    else:
        flash.erase_all()
    assert flash.app_valid is False


def test_manifest_after_erase_of_first_sector_fails():
    flash = _manifested()
    flash.erase(app_start(flash))
    with pytest.raises(FirmwareFault):
        flash.manifest()
    assert flash.app_valid is False


def test_faulting_operations_do_not_clear_app_valid():
    flash = _manifested("atmega32u4")
    chip = flash.chip
    with pytest.raises(ProtectedFault):
        flash.erase(chip.boot_start)
    with pytest.raises(NotErasedFault):
        flash.program(0, b"\xff\xff")
    with pytest.raises(AddressFault):
        flash.program(chip.flash_end, b"\x00")
    assert flash.app_valid is True


# ---------------------------------------------------------------------------
# Property: random operation sequences never touch the bootloader


def _address(chip):
    regions = chip.layout().regions
    return st.one_of(
        st.integers(chip.flash_start - 16, chip.flash_end + 16),
        st.integers(max(0, chip.boot_start - 300), chip.boot_end + 300),
        st.sampled_from([r.start for r in regions] + [r.end - 1 for r in regions] + [r.end for r in regions]),
        st.integers(-(2**16), 2**33),
    )


@st.composite
def scenarios(draw):
    name = draw(st.sampled_from(ALL_CHIPS))
    chip = get_chip(name)
    addr = _address(chip)
    op = st.one_of(
        st.tuples(st.just("erase"), addr),
        st.tuples(st.just("program"), addr,
                  st.one_of(st.binary(min_size=0, max_size=64),
                            st.integers(1, 600).map(lambda n: b"\x00" * n))),
        st.tuples(st.just("erase_all")),
        st.tuples(st.just("manifest")),
        st.tuples(st.just("read"), addr, st.integers(0, 64)),
    )
    ops = draw(st.lists(op, min_size=1, max_size=25))
    return name, ops


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_random_operations_never_write_the_bootloader(scenario):
    name, ops = scenario
    chip = get_chip(name)
    flash = SimulatedFlash(chip)
    boot = pattern(chip.boot_size, seed=0x3C)
    if chip.boot_size:
        flash.poke(chip.boot_start, boot)
    other = {r.name: flash.region_bytes(r.name) for r in flash.layout.regions
             if not r.writable and not r.erasable}
    for op in ops:
        try:
            if op[0] == "erase":
                region = flash.layout.find(op[1])
                start, size = region.sector_at(op[1]) if op[1] in region else (op[1], 1)
                flash.erase(op[1])
                assert not flash.layout.is_protected(start, start + size)
            elif op[0] == "program":
                flash.program(op[1], op[2])
            elif op[0] == "erase_all":
                flash.erase_all()
            elif op[0] == "manifest":
                flash.manifest()
                assert flash.app_valid
            else:
                assert len(flash.read(op[1], op[2])) == op[2]
        except MemoryFault:
            pass
        off = chip.boot_start - chip.flash_start
        assert flash.flash_bytes()[off:off + chip.boot_size] == boot
        assert len(flash.flash_bytes()) == chip.flash_size
    # read-only regions (signature, fuses) never change either
    for region_name, data in other.items():
        assert flash.region_bytes(region_name) == data


def test_fuses_and_lock_bits_survive_a_power_cycle(tmp_path):
    """An ISP programmer writes fuses and lock bits (bootkit.isp): like EEPROM, they are in the
    state companion, only when they differ from the chip's defaults."""
    from bootkit.memory.chips import FUSE_BASE, LOCK_BASE

    chip = get_chip("attiny85")
    image = tmp_path / "t85.bin"
    flash = SimulatedFlash(chip, image)
    flash.save()
    assert not {"fuses", "lock"} & set(json.loads(flash.state_path.read_text()))
    flash.poke(FUSE_BASE, b"\xe2")
    flash.poke(LOCK_BASE, b"\xfc")
    flash.close()
    again = SimulatedFlash(chip, image)
    assert again.region_bytes("fuses")[0] == 0xE2 and again.region_bytes("lock") == b"\xfc"
    again.close()
