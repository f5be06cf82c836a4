"""ELF executables: the bytes of their PT_LOAD segments, at physical addresses.

Only 32-bit little-endian ELF (ARM Cortex-M, RISC-V 32, AVR, Xtensa), read
with ``struct`` from the System V ABI layout.  Like ``objcopy -O binary``
we place each PT_LOAD segment's file bytes (p_filesz, not p_memsz: .bss is
not in flash) at its physical address p_paddr (the load address, LMA, so
initialised .data lands in flash after the code, not in RAM).

AVR (e_machine 83) keeps its other memories in the same address space at
avr-gcc's offsets (avr/ldscripts: .eeprom at 0x810000, .fuse 0x820000,
.lock 0x830000, .signature 0x840000).  Like the Arduino and LUFA makefiles
(``avr-objcopy -R .eeprom -R .fuse -R .lock -R .signature`` for the flash
HEX, ``-j .eeprom --change-section-lma .eeprom=0`` for the EEPROM one),
``memory="flash"`` keeps only flash and ``memory="eeprom"`` only the
EEPROM bytes, moved to offset 0; the image's ``origin.eeprom`` counts the
EEPROM bytes a flash read left out.
"""

from __future__ import annotations

import struct

from .image import FormatError, Image

ELF_MAGIC = b"\x7fELF"
ELFCLASS32 = 1
ELFDATA2LSB = 1
PT_LOAD = 1
EM_AVR = 83
AVR_EEPROM_START, AVR_EEPROM_END = 0x810000, 0x820000  # avr-gcc's .eeprom LMA (avr/ldscripts)
AVR_FLASH_END = 0x800000  # 0x800000 up: SRAM (.data's VMA), EEPROM, fuses, lock, signature

_EHDR = struct.Struct("<16sHHIIIIIHHHHHH")  # Elf32_Ehdr
_PHDR = struct.Struct("<IIIIIIII")  # Elf32_Phdr: p_type p_offset p_vaddr p_paddr p_filesz p_memsz p_flags p_align


def parse_elf(data: bytes, *, source: str | None = None, memory: str = "flash") -> Image:
    """The ``memory`` ("flash" or "eeprom") contents of an ELF file; see the module doc."""
    from .image import FileOrigin

    if memory not in ("flash", "eeprom"):
        raise ValueError(f"memory must be 'flash' or 'eeprom', not {memory!r}")
    data = bytes(data)

    def fail(problem: str, offset: int) -> FormatError:
        return FormatError(problem, source=source, where=f"offset 0x{offset:X}")

    if len(data) < _EHDR.size:
        raise fail(f"truncated ELF header ({len(data)} of {_EHDR.size} bytes)", 0)
    ident, _type, machine, _version, entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum = _EHDR.unpack_from(
        data, 0
    )[:11]
    if ident[:4] != ELF_MAGIC:
        raise fail("wrong magic (not an ELF file)", 0)
    if ident[4] != ELFCLASS32 or ident[5] != ELFDATA2LSB:
        raise fail(f"unsupported ELF (EI_CLASS {ident[4]}, EI_DATA {ident[5]}): only 32-bit little-endian", 4)
    if phnum and phentsize < _PHDR.size:
        raise fail(f"e_phentsize {phentsize} too small", 42)
    image = Image()
    avr = machine == EM_AVR
    eeprom_bytes = 0
    for i in range(phnum):
        at = phoff + i * phentsize
        if at + _PHDR.size > len(data):
            raise fail(f"truncated program header {i}", at)
        p_type, p_offset, _vaddr, p_paddr, p_filesz, _memsz, _pflags, _align = _PHDR.unpack_from(data, at)
        if p_type != PT_LOAD or not p_filesz:
            continue
        if p_offset + p_filesz > len(data):
            raise fail(f"segment {i} runs past the end of the file (truncated?)", p_offset)
        address = p_paddr
        if avr and memory == "flash" and address >= AVR_FLASH_END:
            if AVR_EEPROM_START <= address < AVR_EEPROM_END:
                eeprom_bytes += p_filesz
            continue
        if memory == "eeprom":
            if not (avr and AVR_EEPROM_START <= address < AVR_EEPROM_END):
                continue
            address -= AVR_EEPROM_START
        try:
            image.add(address, data[p_offset:p_offset + p_filesz])
        except FormatError as exc:
            raise exc.at(source=source, where=f"offset 0x{p_offset:X}") from None
    if entry and memory == "flash":
        image.start_address, image.start_address_kind = entry, "linear"
    image.origin = FileOrigin("elf", source, eeprom=eeprom_bytes)
    return image
