import struct

import pytest
from hypothesis import given, settings, strategies as st

from bootkit.formats import FormatError, load
from bootkit.formats.elf import parse_elf


def make_elf(segments, entry=0x08000101, cls=1, data=1, machine=40):
    """A minimal ELF32: header, program headers, then segment bytes.
    ``segments``: (p_type, p_vaddr, p_paddr, bytes, p_memsz)."""
    phoff = 52
    offset = phoff + 32 * len(segments)
    phdrs, blobs = b"", b""
    for p_type, vaddr, paddr, blob, memsz in segments:
        phdrs += struct.pack("<8I", p_type, offset + len(blobs), vaddr, paddr, len(blob), memsz, 5, 4)
        blobs += blob
    ident = b"\x7fELF" + bytes([cls, data, 1]) + bytes(9)
    header = struct.pack("<16sHHIIIIIHHHHHH", ident, 2, machine, 1, entry, phoff, 0, 0, 52, 32, len(segments), 40, 0, 0)
    return header + phdrs + blobs


def test_pt_load_segments_at_physical_addresses():
    elf = make_elf([
        (1, 0x08000000, 0x08000000, b"code", 4),
        (1, 0x20000000, 0x08000004, b"data", 0x100),  # .data: runs in RAM, stored in flash
        (1, 0x20000100, 0x20000100, b"", 0x200),  # .bss: nothing in the file
        (4, 0, 0, b"note", 4),  # PT_NOTE: not loaded
    ])
    image = parse_elf(elf)
    assert image.segments == [(0x08000000, b"codedata")]
    assert image.start_address == 0x08000101
    assert load(elf) == image


def test_errors():
    cases = [
        (b"\x7fELF", "f.elf: offset 0x0: truncated ELF header (4 of 52 bytes)"),
        (b"\x7fELG" + bytes(60), "f.elf: offset 0x0: wrong magic (not an ELF file)"),
        (make_elf([], cls=2), "f.elf: offset 0x4: unsupported ELF (EI_CLASS 2, EI_DATA 1): only 32-bit little-endian"),
        (make_elf([(1, 0, 0, b"abcd", 4)])[:-2], "f.elf: offset 0x54: segment 0 runs past the end of the file (truncated?)"),
        (make_elf([(1, 0, 0, b"abcd", 4)])[:60], "f.elf: offset 0x34: truncated program header 0"),
    ]
    for data, message in cases:
        with pytest.raises(FormatError) as exc:
            parse_elf(data, source="f.elf")
        assert str(exc.value) == message


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.data())
def test_garbage_into_parse_elf_raises_only_format_error(raw, data):
    if data.draw(st.booleans()):
        raw = bytearray(make_elf([(1, 0, 0x100, raw[:30], 30)]))
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        parse_elf(bytes(raw))
    except FormatError:
        pass


def avr_elf():
    """avr-gcc's layout: .text at 0, .data stored after it (VMA in SRAM at 0x800100),
    .eeprom at 0x810000, .fuse at 0x820000 (EM_AVR is 83)."""
    return make_elf([
        (1, 0, 0, b"\x0c\x94code", 6),
        (1, 0x800100, 6, b"dat", 3),
        (1, 0x810000, 0x810000, b"EEPROM!", 7),
        (1, 0x820000, 0x820000, b"\xff\xd9\xcb", 3),
    ], entry=0, machine=83)


def test_avr_elf_keeps_flash_and_eeprom_apart():
    elf = avr_elf()
    flash = parse_elf(elf)
    assert flash.segments == [(0, b"\x0c\x94codedat")]
    assert flash.origin.eeprom == 7
    eeprom = parse_elf(elf, memory="eeprom")
    assert eeprom.segments == [(0, b"EEPROM!")]
    assert load(elf, memory="eeprom") == eeprom and load(elf) == flash
    # another machine's ELF is read as it is
    arm = make_elf([(1, 0x810000, 0x810000, b"x", 1)])
    assert parse_elf(arm).segments == [(0x810000, b"x")] and not parse_elf(arm, memory="eeprom")
